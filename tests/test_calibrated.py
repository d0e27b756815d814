"""PC-HMR on top of a base run: serial targets by value, calibrated meshes hit their targets,
the side-by-side evaluation on a tiny case."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import calibrated, calibrated_eval, geometry, smpl
from lmr_jax.models import lifter as lifter_lib
from tests.models.small_models import body_model


@functools.lru_cache(maxsize=1)
def _frames():
    """Two 'regressed' frames (a perturbed pose) and their ground truth (pose, shape, kp2d)."""
    body = body_model()
    rng = np.random.default_rng(0)
    gt_pose = (rng.normal(size=(2, 72)) * 0.25).astype(np.float32)
    gt_pose[:, :3] = [np.pi, 0.0, 0.0]  # the camera frame, as every regressor starts
    shape = (rng.normal(size=(2, 10)) * 0.5).astype(np.float32)
    pred_pose = gt_pose + (rng.normal(size=(2, 72)) * 0.3).astype(np.float32)
    pred_pose[:, :3] = gt_pose[:, :3]
    forward = jax.jit(lambda p, s: smpl.forward(body, s, geometry.pose72_to_rotmats(p)))
    vertices, joints = forward(pred_pose, np.zeros_like(shape))
    joints3d = smpl.layout_joints(body, vertices, joints, "vibe49")
    cam = np.asarray([[0.9, 0.05, -0.1], [1.1, -0.2, 0.1]], np.float32)
    pred = {"vertices": np.asarray(vertices), "joints3d": np.asarray(joints3d), "cam": cam}
    gt_vertices, gt_joints = forward(gt_pose, shape)
    kp2d = calibrated.serial_keypoints(smpl.layout_joints(body, gt_vertices, gt_joints, "vibe49"),
                                       cam)  # fmt: skip
    labels = {"pose": gt_pose, "shape": shape, "kp2d": np.asarray(kp2d)}
    return pred, labels


def test_serial_keypoints_are_the_weak_perspective_projection():
    joints = jnp.asarray([[[0.1, -0.2, 3.0], [0.0, 0.4, -1.0]]])
    cam = jnp.asarray([[2.0, 0.5, -0.25]])
    kp = np.asarray(calibrated.serial_keypoints(joints, cam))
    np.testing.assert_allclose(kp, [[[1.2, -0.9, 1.0], [1.0, 0.3, 1.0]]], atol=1e-6)


class _PerfectLifter:
    """The stub 'lifter': records its input, returns the true pelvis-relative joints."""

    def __init__(self, true_rel):
        self.true_rel, self.seen = true_rel, []

    def lift(self, kp2d):  # [F', 49, 3] -> [F', 17, 3]; F' >= F: padded frames get zeros
        self.seen.append(kp2d)
        out = jnp.zeros((*kp2d.shape[:-2], *self.true_rel.shape[1:]))
        return out.at[: len(self.true_rel)].set(self.true_rel)


def test_serial_targets_with_a_perfect_lifter_give_a_mesh_on_the_targets():
    body = body_model()
    pred, labels = _frames()
    true_rel = np.asarray(lifter_lib.lifter_targets(body, labels["pose"], labels["shape"]))
    stub = _PerfectLifter(true_rel)
    joints_hmr = smpl.layout_joints(body, pred["vertices"], None, "h36m17")
    targets = calibrated.serial_targets(stub.lift, pred["joints3d"], pred["cam"], joints_hmr)
    kp2d = geometry.weak_perspective_project(pred["joints3d"], pred["cam"])
    np.testing.assert_allclose(np.asarray(stub.seen[0])[..., :2], kp2d, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(stub.seen[0])[..., 2], 1.0)
    np.testing.assert_allclose(targets, true_rel + np.asarray(joints_hmr)[:, :1], atol=1e-6)
    # What `lmr-predict --calibration` runs, with the same stub lifter.
    out = calibrated.serial_calibration(stub, body, pred["vertices"], pred["joints3d"],
                                        pred["cam"])  # fmt: skip
    np.testing.assert_allclose(out["joints_h36m17_target"], targets, atol=1e-5)
    joints_cal = smpl.layout_joints(body, jnp.asarray(out["vertices_calibrated"]), None, "h36m17")
    before = np.linalg.norm(np.asarray(joints_hmr) - np.asarray(targets), axis=-1).mean()
    after = np.linalg.norm(np.asarray(joints_cal) - np.asarray(targets), axis=-1).mean()
    assert before > 0.03  # the regressed pose is tens of mm off
    assert after < 0.003  # the untrained calibration's exactness (module docstring: ~1 mm)


def test_side_by_side_with_gt_targets_lowers_the_errors():
    body = body_model()
    pred, labels = _frames()
    n, window = 2, 2
    video = {
        "features": np.zeros((n, 4), np.float32),
        "kp2d": labels["kp2d"],
        "pose": labels["pose"],
        "shape": labels["shape"],
        "has_smpl": np.ones(n, np.float32),
        "has_kp3d": np.ones(n, np.float32),
        "vid_name": "v",
    }
    gt_vertices, gt_joints = smpl.forward(body, labels["shape"],
                                          geometry.pose72_to_rotmats(labels["pose"]))  # fmt: skip
    kp3d = np.asarray(smpl.layout_joints(body, gt_vertices, gt_joints, "vibe49"))
    video["kp3d"] = np.concatenate([kp3d, np.ones((n, 49, 1))], -1).astype(np.float32)

    def apply_fn(features):  # the base run: the regressed frames, whatever the window
        return {k: v[None] for k, v in pred.items()}

    results = calibrated_eval.evaluate_calibrated(apply_fn, [video], body, window, None,
                                             calibrated.initial_weights(body),
                                             modes=("gt",))  # fmt: skip
    base, gt = results["base"]["overall"], results["gt"]["overall"]
    assert results["gt"]["frames"] == n
    assert gt["MPJPE"] < 0.5 * base["MPJPE"]
    assert gt["PVE"] < 0.5 * base["PVE"]
    assert gt["PA-MPJPE"] < base["PA-MPJPE"]
    table = calibrated_eval.results_table(results)
    assert "GT 3D pose (upper bound)" in table and "base (uncalibrated)" in table
