"""The sequence schema (DESIGN.md section 4): one example is one video of N frames.

- `features`  [N, D] float32: per-frame image features (D = 2048 for VIBE's SPIN features).
- `kp2d`      [N, J, 3] float32: crop-normalised x, y in [-1, 1] and confidence in [0, 1].
- `kp3d`      [N, J, 4] float32: x, y, z (metres, camera frame, y down) and confidence.
- `pose`      [N, 72] float32: SMPL axis-angle pose, global orientation first.
- `shape`     [N, 10] float32: SMPL betas.
- `cam`       [N, 3] float32: the weak-perspective [s, tx, ty] that produced kp2d; 0 if unknown.
- `has_smpl`  [N] float32: 1 where pose and shape are labels, else 0.
- `has_kp3d`  [N] float32: 1 where kp3d is a label, else 0.
- `frame_ids` [N] int32: frame numbers in the source video.
- `vid_name`  text: the video's name.
- `valid`, `valid_i` [N] float32, optional (VIBE-format datasets only): the per-frame flags of
  the source file, under the file's own key names (3DPW's `valid` is its `campose_valid`,
  MPI-INF-3DHP's `valid_i` its test set's `valid_frame`); 1 where the file has none. They do
  not mask the labels (VIBE trains and evaluates on every frame); the 'tcmr' evaluation
  protocol uses them as TCMR does (lmr_jax/evaluate.py).

J is the joint count of the dataset's layout, whose name is in the dataset metadata
(`info.metadata['layout']`, 'vibe49' for every dataset we build). Missing labels are zeros with
their flag at 0. `cam` is in the schema because the synthetic data knows it and camera
prediction can then be evaluated; real datasets fill zeros (s = 0 is never a valid camera, so an
all-zero row marks an unknown camera without a separate flag).
"""

from __future__ import annotations

import numpy as np

from lmr_jax import smpl

LAYOUT = "vibe49"
# Field -> (trailing shape after N, dtype); 'J' is the layout's joint count, 'D' the feature dim.
FIELDS: dict[str, tuple[tuple, np.dtype]] = {
    "features": (("D",), np.dtype(np.float32)),
    "kp2d": (("J", 3), np.dtype(np.float32)),
    "kp3d": (("J", 4), np.dtype(np.float32)),
    "pose": ((72,), np.dtype(np.float32)),
    "shape": ((10,), np.dtype(np.float32)),
    "cam": ((3,), np.dtype(np.float32)),
    "has_smpl": ((), np.dtype(np.float32)),
    "has_kp3d": ((), np.dtype(np.float32)),
    "frame_ids": ((), np.dtype(np.int32)),
}
TEXT_FIELDS = ("vid_name",)
FLAG_FIELDS = ("has_smpl", "has_kp3d")
FILE_FLAGS = ("valid", "valid_i")  # optional [N] float32 0/1 flags of a source file


class DatasetError(ValueError):
    """A dataset is missing or holds arrays that do not match the sequence schema."""


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _vid_name(example) -> str:
    name = example.get("vid_name", "?")
    return name.decode() if isinstance(name, bytes) else str(name)


def validate_example(
    example: dict,
    dataset_name: str,
    *,
    layout: str = LAYOUT,
    feature_dim: int | None = None,
) -> None:
    """Checks one example against the schema.

    Args:
      example: a dict of numpy arrays (and the text `vid_name`).
      dataset_name: used in the error message, e.g. 'synthetic_motion/small:train'.
      layout: the joint layout the dataset declares.
      feature_dim: the expected D, or None to accept any.

    Raises:
      DatasetError: one sentence naming the dataset, the video and the field, and what was
        expected (missing field, wrong shape or dtype, NaN/inf, confidences or flags out of
        range).
    """
    video = _vid_name(example)

    def fail(field, problem):
        raise DatasetError(f"dataset '{dataset_name}', video '{video}': field '{field}' {problem}.")

    for field in (*FIELDS, *TEXT_FIELDS):
        if field not in example:
            fail(field, "is missing")
    if not isinstance(example["vid_name"], (str, bytes)):
        fail("vid_name", f"is a {type(example['vid_name']).__name__}, expected text")
    features = np.asarray(example["features"])
    if features.ndim != 2 or features.shape[0] == 0:
        fail("features", f"has shape {_shape_str(features.shape)}, expected [N, D] with N >= 1")
    num = features.shape[0]
    sizes = {"J": smpl.get_layout(layout).num_joints, "D": feature_dim or features.shape[1]}
    for field, (tail, dtype) in FIELDS.items():
        array = np.asarray(example[field])
        want = (num, *(sizes.get(s, s) for s in tail))
        if array.shape != want:
            extra = f" (layout {layout} has {sizes['J']} joints)" if "J" in tail else ""
            fail(field, f"has shape {_shape_str(array.shape)}, expected {_shape_str(want)}{extra}")
        if array.dtype != dtype:
            fail(field, f"has dtype {array.dtype}, expected {dtype}")
        if dtype.kind == "f" and not np.all(np.isfinite(array)):
            frame = int(np.argwhere(~np.isfinite(array.reshape(num, -1)))[0, 0])
            fail(field, f"holds NaN or inf (first at frame {frame})")
    for field in FILE_FLAGS:
        if field in example:
            array = np.asarray(example[field])
            if array.shape != (num,) or array.dtype != np.float32:
                fail(field, f"has shape {_shape_str(array.shape)} and dtype {array.dtype}, "
                            f"expected [{num}] float32")  # fmt: skip
    for field in (*FLAG_FIELDS, *(f for f in FILE_FLAGS if f in example)):
        if not np.all((example[field] == 0) | (example[field] == 1)):
            fail(field, "holds values other than 0 and 1")
    for field in ("kp2d", "kp3d"):
        conf = example[field][..., -1]
        if conf.min() < 0 or conf.max() > 1:
            fail(field, "has confidences outside [0, 1]")


def empty_labels(num_frames: int, layout: str = LAYOUT) -> dict[str, np.ndarray]:
    """All label fields zero with flags 0, for a video that has only features (and kp2d)."""
    joints = smpl.get_layout(layout).num_joints
    out = {}
    for field, (tail, dtype) in FIELDS.items():
        if field != "features":
            shape = tuple(joints if s == "J" else s for s in tail)
            out[field] = np.zeros((num_frames, *shape), dtype)
    out["frame_ids"] = np.arange(num_frames, dtype=np.int32)
    return out


def tfds_features(feature_dim: int, layout: str = LAYOUT, file_flags: bool = False):
    """The `tfds.features.FeaturesDict` of the schema (Tensor and Text only: no TensorFlow).

    Args:
      feature_dim: D.
      layout: the joint layout (its joint count fixes J).
      file_flags: add the optional `FILE_FLAGS` fields (VIBE-format datasets).

    Returns:
      A FeaturesDict for a dataset builder's `_info`.
    """
    import tensorflow_datasets as tfds  # only builders need it; keeps `import schema` light

    joints = smpl.get_layout(layout).num_joints
    spec = {
        field: tfds.features.Tensor(
            shape=(None, *(feature_dim if s == "D" else joints if s == "J" else s for s in tail)),
            dtype=dtype.type,
        )
        for field, (tail, dtype) in FIELDS.items()
    }
    spec["vid_name"] = tfds.features.Text()
    for field in FILE_FLAGS if file_flags else ():
        spec[field] = tfds.features.Tensor(shape=(None,), dtype=np.float32)
    return tfds.features.FeaturesDict(spec)
