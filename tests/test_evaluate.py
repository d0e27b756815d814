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


def windows_of(protocol, num_frames, window, valid=None, valid_i=None):
    """{predicted frame: (window frames, scored)} of a frame plan."""
    plan = evaluate.frame_plan(num_frames, window, protocol, valid, valid_i)
    return {int(f): (tuple(plan.windows[w]), bool(s))
            for f, w, s in zip(plan.frames, plan.window_of, plan.scored, strict=True)}  # fmt: skip


def test_vibe_scores_full_windows_only():
    plan = windows_of("vibe", 37, 16)
    assert sorted(plan) == list(range(32))  # frames 32..36 after the last full window: none
    assert plan[20] == (tuple(range(16, 32)), True)
    assert windows_of("vibe", 15, 16) == {}  # shorter than T: left out
    # VIBE reads no flags.
    assert windows_of("vibe", 8, 4, valid=np.zeros(8), valid_i=np.zeros(8)) == windows_of(
        "vibe", 8, 4
    )


def test_tcmr_centres_a_window_on_every_frame_and_repeats_edge_frames():
    plan = windows_of("tcmr", 7, 4)
    assert sorted(plan) == list(range(7))
    # T = 4: middle index 2; frames 2..5 centred, the first 2 and the last ceil(T/2) - 1 = 1
    # from their frame repeated.
    assert plan[0] == ((0, 0, 0, 0), True) and plan[1] == ((1, 1, 1, 1), True)
    assert plan[2] == ((0, 1, 2, 3), True) and plan[5] == ((3, 4, 5, 6), True)
    assert plan[6] == ((6,) * 4, True)
    # `valid` removes frames before windowing (windows span the gap); `valid_i` only scores.
    valid = np.array([1, 0, 1, 1, 1, 1, 1, 1])
    valid_i = np.array([1, 1, 1, 0, 1, 1, 1, 1])
    plan = windows_of("tcmr", 8, 4, valid, valid_i)
    assert sorted(plan) == [0, 2, 3, 4, 5, 6, 7]  # frame 1 removed
    assert plan[3] == ((0, 2, 3, 4), False) and plan[4] == ((2, 3, 4, 5), True)
    assert len(windows_of("tcmr", 5, 4, valid=np.array([1, 0, 1, 1, 1]))) == 4
    assert windows_of("tcmr", 5, 4, valid=np.array([1, 0, 1, 0, 1])) == {}  # 3 valid < T


def test_a_perfect_prediction_has_zero_error(body_model):
    video = make_video(body_model, 20)
    results = evaluate.evaluate_videos(oracle(video), [video], body_model, window=8)
    for metric in ("MPJPE", "PA-MPJPE", "PVE", "PVE-centred", "Accel", "MPJVE", "MPJAE"):
        assert results["overall"][metric] == pytest.approx(0.0, abs=1e-3), metric
    assert results["frames"] == 16  # two full windows of 8: VIBE leaves out the last 4
    tcmr = evaluate.evaluate_videos(oracle(video), [video], body_model, 8, protocol="tcmr")
    assert tcmr["frames"] == 20


def test_pve_is_vibes_uncentred_mesh_distance(body_model):
    video = make_video(body_model, 12)
    offset = np.array([0.1, -0.2, 0.3])
    results = evaluate.evaluate_videos(oracle(video, offset), [video], body_model, 8)
    assert results["overall"]["MPJPE"] == pytest.approx(0.0, abs=1e-3)
    assert results["overall"]["PVE-centred"] == pytest.approx(0.0, abs=1e-3)
    # VIBE's compute_error_verts: mean over vertices of the distance, no centring.
    pred, target = video["vertices"][:8] + offset, video["vertices"][:8]
    vibe_pve = np.mean(np.sqrt(np.sum((target - pred) ** 2, axis=2)), axis=1) * 1000
    assert results["overall"]["PVE"] == pytest.approx(vibe_pve.mean(), rel=1e-4)
    assert results["overall"]["PVE"] == pytest.approx(1000 * np.linalg.norm(offset), rel=1e-4)


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


def test_acceleration_error_through_evaluate_videos_never_spans_two_videos(body_model):
    first, second = make_video(body_model, 12, "a"), make_video(body_model, 12, "b")
    second["kp3d"][..., :3] *= 3.0  # a very different body: a jump across the boundary
    second["features"][:, 1] = 1.0

    def apply(windows):  # the ground truth's joints scaled by 1.2 about the origin
        video = first if windows[0, 0, 1] == 0 else second
        out = oracle(video)(windows)
        return {**out, "joints3d": out["joints3d"] * 1.2}

    results = evaluate.evaluate_videos(apply, [first, second], body_model, window=4)
    # The naive per-video second differences of the 12 scored (full-window) frames, on the
    # mid-hips-centred 14 common joints.
    errors, velocities = [], {}
    for video in (first, second):
        gt = video["kp3d"][:12, 25:39, :3].astype(np.float64)
        gt = gt - gt[:, 2:4].mean(1, keepdims=True)
        accel = lambda j: j[:-2] - 2 * j[1:-1] + j[2:]
        errors.append(np.linalg.norm(accel(1.2 * gt) - accel(gt), axis=-1).mean(-1))
        velocity = lambda j: j[1:] - j[:-1]
        velocities[video["vid_name"]] = (
            1000 * np.linalg.norm(velocity(1.2 * gt) - velocity(gt), axis=-1).mean(-1).mean()
        )
    want = 1000 * np.concatenate(errors).mean()
    assert want > 1.0  # the prediction differs from the ground truth
    assert results["overall"]["Accel"] == pytest.approx(want, rel=1e-4)
    assert results["overall"]["MPJAE"] == results["overall"]["Accel"]  # VIBE's accel error
    assert set(results["videos"]) == {"a", "b"}
    for name, velocity_error in velocities.items():  # per video, mm/frame
        assert results["videos"][name]["MPJVE"] == pytest.approx(velocity_error, rel=1e-4)


def test_write_results(tmp_path, body_model):
    video = make_video(body_model, 6)
    results = evaluate.evaluate_videos(oracle(video), [video], body_model, window=4)
    table = evaluate.write_results(results, str(tmp_path), "test", "lmr")
    assert "| lmr |" in table and (tmp_path / "eval" / "test.json").exists()
    assert (tmp_path / "eval" / "test.md").read_text().startswith("|")
    assert table.splitlines()[0].endswith("| Accel | MPJVE | MPJAE | Frames |")  # no params
    assert table.splitlines()[2].endswith("| 4 |")  # one full window of 4 scored
    table = evaluate.results_table({"lmr": {**results, "params": 29_612_345},
                                    "hmr": {**results, "params": 950}})  # fmt: skip
    assert table.splitlines()[0].endswith("| Frames | Params |")
    assert table.splitlines()[2].endswith("| 4 | 29.6M |") and table.endswith("| 4 | 950 |")


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
    centred = common[:8] - common[:8, [2, 3]].mean(1, keepdims=True)  # one full window
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
    plan = evaluate.frame_plan(20, 8, "tcmr")  # every frame, in order
    whole = evaluate.video_errors(evaluate.predict_frames(noisy, video["features"], plan),
                                  video, body_model)  # fmt: skip
    monkeypatch.setattr(evaluate, "CHUNK", 4)
    chunked = evaluate.video_errors(evaluate.predict_frames(noisy, video["features"], plan),
                                    video, body_model)  # fmt: skip
    for key in whole:
        np.testing.assert_allclose(whole[key], chunked[key], rtol=1e-5, atol=1e-3, err_msg=key)
    assert np.isnan(whole["PVE"][5:9]).all() and np.isfinite(whole["PVE"][9:]).all()
    assert np.isfinite(whole["MPJPE"]).all() and whole["MPJPE"].mean() > 1.0
