"""Evaluation over whole test videos: sliding windows, MPJPE, PA-MPJPE, PVE and acceleration
error in millimetres, per video and overall, written as JSON and a markdown table.

Protocols (`protocol`):
- 'vibe': every frame is predicted once, from consecutive windows of T frames (stride T; the
  last window is moved back to end at the last frame, and only its new frames are used);
- 'tcmr': one stride-1 window centred on every frame (edges padded by repeating the first and
  last frame), keeping the window's middle frame; only frames with 3D labels count.

Joints (`joints`, see `EVAL_JOINTS`); the ground truth is always the dataset's `kp3d` (vibe49
slots, with their confidence):
- 'vibe49': the predicted `joints3d` entries 25..38 (the 14 common joints of the model's own
  joint layout) against ground-truth entries 25..38, centred on the mid-hips; the synthetic
  default.
- 'h36m14': 14 joints regressed from the predicted vertices through J_regressor_h36m, rows
  H36M_TO_J14 (the smpl layout 'common14'), against ground-truth entries 25..38, centred on the
  mid-hips: what VIBE (lib/core/evaluate.py, Regressor(J_regressor=...)) and TCMR (evaluate.py)
  do on 3DPW and Human3.6M.
- 'mpii3d17': the 17 MPI-INF-3DHP test joints (TCMR's `get_mpii3d_test_joint_names`: the 14
  common joints, pelvis, spine and head from the predicted vibe49 joints, as TCMR evaluates
  MPI-INF-3DHP with `J_regressor=None`), centred on the pelvis (joint 14).

PVE compares meshes from the predicted and ground-truth SMPL parameters on the same body model
(the neutral one by default), each centred on the mid-hips of its own J_regressor_h36m joints
(VIBE's `compute_error_verts` compares the two meshes as SMPL poses them, without centring);
it is reported where ground-truth SMPL exists (3DPW). The acceleration error is computed per
video on the frames that have 3D labels, never across two videos.

Per-frame errors run through one jitted function on chunks of `CHUNK` frames, so videos of any
length share one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry, metrics, smpl
from lmr_jax.smpl import COMMON14_PELVIS, VIBE49_TO_COMMON14

METRICS = ("MPJPE", "PA-MPJPE", "PVE", "Accel")
# TCMR's MPI-INF-3DHP test joints as vibe49 entries: head top, neck, right shoulder, elbow,
# wrist, left shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, pelvis
# (MPII), spine (H36M), head (H36M).
MPII3D17 = (38, 37, 33, 32, 31, 34, 35, 36, 27, 26, 25, 28, 29, 30, 39, 41, 43)


@dataclasses.dataclass(frozen=True)
class EvalJoints:
    """The joints an evaluation compares.

    Attributes:
      name: the `joints` option.
      gt_slots: vibe49 entries of the ground truth (`kp3d`).
      from_vertices: predicted joints are J_regressor_h36m rows H36M_TO_J14 of the predicted
        vertices (else the predicted vibe49 `joints3d` at `gt_slots`).
      pelvis: indices (within the selection) averaged into the centring joint.
    """

    name: str
    gt_slots: tuple[int, ...]
    from_vertices: bool
    pelvis: tuple[int, ...]


EVAL_JOINTS = {
    "vibe49": EvalJoints("vibe49", tuple(VIBE49_TO_COMMON14), False, COMMON14_PELVIS),
    "h36m14": EvalJoints("h36m14", tuple(VIBE49_TO_COMMON14), True, COMMON14_PELVIS),
    "mpii3d17": EvalJoints("mpii3d17", MPII3D17, False, (14,)),
}


def get_eval_joints(joints: str) -> EvalJoints:
    """The joint set named `joints`; ValueError naming the choices if unknown."""
    if joints not in EVAL_JOINTS:
        raise ValueError(f"eval joints '{joints}' are unknown, expected one of "
                         f"{tuple(EVAL_JOINTS)}.")  # fmt: skip
    return EVAL_JOINTS[joints]


def window_starts(num_frames: int, window: int, protocol: str) -> np.ndarray:
    """Start index of every window over a video of `num_frames` (after padding for 'tcmr')."""
    if protocol == "tcmr":
        return np.arange(num_frames)
    last = max(num_frames - window, 0)
    return np.unique(np.minimum(np.arange(0, max(num_frames, 1), window), last))


def run_windows(apply_fn: Callable, windows: np.ndarray, batch_size: int = 64) -> dict:
    """`apply_fn` over windows [W, T, D], `batch_size` windows per call; returns [W, T, ...].

    Each call's batch is padded to a power of two (at most `batch_size`), so a few compiled
    shapes serve videos of every length.
    """
    chunks = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        count = len(chunk)
        size = min(batch_size, 1 << max(count - 1, 0).bit_length())
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, 0)])
        out = jax.device_get(apply_fn(jnp.asarray(chunk)))
        chunks.append({k: v[:count] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def predict_video(
    apply_fn: Callable, features: np.ndarray, window: int, protocol: str, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Per-frame predictions for one video of features [N, D].

    Args:
      apply_fn: maps features [W, T, D] to a dict of per-frame outputs [W, T, ...].
      features: the video's features.
      window: T.
      protocol: 'vibe' or 'tcmr' (see the module docstring).
      batch_size: windows per call.

    Returns:
      A dict of [N, ...] arrays, one entry per frame.
    """
    n = len(features)
    if protocol == "tcmr":
        half = window // 2
        padded = np.concatenate([np.repeat(features[:1], half, 0), features,
                                 np.repeat(features[-1:], window - half - 1, 0)])  # fmt: skip
        take = np.full(n, half)  # the middle frame of each window
    else:
        pad = max(window - n, 0)  # a video shorter than T is padded at its end
        padded = np.concatenate([features, np.repeat(features[-1:], pad, 0)])
        take = None
    starts = window_starts(n, window, protocol)
    outputs = run_windows(apply_fn, np.stack([padded[s : s + window] for s in starts]), batch_size)
    frame = np.empty(n, np.int64)  # which window each frame is read from
    offset = np.empty(n, np.int64)
    if take is not None:
        frame[:], offset[:] = np.arange(n), take
    else:
        for w, s in enumerate(starts):  # later windows only fill frames not yet covered
            covered = np.arange(s, min(s + window, n))
            frame[covered], offset[covered] = w, covered - s
    return {k: v[frame, offset] for k, v in outputs.items()}


# Frames per call of the jitted per-frame errors: every video is cut into chunks of this size
# (the last one padded), so one compiled program serves videos of every length.
CHUNK = 128


@functools.partial(jax.jit, static_argnames=("selection", "with_pve"))
def _chunk_errors(body_model, pred_joints, pred_vertices, gt, conf, pose, shape, has_smpl, *,
                  selection: EvalJoints, with_pve: bool):  # fmt: skip
    """Per-frame errors of one chunk: the compared predicted joints [C, J, 3] and MPJPE,
    PA-MPJPE, PVE [C] (mm; NaN where unlabelled)."""
    if selection.from_vertices:
        pred_joints = smpl.layout_joints(body_model, pred_vertices, None, "common14")
    mpjpe = metrics.mpjpe(pred_joints, gt, selection.pelvis, conf)
    pa_mpjpe = metrics.pa_mpjpe(pred_joints, gt, conf)
    pve = jnp.full(mpjpe.shape, jnp.nan)
    if with_pve:
        gt_vertices, _ = smpl.forward(body_model, shape, geometry.pose72_to_rotmats(pose))
        # Both meshes are centred on the same mesh-regressed mid-hips (common-14 joints).
        pelvis = lambda v: smpl.layout_joints(body_model, v, None, "common14")[
            ..., list(COMMON14_PELVIS), :
        ].mean(-2)
        errors = metrics.pve(pred_vertices, gt_vertices, pelvis(pred_vertices), pelvis(gt_vertices))
        pve = jnp.where(has_smpl, errors, jnp.nan)
    return pred_joints, mpjpe, pa_mpjpe, pve


def video_errors(
    pred: dict[str, np.ndarray],
    video: dict[str, np.ndarray],
    body_model: smpl.SMPLModel,
    joints: str = "vibe49",
) -> dict[str, np.ndarray]:
    """Per-frame errors (mm) of one video; NaN where the frame has no label for the metric.

    Args:
      pred: per-frame predictions: `joints3d` [N, 49, 3] (vibe49) and `vertices` [N, 6890, 3].
      video: the video's labels (`kp3d`, `has_kp3d`, `pose`, `shape`, `has_smpl`).
      body_model: the body model of the ground-truth meshes and of J_regressor_h36m.
      joints: the joint set (see the module docstring and `EVAL_JOINTS`).

    Returns:
      {'MPJPE', 'PA-MPJPE', 'PVE', 'Accel'}: [N] arrays ([0] for videos under 3 frames).
    """
    selection = get_eval_joints(joints)
    slots = np.asarray(selection.gt_slots)
    n = len(video["kp3d"])
    inputs = {
        "pred_joints": None if selection.from_vertices else pred["joints3d"][:, slots],
        "gt": video["kp3d"][:, slots, :3],
        "conf": video["kp3d"][:, slots, 3] * video["has_kp3d"][:, None],
        "pose": video["pose"],
        "shape": video["shape"],
        "has_smpl": video["has_smpl"] > 0,
    }
    with_pve = bool(inputs["has_smpl"].any())
    if selection.from_vertices or with_pve:
        inputs["pred_vertices"] = pred["vertices"]
    chunks = []
    for begin in range(0, n, CHUNK):
        part = {k: None if v is None else _padded(v[begin : begin + CHUNK], CHUNK)
                for k, v in inputs.items()}  # fmt: skip
        part.setdefault("pred_vertices", None)
        out = _chunk_errors(body_model, **part, selection=selection, with_pve=with_pve)
        chunks.append(jax.device_get(out))
    pred_joints, mpjpe, pa_mpjpe, pve = (np.concatenate(c)[:n] for c in zip(*chunks, strict=True))
    valid = (video["has_kp3d"] > 0) & (inputs["conf"].sum(-1) > 0)
    centre = lambda j: (
        np.asarray(j, np.float64) - j[:, list(selection.pelvis)].mean(1, keepdims=True)
    )
    accel, _ = metrics.accel_error_videos(centre(pred_joints), centre(inputs["gt"]),
                                          np.zeros(n, np.int64), valid)  # fmt: skip
    accel = np.concatenate([[np.nan], accel, [np.nan]]) if len(accel) else accel
    return {"MPJPE": mpjpe, "PA-MPJPE": pa_mpjpe, "PVE": pve, "Accel": accel}


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """`array` [n, ...] padded with zeros (False) to [size, ...]."""
    pad = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(np.asarray(array), pad)


def evaluate_videos(
    apply_fn: Callable,
    videos: Iterable[dict[str, np.ndarray]],
    body_model: smpl.SMPLModel,
    window: int,
    protocol: str = "vibe",
    max_videos: int = 0,
    joints: str = "vibe49",
) -> dict:
    """Runs the model over whole videos and aggregates the errors.

    Args:
      apply_fn: maps features [W, T, D] to per-frame outputs (`joints3d`, `vertices`, ...).
      videos: whole videos (dicts of [N, ...] arrays and `vid_name`).
      body_model: the body model (ground-truth meshes, J_regressor_h36m).
      window: T.
      protocol: 'vibe' or 'tcmr'.
      max_videos: stop after this many videos (0: all).
      joints: the joint set, a key of `EVAL_JOINTS`.

    Returns:
      {'overall': {metric: mm}, 'videos': {vid_name: {metric: mm}}, 'frames': count,
      'protocol': protocol, 'joints': joints}.
    """
    get_eval_joints(joints)  # an unknown name fails before any video is run
    per_video, pooled = {}, {}
    for i, video in enumerate(videos):
        if max_videos and i >= max_videos:
            break
        pred = predict_video(apply_fn, video["features"], window, protocol)
        errors = video_errors(pred, video, body_model, joints)
        if protocol == "tcmr":  # TCMR counts only frames that have 3D labels
            keep = video["has_kp3d"] > 0
            errors = {
                k: np.where(keep, v, np.nan) if k != "Accel" else v for k, v in errors.items()
            }
        name = str(video["vid_name"])
        per_video[name] = metrics.summarize(errors)
        for k, v in errors.items():
            pooled.setdefault(k, []).append(v)
    if not per_video:
        raise ValueError("evaluation found no videos in the dataset split.")
    overall = metrics.summarize({k: np.concatenate(v) for k, v in pooled.items()})
    frames = int(sum(len(v) for v in pooled["MPJPE"]))
    return {"overall": overall, "videos": per_video, "frames": frames, "protocol": protocol,
            "joints": joints}  # fmt: skip


def write_results(results: dict, workdir: str, split: str, label: str) -> str:
    """Writes workdir/eval/<split>.json and <split>.md; returns the markdown table."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
        json.dump(results, f, indent=1, allow_nan=True)
    table = metrics.format_table({label: results["overall"]})
    with open(os.path.join(out_dir, f"{split}.md"), "w") as f:
        f.write(table + "\n")
    return table
