"""Evaluation: window protocols and hand-checkable errors on made-up videos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import evaluate, geometry, smpl


@pytest.fixture(scope="module")
def body_model():
    return smpl.procedural(0)


@jax.jit
def posed_body(body_model, shape, pose):
    """Vertices and vibe49 joints of SMPL parameters (one compiled program per video length)."""
    verts, joints = smpl.forward(body_model, shape, geometry.pose72_to_rotmats(pose))
    return verts, smpl.layout_joints(body_model, verts, joints, "vibe49")


def make_video(body_model, num_frames, name="v"):
    """A video whose labels come from the body model, and whose features carry the frame index."""
    rng = np.random.default_rng(num_frames)
    pose = np.zeros((num_frames, 72), np.float32)
    pose[:, 3:] = 0.2 * rng.normal(size=(num_frames, 69))
    pose[:, 0] = np.pi
    shape = np.tile(rng.normal(size=10).astype(np.float32), (num_frames, 1))
    verts, kp = (np.asarray(x) for x in posed_body(body_model, shape, pose))
    features = np.zeros((num_frames, 4), np.float32)
    features[:, 0] = np.arange(num_frames)
    return {
        "features": features,
        "kp3d": np.concatenate([kp, np.ones((num_frames, 49, 1), np.float32)], -1),
        "pose": pose, "shape": shape, "vertices": verts,
        "has_smpl": np.ones(num_frames, np.float32), "has_kp3d": np.ones(num_frames, np.float32),
        "vid_name": name,
    }  # fmt: skip


def oracle(video, offset=(0.0, 0.0, 0.0)):
    """An apply_fn that reads the frame index from the features and returns the labels + offset."""

    def apply(windows):
        frames = np.asarray(windows[..., 0]).astype(int)
        return {
            "joints3d": video["kp3d"][frames, :, :3] + np.asarray(offset, np.float32),
            "vertices": video["vertices"][frames] + np.asarray(offset, np.float32),
            "frame": frames,
        }

    return apply


@pytest.mark.parametrize("protocol", ["vibe", "tcmr"])
@pytest.mark.parametrize("num_frames", [5, 16, 37])
def test_every_frame_is_predicted_from_its_own_window(protocol, num_frames):
    features = np.arange(num_frames, dtype=np.float32)[:, None]
    apply = lambda windows: {"frame": np.asarray(windows[..., 0]).astype(int)}
    pred = evaluate.predict_video(apply, features, 16, protocol, batch_size=4)
    np.testing.assert_array_equal(pred["frame"], np.arange(num_frames))


def test_vibe_windows_cover_the_video_with_stride_t():
    np.testing.assert_array_equal(evaluate.window_starts(37, 16, "vibe"), [0, 16, 21])
    np.testing.assert_array_equal(evaluate.window_starts(32, 16, "vibe"), [0, 16])
    np.testing.assert_array_equal(evaluate.window_starts(5, 16, "vibe"), [0])
    np.testing.assert_array_equal(evaluate.window_starts(4, 16, "tcmr"), [0, 1, 2, 3])


def test_a_perfect_prediction_has_zero_error(body_model):
    video = make_video(body_model, 20)
    results = evaluate.evaluate_videos(oracle(video), [video], body_model, window=8)
    for metric in ("MPJPE", "PA-MPJPE", "PVE", "Accel"):
        assert results["overall"][metric] == pytest.approx(0.0, abs=1e-3), metric
    assert results["frames"] == 20


def test_a_constant_offset_is_removed_by_centring(body_model):
    video = make_video(body_model, 12)
    results = evaluate.evaluate_videos(oracle(video, (0.1, -0.2, 0.3)), [video], body_model, 8)
    assert results["overall"]["MPJPE"] == pytest.approx(0.0, abs=1e-3)
    assert results["overall"]["PVE"] == pytest.approx(0.0, abs=1e-3)


def test_errors_in_millimetres_and_masked_frames(body_model):
    video = make_video(body_model, 12)
    shifted = oracle(video)

    def apply(windows):  # move only the left ankle (vibe49 entry 30) by 14 cm along x
        out = shifted(windows)
        out["joints3d"] = out["joints3d"].copy()
        out["joints3d"][..., 30, 0] += 0.14
        return out

    video["has_kp3d"][:4] = 0
    results = evaluate.evaluate_videos(apply, [video], body_model, window=8)
    # One joint of 14 off by 140 mm (hips, the pelvis, untouched): 10 mm per joint on average.
    assert results["overall"]["MPJPE"] == pytest.approx(10.0, abs=1e-2)
    assert results["overall"]["Accel"] == pytest.approx(0.0, abs=1e-3)
    tcmr = evaluate.evaluate_videos(apply, [video], body_model, window=8, protocol="tcmr")
    assert tcmr["overall"]["MPJPE"] == pytest.approx(10.0, abs=1e-2)


def test_acceleration_never_spans_two_videos(body_model):
    first, second = make_video(body_model, 10, "a"), make_video(body_model, 10, "b")
    second["kp3d"][..., :3] += 5.0  # a jump that would show as acceleration across videos
    apply = lambda w: oracle(first)(w) if w[0, 0, 1] == 0 else oracle(second)(w)
    second["features"][:, 1] = 1.0
    results = evaluate.evaluate_videos(apply, [first, second], body_model, window=4)
    assert results["overall"]["Accel"] == pytest.approx(0.0, abs=1e-3)
    assert set(results["videos"]) == {"a", "b"}


def test_write_results(tmp_path, body_model):
    video = make_video(body_model, 6)
    results = evaluate.evaluate_videos(oracle(video), [video], body_model, window=4)
    table = evaluate.write_results(results, str(tmp_path), "test", "lmr")
    assert "| lmr |" in table and (tmp_path / "eval" / "test.json").exists()
    assert (tmp_path / "eval" / "test.md").read_text().startswith("|")


def with_h36m_labels(body_model, video):
    """The video with ground-truth entries 25..38 set to the common-14 joints regressed from its
    vertices through J_regressor_h36m (as 3DPW's labels are made)."""
    common = np.asarray(smpl.layout_joints(body_model, jnp.asarray(video["vertices"]), None,
                                           "common14"))  # fmt: skip
    video["kp3d"][:, 25:39, :3] = common
    return video, common


def test_h36m14_joints_are_regressed_from_the_predicted_vertices(body_model):
    video, common = with_h36m_labels(body_model, make_video(body_model, 12))
    truth = oracle(video)

    def apply(windows):  # exact vertices, meaningless joints; vertices scaled by 1.1 about 0
        out = truth(windows)
        out["joints3d"] = np.zeros_like(out["joints3d"])
        out["vertices"] = 1.1 * out["vertices"]
        return out

    h36m = evaluate.evaluate_videos(apply, [video], body_model, window=8, joints="h36m14")
    assert h36m["joints"] == "h36m14"
    # Regression is linear and its rows sum to 1: the joints are scaled by 1.1 too. After
    # centring on the mid-hips each joint is off by 0.1 x its distance to the mid-hips.
    centred = common - common[:, [2, 3]].mean(1, keepdims=True)
    expected = 100.0 * np.linalg.norm(centred, axis=-1).mean()
    assert h36m["overall"]["MPJPE"] == pytest.approx(expected, rel=1e-4)
    assert h36m["overall"]["PA-MPJPE"] == pytest.approx(0.0, abs=1e-2)  # a similarity
    vibe = evaluate.evaluate_videos(apply, [video], body_model, window=8, joints="vibe49")
    # 'vibe49' scores the zero joints: each is off by its ground truth's distance to the hips.
    assert vibe["overall"]["MPJPE"] == pytest.approx(10 * expected, rel=1e-4)


def test_mpii3d17_joints_are_centred_on_the_pelvis(body_model):
    video = make_video(body_model, 12)
    truth = oracle(video)

    def moved(slot):
        def apply(windows):  # one vibe49 entry of the prediction 17 cm off along x
            out = truth(windows)
            out["joints3d"] = out["joints3d"].copy()
            out["joints3d"][..., slot, 0] += 0.17
            return out

        return apply

    head = evaluate.evaluate_videos(moved(43), [video], body_model, 8, joints="mpii3d17")
    assert head["overall"]["MPJPE"] == pytest.approx(170.0 / 17, abs=1e-2)
    assert evaluate.evaluate_videos(moved(43), [video], body_model, 8)["overall"][
        "MPJPE"] == pytest.approx(0.0, abs=1e-3)  # fmt: skip
    # Moving the pelvis (entry 39) moves the other 16 joints relative to it.
    pelvis = evaluate.evaluate_videos(moved(39), [video], body_model, 8, joints="mpii3d17")
    assert pelvis["overall"]["MPJPE"] == pytest.approx(16 * 170.0 / 17, abs=1e-2)


def test_unknown_eval_joints_are_refused(body_model):
    video = make_video(body_model, 6)
    with pytest.raises(ValueError, match=r"eval joints 'h36m17' are unknown, expected one of"):
        evaluate.evaluate_videos(oracle(video), [video], body_model, 4, joints="h36m17")


def test_errors_do_not_depend_on_the_chunking(body_model, monkeypatch):
    video = make_video(body_model, 20)
    video["has_smpl"][5:9] = 0
    apply = oracle(video, (0.0, 0.05, 0.0))
    noisy = lambda w: {**apply(w), "joints3d": apply(w)["joints3d"] * 1.05}
    whole = evaluate.video_errors(evaluate.predict_video(noisy, video["features"], 8, "vibe"),
                                  video, body_model)  # fmt: skip
    monkeypatch.setattr(evaluate, "CHUNK", 4)
    chunked = evaluate.video_errors(evaluate.predict_video(noisy, video["features"], 8, "vibe"),
                                    video, body_model)  # fmt: skip
    for key in whole:
        np.testing.assert_allclose(whole[key], chunked[key], rtol=1e-5, atol=1e-3, err_msg=key)
    assert np.isnan(whole["PVE"][5:9]).all() and np.isfinite(whole["PVE"][9:]).all()
    assert np.isfinite(whole["MPJPE"]).all() and whole["MPJPE"].mean() > 1.0
