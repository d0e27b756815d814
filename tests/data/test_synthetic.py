"""The synthetic motion generator: determinism, part dynamics, limits, occlusions, conventions."""

import numpy as np
import pytest

from lmr_jax import geometry, smpl
from lmr_jax.data import motion, synthetic

FPS = 30.0
# SMPL joints whose angles make up each part's motion (the root's global orientation has
# axis-angle wrap-arounds near 180 degrees, so the spine stands for the root part).
PART_JOINTS = {
    "root": [3, 6, 9],
    "head": [12, 15],
    "legs": [1, 2, 4, 5, 7, 8],
    "arms": [16, 17, 18, 19, 20, 21],
}
NAMES = smpl.get_layout("vibe49").joint_names


@pytest.fixture(scope="module")
def videos():
    return [synthetic.generate_video((7, 0, i), num_frames=300) for i in range(8)]


def test_same_seed_same_video_other_seed_other_video():
    a = synthetic.generate_video((1, 2, 3), num_frames=40)
    b = synthetic.generate_video((1, 2, 3), num_frames=40)
    c = synthetic.generate_video((1, 2, 4), num_frames=40)
    for key in ("pose", "betas", "cam", "kp3d", "kp2d", "facing_cue"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["pose"], c["pose"])
    assert a["kp2d"].dtype == np.float32 and a["kp2d"].shape == (40, 49, 3)
    assert a["kp3d"].shape == (40, 49, 3) and a["pose"].shape == (40, 72)


def test_length_is_drawn_from_the_config():
    config = synthetic.MotionConfig(num_frames=(30, 35))
    lengths = {synthetic.generate_video(i, config).get("pose").shape[0] for i in range(6)}
    assert lengths <= set(range(30, 36)) and len(lengths) > 1


def _spectral_centroid(series):
    """Power-weighted mean frequency (Hz) of [N, C] angle series."""
    x = (series - series.mean(0)) * np.hanning(len(series))[:, None]
    power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).sum(1)
    freqs = np.fft.rfftfreq(len(series), 1 / FPS)
    return (power * freqs).sum() / power.sum()


def test_each_part_has_its_own_frequency_band(videos):
    centroid = {}
    for part, joints in PART_JOINTS.items():
        values = [
            _spectral_centroid(v["pose"].reshape(-1, 24, 3)[:, joints].reshape(300, -1))
            for v in videos
        ]
        centroid[part] = np.mean(values)
    # Root/spine slowest, then head, then the gait-paced legs, then the busy arms.
    assert centroid["root"] < 0.35 < centroid["head"] < centroid["legs"] < centroid["arms"]
    assert centroid["arms"] > 2 * centroid["legs"]


def test_joint_limits_hold_and_parts_move(videos):
    lo, hi = motion.joint_limits()
    pose = np.concatenate([v["pose"] for v in videos]).reshape(-1, 24, 3)
    assert np.all(pose[:, 1:] >= lo[1:] - 1e-6) and np.all(pose[:, 1:] <= hi[1:] + 1e-6)  # float32
    # Knees and elbows bend one way only; the right side mirrors the left.
    assert lo[4, 0] == 0 and hi[18, 1] == 0 and lo[19, 1] == 0
    for part, joints in PART_JOINTS.items():
        assert pose[:, joints].std(0).max() > 0.1, part


def test_activity_switches_between_arms_and_legs(videos):
    arms_only = legs_only = 0
    for v in videos:
        env = v["envelopes"]
        arms = np.maximum(env["left_arm"], env["right_arm"]) > 0.5
        legs = np.maximum(env["gait"], env["squat"]) > 0.5
        arms_only += np.sum(arms & ~legs)
        legs_only += np.sum(legs & ~arms)
    assert arms_only > 300 and legs_only > 300  # of 2400 frames


def test_occlusions_last_several_frames():
    config = synthetic.MotionConfig()
    visible = synthetic.sample_occlusions(np.random.default_rng(0), 3000, config)
    runs = []
    for column in (~visible).T:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], column.astype(int), [0]])))
        runs += [(start, stop) for start, stop in edges.reshape(-1, 2)]
    lengths = [stop - start for start, stop in runs if stop < 3000]  # not cut by the end
    assert min(lengths) >= config.occlusion_frames[0]
    assert 0.05 < 1 - visible.mean() < 0.4
    parts = np.array(synthetic.joint_parts())
    hidden = ~visible
    # Events hide whole parts: the joints of one part are hidden together.
    left_arm = hidden[:, parts == "left_arm"]
    assert np.mean(left_arm.all(1) | ~left_arm.any(1)) > 0.99


def test_observations_are_noisy_projections(videos):
    v = videos[0]
    xy = np.asarray(geometry.weak_perspective_project(v["kp3d"], v["cam"]))
    kp2d = v["kp2d"]
    seen = kp2d[..., 2] > 0
    error = np.abs(kp2d[..., :2] - xy)[seen]
    assert 0 < error.std() and error.max() < 5 * 4.0 / 112  # <= 5 sigma of 4 px noise
    assert np.all(kp2d[~seen][:, :2] == 0)  # no position where nothing is seen
    outside = np.any(np.abs(xy) > 1.02, axis=-1)  # well outside the crop
    assert not np.any(seen & outside)
    assert set(np.unique(kp2d[..., 2])) <= {0.0, 1.0}


def test_body_stands_upright_in_the_y_down_camera_frame(videos):
    head_top, left_ankle = NAMES.index("head_top_lsp"), NAMES.index("left_ankle")
    left_sh, right_sh = NAMES.index("left_shoulder"), NAMES.index("right_shoulder")
    for v in videos:
        kp3d = v["kp3d"]
        assert np.all(kp3d[:, head_top, 1] < kp3d[:, left_ankle, 1] - 0.8)  # head above feet
        front = v["facing"] > 0.7
        back = v["facing"] < -0.7
        # Facing the camera, the person's left is on the image right (+x); from behind, not.
        assert np.all(kp3d[front, left_sh, 0] > kp3d[front, right_sh, 0])
        assert np.all(kp3d[back, left_sh, 0] < kp3d[back, right_sh, 0])


def test_facing_cue_is_noisy_front_back(videos):
    facing = np.concatenate([v["facing"] for v in videos])
    cue = np.concatenate([v["facing_cue"] for v in videos])
    assert np.corrcoef(np.sign(facing), cue)[0, 1] > 0.7
    assert (cue - np.tanh(3 * facing)).std() == pytest.approx(0.3, abs=0.05)
    assert facing.min() < -0.5 and facing.max() > 0.5  # front and back views both occur


def test_shape_is_per_video_and_camera_moves(videos):
    betas = np.stack([v["betas"] for v in videos])
    assert betas.std(0).min() > 0.2 and np.abs(betas).max() <= 2.0
    for v in videos:
        cam = v["cam"]
        assert np.all(cam[:, 0] > 0.4) and np.all(cam[:, 0] < 1.4)
        zoom = cam[:, 0].max() / cam[:, 0].min()
        assert zoom > 1.03 and np.ptp(cam[:, 1:], axis=0).min() > 0.02


def test_two_d_only_example_masks_every_3d_label(videos):
    v = videos[1]
    features = np.ones((300, 4), np.float32)
    full = synthetic.make_example(v, features, "a", with_3d=True)
    masked = synthetic.make_example(v, features, "a", with_3d=False)
    assert full["has_smpl"].all() and full["kp3d"][..., 3].all()
    np.testing.assert_array_equal(full["shape"][5], v["betas"])
    for field in ("kp3d", "pose", "shape", "cam", "has_smpl", "has_kp3d"):
        assert not masked[field].any(), field
    np.testing.assert_array_equal(masked["kp2d"], full["kp2d"])
