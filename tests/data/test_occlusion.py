"""Occluders against naive per-point references, observe's marking of hidden keypoints, and the
faithfulness of re-featurizing regenerated observations."""

import dataclasses
import math

import numpy as np
import pytest

from lmr_jax.data import build, occlusion, pipeline


def _naive_covered(kind, degree, centre, point, draws):
    """One point, written from the shapes' definitions (no vector algebra shared with the code)."""
    size = occlusion.SIZES[kind][degree - 1]
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    if kind == "circle":
        return math.sqrt(dx * dx + dy * dy) <= size
    if kind == "bar":  # distance to the axis by Pythagoras on the projection onto the axis
        along = dx * math.cos(draws.angle) + dy * math.sin(draws.angle)
        return math.sqrt(max(dx * dx + dy * dy - along * along, 0.0)) <= size / 2
    height = math.sqrt(size / draws.aspect)
    width = size / height
    return abs(dx) <= width / 2 and abs(dy) <= height / 2


@pytest.mark.parametrize("kind", occlusion.KINDS)
def test_occluders_cover_what_a_naive_per_point_test_covers(kind):
    rng = np.random.default_rng(0)
    centre = rng.uniform(40, 180, size=(3, 2))
    points = rng.uniform(0, 224, size=(3, 400, 2))
    draws = occlusion.occluder_draws("synthetic_motion/tiny/test/00001", "right_knee")
    for degree in occlusion.DEGREES:
        got = occlusion.covered(kind, degree, centre, points, draws)
        want = [[_naive_covered(kind, degree, centre[n], p, draws) for p in points[n]]
                for n in range(3)]  # fmt: skip
        np.testing.assert_array_equal(got, want)
        assert 0 < got.sum() < got.size  # the test sees both sides of the boundary


def test_rectangle_area_circle_radius_and_nested_degrees():
    """Pixel centres of a 400 px grid: the rectangle covers its area (to its perimeter), the
    circle pi r^2, and a higher degree covers a superset of a lower one."""
    grid = np.stack(np.meshgrid(np.arange(400) + 0.5, np.arange(400) + 0.5), -1).reshape(1, -1, 2)
    centre = np.array([[200.3, 199.6]])
    draws = occlusion.occluder_draws("v", "left_wrist")
    assert 0.5 <= draws.aspect <= 2.0 and 0 <= draws.angle < math.pi
    previous = {}
    for degree in occlusion.DEGREES:
        radius = occlusion.CIRCLE_RADII[degree - 1]
        for kind, area in (("rectangle", occlusion.RECTANGLE_AREAS[degree - 1]),
                           ("circle", math.pi * radius**2)):  # fmt: skip
            mask = occlusion.covered(kind, degree, centre, grid, draws)[0]
            assert abs(mask.sum() - area) < 2 * math.sqrt(4 * area) + 4, (kind, degree)
            assert (~previous.get(kind, np.zeros_like(mask)) | mask).all()  # a superset
            previous[kind] = mask
    assert occlusion.to_pixels(np.array([-1.0, 0.0, 1.0])).tolist() == [0.0, 112.0, 224.0]


def test_occlude_marks_keypoints_as_observe_does():
    """synthetic.observe writes kp2d = [xy * conf, conf] with conf 0 where hidden."""
    rng = np.random.default_rng(1)
    kp2d = rng.uniform(-1, 1, size=(5, 49, 3)).astype(np.float32)
    kp2d[..., 2] = rng.uniform(size=(5, 49)) > 0.2
    kp2d[..., :2] *= kp2d[..., 2:]
    hidden = rng.uniform(size=(5, 49)) > 0.5
    conf = kp2d[..., 2] * ~hidden
    want = np.concatenate([kp2d[..., :2] * conf[..., None], conf[..., None]], -1)
    got = occlusion.occlude(kp2d, hidden)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[~hidden], kp2d[~hidden])


@pytest.fixture(scope="module")
def observed(tiny_data_dir):
    spec = pipeline.DatasetSpec("synthetic_motion/tiny", "test", tiny_data_dir)
    return list(occlusion.observed_videos(spec))


def test_refeaturized_observations_reproduce_the_stored_features(observed, tiny_data_dir):
    assert len(observed) == 2
    for video, obs in observed:
        np.testing.assert_array_equal(obs.kp2d, video["kp2d"])
        np.testing.assert_array_equal(obs.features(), video["features"])  # bit for bit
    # The check inside regenerate catches a video that is not the regenerated one.
    video, obs = observed[0]
    other = dict(video, vid_name=observed[1][0]["vid_name"])
    builder_cls = build.builder_class("synthetic_motion")
    with pytest.raises(ValueError, match="is not the stored one"):
        occlusion.regenerate(builder_cls, "synthetic_motion/tiny", other, _body(), 64, 0)


def _body():
    from lmr_jax import smpl

    return smpl.procedural(0)


def test_occluded_features_change_exactly_where_keypoints_were_hidden(observed):
    video, obs = observed[0]
    # In frames 0..9 the occluder is moved off the crop: it hides nothing there.
    away = obs.true_px.copy()
    away[:10] -= 1000.0
    obs = dataclasses.replace(obs, true_px=away)
    kp2d = obs.occluded_kp2d("circle", 2, "right_knee")
    newly = (obs.kp2d[..., 2] > 0) & (kp2d[..., 2] == 0)
    changed = (kp2d != obs.kp2d).any((-1, -2))
    np.testing.assert_array_equal(changed, newly.any(-1))
    assert not changed[:10].any() and changed[10:].all()  # the knee's own keypoints, at least
    features = obs.features(kp2d)
    rows_differ = (features != video["features"]).any(-1)
    np.testing.assert_array_equal(rows_differ, changed)
    # The occluder sits on the joint's true position: the knee's own keypoint is hidden where
    # its noisy detection lies within the radius (20 px).
    slot = occlusion.OCCLUDED_JOINTS["right_knee"]
    near = np.hypot(*(occlusion.to_pixels(obs.kp2d[:, slot, :2]) - obs.true_px[:, slot]).T) <= 20
    seen = obs.kp2d[:, slot, 2] > 0
    np.testing.assert_array_equal(kp2d[10:, slot, 2] == 0, (~seen | near)[10:])


def test_bad_kinds_joints_and_datasets_are_refused_in_one_sentence():
    assert occlusion.parse_kinds("all") == occlusion.KINDS
    assert occlusion.parse_kinds("circle, bar") == ("circle", "bar")
    assert occlusion.parse_kinds("") == ()
    with pytest.raises(ValueError, match=r"names 'square', expected one of \('bar', 'circle', "):
        occlusion.parse_kinds("square")
    with pytest.raises(ValueError, match="names 'knee', expected names from"):
        occlusion.parse_joints("knee")
    assert len(occlusion.parse_joints("")) == 14
    with pytest.raises(ValueError, match="dataset 'threedpw' stores precomputed image features"):
        occlusion.check_occludable(build.builder_class("threedpw"), "threedpw")
    spec = pipeline.DatasetSpec("synthetic_motion/tiny_frames", "test", inputs="frames")
    with pytest.raises(ValueError, match="occlusion evaluation of 'frames' inputs"):
        next(occlusion.observed_videos(spec))
