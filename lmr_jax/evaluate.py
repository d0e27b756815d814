"""Evaluation over whole test videos: the frames VIBE and TCMR score, MPJPE, PA-MPJPE, PVE and
acceleration error in millimetres, per video and overall, written as JSON and a markdown table.

Protocols (`protocol`), each scoring exactly the frames its code scores (`frame_plan`):
- 'vibe' (VIBE lib/dataset/dataset_3d.py with the test sets' overlap 0, i.e. stride T, and
  lib/data_utils/img_utils.py `split_into_chunks`: `view_as_windows(indexes, (seqlen,),
  step=stride)`, `if indexes.shape[0] < seqlen: continue`; lib/core/evaluate.py `Evaluator`):
  consecutive windows of T frames, every frame of a window predicted by it and scored; the
  frames after the last full window are not scored and a video shorter than T is left out; no
  `valid` / `valid_i` flag is used (VIBE's Evaluator reads neither).
- 'tcmr' (TCMR evaluate.py with lib/data_utils/_img_utils.py `split_into_chunks(...,
  stride=1, is_train=False, match_vibe=False)`): a video's frames with `valid` = 0 are removed
  first (`dataset_data['features'][indexes][valids]`), a video with fewer than T frames left is
  skipped, and every remaining frame is the middle frame (index T // 2, TCMR's `mid_frame`) of
  one window: the stride-1 window centred on it, or for the first T // 2 and the last
  ceil(T / 2) - 1 frames a window of that frame repeated T times (`get_sequence(i, i)`);
  MPI-INF-3DHP scores only the frames with `valid_i` = 1 (`valid_map`).

Joints (`joints`, see `EVAL_JOINTS`); the ground truth is always the dataset's `kp3d` (vibe49
slots, with their confidence):
- 'vibe49': the predicted `joints3d` entries 25..38 (the 14 common joints of the model's own
  joint layout) against ground-truth entries 25..38, centred on the mid-hips; the synthetic
  default.
- 'h36m14': 14 joints regressed from the predicted vertices through J_regressor_h36m, rows
  H36M_TO_J14 (the smpl layout 'common14'), against ground-truth entries 25..38, centred on the
  mid-hips: what VIBE (Regressor(J_regressor=...)) does on 3DPW and MPI-INF-3DHP and TCMR on
  3DPW and Human3.6M.
- 'mpii3d17': the 17 MPI-INF-3DHP test joints (TCMR's `convert_kps(..., dst='mpii3d_test')`:
  the 14 common joints, pelvis, spine and head from the predicted vibe49 joints, as TCMR
  evaluates MPI-INF-3DHP with `J_regressor=None`), centred on the pelvis (joint 14, TCMR's
  `pred_j3ds[:, [-3]]`).

PVE is VIBE's and TCMR's `compute_error_verts` (lib/utils/eval_utils.py): the mean distance over
all 6890 vertices between the predicted mesh and the mesh of the ground-truth pose and shape on
the same body model, both as the body model outputs them (no translation, no re-centring); it is
reported where ground-truth SMPL exists (3DPW). 'PVE-centred' is the same distance after
centring each mesh on the mid-hips of its own J_regressor_h36m joints; it is never called PVE.
The acceleration error (`compute_error_accel`) is the second difference of the predicted
sequence of pelvis-centred joints against the ground truth's, per video (VIBE concatenates every
window of the test set and so also differentiates across video boundaries; we never do), at the
scored interior frames (TCMR drops a video's first and last frame, and differentiates across
frames removed by `valid`, as its code does). 'MPJVE' (mm/frame) and 'MPJAE' (mm/frame^2) are
DSD-SATN's velocity and acceleration errors (metrics.velocity_error, accel_error) on the same
pelvis-centred joints of the same sequence: MPJVE's value at a frame is that of the difference
from the frame before it (NaN at a video's first frame), MPJAE is Accel (the same function;
the paper's mm/s and mm/s^2 are these times fps and fps^2).

Per-frame errors run through one jitted function on chunks of `CHUNK` frames, so videos of any
length share one compiled program.

Occlusion robustness (the HKMR paper's Fig. 6) is lmr_jax/evaluate_occlusion.py, on the same
frame plans and per-frame errors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry, metrics, smpl
from lmr_jax.runner import run_windows  # also lmr_jax.evaluate.run_windows, as before
from lmr_jax.smpl import COMMON14_PELVIS, VIBE49_TO_COMMON14

METRICS = ("MPJPE", "PA-MPJPE", "PVE", "PVE-centred", "Accel", "MPJVE", "MPJAE")
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


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """Which frames of a video a protocol predicts and scores, and from which windows.

    Attributes:
      windows: [W, T] frame indices of each input window.
      window_of: [F] the window each predicted frame is read from.
      offset: [F] its position in that window.
      frames: [F] the video frame of each prediction, in sequence order (the sequence the
        acceleration error differentiates).
      scored: [F] bool, the predictions that count.
    """

    windows: np.ndarray
    window_of: np.ndarray
    offset: np.ndarray
    frames: np.ndarray
    scored: np.ndarray


def frame_plan(
    num_frames: int,
    window: int,
    protocol: str,
    valid: np.ndarray | None = None,
    valid_i: np.ndarray | None = None,
) -> FramePlan:
    """The windows and scored frames of one video under `protocol` (module docstring).

    Args:
      num_frames: N.
      window: T.
      protocol: 'vibe' or 'tcmr'.
      valid: [N] the file's `valid` flags (TCMR drops frames with 0), None if it has none.
      valid_i: [N] the file's `valid_i` flags (TCMR scores only frames with 1), None if none.

    Returns:
      The plan; empty (F = 0) for a video the protocol leaves out.
    """
    if protocol == "vibe":
        starts = np.arange(0, num_frames - window + 1, window)
        windows = starts[:, None] + np.arange(window)
        count = len(starts)
        return FramePlan(windows, np.repeat(np.arange(count), window),
                         np.tile(np.arange(window), count), windows.reshape(-1),
                         np.ones(count * window, bool))  # fmt: skip
    if protocol != "tcmr":
        raise ValueError(f"eval protocol is '{protocol}', expected 'vibe' or 'tcmr'.")
    kept = np.arange(num_frames) if valid is None else np.flatnonzero(np.asarray(valid) > 0)
    count = len(kept) if len(kept) >= window else 0
    kept, half = kept[:count], window // 2
    position = np.arange(count)
    start = np.clip(position - half, 0, max(count - window, 0))
    centred = (position >= half) & (position <= count - window + half)
    # An edge frame's window is the frame repeated T times (TCMR's get_sequence(i, i)).
    index = np.where(centred[:, None], start[:, None] + np.arange(window), position[:, None])
    scored = np.ones(count, bool) if valid_i is None else np.asarray(valid_i)[kept] > 0
    return FramePlan(kept[index].reshape(count, window), position, np.full(count, half), kept,
                     scored)  # fmt: skip


def predict_frames(
    apply_fn: Callable, features: np.ndarray, plan: FramePlan, batch_size: int = 64,
    inputs: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The predictions of a plan's frames: `apply_fn` on its windows, read at each frame's slot.

    Args:
      apply_fn: maps features [W, T, D] (and `inputs` [W, T, ...] as keyword arguments) to a
        dict of per-frame outputs [W, T, ...].
      features: the video's features [N, D].
      plan: see `frame_plan` (at least one window).
      batch_size: windows per call.
      inputs: {name: [N, ...]} video fields the model reads besides its features (its
        `evaluation_inputs`), cut into the same windows; None: none.

    Returns:
      A dict of [F, ...] arrays in the plan's frame order.
    """
    windowed = {k: np.asarray(v)[plan.windows] for k, v in (inputs or {}).items()}
    outputs = run_windows(apply_fn, np.asarray(features)[plan.windows], batch_size, windowed)
    return {k: v[plan.window_of, plan.offset] for k, v in outputs.items()}


# Frames per call of the jitted per-frame errors: every video is cut into chunks of this size
# (the last one padded), so one compiled program serves videos of every length.
CHUNK = 128


@functools.partial(jax.jit, static_argnames=("selection", "with_pve"))
def _chunk_errors(body_model, pred_joints, pred_vertices, gt, conf, pose, shape, has_smpl, *,
                  selection: EvalJoints, with_pve: bool):  # fmt: skip
    """Per-frame errors of one chunk: the compared predicted joints [C, J, 3] and MPJPE,
    PA-MPJPE, PVE, PVE-centred [C] (mm; NaN where unlabelled)."""
    if selection.from_vertices:
        pred_joints = smpl.layout_joints(body_model, pred_vertices, None, "common14")
    mpjpe = metrics.mpjpe(pred_joints, gt, selection.pelvis, conf)
    pa_mpjpe = metrics.pa_mpjpe(pred_joints, gt, conf)
    pve = centred = jnp.full(mpjpe.shape, jnp.nan)
    if with_pve:
        gt_vertices, _ = smpl.forward(body_model, shape, geometry.pose72_to_rotmats(pose))
        pve = jnp.where(has_smpl, metrics.pve(pred_vertices, gt_vertices), jnp.nan)
        pelvis = lambda v: smpl.layout_joints(body_model, v, None, "common14")[
            ..., list(COMMON14_PELVIS), :
        ].mean(-2)
        errors = metrics.pve(pred_vertices, gt_vertices, pelvis(pred_vertices), pelvis(gt_vertices))
        centred = jnp.where(has_smpl, errors, jnp.nan)
    return pred_joints, mpjpe, pa_mpjpe, pve, centred


def video_errors(
    pred: dict[str, np.ndarray],
    video: dict[str, np.ndarray],
    body_model: smpl.SMPLModel,
    joints: str = "vibe49",
) -> dict[str, np.ndarray]:
    """Per-frame errors (mm) of a sequence of predicted frames; NaN where the frame has no label
    for the metric.

    Args:
      pred: per-frame predictions: `joints3d` [N, 49, 3] (vibe49) and `vertices` [N, 6890, 3].
      video: the frames' labels (`kp3d`, `has_kp3d`, `pose`, `shape`, `has_smpl`), [N, ...]
        in the same order (the sequence the acceleration error differentiates).
      body_model: the body model of the ground-truth meshes and of J_regressor_h36m.
      joints: the joint set (see the module docstring and `EVAL_JOINTS`).

    Returns:
      {'MPJPE', 'PA-MPJPE', 'PVE', 'PVE-centred', 'Accel', 'MPJVE', 'MPJAE'}: [N] arrays
      (Accel and MPJAE NaN at the first and last frame, MPJVE at the first).
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
    pred_joints, mpjpe, pa_mpjpe, pve, centred = (
        np.concatenate(c)[:n] for c in zip(*chunks, strict=True)
    )
    valid = (video["has_kp3d"] > 0) & (inputs["conf"].sum(-1) > 0)
    centre = lambda j: (
        np.asarray(j, np.float64) - j[:, list(selection.pelvis)].mean(1, keepdims=True)
    )
    accel, _ = metrics.accel_error_videos(centre(pred_joints), centre(inputs["gt"]),
                                          np.zeros(n, np.int64), valid)  # fmt: skip
    accel = np.concatenate([[np.nan], accel, [np.nan]]) if len(accel) else np.full(n, np.nan)
    velocity, _ = metrics.velocity_error_videos(centre(pred_joints), centre(inputs["gt"]),
                                                np.zeros(n, np.int64), valid)  # fmt: skip
    velocity = np.concatenate([[np.nan], velocity]) if len(velocity) else np.full(n, np.nan)
    return {"MPJPE": mpjpe, "PA-MPJPE": pa_mpjpe, "PVE": pve, "PVE-centred": centred,
            "Accel": accel, "MPJVE": velocity, "MPJAE": accel.copy()}  # fmt: skip


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """`array` [n, ...] padded with zeros (False) to [size, ...]."""
    pad = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(np.asarray(array), pad)


LABEL_FIELDS = ("kp3d", "has_kp3d", "pose", "shape", "has_smpl")


def score_video(
    apply_fn: Callable,
    video: dict[str, np.ndarray],
    body_model: smpl.SMPLModel,
    window: int,
    protocol: str = "vibe",
    joints: str = "vibe49",
    input_fields: tuple[str, ...] = (),
) -> dict[str, np.ndarray] | None:
    """The per-frame errors of one video's scored frames under `protocol` (None if it scores
    none): {metric: [F]} (NaN where not scored or not labelled) and 'frames' [F] (video frames).
    `input_fields`: the video's fields the model reads besides its features (`predict_frames`).
    """
    plan = frame_plan(len(video["features"]), window, protocol,
                      video.get("valid"), video.get("valid_i"))  # fmt: skip
    if not plan.scored.any():
        return None
    inputs = {k: video[k] for k in input_fields}
    pred = predict_frames(apply_fn, video["features"], plan, inputs=inputs)
    labels = {k: np.asarray(video[k])[plan.frames] for k in LABEL_FIELDS}
    errors = video_errors(pred, labels, body_model, joints)
    errors = {k: np.where(plan.scored, v, np.nan) for k, v in errors.items()}
    return {**errors, "frames": plan.frames}


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.warning(message)


def evaluate_videos(
    apply_fn: Callable,
    videos: Iterable[dict[str, np.ndarray]],
    body_model: smpl.SMPLModel,
    window: int,
    protocol: str = "vibe",
    max_videos: int = 0,
    joints: str = "vibe49",
    input_fields: tuple[str, ...] = (),
) -> dict:
    """Runs the model over whole videos and aggregates the errors of the scored frames.

    Args:
      apply_fn: maps features [W, T, D] to per-frame outputs (`joints3d`, `vertices`, ...).
      videos: whole videos (dicts of [N, ...] arrays, `vid_name`, and optionally the file's
        flags `valid` / `valid_i` [N]).
      body_model: the body model (ground-truth meshes, J_regressor_h36m).
      window: T.
      protocol: 'vibe' or 'tcmr'.
      max_videos: stop after this many videos (0: all).
      joints: the joint set, a key of `EVAL_JOINTS`.
      input_fields: the video fields `apply_fn` takes besides the features, as keyword
        arguments (the model's `evaluation_inputs`: PC-HMR's kp2d or pose labels).

    Returns:
      {'overall': {metric: mm}, 'videos': {vid_name: {metric: mm, 'frames': scored}},
      'frames': the number of scored frames (frames with an MPJPE), 'skipped': names of the
      videos the protocol scores nothing of, 'protocol', 'joints'}.
    """
    get_eval_joints(joints)  # an unknown name fails before any video is run
    per_video, pooled, skipped = {}, {}, []
    for i, video in enumerate(videos):
        if max_videos and i >= max_videos:
            break
        name = str(video["vid_name"])
        if protocol == "tcmr" and joints == "mpii3d17" and video.get("valid_i") is None:
            _warn_once(f"video '{name}' has no valid_i flags (MPI-INF-3DHP test frames): "
                       "the tcmr protocol scores all its frames, TCMR only the valid "
                       "ones.")  # fmt: skip
        errors = score_video(apply_fn, video, body_model, window, protocol, joints,
                             input_fields)  # fmt: skip
        if errors is None:
            skipped.append(name)
            continue
        frames = errors.pop("frames")
        scored = int(np.isfinite(errors["MPJPE"]).sum())
        per_video[name] = {**metrics.summarize(errors), "frames": scored,
                           "first_frame": int(frames[0]),
                           "last_frame": int(frames[-1])}  # fmt: skip
        for k, v in errors.items():
            pooled.setdefault(k, []).append(v)
    if not per_video:
        raise ValueError(f"evaluation found no video the '{protocol}' protocol scores (videos "
                         f"need at least {window} frames).")  # fmt: skip
    overall = metrics.summarize({k: np.concatenate(v) for k, v in pooled.items()})
    frames = int(sum(np.isfinite(v).sum() for v in pooled["MPJPE"]))
    return {"overall": overall, "videos": per_video, "frames": frames, "skipped": skipped,
            "protocol": protocol, "joints": joints}  # fmt: skip


def results_table(runs: dict[str, dict]) -> str:
    """The markdown table of several runs' results (label -> `evaluate_videos` results): the
    metrics (MPJVE in mm/frame, MPJAE in mm/frame^2), the number of scored frames and, when
    every run carries one ('params'), the model's parameter count."""
    rows = {label: {**r["overall"], "Frames": r["frames"], "Params": r.get("params")}
            for label, r in runs.items()}  # fmt: skip
    with_params = all(row["Params"] is not None for row in rows.values())
    columns = (*metrics.TABLE_COLUMNS, *metrics.MOTION_COLUMNS, "Frames",
               *(("Params",) if with_params else ()))  # fmt: skip
    return metrics.format_table(rows, columns)


def write_results(results: dict, workdir: str, split: str, label: str) -> str:
    """Writes workdir/eval/<split>.json and <split>.md; returns the markdown table
    (`results_table` of this one run)."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
        json.dump(results, f, indent=1, allow_nan=True)
    table = results_table({label: results})
    with open(os.path.join(out_dir, f"{split}.md"), "w") as f:
        f.write(table + "\n")
    return table
