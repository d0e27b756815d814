"""The numpy renderer: a z-buffer rasterizer, and frames of synthetic videos drawn with it.

Rendering needs only numpy and Pillow (no OpenGL, EGL or X server). `rasterize` and
`face_shading` are the z-buffer rasterizer and Lambert shading that `lmr_jax.visualize` draws its
figures with (they live here, below `visualize`, because the data package renders frames too).

`render_video` draws the frames of a synthetic video (`lmr_jax.data.synthetic.generate_video`) as
a camera would see them, in the video's own crop: pixel = (x_2d + 1) / 2 * size of the video's
weak-perspective camera x_2d = s (X_xy + t) (DESIGN.md section 3), so the frames line up with the
dataset's kp2d. One frame is, back to front:

1. the background: one picture per video (seeded, static over the video): smooth colour noise
   (a random 3x3 to 8x8 colour grid, bilinearly upsampled), blended with stripes of a random
   angle, period and colour and with 3-8 discs of random colours (`background`);
2. the SMPL mesh of the frame (vertices from the body model posed as in the video), z-buffered
   at pixel centres, back faces culled, each face Lambert-shaded (`face_shading`, the light near
   the camera) with a per-video colour for its region: skin (head, hands), top (torso, arms),
   trousers (pelvis, legs); a face's region is its first vertex's most-weighted joint;
3. the occluders: where the video's kp2d marks a keypoint hidden (confidence 0 and its true,
   noise-free projection inside the crop), one opaque box per occluded body part (the parts of
   `synthetic.joint_parts`) covering the true projections of that part's hidden keypoints with
   a margin of `OCCLUDER_MARGIN` of the crop side, so the image really hides them. Each part
   has its own per-video occluder look (two random colours in stripes), so an occlusion event
   that lasts several frames shows one object. A box may also cover visible keypoints of
   another part that lies beneath it; their labels stay visible (as a detector that sees
   through clutter would report them).

No antialiasing (one sample per pixel): the frames are JPEG-compressed anyway. The frames'
randomness comes from its own seed stream (`render_rng`), never from the generator's, so
rendering changes none of a video's labels. Frames are uint8 RGB [N, size, size, 3];
`encode_jpeg` / `decode_jpeg` store them as JPEG bytes (Pillow).
"""

from __future__ import annotations

import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lmr_jax import geometry, smpl
from lmr_jax.data import synthetic

DEFAULT_LIGHT = (-0.5, -0.6, -1.0)  # towards the light: from beside the camera, up and left
RENDER_STREAM = 0x52454E44  # appended to a video's seed: the renderer's own random stream
OCCLUDER_MARGIN = 0.06  # of the crop side, around the hidden keypoints' box
JPEG_QUALITY = 90
# SMPL joints whose faces get the skin colour (neck, head, wrists, hands) and the
# trousers colour (pelvis, hips, knees, ankles, feet); the rest is the top.
SKIN_JOINTS = (12, 15, 20, 21, 22, 23)
TROUSER_JOINTS = (0, 1, 2, 4, 5, 7, 8, 10, 11)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with `counts` parts each: the item of every part and its rank in the item."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]


def rasterize(
    points: np.ndarray, faces: np.ndarray, height: int, width: int, cull_back: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer rasterization of a triangle mesh at pixel centres, vectorized over spans.

    Every face is cut into one horizontal span per pixel row it covers (the row centre meets
    two of its edges); the spans expand into exactly the pixel centres they hold, each with the
    depth of the face's plane there, and the nearest face wins each pixel. Centres on a shared
    edge go to both faces, so a closed mesh leaves no cracks.

    Args:
      points: [V, 3] pixel x, pixel y (down) and depth (larger is farther).
      faces: [F, 3] vertex indices, counter-clockwise seen from outside (SMPL's winding).
      height, width: image size in pixels.
      cull_back: skip faces turned away from the viewer.

    Returns:
      face_index: [height, width] int64, the nearest face covering each pixel centre, -1 where
        none does.
      depth: [height, width] float64 depth of that face there, +inf where none.
    """
    tri = np.asarray(points, np.float64)[np.asarray(faces)]  # [F, 3 corners, xyz]
    finite = np.isfinite(tri).all(axis=(1, 2))
    tri = np.where(finite[:, None, None], tri, 0.0)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    ex, ey = x[:, 1:] - x[:, :1], y[:, 1:] - y[:, :1]  # edges from corner 0, [F, 2]
    # Twice the signed area; also the z of the face normal, negative on front faces.
    area = ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]
    row0 = np.clip(np.ceil(y.min(axis=1) - 0.5), 0, height).astype(np.int64)
    row1 = np.clip(np.floor(y.max(axis=1) - 0.5), -1, height - 1).astype(np.int64)
    live = (area < 0 if cull_back else area != 0) & finite & (row1 >= row0)
    ids = np.flatnonzero(live)
    # The depth plane z = z0 + dzdx (x - x0) + dzdy (y - y0) of each face.
    ez = z[ids, 1:] - z[ids, :1]
    dzdx = (ez[:, 0] * ey[ids, 1] - ez[:, 1] * ey[ids, 0]) / area[ids]
    dzdy = (ex[ids, 0] * ez[:, 1] - ex[ids, 1] * ez[:, 0]) / area[ids]
    span_face, rank = _expand(row1[ids] - row0[ids] + 1)  # one span per (face, row)
    row = row0[ids][span_face] + rank
    cy = row + 0.5
    xs, ys = x[ids][span_face], y[ids][span_face]  # [S, 3]
    left, right = np.full(len(row), np.inf), np.full(len(row), -np.inf)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ya, yb = ys[:, a], ys[:, b]
        meets = (np.minimum(ya, yb) <= cy) & (cy <= np.maximum(ya, yb)) & (ya != yb)
        t = (cy - ya) / np.where(ya != yb, yb - ya, 1.0)
        cross = xs[:, a] + t * (xs[:, b] - xs[:, a])
        left = np.where(meets, np.minimum(left, cross), left)
        right = np.where(meets, np.maximum(right, cross), right)
    col0 = np.clip(np.ceil(left - 0.5), 0, width).astype(np.int64)
    col1 = np.clip(np.floor(right - 0.5), -1, width - 1).astype(np.int64)
    pixel_span, rank = _expand(np.maximum(col1 - col0 + 1, 0))  # the spans' pixels
    col = col0[pixel_span] + rank
    face = span_face[pixel_span]
    corner = tri[ids[face], 0]
    d = corner[:, 2] + dzdx[face] * (col + 0.5 - corner[:, 0])
    d += dzdy[face] * (row[pixel_span] + 0.5 - corner[:, 1])
    pixel = row[pixel_span] * width + col
    order = np.lexsort((d, pixel))  # by pixel, then nearest first
    win = order[np.diff(pixel[order], prepend=-1) != 0]  # the first of each pixel
    face_index, depth = np.full(height * width, -1), np.full(height * width, np.inf)
    face_index[pixel[win]] = ids[face[win]]
    depth[pixel[win]] = d[win]
    return face_index.reshape(height, width), depth.reshape(height, width)


def face_shading(points: np.ndarray, faces: np.ndarray, light=DEFAULT_LIGHT, ambient=0.3):
    """Lambert shading per face, [F] = ambient + (1 - ambient) max(0, n . l), with n the unit
    normal of each counter-clockwise face of `points` [V, 3] (x, y, depth in one unit) and l
    the unit direction towards the light in the same frame."""
    tri = np.asarray(points, np.float64)[np.asarray(faces)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    light = np.asarray(light, np.float64) / np.linalg.norm(light)
    return ambient + (1.0 - ambient) * np.clip(normals @ light, 0.0, 1.0)


def render_rng(seed) -> np.random.Generator:
    """The renderer's generator for a video of generator seed `seed` (an int or ints)."""
    return np.random.default_rng([*np.atleast_1d(np.asarray(seed, np.int64)), RENDER_STREAM])


def crop_to_pixels(xy: np.ndarray, size: int) -> np.ndarray:
    """Crop-frame points [..., 2] ([-1, 1], y down) to pixel coordinates of a size^2 frame."""
    return (np.asarray(xy, np.float64) + 1.0) / 2.0 * size


def mesh_points(vertices: np.ndarray, cam: np.ndarray, size: int) -> np.ndarray:
    """[V, 3] pixel x, pixel y and depth (z in pixel units, larger is farther) of camera-frame
    vertices [V, 3] seen through cam = [s, tx, ty] (x_2d = s (X_xy + t))."""
    s, tx, ty = (float(c) for c in np.asarray(cam))
    vertices = np.asarray(vertices, np.float64)
    xy = crop_to_pixels(s * (vertices[:, :2] + np.array([tx, ty])), size)
    return np.concatenate([xy, vertices[:, 2:3] * s * 0.5 * size], axis=1)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) [size, size], in units of the frame side."""
    centres = (np.arange(size) + 0.5) / size
    return np.meshgrid(centres, centres)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random textured background [size, size, 3] uint8 (see the module docstring)."""
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float64)
    x, y = _grid(size)
    angle, period = rng.uniform(0, np.pi), rng.uniform(0.05, 0.3)
    phase = (x * np.cos(angle) + y * np.sin(angle)) / period
    stripes = (np.floor(phase) % 2 == 0)[..., None]
    image = np.where(stripes, 0.6 * image + 0.4 * rng.uniform(0, 255, size=3), image)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < r * r)[..., None]
        image = np.where(disc, rng.uniform(0, 255, size=3), image)
    return np.round(image).astype(np.uint8)


def face_regions(body_model: smpl.SMPLModel) -> np.ndarray:
    """[F] region per face: 0 skin, 1 top, 2 trousers (see SKIN_JOINTS, TROUSER_JOINTS)."""
    faces = np.asarray(body_model.faces)
    joint = np.asarray(body_model.weights)[faces[:, 0]].argmax(axis=1)
    return np.where(np.isin(joint, SKIN_JOINTS), 0, np.where(np.isin(joint, TROUSER_JOINTS), 2, 1))


@dataclasses.dataclass(frozen=True)
class VideoLook:
    """The per-video random choices of the renderer.

    Attributes:
      background: [size, size, 3] uint8.
      body_colors: [3, 3] RGB of skin, top and trousers.
      occluder_colors: [P, 2, 3] two RGB colours per body part's occluder.
      occluder_stripes: [P, 2] stripe angle (radians) and period (of the frame side) per part.
    """

    background: np.ndarray
    body_colors: np.ndarray
    occluder_colors: np.ndarray
    occluder_stripes: np.ndarray


def sample_look(rng: np.random.Generator, size: int) -> VideoLook:
    """Draws a video's look: background, body colours, occluders (a fixed order of draws)."""
    image = background(rng, size)
    skin = rng.uniform([120, 70, 40], [240, 200, 170])
    clothes = rng.uniform(20, 235, size=(2, 3))
    parts = len(smpl.PARTS)
    colors = rng.uniform(0, 255, size=(parts, 2, 3))
    stripes = np.stack([rng.uniform(0, np.pi, parts), rng.uniform(0.04, 0.2, parts)], axis=1)
    return VideoLook(image, np.concatenate([skin[None], clothes]), colors, stripes)


def occluder_boxes(kp2d: np.ndarray, true_xy: np.ndarray, size: int) -> list[tuple]:
    """The occluders of one frame: (part index, x0, y0, x1, y1) pixel boxes (half-open).

    Args:
      kp2d: [J, 3] the frame's keypoints (confidence 0 = hidden).
      true_xy: [J, 2] the noise-free crop-frame projections of the same joints.
      size: the frame side in pixels.
    """
    parts = np.asarray(synthetic.joint_parts())
    names = list(smpl.PARTS)
    hidden = (kp2d[:, 2] == 0) & np.all(np.abs(true_xy) <= 1.0, axis=1)
    boxes = []
    margin = OCCLUDER_MARGIN * size
    for index, name in enumerate(names):
        mine = hidden & (parts == name)
        if not mine.any():
            continue
        px = crop_to_pixels(true_xy[mine], size)
        low, high = px.min(axis=0) - margin, px.max(axis=0) + margin
        x0, y0 = np.clip(np.floor(low), 0, size).astype(int)
        x1, y1 = np.clip(np.ceil(high), 0, size).astype(int)
        boxes.append((index, int(x0), int(y0), int(x1), int(y1)))
    return boxes


def draw_occluders(image: np.ndarray, boxes: list[tuple], look: VideoLook) -> np.ndarray:
    """Paints the striped, opaque occluder boxes onto `image` [S, S, 3] uint8 in place."""
    x, y = _grid(image.shape[0])
    for part, x0, y0, x1, y1 in boxes:
        angle, period = look.occluder_stripes[part]
        phase = (x[y0:y1, x0:x1] * np.cos(angle) + y[y0:y1, x0:x1] * np.sin(angle)) / period
        first = (np.floor(phase) % 2 == 0)[..., None]
        color = look.occluder_colors[part]
        image[y0:y1, x0:x1] = np.where(first, color[0], color[1]).round().astype(np.uint8)
    return image


def render_frame(
    points: np.ndarray,
    faces: np.ndarray,
    face_colors: np.ndarray,
    image: np.ndarray,
    light=DEFAULT_LIGHT,
) -> np.ndarray:
    """Draws a shaded mesh onto `image` [H, W, 3] uint8 in place (no antialiasing).

    Args:
      points: [V, 3] pixel x, pixel y (down) and depth (larger is farther).
      faces: [F, 3] triangle indices, counter-clockwise seen from outside.
      face_colors: [F, 3] base RGB per face, scaled by its Lambert shade.
      image: the picture under the mesh (the background).
      light: direction towards the light (x right, y down, z away).

    Returns:
      The image.
    """
    face_index, _ = rasterize(points, faces, image.shape[0], image.shape[1])
    shaded = face_shading(points, faces, light)[:, None] * face_colors
    covered = face_index >= 0
    image[covered] = np.round(shaded[face_index[covered]]).astype(np.uint8)
    return image


@jax.jit
def _vertices_chunk(body_model, betas, pose):
    rotmats = geometry.pose72_to_rotmats(pose)
    betas = jnp.broadcast_to(betas, (pose.shape[0], betas.shape[-1]))
    return smpl.forward(body_model, betas, rotmats)[0]


def video_vertices(body_model: smpl.SMPLModel, betas: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """[N, 6890, 3] float32 mesh vertices of the posed body (zero translation, camera frame)."""
    betas = jnp.asarray(betas, jnp.float32)
    return synthetic._chunked(lambda p: _vertices_chunk(body_model, betas, p), pose, chunk=32)


def render_video(video: dict, body_model: smpl.SMPLModel, size: int, seed) -> np.ndarray:
    """The frames of a synthetic video (module docstring), [N, size, size, 3] uint8.

    Args:
      video: `synthetic.generate_video`'s output (pose, betas, cam, kp3d, kp2d).
      body_model: the body model the video was generated with.
      size: the frame side in pixels.
      seed: the video's generator seed; the look is drawn from `render_rng(seed)`.
    """
    rng = render_rng(seed)
    look = sample_look(rng, size)
    faces = np.asarray(body_model.faces)
    face_colors = look.body_colors[face_regions(body_model)]
    vertices = video_vertices(body_model, video["betas"], video["pose"])
    cam = np.asarray(video["cam"], np.float64)
    true_xy = cam[:, None, :1] * (np.asarray(video["kp3d"], np.float64)[..., :2] + cam[:, None, 1:])
    frames = np.empty((len(cam), size, size, 3), np.uint8)
    for t in range(len(cam)):
        image = look.background.copy()
        render_frame(mesh_points(vertices[t], cam[t], size), faces, face_colors, image)
        draw_occluders(image, occluder_boxes(video["kp2d"][t], true_xy[t], size), look)
        frames[t] = image
    return frames


def encode_jpeg(frames: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N] object array of JPEG bytes (Pillow, 4:2:0, `quality`)."""
    out = np.empty(len(frames), object)
    for t, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        out[t] = buffer.getvalue()
    return out


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> [H, W, 3] uint8 RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
