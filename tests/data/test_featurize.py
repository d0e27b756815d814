"""The featurizer: fixed and seeded, unit scale, 2D recoverable, and blind to depth."""

import numpy as np
import pytest

from lmr_jax.data import synthetic
from lmr_jax.data.featurize import block_sizes, featurize, featurizer_inputs


@pytest.fixture(scope="module")
def video():
    return synthetic.generate_video(11, num_frames=96)


def test_fixed_seeded_map(video):
    a = featurize(video["kp2d"], video["facing_cue"], dim=64, seed=3)
    b = featurize(video["kp2d"], video["facing_cue"], dim=64, seed=3)
    c = featurize(video["kp2d"], video["facing_cue"], dim=64, seed=4)
    assert a.shape == (96, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Per frame: a frame's features do not depend on the other frames.
    np.testing.assert_allclose(
        featurize(video["kp2d"][5], video["facing_cue"][5], dim=64, seed=3),
        a[5],
        rtol=1e-5,
        atol=1e-6,
    )


def test_blocks_have_roughly_unit_scale(video):
    features = featurize(video["kp2d"], video["facing_cue"], dim=2048)
    lin, rff, _ = block_sizes(2048)
    for block in np.split(features, [lin, lin + rff], axis=1):
        assert 0.3 < np.mean(block**2) < 2.0
    assert np.isfinite(features).all()


def test_no_depth_beyond_the_facing_cue(video):
    """Two videos with the same 2D and cue but different depths get identical features."""
    config = synthetic.MotionConfig()
    deeper = video["kp3d"].copy()
    deeper[..., 2] = -3.0 * deeper[..., 2] + 5.0  # other depths, same x and y
    obs_a = synthetic.observe(
        np.random.default_rng(5), video["kp3d"], video["cam"], video["facing"], config
    )
    obs_b = synthetic.observe(
        np.random.default_rng(5), deeper, video["cam"], video["facing"], config
    )
    np.testing.assert_array_equal(obs_a[0], obs_b[0])
    np.testing.assert_array_equal(obs_a[1], obs_b[1])
    np.testing.assert_array_equal(featurize(*obs_a, dim=64), featurize(*obs_b, dim=64))
    # ... while the cue itself does reach the features.
    flipped = featurize(obs_a[0], -obs_a[1], dim=64)
    assert np.abs(flipped - featurize(*obs_a, dim=64)).max() > 0.1


def test_missing_points_carry_no_position(video):
    kp2d = video["kp2d"][:4].copy()
    kp2d[:, 3, 2] = 0.0
    moved = kp2d.copy()
    moved[:, 3, :2] += 0.3  # a hidden point's coordinates do not matter
    np.testing.assert_array_equal(featurize(kp2d, dim=64), featurize(moved, dim=64))


def test_keypoints_and_camera_are_linearly_recoverable(video):
    """With D >= 592 the linear block alone gives back the inputs (so the camera too)."""
    rng = np.random.default_rng(0)
    kp2d = video["kp2d"].copy()
    kp2d[..., :2] += rng.normal(0, 0.2, size=kp2d[..., :2].shape) * kp2d[..., 2:]
    cue = rng.normal(size=len(kp2d)).astype(np.float32)
    features = featurize(kp2d, cue, dim=640)
    inputs = featurizer_inputs(kp2d, cue)
    weights, *_ = np.linalg.lstsq(features[:, :160], inputs, rcond=None)
    np.testing.assert_allclose(features[:, :160] @ weights, inputs, atol=1e-3)
    # Coordinates are not re-centred per frame: shifting the whole body shifts the features.
    shifted = kp2d.copy()
    shifted[..., 0] += 0.1 * shifted[..., 2]
    assert np.abs(featurize(shifted, cue, dim=64) - featurize(kp2d, cue, dim=64)).max() > 0.05


def test_unknown_facing_is_zero_and_bad_shapes_are_refused(video):
    kp2d = video["kp2d"][:3]
    np.testing.assert_array_equal(
        featurize(kp2d, dim=64), featurize(kp2d, np.zeros(3, np.float32), dim=64)
    )
    with pytest.raises(ValueError, match=r"expected \[..., 49, 3\]"):
        featurize(np.zeros((3, 24, 3)), dim=64)
    with pytest.raises(ValueError, match=r"facing has shape \(4,\), expected \(3,\)"):
        featurize(kp2d, np.zeros(4), dim=64)
    with pytest.raises(ValueError, match="too small"):
        featurize(kp2d, dim=2)
