"""Scoring for the accuracy benchmark (experiments/benchmarks/accuracy.py): per-video errors with
their per-part and 2D-visibility breakdowns, and the ridge-regression floor.

Every score is kept as [sum, count] per video, so that pooling over videos (and over seeds) is
exact: `accuracy_tables.pooled` divides the sums by the counts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import evaluate, geometry, train
from lmr_jax.data import pipeline, synthetic
from lmr_jax.models.params import smpl_outputs
from lmr_jax.smpl import COMMON14_PELVIS, VIBE49_TO_COMMON14

PARTS = ("root", "head", "left_arm", "right_arm", "left_leg", "right_leg")
HIPS = [VIBE49_TO_COMMON14[i] for i in COMMON14_PELVIS]
RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)


def joint_errors(pred_joints: np.ndarray, gt_kp3d: np.ndarray) -> np.ndarray:
    """Per-joint distances (mm) [F, 49] of vibe49 joints, each set centred on its mid hips; NaN
    where the ground truth has confidence 0."""
    centre = lambda j: j - j[:, HIPS].mean(1, keepdims=True)
    gt = np.asarray(gt_kp3d, np.float64)
    pred = np.asarray(pred_joints, np.float64)
    dist = 1000.0 * np.linalg.norm(centre(pred) - centre(gt[..., :3]), axis=-1)
    return np.where(gt[..., 3] > 0, dist, np.nan)


def breakdown(errors: np.ndarray, kp2d: np.ndarray) -> dict[str, list[float]]:
    """Sums and counts ([sum, count]) of joint errors per part and by 2D visibility.

    Args:
      errors: [F, 49] `joint_errors`.
      kp2d: [F, 49, 3] the 2D keypoints the model saw (confidence 0: hidden).
    """
    parts = np.array(synthetic.joint_parts())
    out = {}
    for part in PARTS:
        values = errors[:, parts == part]
        out[part] = [float(np.nansum(values)), int(np.isfinite(values).sum())]
    common = np.asarray(VIBE49_TO_COMMON14)
    seen = kp2d[:, common, 2] > 0
    for name, mask in (("visible", seen), ("hidden", ~seen)):
        values = np.where(mask, errors[:, common], np.nan)
        out[name] = [float(np.nansum(values)), int(np.isfinite(values).sum())]
    return out


def score_videos(apply_fn, videos, body_model, window: int) -> dict:
    """Per-video errors of a model: {vid_name: {MPJPE, PA-MPJPE, Accel: [sum, count], parts and
    visibility: [sum, count]}} (sums and counts, so that pooling over videos is exact)."""
    out = {}
    for video in videos:
        plan = evaluate.frame_plan(len(video["features"]), window, "vibe")
        if not plan.scored.any():
            continue
        pred = evaluate.predict_frames(apply_fn, video["features"], plan)
        labels = {k: np.asarray(video[k])[plan.frames] for k in evaluate.LABEL_FIELDS}
        errors = evaluate.video_errors(pred, labels, body_model, "vibe49")
        row = {k: [float(np.nansum(errors[k])), int(np.isfinite(errors[k]).sum())]
               for k in ("MPJPE", "PA-MPJPE", "Accel")}  # fmt: skip
        per_joint = joint_errors(pred["joints3d"], labels["kp3d"])
        row.update(breakdown(per_joint, np.asarray(video["kp2d"])[plan.frames]))
        out[str(video["vid_name"])] = row
    return out


def split_videos(config, dataset: str, split: str):
    """The whole videos of a split, as the evaluation reads them."""
    return pipeline.eval_videos(train.eval_spec(config, dataset, split))


# ---------------------------------------------------------------------------------------------
# The ridge floor
# ---------------------------------------------------------------------------------------------


@jax.jit
def _rot6d(pose: jnp.ndarray) -> jnp.ndarray:
    rot6d = geometry.matrix_to_rot6d(geometry.pose72_to_rotmats(pose))
    return rot6d.reshape(pose.shape[0], -1)


def ridge_targets(video: dict) -> np.ndarray:
    """[N, 157] regression targets of a video: 6D rotations of the 24 joints, betas, camera
    (the rotations in fixed chunks of frames: one compiled program for every video length)."""
    rot6d = synthetic._chunked(_rot6d, np.asarray(video["pose"], np.float32))
    return np.concatenate([rot6d, video["shape"], video["cam"]], -1)


@jax.jit
def _ridge_forward(body_model, weights, features):
    out = features @ weights[:-1] + weights[-1]
    pose6d = out[..., :144].reshape(*out.shape[:-1], 24, 6)
    result = smpl_outputs(body_model, pose6d[None], out[None, ..., 144:154], out[None, ..., 154:],
                          "vibe49")  # fmt: skip
    return {"joints3d": result["joints3d"], "vertices": result["vertices"]}


def ridge_apply_fn(weights: np.ndarray, body_model):
    """The apply function (windows [W, T, D] -> outputs) of linear weights [D + 1, 157]; one
    compiled program serves every weight matrix of a shape."""
    return functools.partial(_ridge_forward, body_model, jnp.asarray(weights, jnp.float32))


def fit_ridge(config, body_model, lambdas=RIDGE_LAMBDAS) -> tuple[np.ndarray, dict]:
    """Ridge weights [D + 1, 157] on every training frame, the penalty chosen by the MPJPE on the
    validation videos the runs validate on (config.data.eval_max_videos of them).

    Returns: the weights and {lambda: validation MPJPE}."""
    gram, cross = None, None
    for video in split_videos(config, config.data.train.synthetic.name, "train"):
        x = np.concatenate([video["features"], np.ones((len(video["features"]), 1))], -1)
        x = x.astype(np.float64)
        y = ridge_targets(video).astype(np.float64)
        gram = x.T @ x if gram is None else gram + x.T @ x
        cross = x.T @ y if cross is None else cross + x.T @ y
    penalty = np.eye(len(gram))
    penalty[-1, -1] = 0.0  # the bias is not penalised
    best, curve = None, {}
    for lam in lambdas:
        weights = np.linalg.solve(gram + lam * penalty, cross)
        results = evaluate.evaluate_videos(
            ridge_apply_fn(weights, body_model), split_videos(config, config.data.validation.name,
                                                          "validation"),
            body_model, config.data.window, max_videos=config.data.eval_max_videos,
        )  # fmt: skip
        curve[lam] = results["overall"]["MPJPE"]
        if best is None or curve[lam] < curve[best[0]]:
            best = (lam, weights)
    return best[1], curve
