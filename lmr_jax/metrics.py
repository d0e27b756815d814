"""Evaluation metrics: MPJPE, PA-MPJPE, PVE, acceleration error, MPJVE / MPJAE, and tables.

Inputs are in metres; every metric is reported in millimetres (acceleration in mm/frame^2, as VIBE
reports it).

MPJVE and MPJAE (DSD-SATN's Tables 4-5, mean per-joint velocity and acceleration errors): the
first (velocity) and second (acceleration) differences of the joint positions inside each video,
the norm of prediction minus ground truth per joint, averaged over joints and frames, in
mm/frame and mm/frame^2. The paper reports them in mm/s and mm/s^2, i.e. times the frame rate
(times its square), which our data do not carry; multiply by fps (fps^2) to compare. MPJAE is
exactly VIBE's acceleration error (`accel_error`, VIBE's `compute_error_accel`: the mean over
joints of the norm of the second differences' difference): both are computed by the same
function, so 'MPJAE' equals 'Accel'.

The per-frame functions are `jnp`, batched over any leading shape and jit-able;
`accel_error_videos`, `velocity_error_videos`, `summarize` and `format_table` are host-side
numpy helpers.

Masking convention: a per-frame metric is NaN for a frame whose weights are all zero (or whose
acceleration window touches an invalid frame). `summarize` averages with NaNs ignored, so masked
frames drop out of the reported means instead of counting as zero error.
"""

import math
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from lmr_jax.geometry import procrustes_align
from lmr_jax.smpl.layouts import COMMON14_PELVIS  # mid-hips of the 14 common joints

__all__ = [
    "COMMON14_PELVIS",
    "accel_error",
    "accel_error_videos",
    "velocity_error",
    "velocity_error_videos",
    "center_on_pelvis",
    "MOTION_COLUMNS",
    "TABLE_COLUMNS",
    "format_params",
    "format_table",
    "mpjpe",
    "pa_mpjpe",
    "pve",
    "summarize",
]

_M_TO_MM = 1000.0

PelvisIndex = int | Sequence[int]


def center_on_pelvis(joints: jnp.ndarray, pelvis_index: PelvisIndex) -> jnp.ndarray:
    """Translates joints so that the pelvis is at the origin.

    Args:
        joints: `[..., J, 3]`.
        pelvis_index: index of the pelvis joint, or several indices whose mean is the pelvis
            (`COMMON14_PELVIS` for the 14-joint set, whose pelvis is the mid-hips).

    Returns:
        Pelvis-centred joints, `[..., J, 3]`.
    """
    indices = [pelvis_index] if isinstance(pelvis_index, int) else list(pelvis_index)
    pelvis = jnp.mean(joints[..., indices, :], axis=-2, keepdims=True)
    return joints - pelvis


def _masked_joint_mean(errors: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Weighted mean over the last (joint) axis; NaN where all weights are zero.

    `mask` is `[...]` (per frame) or `[..., J]` (per joint), told apart by its rank.
    """
    if mask is None:
        return jnp.mean(errors, axis=-1)
    mask = jnp.asarray(mask, dtype=errors.dtype)
    if mask.ndim < errors.ndim:
        mask = mask[..., None]
    mask = jnp.broadcast_to(mask, errors.shape)
    total = jnp.sum(mask, axis=-1)
    # Inner where keeps the division finite so gradients through unmasked frames stay clean.
    mean = jnp.sum(mask * errors, axis=-1) / jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, mean, jnp.nan)


def mpjpe(
    pred: jnp.ndarray,
    gt: jnp.ndarray,
    pelvis: PelvisIndex | None = COMMON14_PELVIS,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Mean per-joint position error in mm, after centring both skeletons on their pelvis.

    Args:
        pred: predicted joints in metres, `[..., J, 3]`.
        gt: ground-truth joints in metres, `[..., J, 3]`.
        pelvis: pelvis index or indices (see `center_on_pelvis`); None compares raw positions.
        mask: optional weights, `[...]` per frame or `[..., J]` per joint (e.g. the dataset's
            joint confidence).

    Returns:
        Per-frame error in mm, `[...]`; NaN where the mask is all zero.
    """
    if pelvis is not None:
        pred = center_on_pelvis(pred, pelvis)
        gt = center_on_pelvis(gt, pelvis)
    errors = jnp.linalg.norm(pred - gt, axis=-1) * _M_TO_MM
    return _masked_joint_mean(errors, mask)


def pa_mpjpe(pred: jnp.ndarray, gt: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """MPJPE in mm after a per-frame similarity Procrustes alignment of `pred` onto `gt`.

    A per-joint mask also weights the alignment, so masked joints do not pull the fit.

    Args:
        pred: predicted joints in metres, `[..., J, 3]`.
        gt: ground-truth joints in metres, `[..., J, 3]`.
        mask: optional weights, `[...]` per frame or `[..., J]` per joint.

    Returns:
        Per-frame error in mm, `[...]`; NaN where the mask is all zero.
    """
    joint_weights = None
    if mask is not None and jnp.ndim(mask) == jnp.ndim(pred) - 1:
        joint_weights = jnp.asarray(mask, dtype=pred.dtype)
    aligned = procrustes_align(pred, gt, weights=joint_weights)
    return mpjpe(aligned, gt, pelvis=None, mask=mask)


def pve(
    pred_verts: jnp.ndarray,
    gt_verts: jnp.ndarray,
    pelvis_pred: jnp.ndarray | None = None,
    pelvis_gt: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Per-vertex error in mm (mean Euclidean distance over all vertices).

    Without pelvis positions this is VIBE's and TCMR's `compute_error_verts`
    (lib/utils/eval_utils.py): the two meshes as the body model outputs them, no translation,
    no re-centring (evaluation's 'PVE'). With the pelvis positions of the predicted and
    ground-truth joints both meshes are translated by them first (evaluation's 'PVE-centred').

    Args:
        pred_verts: predicted vertices in metres, `[..., V, 3]`.
        gt_verts: ground-truth vertices in metres, `[..., V, 3]`.
        pelvis_pred: optional predicted pelvis position, `[..., 3]`.
        pelvis_gt: optional ground-truth pelvis position, `[..., 3]`.

    Returns:
        Per-frame error in mm, `[...]`.

    Raises:
        ValueError: if only one of the two pelvis positions is given.
    """
    if (pelvis_pred is None) != (pelvis_gt is None):
        raise ValueError("pve needs both pelvis_pred and pelvis_gt, or neither.")
    if pelvis_pred is not None:
        pred_verts = pred_verts - pelvis_pred[..., None, :]
        gt_verts = gt_verts - pelvis_gt[..., None, :]
    return jnp.mean(jnp.linalg.norm(pred_verts - gt_verts, axis=-1), axis=-1) * _M_TO_MM


def _difference_error(pred, gt, valid, order, xp):
    """Shared body of the velocity (`order` 1) and acceleration (2) errors; `xp` is `jnp` or
    `np` (same API for these ops): per-frame [..., T - order] mean over joints of the norm of
    the finite differences' difference, in mm (per frame^order)."""
    n = pred.shape[-3]

    def diff(x):
        if order == 1:
            return x[..., 1:, :, :] - x[..., :-1, :, :]
        return x[..., :-2, :, :] - 2 * x[..., 1:-1, :, :] + x[..., 2:, :, :]

    errors = xp.mean(xp.linalg.norm(diff(pred) - diff(gt), axis=-1), axis=-1) * _M_TO_MM
    if valid is None:
        return errors
    valid = xp.asarray(valid, dtype=bool)
    window_valid = valid[..., : n - order]
    for k in range(1, order + 1):
        window_valid = window_valid & valid[..., k : n - order + k]
    return xp.where(window_valid, errors, xp.nan)


def _accel_error(pred, gt, valid, xp):
    """Shared body of the acceleration errors; `xp` is `jnp` or `np`."""
    return _difference_error(pred, gt, valid, 2, xp)


def velocity_error(
    pred: jnp.ndarray, gt: jnp.ndarray, valid: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Velocity error (MPJVE) in mm/frame of one contiguous sequence.

    For each t >= 1 the first differences x[t] - x[t-1] of prediction and ground truth are
    compared; the error is the norm of their difference, averaged over joints.

    Args:
        pred: predicted joints in metres, `[..., T, J, 3]`.
        gt: ground-truth joints in metres, `[..., T, J, 3]`.
        valid: optional frame validity, `[..., T]` bool; entry t counts only when frames t-1
            and t are both valid; others are NaN.

    Returns:
        Per-frame error, `[..., T-1]`, entry i belonging to frame i + 1.
    """
    return _difference_error(pred, gt, valid, 1, jnp)


def velocity_error_videos(
    pred: np.ndarray,
    gt: np.ndarray,
    video_ids: np.ndarray,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Velocity error (MPJVE, mm/frame) over concatenated videos, never across a video
    boundary: as `accel_error_videos` with first differences (entry i belongs to the pair of
    frames i, i + 1 of one video)."""
    return _videos_error(pred, gt, video_ids, valid, 1)


def _videos_error(pred, gt, video_ids, valid, order):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    video_ids = np.asarray(video_ids)
    if len(video_ids) <= order:
        return np.zeros((0,), np.float64), math.nan
    errors = _difference_error(pred, gt, valid, order, np)
    n = len(video_ids)
    # A difference is kept only when its order + 1 frames all belong to one video.
    same_video = np.ones(n - order, bool)
    for k in range(1, order + 1):
        same_video &= video_ids[k : n - order + k] == video_ids[: n - order]
    errors = errors[same_video]
    finite = errors[~np.isnan(errors)]
    mean = float(finite.mean()) if finite.size else math.nan
    return errors, mean


def accel_error(
    pred: jnp.ndarray, gt: jnp.ndarray, valid: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Acceleration error in mm/frame^2 of one contiguous sequence.

    For each interior frame t the second difference x[t-1] - 2 x[t] + x[t+1] of prediction and
    ground truth are compared; the error is the norm of their difference, averaged over joints.

    Args:
        pred: predicted joints in metres, `[..., T, J, 3]`.
        gt: ground-truth joints in metres, `[..., T, J, 3]`.
        valid: optional frame validity, `[..., T]` bool. The value at t counts only when frames
            t-1, t and t+1 are all valid; others are NaN.

    Returns:
        Per-frame error, `[..., T-2]`, entry i belonging to frame i + 1.
    """
    return _accel_error(pred, gt, valid, jnp)


def accel_error_videos(
    pred: np.ndarray,
    gt: np.ndarray,
    video_ids: np.ndarray,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Acceleration error over concatenated videos, never across a video boundary.

    Runs of contiguous equal `video_ids` are videos. A second difference is kept only when its three
    frames belong to the same run, so the jump between two videos never produces a spike. The
    result equals concatenating `accel_error` of every run.

    Args:
        pred: predicted joints in metres, `[N, J, 3]`.
        gt: ground-truth joints in metres, `[N, J, 3]`.
        video_ids: `[N]` id per frame (ints or strings).
        valid: optional frame validity, `[N]` bool.

    Returns:
        (per-frame errors in mm/frame^2, NaN where invalid, concatenated over videos;
        their mean over valid entries, NaN if there is none).
    """
    return _videos_error(pred, gt, video_ids, valid, 2)


def summarize(per_frame: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Means of per-frame metrics, ignoring NaN and masked entries.

    Masked frames are NaN in the per-frame arrays (see the module docstring); entries masked in a
    `numpy.ma.MaskedArray` are ignored as well. A metric with no valid entry summarises to NaN.

    Args:
        per_frame: metric name -> array of per-frame values (any shape, flattened).

    Returns:
        Metric name -> mean as a Python float.
    """
    summary = {}
    for name, values in per_frame.items():
        if isinstance(values, np.ma.MaskedArray):
            values = values.astype(np.float64).filled(np.nan)
        flat = np.asarray(values, dtype=np.float64).ravel()
        flat = flat[~np.isnan(flat)]
        summary[name] = float(flat.mean()) if flat.size else math.nan
    return summary


TABLE_COLUMNS = ("MPJPE", "PA-MPJPE", "PVE", "Accel")
# MPJVE (mm/frame) and MPJAE (mm/frame^2, equal to Accel) of DSD-SATN's Tables 4-5.
MOTION_COLUMNS = ("MPJVE", "MPJAE")


def format_params(count: int) -> str:
    """A parameter count as a table shows it: '29.6M', '412.3k', '950'."""
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    return f"{count / 1e3:.1f}k" if count >= 1e3 else str(count)


def format_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[str] = TABLE_COLUMNS,
) -> str:
    """Markdown table of summarised metrics, one row per method, one decimal.

    Args:
        rows: method name -> (metric name -> value), e.g. the output of `summarize`.
        columns: metric names to show, in order. Missing or NaN values print as "-";
            'Frames' prints as an integer and 'Params' as a parameter count ('29.6M').

    Returns:
        The table as a string, lines joined by newlines, no trailing newline.
    """

    def cell(value: float | None, column: str = "") -> str:
        if value is None or math.isnan(value):
            return "-"
        if column == "Params":
            return format_params(int(value))
        return str(int(value)) if column == "Frames" else f"{value:.1f}"

    lines = [
        "| Method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, metrics in rows.items():
        values = [cell(metrics.get(column), column) for column in columns]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)
