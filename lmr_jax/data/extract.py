"""Backbone features of one person's crops in a video or an image folder (`lmr-extract-features`).

    lmr-extract-features --video=clip.mp4 --bboxes=track.npz \
        --weights=spin_model_checkpoint.pth.tar --out=clip_features.npz
    lmr-extract-features --images=frames/ --keypoints=openpose/ --weights=... --out=...

Frames: a video decoded with PyAV (FFmpeg's decoders, bundled in PyAV's wheels; frame i is the
i-th decoded frame, as stored, without the container's rotation metadata; the frame rate is the
stream's average rate), or the images of a folder in sorted file-name order (frame i is the i-th
file: name them with zero-padded numbers, as ffmpeg's `%06d.png` does; EXIF orientation is
applied). Boxes per frame come from lmr_jax/data/boxes.py (a track file, or 2D keypoints).

Crops, as VIBE's demo (lib/data_utils/img_utils.py: get_single_image_crop_demo ->
generate_patch_image_cv -> gen_trans_from_patch_cv with rotation 0, no flip, then
cv2.warpAffine with INTER_LINEAR and a constant 0 border): the box [cx, cy, w, h] is made square,
side s = max(w, h), and enlarged by crop_scale (default 1.2, the scale of VIBE's training
features); the affine map takes the box centre to the crop point (C/2, C/2) and s * crop_scale
frame pixels to the C crop pixels (C = crop_size, default 224):

    crop[v, u] = frame(cx + (u - C/2) * k, cy + (v - C/2) * k),   k = s * crop_scale / C.

Pixel-centre convention (OpenCV's, which VIBE's crops inherit): the pixel in row i and column j
is the point (x, y) = (j, i); a sample at (x, y) interpolates bilinearly between the four
pixels around it, and pixels outside the frame count as 0. (The crop's centre C/2 is thus half
a pixel right of and below the middle of its pixel grid, as in VIBE.) Unlike cv2, which
quantises the interpolation weights to 1/32 and rounds the crop to uint8, the crop keeps float32
values (a difference below 1/255 of the value range per pixel). The map has no rotation, so the
sampling is separable: each crop column reads one frame x, each crop row one frame y.
Normalisation: RGB / 255, then ImageNet's mean and std (VIBE's get_default_transform).

Features: the torchvision ResNet of the checkpoint (SPIN's `spin_model_checkpoint.pth.tar`, whose
'model' holds it, or a torchvision state dict; the depth is read off its keys), in inference
mode, in batches of `batch_size` crops (the last one padded: one compiled shape), with a
progress line.

Output `.npz`, the features file `lmr-predict --input` reads (lmr_jax/predict_io.py): features
[N, D] float32 (D = 2048 for ResNet-50, 512 for ResNet-18/34), bbox [N, 4] the square boxes
[cx, cy, s, s] in frame pixels (before crop_scale), frame_ids [N] int32, crop_scale and
crop_size (scalars), fps (the video's frame rate; absent for an image folder).

Frames without a box are skipped and reported, as are boxes of frames the video does not have;
a frame rate far from the 25-30 fps the models were trained at (VIBE's data: 3DPW 30 fps,
Human3.6M subsampled to 25 fps) gets a warning: the temporal models' windows would span
another stretch of time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np

from lmr_jax import torch_weights
from lmr_jax.data import boxes as boxes_lib
from lmr_jax.data.vibe_format import KEYPOINT_CROP_SCALE
from lmr_jax.models.resnet import resnet

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CROP_SIZE = 224
CROP_SCALE = KEYPOINT_CROP_SCALE  # 1.2: threedpw_utils.py crops its features at scale=1.2
TRAINED_FPS = (25.0, 30.0)
FPS_MARGIN = 0.2  # warn below 20 fps or above 36 fps
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ExtractError(ValueError):
    """A bad input to feature extraction; the message names the file or flag."""


# ---------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------


def crop_transform(box, crop_scale: float = CROP_SCALE, crop_size: int = CROP_SIZE) -> np.ndarray:
    """The affine map [2, 3] of frame points (x, y, 1) to crop points (u, v) for a box.

    VIBE's gen_trans_from_patch_cv with rotation 0 for the square box of [cx, cy, w, h]: the
    centre goes to (C/2, C/2), a side of max(w, h) * crop_scale frame pixels to C crop pixels.
    """
    cx, cy, w, h = (float(v) for v in box)
    a = crop_size / (max(w, h) * crop_scale)
    return np.array([[a, 0.0, crop_size / 2 - a * cx], [0.0, a, crop_size / 2 - a * cy]])


def crop(image: np.ndarray, box, crop_scale: float = CROP_SCALE,
         crop_size: int = CROP_SIZE) -> np.ndarray:  # fmt: skip
    """The person crop of one frame (module docstring: the map, pixel centres, the border).

    Args:
      image: [H, W, 3] uint8 (or float) RGB frame.
      box: [cx, cy, w, h] in frame pixels.
      crop_scale: the square box's enlargement.
      crop_size: C.

    Returns:
      [C, C, 3] float32, in the frame's value range (0-255 for uint8).
    """
    m = crop_transform(box, crop_scale, crop_size)
    grid = np.arange(crop_size, dtype=np.float64)
    xs, ys = (grid - m[0, 2]) / m[0, 0], (grid - m[1, 2]) / m[1, 1]  # the inverse map
    image = np.asarray(image)
    height, width = image.shape[:2]
    out = np.zeros((crop_size, crop_size, image.shape[2]), np.float32)
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        rows = y0 + dy
        row_ok = (rows >= 0) & (rows < height)
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cols = x0 + dx
            col_ok = (cols >= 0) & (cols < width)
            weight = (wy * row_ok)[:, None] * (wx * col_ok)[None, :]  # 0 outside: the border
            pixels = image[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
            out += weight[..., None] * pixels.astype(np.float32)  # the crop's pixels only
    return out


def normalize(crops: np.ndarray) -> np.ndarray:
    """[..., 3] RGB in 0-255 -> (x / 255 - ImageNet mean) / ImageNet std, float32."""
    return ((np.asarray(crops, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(
        np.float32
    )


# ---------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------


class Backbone:
    """A checkpoint's ResNet as a function: crops [n, C, C, 3] (0-255) -> features [n, D].

    Attributes:
      depth: the ResNet's depth, read off the checkpoint.
      width: D, the feature width (512 or 2048).
      batch_size: crops per compiled call; shorter batches are padded to it.
    """

    def __init__(self, weights: str, batch_size: int = 32):
        if not os.path.isfile(weights):
            raise ExtractError(f"weights file {weights} does not exist; expected a PyTorch "
                               "checkpoint of a torchvision ResNet (SPIN's "
                               "spin_model_checkpoint.pth.tar).")  # fmt: skip
        try:
            self.depth, variables = torch_weights.resnet_checkpoint(weights)
        except torch_weights.CheckpointError as e:
            raise ExtractError(str(e)) from e
        model = resnet(self.depth)
        self.width = model.num_features
        self.batch_size = batch_size
        self._variables = jax.device_put(variables)
        self._apply = jax.jit(model.apply)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        images = normalize(crops)
        if n < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - n, *images.shape[1:]),
                                                      np.float32)])  # fmt: skip
        return np.asarray(self._apply(self._variables, images))[:n]


def extract_features(frames: Iterable[tuple[int, np.ndarray]], frame_ids: np.ndarray,
                     bbox: np.ndarray, backbone: Callable[[np.ndarray], np.ndarray], *,
                     crop_scale: float = CROP_SCALE, crop_size: int = CROP_SIZE,
                     batch_size: int = 32, progress: Callable[[int], None] | None = None,
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Features of the frames that have a box, in frame order.

    Args:
      frames: (frame id, [H, W, 3] image) in order.
      frame_ids, bbox: the boxes, [M] and [M, 4] [cx, cy, w, h].
      backbone: crops [n <= batch_size, C, C, 3] (0-255) -> features [n, D].
      crop_scale, crop_size: the crops' (see `crop`).
      batch_size: crops per backbone call.
      progress: called with the number of frames done after each batch.

    Returns:
      features [N, D] float32, bbox [N, 4] the square boxes, frame_ids [N] int32, and the frame
      ids the frames had without a box (`skipped`) and of all frames seen (`seen`).
    """
    boxes = dict(zip(np.asarray(frame_ids).tolist(), boxes_lib.square_boxes(bbox), strict=True))
    batch, kept, features, skipped, seen = [], [], [], [], []
    for frame_id, image in frames:
        seen.append(frame_id)
        box = boxes.get(frame_id)
        if box is None:
            skipped.append(frame_id)
            continue
        batch.append(crop(image, box, crop_scale, crop_size))
        kept.append(frame_id)
        if len(batch) == batch_size:
            features.append(backbone(np.stack(batch)))
            batch = []
            if progress:
                progress(len(kept))
    if batch:
        features.append(backbone(np.stack(batch)))
        if progress:
            progress(len(kept))
    return {
        "features": np.concatenate(features).astype(np.float32) if features else np.zeros((0, 0)),
        "bbox": np.array([boxes[f] for f in kept], np.float32).reshape(-1, 4),
        "frame_ids": np.array(kept, np.int32),
        "skipped": np.array(skipped, np.int64),
        "seen": np.array(seen, np.int64),
    }


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def video_frames(path: str) -> tuple[float | None, Iterator[tuple[int, np.ndarray]]]:
    """(the stream's frame rate or None, an iterator of (frame index, [H, W, 3] uint8 RGB)).

    Raises:
      ExtractError: a missing file, a file FFmpeg cannot read, or one without a video stream
        (also from the iterator, for a frame that does not decode).
    """
    import av

    if not os.path.isfile(path):
        raise ExtractError(f"video file {path} does not exist.")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise ExtractError(f"{path} is not a video file FFmpeg (PyAV) can read ({e}).") from e
    if not container.streams.video:
        container.close()
        raise ExtractError(f"{path} has no video stream.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the backbone
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        index = 0
        try:
            for frame in container.decode(stream):
                yield index, frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as e:
            raise ExtractError(f"{path}: frame {index} does not decode ({e}).") from e
        finally:
            container.close()

    return fps, frames()


def image_files(folder: str) -> list[str]:
    """The image files of a folder in sorted name order (the frames of `--images`)."""
    if not os.path.isdir(folder):
        raise ExtractError(f"image folder {folder} does not exist.")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ExtractError(f"image folder {folder} holds no image files "
                           f"({', '.join(IMAGE_EXTENSIONS)}).")  # fmt: skip
    return [os.path.join(folder, n) for n in names]


def image_frames(files: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, [H, W, 3] uint8 RGB) of image files, EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    for index, path in enumerate(files):
        try:
            with Image.open(path) as image:
                yield index, np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise ExtractError(f"image {path} does not read ({e}).") from e


def fps_warning(fps: float | None) -> str | None:
    """A sentence when `fps` is far from the 25-30 fps of the training data, else None."""
    low, high = TRAINED_FPS[0] * (1 - FPS_MARGIN), TRAINED_FPS[1] * (1 + FPS_MARGIN)
    if fps is None or low <= fps <= high:
        return None
    faster = "more" if fps < low else "less"
    return (f"the video runs at {fps:.3g} fps, far from the {TRAINED_FPS[0]:g}-"
            f"{TRAINED_FPS[1]:g} fps the models were trained on (a person moves {faster} per "
            "frame than in training); resample it to 25-30 fps for the best results.")  # fmt: skip


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def frame_ranges(ids, most: int = 8) -> str:
    """'0, 3-5, 9' for frame ids [0, 3, 4, 5, 9] (at most `most` runs, then '...')."""
    ids = sorted(set(int(i) for i in ids))
    runs, start = [], None
    for i, f in enumerate(ids):
        start = f if start is None else start
        if i + 1 == len(ids) or ids[i + 1] != f + 1:
            runs.append(str(f) if f == start else f"{start}-{f}")
            start = None
    return ", ".join(runs[:most]) + (", ..." if len(runs) > most else "")


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


class _Progress:
    """The progress line: frames done of the boxes, frames/s and ETA, at most every 2 s
    (rewritten in place on a terminal, one line each otherwise)."""

    def __init__(self, total: int, every: float = 2.0):
        self.total, self.every = total, every
        self.start = self.last = time.perf_counter()
        self.tty = sys.stdout.isatty()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = max(self.total - done, 0) / max(rate, 1e-9)
        line = f"features {done}/{self.total} frames  {rate:.1f} frames/s  ETA {eta:.0f} s"
        print("\r" + line if self.tty else line, end="" if self.tty else "\n", flush=True)

    def close(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        line = (f"features of {done} frames in {elapsed:.1f} s "
                f"({done / max(elapsed, 1e-9):.1f} frames/s)")  # fmt: skip
        print("\r" + line if self.tty else line, flush=True)


def _boxes(bboxes: str | None, keypoints: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    if (bboxes is None) == (keypoints is None):
        raise ExtractError("feature extraction needs exactly one of --bboxes=TRACK "
                           "(.npz or .json) and --keypoints=PATH (COCO-17 or OpenPose "
                           "JSON).")  # fmt: skip
    try:
        if bboxes is not None:
            return (*boxes_lib.read_boxes(bboxes), f"--bboxes={bboxes}")
        return (*boxes_lib.keypoint_boxes(*boxes_lib.read_keypoints(keypoints)),
                f"--keypoints={keypoints}")  # fmt: skip
    except boxes_lib.BoxError as e:
        raise ExtractError(str(e)) from e


def extract_features_file(
    out: str, *, weights: str, video: str | None = None, images: str | None = None,
    bboxes: str | None = None, keypoints: str | None = None, crop_scale: float = CROP_SCALE,
    crop_size: int = CROP_SIZE, batch_size: int = 32, expected_width: int | None = None,
) -> dict:  # fmt: skip
    """`lmr-extract-features`: writes the features file of a video or image folder.

    Prints the progress, the frames skipped for want of a box, the boxes of frames the video
    does not have, and (on stderr) a warning for a frame rate far from 25-30 fps.

    Args:
      out: the `.npz` to write (module docstring).
      weights: a PyTorch checkpoint of a torchvision ResNet (SPIN's).
      video, images: a video file, or a folder of images (exactly one).
      bboxes, keypoints: a track file, or 2D keypoints (exactly one; lmr_jax/data/boxes.py).
      crop_scale, crop_size: the crops' (see `crop`).
      batch_size: crops per backbone call.
      expected_width: if given, the feature width the backbone must give (a model's D).

    Returns:
      {'out', 'frames' (N written), 'skipped' (frame ids), 'fps' (or None), 'depth'}.

    Raises:
      ExtractError: a bad input (the message names it), or boxes for none of the frames.
    """
    if (video is None) == (images is None):
        raise ExtractError("feature extraction needs exactly one of --video=FILE and "
                           "--images=DIR.")  # fmt: skip
    if not (crop_scale > 0 and crop_size >= 1 and batch_size >= 1):
        raise ExtractError(f"crop_scale {crop_scale}, crop_size {crop_size} and batch_size "
                           f"{batch_size} must be positive.")  # fmt: skip
    frame_ids, bbox, box_source = _boxes(bboxes, keypoints)
    if len(frame_ids) == 0:
        raise ExtractError(f"{box_source} holds no usable box (every row is empty, not "
                           "finite or of no size, or no keypoint is visible).")  # fmt: skip
    source = video if video is not None else images
    if video is not None:
        fps, frames = video_frames(video)
    else:
        fps, frames = None, image_frames(image_files(images))
    backbone = Backbone(weights, batch_size)
    if expected_width is not None and backbone.width != expected_width:
        raise ExtractError(f"the ResNet-{backbone.depth} of {weights} gives {backbone.width}-d "
                           f"features, the model expects {expected_width}-d ones.")  # fmt: skip
    warning = fps_warning(fps)
    if warning:
        print(f"lmr_jax: warning: {warning}", file=sys.stderr, flush=True)
    progress = _Progress(len(frame_ids))
    result = extract_features(frames, frame_ids, bbox, backbone, crop_scale=crop_scale,
                              crop_size=crop_size, batch_size=batch_size,
                              progress=progress)  # fmt: skip
    seen = result["seen"]
    if len(result["frame_ids"]) == 0:
        raise ExtractError(f"{box_source} has boxes for frames {frame_ranges(frame_ids)} and "
                           f"{source} has {_count(len(seen), 'frame')}: no frame has a "
                           "box.")  # fmt: skip
    progress.close(len(result["frame_ids"]))
    if len(result["skipped"]):
        print(f"skipped {_count(len(result['skipped']), 'frame')} of {len(seen)} without a box: "
              f"{frame_ranges(result['skipped'])}", flush=True)  # fmt: skip
    unused = np.setdiff1d(frame_ids, seen)
    if len(unused):
        print(f"ignored the boxes of {_count(len(unused), 'frame')} that {source} does not "
              f"have ({_count(len(seen), 'frame')}): {frame_ranges(unused)}",
              flush=True)  # fmt: skip
    arrays = {k: result[k] for k in ("features", "bbox", "frame_ids")}
    arrays.update(crop_scale=np.float64(crop_scale), crop_size=np.int32(crop_size))
    if fps is not None:
        arrays["fps"] = np.float64(fps)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, **arrays)
    return {"out": out, "frames": len(result["frame_ids"]), "skipped": result["skipped"],
            "fps": fps, "depth": backbone.depth}  # fmt: skip
