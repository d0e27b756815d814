"""Pictures of bodies without a GPU or a display: a numpy z-buffer renderer and video figures.

Rendering needs only numpy and PIL (no OpenGL, EGL or X server), so it runs on headless
machines and in CI. A mesh is rasterized with a z-buffer (pixel centres, the depth of each
face's plane, nearest face wins), back faces culled, each face Lambert-shaded from its own
normal by a light near the camera, and the picture 2x supersampled for smooth edges. The camera
is the weak-perspective camera of the data (DESIGN.md section 3), an orthographic view, so a
mesh drawn through its cam = [s, tx, ty] lands exactly where its 2D keypoints project.

Frames: the camera frame has x right, y DOWN, z away from the viewer; the crop frame is
[-1, 1] in x and y; pixels run x right, y down, pixel (i, j) covering [i, i + 1) x [j, j + 1).

Colours: ground truth orange, prediction blue; observed (the data's) 2D keypoints green,
predicted ones magenta; `video_figure` and `video_gif` open with a legend band saying so
(`legend`), apart from the pictures so it hides nothing. Figures: `side_by_side` (one frame),
`video_figure` (a strip of frames over a per-frame error curve, PNG), `video_gif` (an
animated GIF of the same) and `occlusion_figure` (error against the degree of occlusion, the
HKMR paper's Fig. 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The rasterizer lives in the data package (frames of synthetic_motion are rendered with it).
from lmr_jax.data.render import DEFAULT_LIGHT, face_shading, rasterize  # noqa: F401

PRED_COLOR = (60, 120, 235)  # blue: predictions
GT_COLOR = (240, 135, 40)  # orange: ground truth
BODY_COLOR = (200, 200, 200)
KP_GT_COLOR = (20, 170, 60)  # green: ground-truth / observed 2D keypoints
KP_PRED_COLOR = (215, 30, 150)  # magenta: predicted 2D keypoints
MARKER_COLOR = (200, 30, 30)  # red: the shown frames on the error curve
BACKGROUND = (255, 255, 255)

View = tuple[float, float, float]  # a square of the crop frame: centre x, centre y, half side


def crop_to_pixels(points: np.ndarray, size: int, view: View | None = None) -> np.ndarray:
    """Maps crop-frame points [..., 2+] (x right, y down) to [..., 2] pixel coordinates of a
    size x size picture showing the square `view` = (cx, cy, half) of the crop frame (None:
    the whole crop [-1, 1]^2, i.e. (0, 0, 1))."""
    cx, cy, half = (0.0, 0.0, 1.0) if view is None else view
    return (np.asarray(points)[..., :2] - [cx - half, cy - half]) / (2.0 * half) * size


def project_vertices(
    vertices: np.ndarray, cam: np.ndarray, size: int, view: View | None = None
) -> np.ndarray:
    """VIBE's weak perspective x = s (X_xy + t), cam = [s, tx, ty], of [V, 3] camera-frame
    vertices, then `crop_to_pixels`: [V, 3] pixel x, pixel y and depth (z in the same pixel
    units, larger is farther, so normals stay true)."""
    s, tx, ty = (float(c) for c in np.asarray(cam))
    vertices = np.asarray(vertices, np.float64)
    xy = s * (vertices[:, :2] + np.array([tx, ty]))
    half = 1.0 if view is None else view[2]
    depth = vertices[:, 2:3] * s * 0.5 * size / half
    return np.concatenate([crop_to_pixels(xy, size, view), depth], axis=1)


def fit_view(points: Sequence[np.ndarray], margin: float = 0.08) -> View:
    """The smallest square (cx, cy, half) of the crop frame holding all `points` ([..., 2+]
    crop-frame arrays, NaNs ignored), widened by `margin` of its side on each side; (0, 0, 1)
    if no point is finite."""
    xy = np.concatenate([np.asarray(p, np.float64)[..., :2].reshape(-1, 2) for p in points])
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) == 0:
        return (0.0, 0.0, 1.0)
    low, high = xy.min(axis=0), xy.max(axis=0)
    half = max(float((high - low).max()) / 2.0, 1e-3) * (1.0 + 2.0 * margin)
    return (float(low[0] + high[0]) / 2.0, float(low[1] + high[1]) / 2.0, half)


def render_mesh(
    image: Image.Image,
    points: np.ndarray,
    faces: np.ndarray,
    color: tuple[int, int, int] = BODY_COLOR,
    light: tuple[float, float, float] = DEFAULT_LIGHT,
    alpha: float = 1.0,
    supersample: int = 2,
) -> Image.Image:
    """Draws a shaded mesh onto `image` (z-buffered, back faces culled, edges antialiased).

    Args:
      image: an RGB PIL image, drawn on in place and returned.
      points: [V, 3] pixel x, pixel y (down) and depth (larger is farther from the viewer).
      faces: [F, 3] triangle indices, counter-clockwise seen from outside.
      color: base RGB colour; alpha: opacity of the mesh.
      light: direction towards the light in the same frame (x right, y down, z away).
      supersample: rasterize at this many samples per pixel side, then average.

    Returns:
      The image.
    """
    k = int(supersample)
    width, height = image.size
    points = np.asarray(points, np.float64) * k  # x, y and depth: normals keep their direction
    face_index, _ = rasterize(points, faces, height * k, width * k)
    shade = face_shading(points, faces, light)[:, None] * np.asarray(color, np.float64)
    palette = np.round(np.append(shade, [[0.0, 0.0, 0.0]], axis=0)).astype(np.uint8)
    rgb = palette[face_index]  # [H k, W k, 3]; black (index -1) off the mesh
    covered = (face_index >= 0).astype(np.uint8) * np.uint8(255)

    def block_mean(a):  # PIL's box filter at an integer factor: the mean of each k x k block
        return np.asarray(Image.fromarray(a).resize((width, height), Image.BOX), np.float32)

    coverage = alpha * block_mean(covered)[..., None] / 255.0
    base = np.asarray(image.convert("RGB"), np.float32)
    out = alpha * block_mean(rgb) + (1.0 - coverage) * base  # rgb is premultiplied by coverage
    image.paste(Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8)))
    return image


def draw_keypoints(
    image: Image.Image,
    kp2d: np.ndarray,
    size: int,
    color: tuple[int, int, int] = KP_GT_COLOR,
    radius: float = 2.5,
    view: View | None = None,
) -> Image.Image:
    """Draws crop-frame keypoints [J, 2] or [J, 3] (confidence 0: skipped) onto `image`, a
    picture of side `size` showing `view` (see `crop_to_pixels`)."""
    kp2d = np.asarray(kp2d)
    conf = kp2d[:, 2] if kp2d.shape[1] > 2 else np.ones(len(kp2d))
    draw = ImageDraw.Draw(image)
    for (x, y), c in zip(crop_to_pixels(kp2d, size, view), conf, strict=True):
        if c > 0 and np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    return image


def mesh_panel(
    vertices: np.ndarray,
    faces: np.ndarray,
    cam: np.ndarray,
    color: tuple[int, int, int],
    kp2d: np.ndarray | None = None,
    size: int = 256,
    kp2d_pred: np.ndarray | None = None,
    view: View | None = None,
) -> Image.Image:
    """One square picture of a mesh seen through its weak-perspective camera.

    Args:
      vertices: [V, 3] camera-frame vertices; faces: [F, 3]; cam: [3] = [s, tx, ty].
      color: mesh colour.
      kp2d: optional [J, 2|3] ground-truth crop-frame keypoints, drawn green.
      size: picture side in pixels.
      kp2d_pred: optional [J, 2|3] predicted keypoints, drawn magenta (over the green).
      view: the square of the crop frame shown (see `crop_to_pixels`); None: all of it.

    Returns:
      A size x size RGB image.
    """
    image = Image.new("RGB", (size, size), BACKGROUND)
    render_mesh(image, project_vertices(vertices, cam, size, view), faces, color)
    radius = max(1.5, size / 110)
    if kp2d is not None:
        draw_keypoints(image, kp2d, size, KP_GT_COLOR, radius, view)
    if kp2d_pred is not None:
        draw_keypoints(image, kp2d_pred, size, KP_PRED_COLOR, radius * 0.75, view)
    return image


def side_by_side(
    gt_vertices: np.ndarray,
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    gt_cam: np.ndarray,
    pred_cam: np.ndarray,
    kp2d: np.ndarray | None = None,
    size: int = 256,
    kp2d_pred: np.ndarray | None = None,
) -> Image.Image:
    """Ground truth (orange, left) beside prediction (blue, right), a (2 size) x size image.

    Each mesh goes through its own camera into the same [-1, 1] crop: both panels share one
    pixel grid; the green ground-truth keypoints go on both, the magenta predicted ones on the
    prediction.
    """
    panel = Image.new("RGB", (2 * size, size), BACKGROUND)
    panel.paste(mesh_panel(gt_vertices, faces, gt_cam, GT_COLOR, kp2d, size), (0, 0))
    pred = mesh_panel(pred_vertices, faces, pred_cam, PRED_COLOR, kp2d, size, kp2d_pred)
    panel.paste(pred, (size, 0))
    return panel


def save_strip(panels: list[Image.Image], path: str) -> None:
    """Stacks pictures vertically into one PNG."""
    tops = np.cumsum([0] + [p.height for p in panels])
    sheet = Image.new("RGB", (max(p.width for p in panels), int(tops[-1])), BACKGROUND)
    for p, top in zip(panels, tops, strict=False):
        sheet.paste(p, (0, int(top)))
    sheet.save(path)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError):  # Pillow without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def _label(image: Image.Image, text: str, xy: tuple[int, int], color) -> None:
    font = _font(max(10, image.height // 16))
    ImageDraw.Draw(image).text(xy, text, fill=color, font=font)


def legend_entries(kp2d_gt: bool, kp2d_pred: bool, errors: bool) -> list[tuple[str, tuple, str]]:
    """What the figures' colours mean: (swatch kind, colour, text) for `legend`, the dots and
    the frame markers only where the figure draws them."""
    entries = [("body", GT_COLOR, "ground-truth body"), ("body", PRED_COLOR, "predicted body")]
    if kp2d_gt:
        entries.append(("dot", KP_GT_COLOR, "observed 2D keypoints (the data's)"))
    if kp2d_pred:
        entries.append(("dot", KP_PRED_COLOR, "predicted 2D keypoints"))
    if errors:
        entries.append(("line", MARKER_COLOR, "shown frame"))
    return entries


def legend(width: int, entries: Sequence[tuple[str, tuple, str]], font_size: int = 12):
    """A band `width` pixels wide explaining the colours: a swatch (a square for a body, a dot
    for keypoints, a bar for the error curve's markers) and its text per entry, left to right,
    wrapped onto more rows where the width runs out. Drawn apart from the pictures, so it
    never hides a body or the curve."""
    font = _font(font_size)
    row, swatch, pad = font_size + 8, font_size, 6
    items = [(kind, color, text, swatch + 4 + int(font.getlength(text))) for kind, color, text
             in entries]  # fmt: skip
    places, x, y = [], pad, 0
    for kind, color, text, w in items:
        if x > pad and x + w > width - pad:  # no room left on this row
            x, y = pad, y + row
        places.append((kind, color, text, x, y))
        x += w + 3 * pad
    band = Image.new("RGB", (width, y + row + pad // 2), BACKGROUND)  # a gap to the pictures
    draw = ImageDraw.Draw(band)
    for kind, color, text, x, y in places:
        top, mid = y + (row - swatch) // 2, y + row // 2
        if kind == "body":
            draw.rectangle([x, top, x + swatch - 1, top + swatch - 1], fill=color)
        elif kind == "dot":
            r = swatch // 3
            draw.ellipse([x + swatch // 2 - r, mid - r, x + swatch // 2 + r, mid + r], fill=color)
        else:
            draw.rectangle(
                [x + swatch // 2 - 1, top, x + swatch // 2, top + swatch - 1], fill=color
            )
        draw.text((x + swatch + 4, mid), text, fill=(0, 0, 0), font=font, anchor="lm")
    return band


def error_curve(
    errors: np.ndarray, width: int, height: int, label: str = "MPJPE (mm)"
) -> tuple[Image.Image, np.ndarray, np.ndarray, tuple[int, int]]:
    """A per-frame error curve drawn with matplotlib's Agg backend (no display needed).

    Args:
      errors: [N] error per frame (NaN where a frame has no label: a gap in the curve).
      width, height: picture size in pixels; label: the y-axis label.

    Returns:
      The RGB picture, the [N] pixel x of each frame and [N] pixel y of each error (NaN where
      the error is) and the pixel rows (top, bottom) of the axes, for markers drawn on top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    errors = np.asarray(errors, np.float64)
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    # Margins in pixels (room for the tick labels and axis labels), as figure fractions.
    left, right, bottom, top = 48 / width, 8 / width, 30 / height, 6 / height
    ax = fig.add_axes((left, bottom, 1.0 - left - right, 1.0 - bottom - top))
    frames = np.arange(len(errors))
    ax.plot(frames, errors, color="0.2", linewidth=1.2)
    ax.set_xlim(-0.5, len(errors) - 0.5)
    top_error = np.nanmax(errors) if np.isfinite(errors).any() else 0.0
    ax.set_ylim(0.0, 1.1 * top_error if top_error > 0 else 1.0)
    ax.set_xlabel("frame", fontsize=8, labelpad=1)
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    FigureCanvasAgg(fig).draw()  # the Agg canvas becomes fig.canvas
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    # Matplotlib's display coordinates have y up from the bottom; PIL's have y down.
    points = ax.transData.transform(np.stack([frames, np.nan_to_num(errors)], axis=1))
    ys = np.where(np.isfinite(errors), height - points[:, 1], np.nan)
    box = ax.get_window_extent()
    return image, points[:, 0], ys, (int(height - box.y1), int(height - box.y0))


def _mark(image: Image.Image, x: float, y: float, span: tuple[int, int], color) -> None:
    draw = ImageDraw.Draw(image)
    draw.line([(x, span[0]), (x, span[1])], fill=color, width=2)
    if np.isfinite(y):
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color, outline=(0, 0, 0))


def _frame_panels(video: dict, faces, t: int, size: int, view, errors):
    """The ground-truth and prediction panels of frame t, the frame (and error) written on."""
    gt_kp = None if video["kp2d_gt"] is None else video["kp2d_gt"][t]
    pred_kp = None if video["kp2d_pred"] is None else video["kp2d_pred"][t]
    gt_cam, pred_cam = video["gt_cams"][t], video["pred_cams"][t]
    gt = mesh_panel(video["gt"][t], faces, gt_cam, GT_COLOR, gt_kp, size, view=view)
    pred = mesh_panel(video["pred"][t], faces, pred_cam, PRED_COLOR, gt_kp, size, pred_kp, view)
    missing = errors is None or not np.isfinite(errors[t])
    _label(gt, f"frame {t}" + ("" if missing else f": {errors[t]:.0f} mm"), (4, 2), (0, 0, 0))
    return gt, pred


def _video_view(video: dict, frames: np.ndarray) -> View:
    """One square of the crop frame holding every shown mesh (both panels use it: aligned)."""
    projected = []
    for key, cams in (("gt", "gt_cams"), ("pred", "pred_cams")):
        cam = video[cams][frames][:, None]  # [n, 1, 3]
        projected.append(cam[..., :1] * (video[key][frames, ::7, :2] + cam[..., 1:]))
    return fit_view(projected, margin=0.14)  # room above the head for the frame label


def _prepare(gt_vertices, pred_vertices, gt_cams, pred_cams, kp2d_gt, kp2d_pred, errors, frames,
             zoom: bool, spread: int | None = None):  # fmt: skip
    """Checks a video's arrays; returns them (a dict), the frames shown and the view."""
    gt, pred = np.asarray(gt_vertices), np.asarray(pred_vertices)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"vertices must be two [N, V, 3] arrays; got {gt.shape}, {pred.shape}.")
    n = len(gt)
    gt_cams = np.asarray(gt_cams, np.float64)
    pred_cams = gt_cams if pred_cams is None else np.asarray(pred_cams, np.float64)
    if gt_cams.shape != (n, 3) or pred_cams.shape != (n, 3):
        raise ValueError(f"cameras must be [{n}, 3]; got {gt_cams.shape}, {pred_cams.shape}.")
    if errors is not None and np.shape(errors) != (n,):
        raise ValueError(f"errors must hold one value per frame ({n}); got {np.shape(errors)}.")
    for name, kp in (("kp2d_gt", kp2d_gt), ("kp2d_pred", kp2d_pred)):
        if kp is not None and (np.ndim(kp) != 3 or len(kp) != n or np.shape(kp)[2] not in (2, 3)):
            raise ValueError(f"{name} must have shape [{n}, J, 2 or 3]; got {np.shape(kp)}.")
    if frames is None:  # all frames, or `spread` evenly spaced ones
        frames = np.linspace(0, n - 1, n if spread is None else min(spread, n)).round()
    frames = np.asarray(frames, np.int64).reshape(-1)
    if n == 0 or len(frames) == 0 or frames.min() < 0 or frames.max() >= n:
        raise ValueError(f"frames must be a non-empty list of indices in 0..{n - 1}.")
    cams = dict(gt_cams=gt_cams, pred_cams=pred_cams)
    video = dict(gt=gt, pred=pred, kp2d_gt=kp2d_gt, kp2d_pred=kp2d_pred, **cams)
    return video, frames, _video_view(video, frames) if zoom else None


def video_figure(
    path: str,
    gt_vertices: np.ndarray,
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    gt_cams: np.ndarray,
    pred_cams: np.ndarray | None = None,
    kp2d_gt: np.ndarray | None = None,
    kp2d_pred: np.ndarray | None = None,
    errors: np.ndarray | None = None,
    frames: Sequence[int] | None = None,
    size: int = 192,
    curve_height: int = 160,
    error_label: str = "MPJPE (mm)",
    zoom: bool = True,
) -> Image.Image:
    """A strip of frames, ground truth over prediction, above the per-frame error curve (PNG).

    Layout: a legend band on top (`legend`: which body and which dots are which); then one
    column per shown frame; the top row is the ground truth (orange) with the
    ground-truth keypoints (green), the row below the prediction (blue) with the ground-truth
    and predicted (magenta) keypoints, each mesh drawn through its own camera into the same
    crop frame and seen through one square window of it (`zoom`); under the strip, the error
    curve over the whole video with a marker (red line and dot) at every shown frame. The
    picture is len(frames) * size pixels wide and legend + 2 * size + curve_height high (no
    curve without errors).

    Args:
      path: the .png to write.
      gt_vertices, pred_vertices: [N, V, 3] camera-frame vertices of the video's N frames.
      faces: [F, 3] triangle indices.
      gt_cams, pred_cams: [N, 3] weak-perspective cameras (pred_cams defaults to gt_cams).
      kp2d_gt, kp2d_pred: optional [N, J, 2|3] crop-frame keypoints (confidence 0: skipped).
      errors: optional [N] per-frame error in mm (e.g. `metrics.mpjpe`; NaN: no label).
      frames: indices of the shown frames (default: 5 evenly spaced frames).
      size, curve_height: panel side and curve height in pixels.
      error_label: y-axis label of the curve.
      zoom: show the smallest square of the crop frame holding every shown mesh (one square
        for all panels: meshes and keypoints stay aligned); False: the whole [-1, 1] crop.

    Returns:
      The picture (also saved to `path`).

    Raises:
      ValueError: on inconsistent shapes or frame indices outside the video.
    """
    video, frames, view = _prepare(
        gt_vertices, pred_vertices, gt_cams, pred_cams, kp2d_gt, kp2d_pred, errors, frames, zoom, 5
    )
    curve_height = curve_height if errors is not None else 0
    width = len(frames) * size
    key = legend(width, _video_legend(video, errors), max(10, size // 16))
    sheet = Image.new("RGB", (width, key.height + 2 * size + curve_height), BACKGROUND)
    sheet.paste(key, (0, 0))
    for column, t in enumerate(frames):
        gt, pred = _frame_panels(video, faces, t, size, view, errors)
        if column == 0:
            _label(gt, "ground truth", (4, size - size // 12), GT_COLOR)
            _label(pred, "prediction", (4, size - size // 12), PRED_COLOR)
        sheet.paste(gt, (column * size, key.height))
        sheet.paste(pred, (column * size, key.height + size))
    if errors is not None:
        curve, xs, ys, span = error_curve(errors, sheet.width, curve_height, error_label)
        for t in frames:
            _mark(curve, xs[t], ys[t], span, MARKER_COLOR)
        sheet.paste(curve, (0, key.height + 2 * size))
    sheet.save(path)
    return sheet


def _video_legend(video: dict, errors) -> list[tuple[str, tuple, str]]:
    kp = [video[k] is not None for k in ("kp2d_gt", "kp2d_pred")]
    return legend_entries(*kp, errors=errors is not None)


def video_gif(
    path: str,
    gt_vertices: np.ndarray,
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    gt_cams: np.ndarray,
    pred_cams: np.ndarray | None = None,
    kp2d_gt: np.ndarray | None = None,
    kp2d_pred: np.ndarray | None = None,
    errors: np.ndarray | None = None,
    frames: Sequence[int] | None = None,
    size: int = 192,
    curve_height: int = 120,
    fps: float = 10.0,
    error_label: str = "MPJPE (mm)",
    zoom: bool = True,
) -> int:
    """An animated GIF, looping: ground truth (orange, left) beside prediction (blue, right)
    over the error curve of the whole video with a marker at the current frame, under the
    legend band. A GIF frame is 2 * size pixels wide and legend + size + curve_height high (no
    curve without errors).

    Args:
      path: the .gif to write.
      gt_vertices ... error_label, zoom: as in `video_figure` (one square for all frames).
      frames: the video frames to animate, in order (default: all N).
      fps: playback rate (GIF delays are stored in 10 ms steps).

    Returns:
      The number of GIF frames written.

    Raises:
      ValueError: on inconsistent shapes or frame indices outside the video.
    """
    video, frames, view = _prepare(
        gt_vertices, pred_vertices, gt_cams, pred_cams, kp2d_gt, kp2d_pred, errors, frames, zoom
    )
    curve_height = curve_height if errors is not None else 0
    if errors is not None:
        curve, xs, ys, span = error_curve(errors, 2 * size, curve_height, error_label)
    key = legend(2 * size, _video_legend(video, errors), max(10, size // 16))
    pictures = []
    for t in frames:
        picture = Image.new("RGB", (2 * size, key.height + size + curve_height), BACKGROUND)
        picture.paste(key, (0, 0))
        gt, pred = _frame_panels(video, faces, t, size, view, errors)
        picture.paste(gt, (0, key.height))
        picture.paste(pred, (size, key.height))
        if errors is not None:
            marked = curve.copy()
            _mark(marked, xs[t], ys[t], span, MARKER_COLOR)
            picture.paste(marked, (0, key.height + size))
        # One palette per frame, without dithering: flat shading stays clean (no speckles).
        pictures.append(picture.quantize(256, dither=Image.Dither.NONE))
    pictures[0].save(
        path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0
    )
    return len(pictures)


def occlusion_figure(runs: dict[str, dict], path: str) -> None:
    """The HKMR paper's Fig. 6 for several runs (label -> `evaluate_occlusion` results): one
    panel per occluder kind, MPJPE (top row) and PA-MPJPE (bottom row) against the degree of
    occlusion 0..5, one line per run; written as a PNG with matplotlib's Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = list(dict.fromkeys(k for results in runs.values() for k in results["curves"]))
    fig = Figure(figsize=(3.2 * len(kinds), 5.6), dpi=100, layout="constrained")
    axes = fig.subplots(2, len(kinds), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, metric in enumerate(("MPJPE", "PA-MPJPE")):
            ax = axes[row, col]
            for label, results in runs.items():
                curve = results["curves"].get(kind)
                if curve is not None:
                    ax.plot(range(len(curve[metric])), curve[metric], marker="o", label=label)
            ax.set_title(f"{kind}" if row == 0 else "", fontsize=10)
            ax.set_xlabel("degree of occlusion", fontsize=8)
            ax.set_ylabel(f"{metric} (mm)", fontsize=8)
            ax.set_xticks(range(6))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    FigureCanvasAgg(fig).print_png(path)
