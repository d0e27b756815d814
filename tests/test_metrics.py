"""Tests for lmr_jax.metrics: joint, vertex and acceleration errors, aggregation and tables."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lmr_jax import metrics

# Eager dispatch compiles every primitive on its own; jitting keeps the file fast.
mpjpe = jax.jit(metrics.mpjpe, static_argnames="pelvis")
pa_mpjpe = jax.jit(metrics.pa_mpjpe)
accel_error = jax.jit(metrics.accel_error)


def _joints(seed: int, shape=(14,)) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.3, size=(*shape, 3)).astype(np.float32)


# ---------------------------------------------------------------- pelvis and MPJPE


def test_center_on_pelvis_mid_hips_and_single_index():
    joints = _joints(0, (2, 14))
    centred = np.asarray(metrics.center_on_pelvis(joints, metrics.COMMON14_PELVIS))
    mid_hips = 0.5 * (centred[:, 2] + centred[:, 3])
    np.testing.assert_allclose(mid_hips, 0.0, atol=1e-6)
    np.testing.assert_allclose(
        centred - joints, np.broadcast_to(centred[:, :1] - joints[:, :1], joints.shape), atol=1e-6
    )
    single = np.asarray(metrics.center_on_pelvis(joints, 5))
    np.testing.assert_allclose(single[:, 5], 0.0, atol=1e-7)
    np.testing.assert_allclose(single, joints - joints[:, 5:6], atol=1e-7)


def test_mpjpe_of_a_known_offset_is_the_offset_in_mm():
    gt = _joints(1, (3, 14))
    pred = gt + np.array([0.03, 0.04, 0.0], np.float32)
    got = mpjpe(pred, gt, pelvis=None)
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(np.asarray(got), 50.0, rtol=1e-4)
    # A global translation disappears after pelvis centring.
    np.testing.assert_allclose(np.asarray(mpjpe(pred, gt)), 0.0, atol=1e-3)


def test_mpjpe_single_joint_error_after_mid_hip_centring():
    gt = _joints(2)
    pred = gt.copy()
    pred[10] += np.array([0.0, 0.1, 0.0], np.float32)  # 100 mm on one non-hip joint
    np.testing.assert_allclose(float(mpjpe(pred, gt)), 100.0 / 14, rtol=1e-4)
    # Moving one hip shifts the mid-hips by half of it, so every other joint moves by 25 mm.
    pred = gt.copy()
    pred[2] += np.array([0.05, 0.0, 0.0], np.float32)
    np.testing.assert_allclose(float(mpjpe(pred, gt)), 25.0, rtol=1e-4)


def test_mpjpe_masks_joints_and_frames():
    gt = _joints(3, (2, 14))
    pred = gt.copy()
    pred[:, 7] += np.array([0.0, 0.0, 0.2], np.float32)
    joint_mask = np.ones((2, 14), np.float32)
    joint_mask[:, 7] = 0.0
    np.testing.assert_allclose(np.asarray(mpjpe(pred, gt, mask=joint_mask)), 0.0, atol=1e-3)
    frame_mask = np.array([1.0, 0.0], np.float32)
    got = np.asarray(mpjpe(pred, gt, mask=frame_mask))
    np.testing.assert_allclose(got[0], 200.0 / 14, rtol=1e-4)
    assert np.isnan(got[1])


def test_pa_mpjpe_is_zero_for_a_similarity_copy():
    rng = np.random.default_rng(4)
    gt = _joints(4, (5, 14))
    rot = Rotation.random(5, random_state=rng).as_matrix()
    pred = 0.7 * np.einsum("bij,bnj->bni", rot, gt) + rng.normal(size=(5, 1, 3))
    pred = pred.astype(np.float32)
    np.testing.assert_allclose(np.asarray(pa_mpjpe(pred, gt)), 0.0, atol=0.05)
    assert np.all(np.asarray(mpjpe(pred, gt)) > 10.0)


def test_pa_mpjpe_is_at_most_mpjpe_and_masks():
    gt = _joints(5, (4, 14))
    pred = gt + np.random.default_rng(50).normal(scale=0.05, size=gt.shape).astype(np.float32)
    pa = np.asarray(pa_mpjpe(pred, gt))
    plain = np.asarray(mpjpe(pred, gt, pelvis=None))
    assert np.all(pa > 1.0) and np.all(pa <= plain + 1e-3)
    joint_mask = np.ones((4, 14), np.float32)
    joint_mask[:, 0] = 0.0
    pred_outlier = pred.copy()
    pred_outlier[:, 0] += 3.0  # a masked joint must not pull the alignment
    masked = np.asarray(pa_mpjpe(pred_outlier, gt, mask=joint_mask))
    np.testing.assert_allclose(masked, np.asarray(pa_mpjpe(pred[:, 1:], gt[:, 1:])), rtol=1e-3)
    frames = np.asarray(pa_mpjpe(pred, gt, mask=np.array([1.0, 1.0, 0.0, 1.0], np.float32)))
    assert np.isnan(frames[2]) and np.all(np.isfinite(frames[[0, 1, 3]]))


# ---------------------------------------------------------------- PVE


def test_pve_with_and_without_pelvis():
    verts = _joints(6, (2, 50))
    shift = np.array([0.0, 0.3, 0.4], np.float32)
    got = np.asarray(metrics.pve(verts + shift, verts))
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, 500.0, rtol=1e-4)
    pelvis_gt = np.zeros((2, 3), np.float32)
    pelvis_pred = np.broadcast_to(shift, (2, 3))
    centred = np.asarray(metrics.pve(verts + shift, verts, pelvis_pred, pelvis_gt))
    np.testing.assert_allclose(centred, 0.0, atol=1e-3)
    with pytest.raises(ValueError, match="pelvis_pred and pelvis_gt"):
        metrics.pve(verts, verts, pelvis_pred=pelvis_pred)


# ---------------------------------------------------------------- acceleration


def test_accel_error_of_a_known_acceleration():
    # pred = gt + 0.5 a t^2 has a second difference of exactly a per frame^2.
    accel = np.array([0.003, -0.004, 0.012], np.float64)  # |a| = 13 mm/frame^2
    t = np.arange(20, dtype=np.float64)[:, None, None]
    gt = np.random.default_rng(7).normal(size=(20, 14, 3))
    pred = gt + 0.5 * accel * t**2
    got = np.asarray(accel_error(pred.astype(np.float32), gt.astype(np.float32)))
    chex.assert_shape(got, (18,))
    np.testing.assert_allclose(got, 13.0, rtol=2e-3)
    per_frame, mean = metrics.accel_error_videos(pred, gt, np.zeros(20, int))
    np.testing.assert_allclose(per_frame, 13.0, rtol=1e-9)
    assert math.isclose(mean, 13.0, rel_tol=1e-9)


def test_accel_error_valid_mask_drops_windows_touching_invalid_frames():
    gt = _joints(8, (10, 14))
    pred = gt + _joints(9, (10, 14)) * 0.1
    valid = np.ones(10, bool)
    valid[5] = False
    got = np.asarray(accel_error(pred, gt, valid))
    # Entry i is centred on frame i + 1; frames 4, 5, 6 have frame 5 in their window.
    assert np.array_equal(np.isnan(got), np.isin(np.arange(8), [3, 4, 5]))
    np.testing.assert_allclose(
        got[~np.isnan(got)], np.asarray(accel_error(pred, gt))[~np.isnan(got)]
    )


def test_accel_error_videos_has_no_spike_at_the_boundary():
    t = np.arange(12, dtype=np.float64)[:, None, None]
    base = np.random.default_rng(10).normal(size=(1, 14, 3))
    video_a = base + 0.01 * t
    video_b = base + 5.0 - 0.02 * t  # a 5 m jump between the two videos
    gt = np.concatenate([video_a, video_b])
    pred = gt + 0.5 * np.array([0.0, 0.002, 0.0]) * np.concatenate([t, t]) ** 2
    ids = np.array(["a"] * 12 + ["b"] * 12)
    per_frame, mean = metrics.accel_error_videos(pred, gt, ids)
    assert per_frame.shape == (20,)
    np.testing.assert_allclose(per_frame, 2.0, rtol=1e-9)
    assert math.isclose(mean, 2.0, rel_tol=1e-9)
    # Computed across the boundary, the restart of the quadratic would spike.
    naive = np.asarray(metrics.accel_error(pred, gt))
    assert naive.max() > 50.0


def test_accel_error_videos_equals_per_video_runs_with_mask():
    rng = np.random.default_rng(11)
    gt = rng.normal(size=(15, 5, 3))
    pred = gt + rng.normal(scale=0.01, size=gt.shape)
    ids = np.array([0] * 6 + [1] * 4 + [0] * 5)  # id 0 appears in two separate runs
    valid = np.ones(15, bool)
    valid[12] = False
    per_frame, mean = metrics.accel_error_videos(pred, gt, ids, valid)
    runs = [slice(0, 6), slice(6, 10), slice(10, 15)]
    expected = np.concatenate([np.asarray(accel_error(pred[r], gt[r], valid[r])) for r in runs])
    assert per_frame.shape == (4 + 2 + 3,)
    np.testing.assert_allclose(per_frame, expected, rtol=1e-4, equal_nan=True)
    assert np.isnan(per_frame).sum() == 3
    np.testing.assert_allclose(mean, np.nanmean(expected), rtol=1e-4)


def test_accel_error_videos_short_inputs():
    per_frame, mean = metrics.accel_error_videos(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), [0, 0])
    assert per_frame.shape == (0,) and math.isnan(mean)
    per_frame, mean = metrics.accel_error_videos(
        np.zeros((4, 3, 3)), np.zeros((4, 3, 3)), [0, 0, 1, 1]
    )
    assert per_frame.shape == (0,) and math.isnan(mean)


# ---------------------------------------------------------------- aggregation


def test_summarize_ignores_nan_and_masked_entries():
    per_frame = {
        "MPJPE": np.array([10.0, np.nan, 20.0]),
        "PA-MPJPE": np.ma.MaskedArray([1.0, 100.0, 3.0], mask=[False, True, False]),
        "PVE": jnp.array([[4.0, 6.0]]),
        "Accel": np.array([np.nan, np.nan]),
    }
    summary = metrics.summarize(per_frame)
    assert summary["MPJPE"] == 15.0
    assert summary["PA-MPJPE"] == 2.0
    assert summary["PVE"] == 5.0
    assert math.isnan(summary["Accel"])
    assert all(isinstance(v, float) for v in summary.values())


def test_format_table():
    rows = {
        "LMR": {"MPJPE": 75.44, "PA-MPJPE": 51.96, "PVE": 90.0, "Accel": 6.25},
        "VIBE": {"MPJPE": 82.9, "PA-MPJPE": math.nan, "PVE": 99.1},
    }
    expected = "\n".join(
        [
            "| Method | MPJPE | PA-MPJPE | PVE | Accel |",
            "|---|---:|---:|---:|---:|",
            "| LMR | 75.4 | 52.0 | 90.0 | 6.2 |",
            "| VIBE | 82.9 | - | 99.1 | - |",
        ]
    )
    assert metrics.format_table(rows) == expected
    assert metrics.format_table(rows, columns=("PVE",)).splitlines()[2] == "| LMR | 90.0 |"


def _naive_motion_errors(pred, gt, ids, valid, order):
    """MPJVE (order 1) / MPJAE (order 2) by loops: per frame t of one video with its order + 1
    frames valid, the mean over joints of |d pred - d gt| in mm, d the finite difference."""
    coeffs = {1: (-1.0, 1.0), 2: (1.0, -2.0, 1.0)}[order]
    errors = []
    for t in range(len(ids) - order):
        frames = range(t, t + order + 1)
        if any(ids[f] != ids[t] for f in frames) or not all(valid[f] for f in frames):
            continue
        per_joint = []
        for j in range(pred.shape[1]):
            d = sum(c * (pred[f, j] - gt[f, j]) for c, f in zip(coeffs, frames, strict=True))
            per_joint.append(1000.0 * math.sqrt(sum(x * x for x in d)))
        errors.append(sum(per_joint) / len(per_joint))
    return errors


@pytest.mark.parametrize("order", [1, 2])
def test_mpjve_and_mpjae_match_a_naive_loop_inside_each_video(order):
    rng = np.random.default_rng(order)
    pred, gt = rng.normal(size=(2, 11, 4, 3)) * 0.05
    ids = np.array([0] * 5 + [1] * 2 + [2] * 4)  # three videos: no difference spans two
    valid = np.ones(11, bool)
    valid[9] = False
    fn = metrics.velocity_error_videos if order == 1 else metrics.accel_error_videos
    errors, mean = fn(pred, gt, ids, valid)
    want = _naive_motion_errors(pred, gt, ids, valid, order)
    finite = errors[~np.isnan(errors)]
    np.testing.assert_allclose(finite, want, rtol=1e-9)
    assert mean == pytest.approx(np.mean(want), rel=1e-9)
    # One video, jnp: the per-frame function gives the same values (units mm/frame^order).
    one = (metrics.velocity_error if order == 1 else metrics.accel_error)(pred[:5], gt[:5])
    np.testing.assert_allclose(one, _naive_motion_errors(pred[:5], gt[:5], ids[:5],
                                                         valid[:5], order), rtol=1e-5)  # fmt: skip


def test_mpjve_of_a_known_velocity_offset():
    gt = np.zeros((4, 2, 3))
    pred = gt.copy()
    pred[:, :, 0] = 0.002 * np.arange(4)[:, None]  # 2 mm/frame faster than the ground truth
    errors, mean = metrics.velocity_error_videos(pred, gt, np.zeros(4))
    np.testing.assert_allclose(errors, [2.0, 2.0, 2.0])
    assert mean == pytest.approx(2.0)
    _, accel = metrics.accel_error_videos(pred, gt, np.zeros(4))
    assert accel == pytest.approx(0.0)  # constant velocity: no acceleration error
