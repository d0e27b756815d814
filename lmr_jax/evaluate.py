"""Evaluation over whole test videos: sliding windows, MPJPE, PA-MPJPE, PVE and acceleration
error in millimetres, per video and overall, written as JSON and a markdown table.

Protocols (`protocol`):
- 'vibe': every frame is predicted once, from consecutive windows of T frames (stride T; the
  last window is moved back to end at the last frame, and only its new frames are used);
- 'tcmr': one stride-1 window centred on every frame (edges padded by repeating the first and
  last frame), keeping the window's middle frame; only frames with 3D labels count.
Joints are the 14 common joints (`vibe49` entries 25..38), centred on the mid-hips. PVE compares
meshes from the predicted and ground-truth SMPL parameters on the same body model, each centred
on the mid-hips of its own 14 joints; it is reported where ground-truth SMPL exists. The
acceleration error is computed per video on the frames that have 3D labels, never across two
videos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry, metrics, smpl
from lmr_jax.smpl import COMMON14_PELVIS, VIBE49_TO_COMMON14

COMMON = np.asarray(VIBE49_TO_COMMON14)


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


def video_errors(
    pred: dict[str, np.ndarray], video: dict[str, np.ndarray], body_model: smpl.SMPLModel
) -> dict[str, np.ndarray]:
    """Per-frame errors (mm) of one video; NaN where the frame has no label for the metric."""
    gt_joints = video["kp3d"][:, COMMON, :3]
    conf = video["kp3d"][:, COMMON, 3] * video["has_kp3d"][:, None]
    pred_joints = pred["joints3d"][:, COMMON]
    out = {
        "MPJPE": np.asarray(metrics.mpjpe(pred_joints, gt_joints, COMMON14_PELVIS, conf)),
        "PA-MPJPE": np.asarray(metrics.pa_mpjpe(pred_joints, gt_joints, conf)),
    }
    has_smpl = video["has_smpl"] > 0
    pve = np.full(len(gt_joints), np.nan)
    if has_smpl.any():
        rot = geometry.pose72_to_rotmats(jnp.asarray(video["pose"][has_smpl], jnp.float32))
        gt_verts, _ = smpl.forward(body_model, jnp.asarray(video["shape"][has_smpl]), rot)
        pred_verts = jnp.asarray(pred["vertices"][has_smpl])
        # Both meshes are centred on the same mesh-regressed mid-hips (common-14 joints).
        pelvis = lambda v: smpl.layout_joints(body_model, v, None, "common14")[
            ..., list(COMMON14_PELVIS), :
        ].mean(-2)
        pve[has_smpl] = np.asarray(
            metrics.pve(pred_verts, gt_verts, pelvis(pred_verts), pelvis(gt_verts))
        )
    out["PVE"] = pve
    valid = (video["has_kp3d"] > 0) & (conf.sum(-1) > 0)
    centre = lambda j: np.asarray(metrics.center_on_pelvis(j, COMMON14_PELVIS))
    accel = np.asarray(metrics.accel_error(centre(pred_joints), centre(gt_joints), valid))
    out["Accel"] = np.concatenate([[np.nan], accel, [np.nan]]) if len(accel) else accel
    return out


def evaluate_videos(
    apply_fn: Callable,
    videos: Iterable[dict[str, np.ndarray]],
    body_model: smpl.SMPLModel,
    window: int,
    protocol: str = "vibe",
    max_videos: int = 0,
) -> dict:
    """Runs the model over whole videos and aggregates the errors.

    Returns:
      {'overall': {metric: mm}, 'videos': {vid_name: {metric: mm}}, 'frames': count}.
    """
    per_video, pooled = {}, {}
    for i, video in enumerate(videos):
        if max_videos and i >= max_videos:
            break
        pred = predict_video(apply_fn, video["features"], window, protocol)
        errors = video_errors(pred, video, body_model)
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
    return {"overall": overall, "videos": per_video, "frames": frames, "protocol": protocol}


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
