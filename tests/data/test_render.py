"""The frame renderer (lmr_jax/data/render.py): rasterized pixels, occluders, seeded backgrounds."""

import numpy as np
import pytest

from lmr_jax import smpl
from lmr_jax.data import render, synthetic


def test_rasterize_covers_exactly_the_pixel_centres_inside_a_triangle():
    points = np.array([[1.0, 1.0, 2.0], [7.2, 1.0, 2.0], [1.0, 6.4, 2.0]])
    face_index, depth = render.rasterize(points, np.array([[0, 1, 2]]), 8, 9, cull_back=False)
    # The naive reference: pixel (row i, column j) has its centre (j + 0.5, i + 0.5) inside the
    # triangle x >= 1, y >= 1, x / 6.2 + y / 5.4 <= 1 (edges included).
    rows, cols = np.mgrid[0:8, 0:9] + 0.5
    inside = (cols >= 1) & (rows >= 1) & ((cols - 1) / 6.2 + (rows - 1) / 5.4 <= 1 + 1e-12)
    np.testing.assert_array_equal(face_index >= 0, inside)
    assert inside.sum() == 16  # a known pixel set, not an empty one
    np.testing.assert_allclose(depth[inside], 2.0)
    assert np.isinf(depth[~inside]).all()


def test_render_frame_paints_shaded_faces_over_the_background():
    points = np.array([[1.0, 1.0, 0.0], [1.0, 7.0, 0.0], [7.0, 1.0, 0.0]])  # a front face
    image = np.full((8, 8, 3), 7, np.uint8)
    colors = np.array([[100.0, 200.0, 50.0]])
    render.render_frame(points, np.array([[0, 1, 2]]), colors, image)
    covered, _ = render.rasterize(points, np.array([[0, 1, 2]]), 8, 8)
    shade = render.face_shading(points, np.array([[0, 1, 2]]))[0]
    np.testing.assert_array_equal(image[covered >= 0], np.round(shade * colors)[[0] * 21])
    assert (covered >= 0).sum() == 21
    assert (image[covered < 0] == 7).all() and (covered >= 0).sum() > 10


def test_background_is_deterministic_per_seed():
    first = render.background(render.render_rng((0, 1, 2)), 32)
    again = render.background(render.render_rng((0, 1, 2)), 32)
    other = render.background(render.render_rng((0, 1, 3)), 32)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - other).mean() > 10
    assert first.reshape(-1, 3).std(axis=0).min() > 5  # textured, not flat


@pytest.fixture(scope="module")
def video():
    config = synthetic.MotionConfig(num_frames=(30, 30), occlusions_per_second=3.0)
    return synthetic.generate_video((5, 0, 0), config)


def test_occluder_covers_each_hidden_keypoint(video):
    size, seed = 48, (5, 0, 0)
    frames = render.render_video(video, smpl.procedural(0), size, seed)
    assert frames.shape == (30, size, size, 3) and frames.dtype == np.uint8
    look = render.sample_look(render.render_rng(seed), size)
    cam = video["cam"].astype(np.float64)
    true_xy = cam[:, None, :1] * (video["kp3d"][..., :2] + cam[:, None, 1:])
    hidden = (video["kp2d"][..., 2] == 0) & np.all(np.abs(true_xy) < 0.95, axis=-1)
    assert hidden.sum() > 20  # the video has occlusions to check
    occluder_colors = np.round(look.occluder_colors).astype(np.uint8).reshape(-1, 1, 3)
    for t, j in zip(*np.nonzero(hidden), strict=True):
        x, y = np.floor(render.crop_to_pixels(true_xy[t, j], size)).astype(int)
        # One of the (striped, two-colour) occluders is there, not the body or the background.
        assert (frames[t, y, x] == occluder_colors).all(axis=-1).any(), (t, j)
    # Outside the occluder boxes a frame is the shaded body over the background.
    body_model = smpl.procedural(0)
    vertices = render.video_vertices(body_model, video["betas"], video["pose"])
    colors = look.body_colors[render.face_regions(body_model)]
    for t in (0, 17):
        expected = look.background.copy()
        points = render.mesh_points(vertices[t], cam[t], size)
        render.render_frame(points, np.asarray(body_model.faces), colors, expected)
        outside = np.ones((size, size), bool)
        for _, x0, y0, x1, y1 in render.occluder_boxes(video["kp2d"][t], true_xy[t], size):
            outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(frames[t][outside], expected[outside])
        assert outside.sum() > size * size // 2
        assert (expected != look.background).any(axis=-1).sum() > 50  # the body is drawn


def test_jpeg_round_trip_is_close():
    frame = render.background(render.render_rng(3), 64)[None]
    data = render.encode_jpeg(frame)
    assert data.dtype == object and isinstance(data[0], bytes) and data[0][:2] == b"\xff\xd8"
    decoded = render.decode_jpeg(data[0])
    assert decoded.shape == (64, 64, 3)
    assert np.abs(decoded.astype(int) - frame[0]).mean() < 6
