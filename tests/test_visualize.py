"""Tests of lmr_jax.visualize: pixels land where the camera puts them, figures have their sizes."""

import numpy as np
import pytest
from PIL import Image

from lmr_jax import visualize as vis

WHITE = np.array(vis.BACKGROUND)


@pytest.fixture(scope="module")
def posed():
    """Procedural body, arms raised and one knee bent, upright in the camera frame (y down).

    Returns the vertices [2, V, 3] (two slightly different poses), joints [2, 24, 3], faces.
    """
    import jax.numpy as jnp

    from lmr_jax import geometry, smpl

    model = smpl.resolve(None)
    pose = np.zeros((2, 72), np.float32)
    pose[:, 0] = np.pi  # SMPL's y-up body stands upright in the y-down camera frame
    pose[:, 16 * 3 + 2] = 1.1  # left shoulder: arm raised
    pose[:, 17 * 3 + 2] = -0.9  # right shoulder
    pose[:, 1 * 3] = -0.6  # left hip flexed
    pose[:, 4 * 3] = 1.0  # left knee bent
    pose[1, 16 * 3 + 2] = 0.4  # the second pose lowers the left arm
    vertices, joints = smpl.forward(
        model, jnp.zeros((2, 10)), geometry.pose72_to_rotmats(jnp.asarray(pose))
    )
    return np.asarray(vertices), np.asarray(joints), np.asarray(model.faces)


CAM = np.array([0.8, 0.05, 0.2])


def body_mask(image):
    return np.any(np.asarray(image) != WHITE, axis=-1)


def test_render_lands_on_projected_vertices(posed):
    vertices, _, faces = posed
    size = 256
    points = vis.project_vertices(vertices[0], CAM, size)
    image = vis.render_mesh(Image.new("RGB", (size, size), vis.BACKGROUND), points, faces)
    mask = body_mask(image)
    pixels = np.floor(points[:, :2]).astype(int)
    assert (pixels >= 0).all() and (pixels < size).all()
    assert mask[pixels[:, 1], pixels[:, 0]].mean() >= 0.95  # rows are y, columns x
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose([cols.min(), rows.min()], pixels.min(axis=0), atol=2)
    np.testing.assert_allclose([cols.max(), rows.max()], pixels.max(axis=0), atol=2)
    # And nothing is drawn far from the mesh: every body pixel is near some vertex.
    near = np.zeros_like(mask)
    near[pixels[:, 1], pixels[:, 0]] = True
    grown = near.copy()
    for dy in range(-5, 6):
        for dx in range(-5, 6):
            grown |= np.roll(np.roll(near, dy, axis=0), dx, axis=1)
    assert grown[mask].mean() > 0.999


def test_joints_project_inside_the_rendered_body(posed):
    # The keypoints of the data are the joints through the same camera: they fall on the body,
    # with or without a zoomed view.
    vertices, joints, faces = posed
    kp2d = CAM[0] * (joints[0, :, :2] + CAM[1:])
    for view in (None, vis.fit_view([CAM[0] * (vertices[0, :, :2] + CAM[1:])])):
        image = vis.mesh_panel(vertices[0], faces, CAM, vis.GT_COLOR, size=200, view=view)
        mask = body_mask(image)
        pixels = np.floor(vis.crop_to_pixels(kp2d, 200, view)).astype(int)
        assert mask[pixels[:, 1], pixels[:, 0]].all()
    rows, cols = np.nonzero(mask)  # the zoomed view fits the body: it spans ~1/1.16 of it
    assert max(np.ptp(rows), np.ptp(cols)) > 0.8 * 200


def test_shading_varies_across_the_body(posed):
    vertices, _, faces = posed
    image = vis.mesh_panel(vertices[0], faces, CAM, vis.PRED_COLOR, size=256)
    colours = np.asarray(image)[body_mask(image)].astype(float)
    brightness = colours.sum(axis=1)
    assert brightness.std() > 30  # Lambert shading, not one flat colour
    assert len(np.unique(colours, axis=0)) > 50


def test_ground_truth_and_prediction_colours(posed, tmp_path):
    vertices, joints, faces = posed
    kp2d = np.concatenate([CAM[0] * (joints[0, :, :2] + CAM[1:]), np.ones((24, 1))], axis=1)
    panel = vis.side_by_side(vertices[0], vertices[1], faces, CAM, CAM, kp2d, size=128)
    assert panel.size == (256, 128)
    pixels = np.asarray(panel).astype(float)
    mask = body_mask(panel)
    gt = pixels[:, :128][mask[:, :128]].mean(axis=0)
    pred = pixels[:, 128:][mask[:, 128:]].mean(axis=0)
    assert gt[0] > gt[2] + 60  # orange: red well above blue
    assert pred[2] > pred[0] + 60  # blue
    assert np.abs(gt - pred).sum() > 150
    vis.save_strip([panel, panel], str(tmp_path / "strip.png"))  # what the demo writes
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.size == (256, 256)


def test_keypoints_drawn_at_their_pixels():
    image = Image.new("RGB", (100, 100), vis.BACKGROUND)
    kp2d = np.array([[0.0, 0.0, 1.0], [-0.5, 0.5, 1.0], [0.6, -0.6, 0.0]])  # last: missing
    vis.draw_keypoints(image, kp2d, 100, vis.KP_PRED_COLOR, radius=2)
    pixels = np.asarray(image)
    np.testing.assert_array_equal(pixels[50, 50], vis.KP_PRED_COLOR)  # crop (0, 0): centre
    np.testing.assert_array_equal(pixels[75, 25], vis.KP_PRED_COLOR)  # x=-0.5 left, y=0.5 down
    assert body_mask(image)[75, 25] and not body_mask(image)[20, 80]  # confidence 0: skipped
    assert body_mask(image).sum() <= 2 * 25  # two small dots, nothing else
    zoomed = Image.new("RGB", (100, 100), vis.BACKGROUND)
    vis.draw_keypoints(zoomed, kp2d[:1] + [0.1, 0.1, 0.0], 100, radius=2, view=(0.1, 0.1, 0.5))
    np.testing.assert_array_equal(np.asarray(zoomed)[50, 50], vis.KP_GT_COLOR)


def test_rasterize_depth_order_and_culling():
    # A far square (two triangles, depth 5) and a near triangle (depth 1) over its middle.
    points = np.array(
        [[2, 2, 5], [18, 2, 5], [18, 18, 5], [2, 18, 5], [6, 6, 1], [14, 6, 1], [10, 14, 1]], float
    )
    # Front faces have a negative signed area in pixel coordinates (y down): (0, 2, 1) etc.
    faces = np.array([[0, 2, 1], [0, 3, 2], [4, 6, 5]])
    for order in (faces, faces[::-1]):
        face_index, depth = vis.rasterize(points, order, 20, 20)
        assert order[face_index[8, 10]].tolist() == [4, 6, 5]
        assert depth[8, 10] == pytest.approx(1.0)
        assert face_index[3, 3] >= 0 and face_index[0, 0] == -1 and np.isinf(depth[0, 0])
    culled, _ = vis.rasterize(points, faces[:, ::-1], 20, 20)
    assert (culled == -1).all()
    both, _ = vis.rasterize(points, faces[:, ::-1], 20, 20, cull_back=False)
    assert (both >= 0).sum() == (vis.rasterize(points, faces, 20, 20)[0] >= 0).sum()


def test_fit_view_holds_all_points():
    points = np.array([[-0.3, 0.1], [0.5, 0.9], [np.nan, 0.0]])
    cx, cy, half = vis.fit_view([points], margin=0.1)
    assert cx - half < -0.3 and cx + half > 0.5 and cy - half < 0.1 and cy + half > 0.9
    assert half == pytest.approx(0.4 * 1.2)
    assert vis.fit_view([np.full((2, 2), np.nan)]) == (0.0, 0.0, 1.0)


def _video(posed, n=4):
    vertices, joints, faces = posed
    gt = np.repeat(vertices[:1], n, axis=0)
    pred = np.repeat(vertices[1:], n, axis=0)
    cams = np.tile(CAM, (n, 1)) + np.linspace(0, 0.1, n)[:, None] * [0, 1, 0]
    kp = cams[:, None, :1] * (joints[:1, :, :2] + cams[:, None, 1:])
    kp2d = np.concatenate([kp, np.ones((n, 24, 1))], axis=2)
    errors = np.linspace(20.0, 80.0, n)
    errors[1] = np.nan  # a frame without a 3D label
    return gt, pred, faces, cams, kp2d, errors


def test_video_figure_size_curve_and_markers(posed, tmp_path):
    gt, pred, faces, cams, kp2d, errors = _video(posed)
    path = str(tmp_path / "figure.png")
    figure = vis.video_figure(path, gt, pred, faces, cams, cams, kp2d, kp2d, errors,
                              frames=[0, 2, 3], size=96, curve_height=120)  # fmt: skip
    key = vis.legend(3 * 96, vis.legend_entries(True, True, True), 10).height
    with Image.open(path) as saved:
        assert saved.size == (3 * 96, key + 2 * 96 + 120) == figure.size
    curve = np.asarray(figure)[key + 2 * 96 :]
    red = np.all(curve == vis.MARKER_COLOR, axis=-1)
    _, xs, ys, (top, bottom) = vis.error_curve(errors, 3 * 96, 120)
    assert np.isnan(ys[1]) and ys[3] < ys[0] and top < ys[3] < bottom
    for t in (0, 2, 3):  # a marker line at each shown frame
        assert red[top:bottom, int(round(xs[t]))].mean() > 0.8
    assert not red[:, int(round(xs[1]))].any()
    assert body_mask(figure.crop((0, key, 96, key + 96))).any()  # the top-left panel's body
    plain = vis.video_figure(str(tmp_path / "plain.png"), gt, pred, faces, cams, frames=[1])
    key = vis.legend(192, vis.legend_entries(False, False, False), 12).height
    assert plain.size == (192, key + 2 * 192)


def test_video_gif_frames(posed, tmp_path):
    gt, pred, faces, cams, kp2d, errors = _video(posed)
    path = str(tmp_path / "video.gif")
    written = vis.video_gif(path, gt, pred, faces, cams, cams, kp2d, kp2d, errors, size=64,
                            curve_height=80, fps=5)  # fmt: skip
    key = vis.legend(128, vis.legend_entries(True, True, True), 10).height
    with Image.open(path) as gif:
        assert written == gif.n_frames == 4
        assert gif.size == (128, key + 64 + 80)
        assert gif.info["loop"] == 0 and gif.info["duration"] == 200
        gif.seek(2)
        frame = np.asarray(gif.convert("RGB")).astype(float)
    left, right = frame[key : key + 64, :64], frame[key : key + 64, 64:]
    assert (left[..., 0] - left[..., 2]).max() > 100  # orange on the left
    assert (right[..., 2] - right[..., 0]).max() > 100  # blue on the right


def _colour_pixels(image, colour):
    return int(np.all(np.asarray(image) == colour, axis=-1).sum())


def test_figures_open_with_a_legend_of_what_they_draw(posed, tmp_path):
    gt, pred, faces, cams, kp2d, errors = _video(posed)
    entries = vis.legend_entries(True, True, True)
    assert [text for _, _, text in entries][:4] == [
        "ground-truth body", "predicted body", "observed 2D keypoints (the data's)",
        "predicted 2D keypoints",
    ]  # fmt: skip
    figure = vis.video_figure(str(tmp_path / "f.png"), gt, pred, faces, cams, cams, kp2d, kp2d,
                              errors, frames=[0, 3], size=160)  # fmt: skip
    key = vis.legend(320, entries, 10)
    band = figure.crop((0, 0, 320, key.height))
    np.testing.assert_array_equal(np.asarray(band), np.asarray(key))
    # A swatch of every colour and black words, in a band of its own above the pictures: it
    # covers no body, and a white gap separates it from the first row.
    colours = (vis.GT_COLOR, vis.PRED_COLOR, vis.KP_GT_COLOR, vis.KP_PRED_COLOR, vis.MARKER_COLOR)
    for colour in colours:
        assert _colour_pixels(band, colour) >= 10, colour
    assert (np.asarray(band).sum(axis=-1) < 150).sum() > 100
    assert body_mask(figure.crop((0, key.height, 160, key.height + 160))).any()
    assert not body_mask(figure.crop((0, key.height - 2, 320, key.height))).any()
    # Only what a figure draws: without keypoints and curve, the two bodies on one row.
    plain = vis.video_figure(str(tmp_path / "p.png"), gt, pred, faces, cams, frames=[0, 3],
                             size=160)  # fmt: skip
    bodies = vis.legend(320, vis.legend_entries(False, False, False), 10)
    band = plain.crop((0, 0, 320, bodies.height))
    assert _colour_pixels(band, vis.GT_COLOR) and _colour_pixels(band, vis.PRED_COLOR)
    assert not any(_colour_pixels(band, colour) for colour in colours[2:])
    # A narrow picture wraps the legend onto more rows instead of cutting it off.
    assert vis.legend(120, entries, 10).height > 2 * bodies.height


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(pred_vertices=np.zeros((3, 10, 3))), r"\[N, V, 3\]"),
        (dict(gt_cams=np.zeros((4, 2))), "cameras"),
        (dict(errors=np.zeros(3)), "one value per frame"),
        (dict(frames=[0, 4]), "indices in 0..3"),
        (dict(kp2d_gt=np.zeros((4, 5))), "kp2d_gt"),
    ],
)
def test_bad_video_inputs(posed, tmp_path, change, match):
    gt, pred, faces, cams, kp2d, errors = _video(posed)
    args = dict(gt_vertices=gt, pred_vertices=pred, faces=faces, gt_cams=cams, errors=errors)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        vis.video_figure(str(tmp_path / "bad.png"), **args)
    with pytest.raises(ValueError, match=match):
        vis.video_gif(str(tmp_path / "bad.gif"), **args)
