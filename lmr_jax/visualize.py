"""Pictures of bodies without a GPU or a display: a numpy/PIL mesh renderer and figure helpers.

Meshes are drawn with the painter's algorithm (faces sorted far to near, back faces culled)
and flat Lambertian shading, under an orthographic camera: that is the weak-perspective
camera of the data, so a mesh drawn from (s, tx, ty) lands exactly on its projected 2D
keypoints. Pixel coordinates: x to the right, y down, from a [-1, 1] crop frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PRED_COLOR = (90, 150, 230)  # blue: predictions
GT_COLOR = (230, 150, 80)  # orange: ground truth
BODY_COLOR = (200, 200, 200)


def crop_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Maps crop-frame coordinates in [-1, 1] (x right, y down) to pixel coordinates."""
    return (np.asarray(points)[..., :2] + 1.0) * 0.5 * size


def project_vertices(vertices: np.ndarray, cam: np.ndarray, size: int) -> np.ndarray:
    """Weak-perspective projection of [V, 3] vertices to [V, 3] (pixel x, pixel y, depth).

    Uses VIBE's camera x = s * (X_xy + t), cam = [s, tx, ty], in a y-down camera frame.
    """
    s, tx, ty = (float(c) for c in cam)
    xy = s * (vertices[:, :2] + np.array([tx, ty]))
    # Depth in the same pixel units as x and y, so that shading sees true normals.
    depth = vertices[:, 2:3] * s * 0.5 * size
    return np.concatenate([crop_to_pixels(xy, size), depth], axis=1)


def render_mesh(
    image: Image.Image,
    points: np.ndarray,
    faces: np.ndarray,
    color: tuple[int, int, int] = BODY_COLOR,
    light: tuple[float, float, float] = (0.3, -0.4, -1.0),
    alpha: float = 1.0,
) -> Image.Image:
    """Draws a shaded mesh onto `image`.

    Args:
      image: an RGB PIL image, drawn on in place and returned.
      points: [V, 3] pixel x, pixel y (down) and depth (larger is farther from the viewer).
      faces: [F, 3] triangle indices.
      color: base RGB colour.
      light: direction towards the light in the same frame (x right, y down, z away).
      alpha: opacity of the mesh layer.

    Returns:
      The image.
    """
    tri = points[np.asarray(faces)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    # x right, y down, z away is a left-handed view of a right-handed mesh frame: faces whose
    # outward normal points to the viewer have a negative z component here.
    visible = normals[:, 2] < 0
    light = np.asarray(light, float) / np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0.0, 1.0)
    order = np.argsort(-tri[:, :, 2].mean(axis=1))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    base = np.asarray(color, float)
    for f in order:
        if not visible[f]:
            continue
        rgb = tuple(int(c) for c in np.clip(base * shade[f], 0, 255))
        draw.polygon([tuple(p) for p in tri[f, :, :2]], fill=(*rgb, int(255 * alpha)))
    out = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    image.paste(out)
    return image


def draw_keypoints(
    image: Image.Image,
    kp2d: np.ndarray,
    size: int,
    color: tuple[int, int, int] = (40, 200, 60),
    radius: float = 2.5,
) -> Image.Image:
    """Draws crop-frame keypoints [J, 2] or [J, 3] (confidence 0 = skipped) onto `image`."""
    kp2d = np.asarray(kp2d)
    conf = kp2d[:, 2] if kp2d.shape[1] > 2 else np.ones(len(kp2d))
    draw = ImageDraw.Draw(image)
    for (x, y), c in zip(crop_to_pixels(kp2d, size), conf, strict=True):
        if c > 0:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    return image


def mesh_panel(
    vertices: np.ndarray,
    faces: np.ndarray,
    cam: np.ndarray,
    color: tuple[int, int, int],
    kp2d: np.ndarray | None = None,
    size: int = 256,
) -> Image.Image:
    """One crop-sized picture of a mesh seen through its weak-perspective camera."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    render_mesh(image, project_vertices(np.asarray(vertices), cam, size), faces, color)
    if kp2d is not None:
        draw_keypoints(image, kp2d, size)
    return image


def side_by_side(
    gt_vertices: np.ndarray,
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    gt_cam: np.ndarray,
    pred_cam: np.ndarray,
    kp2d: np.ndarray | None = None,
    size: int = 256,
) -> Image.Image:
    """Ground truth (orange) and prediction (blue) in the same crop frame, keypoints on both."""
    panel = Image.new("RGB", (2 * size, size), (255, 255, 255))
    panel.paste(mesh_panel(gt_vertices, faces, gt_cam, GT_COLOR, kp2d, size), (0, 0))
    panel.paste(mesh_panel(pred_vertices, faces, pred_cam, PRED_COLOR, kp2d, size), (size, 0))
    return panel


def save_strip(panels: list[Image.Image], path: str) -> None:
    """Stacks pictures vertically into one PNG."""
    width = max(p.width for p in panels)
    sheet = Image.new("RGB", (width, sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    sheet.save(path)
