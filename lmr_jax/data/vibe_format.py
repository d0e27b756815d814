"""VIBE's and TCMR's preprocessed dataset files, read video by video into the sequence schema.

The files (`*_db.pt`: joblib dumps; InstaVariety: HDF5) hold dicts of frame-stacked arrays, all
videos concatenated; a video is a run of equal `vid_name`. `iter_videos` streams one file: the
arrays are memory-mapped (joblib, `mmap_mode='r'`; an uncompressed dump maps every numpy array)
or sliced (h5py), one video is read at a time and the pages it touched are given back, so
memory does not grow with the file. Each video becomes one example of DESIGN.md section 4 in
the `vibe49` layout:

- 2D keypoints: original pixels cropped by the bounding box [cx, cy, w, h] enlarged by 1.2 and
  scaled to [-1, 1] (VIBE's `transfrom_keypoints` + `normalize_2d_kp`: x' = (x - cx) / (0.6 w),
  y' = (y - cy) / (0.6 h)); InstaVariety's are pixels of a 224 crop: x' = x / 112 - 1.
- Joints go to vibe49 slots by a per-source table (`*_TO_VIBE49`, -1 = dropped); other slots
  stay at zero with confidence 0. 3D joints get confidence 1 on the slots a source labels.
- `has_kp3d` / `has_smpl` are 1 on labelled frames (every frame of a 3D file: VIBE's
  Dataset3D sets `w_3d` to 1 whatever the flags); SMPL labels count only where the pose row is
  not all zero (TCMR's Human3.6M files hold zeros). The file's `valid` / `valid_i` flags are
  kept as the schema's optional fields of the same names (1 when the file has none).

The key table of every dataset, with the VIBE/TCMR code it was read from, is
tfds_builders/VIBE_FORMAT.md. Every problem raises `schema.DatasetError` in one sentence naming
the file, the key, the video and the expected shape.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import re
from collections.abc import Iterator, Mapping

import numpy as np

from lmr_jax.data import schema
from lmr_jax.smpl import layouts

FEATURE_DIM = 2048  # SPIN ResNet-50 features
KEYPOINT_CROP_SCALE = 1.2  # VIBE's `transfrom_keypoints` without augmentation
CROP_SIZE = 224
NUM_JOINTS = 49
NO_SLOT = -1

# Source joint i -> vibe49 slot. The 14 common joints (LSP order) are slots 25..38.
COMMON14_TO_VIBE49 = tuple(layouts.VIBE49_TO_COMMON14)
SPIN49_TO_VIBE49 = tuple(range(NUM_JOINTS))
# VIBE's `get_insta_joint_names` matched by name to `get_spin_joint_names` (convert_kps).
INSTA25_TO_VIBE49 = (24, 10, 9, 12, 13, 21, 4, 3, 2, 5, 6, 7, 1, 38, 0, 16, 15, 18, 17, 19, 22,
                     20, 23, 14, 11)  # fmt: skip
# The 17 joints the Human3.6M and MPI-INF-3DHP motion capture labels (h36m / mpii3d names
# found in the spin list): common 14, MPII pelvis (39), H36M spine (41) and head (43).
MOCAP_SLOTS = (*range(25, 40), 41, 43)
MOCAP49_TO_VIBE49 = tuple(i if i in MOCAP_SLOTS else NO_SLOT for i in range(NUM_JOINTS))

_BLOCK = 1 << 16  # rows of `vid_name` read at a time when finding the videos


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one TFDS split comes from and how its arrays map to the schema.

    Attributes:
      split: the TFDS split name ('train', 'validation', 'test').
      files: accepted file names in the manual dir, in order of preference.
      joints2d: joint count J of `joints2D` [N, J, 3] -> vibe49 slot of each joint.
      joints3d: the same for `joints3D` [N, J, 3] (metres), or None for a 2D-only source.
      keypoints: 'bbox' (original pixels, cropped by `bbox`) or 'crop224' (224-crop pixels).
      smpl: 'required' (`pose`, `shape` must be there), 'optional' (used when present) or None.
      valid_key: a per-frame 0/1 key of the file (`schema.FILE_FLAGS`), copied to the example
        under its own name when present.
    """

    split: str
    files: tuple[str, ...]
    joints2d: Mapping[int, tuple[int, ...]]
    joints3d: Mapping[int, tuple[int, ...]] | None = None
    keypoints: str = "bbox"
    smpl: str | None = None
    valid_key: str | None = None

    def expected_shapes(self) -> dict[str, list[tuple]]:
        """Per-frame shapes each key may have (after the leading N); optional keys included."""
        shapes: dict[str, list[tuple]] = {
            "features": [(FEATURE_DIM,)],
            "vid_name": [()],
            "joints2D": [(j, 3) for j in self.joints2d],
        }
        if self.keypoints == "bbox":
            shapes["bbox"] = [(4,)]
        if self.joints3d is not None:
            shapes["joints3D"] = [(j, 3) for j in self.joints3d]
        if self.smpl:
            shapes["pose"], shapes["shape"] = [(72,)], [(10,)]
        if self.valid_key:
            shapes[self.valid_key] = [(), (1,)]
        shapes["frame_id"] = [()]
        return shapes

    def required_keys(self) -> tuple[str, ...]:
        optional = {"frame_id", self.valid_key}
        if self.smpl != "required":
            optional |= {"pose", "shape"}
        return tuple(k for k in self.expected_shapes() if k not in optional)


def _shape_text(shapes: list[tuple], rows="N") -> str:
    return " or ".join("[" + ", ".join(str(s) for s in (rows, *shape)) + "]" for shape in shapes)


def _as_text(values) -> np.ndarray:
    """A 1-D array of `vid_name`-like values (str, bytes, numpy strings) as str."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8")
    if values.dtype.kind == "U":
        return values
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values])


class SourceArrays:
    """The arrays of one file: shapes without loading, row slices, pages given back.

    Joblib dumps are loaded with `mmap_mode='r'` (numpy arrays become read-only memory maps;
    a compressed dump cannot be mapped and is read whole); HDF5 datasets are sliced by h5py.
    """

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self._h5 = None
        if not os.path.isfile(path):
            raise schema.DatasetError(f"file '{path}' does not exist.")
        if path.endswith((".h5", ".hdf5")):
            self._open_hdf5()
        else:
            self._open_joblib()

    def _open_hdf5(self) -> None:
        import h5py

        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise schema.DatasetError(f"file '{self.path}' is not an HDF5 file ({e}).") from None
        self._arrays = {k: v for k, v in self._h5.items() if isinstance(v, h5py.Dataset)}

    def _open_joblib(self) -> None:
        import joblib

        try:
            data = joblib.load(self.path, mmap_mode="r")
        except Exception as e:  # pickle, EOF, zlib, ... errors of a file that is no dump
            raise schema.DatasetError(
                f"file '{self.path}' could not be read as a joblib dump ({type(e).__name__}: {e})."
            ) from None
        if not isinstance(data, dict):
            raise schema.DatasetError(f"file '{self.path}' holds a {type(data).__name__}, "
                                      "expected a dict of frame-stacked arrays.")  # fmt: skip
        self._arrays = {
            k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in data.items()
        }

    @property
    def keys(self) -> list[str]:
        return sorted(self._arrays)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._arrays[key].shape)

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of `key` as an in-memory array."""
        return np.array(self._arrays[key][start:stop])

    def release(self) -> None:
        """Gives back the mapped pages read so far (they stay in the page cache)."""
        for array in self._arrays.values():
            mapping = getattr(array, "_mmap", None)
            if mapping is not None and hasattr(mapping, "madvise"):
                mapping.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
        self._arrays = {}

    def runs(self, key: str = "vid_name") -> Iterator[tuple[str, int, int]]:
        """(name, start, stop) of each run of equal `key` values, reading blocks of rows."""
        total = self.shape(key)[0]
        current, start = None, 0
        for block in range(0, total, _BLOCK):
            names = _as_text(self.read(key, block, min(block + _BLOCK, total)))
            changes = np.flatnonzero(names[1:] != names[:-1]) + 1
            if current is not None and names[0] != current:
                yield current, start, block
                start = block
            for change in changes:
                yield str(names[change - 1]), start, block + int(change)
                start = block + int(change)
            current = str(names[-1])
            self.release()
        if current is not None:
            yield current, start, total


def check_arrays(arrays: SourceArrays, source: SplitSource) -> int:
    """Checks keys, shapes and lengths of a file against `source`; returns the frame count N.

    Raises:
      DatasetError: a key is missing, has a wrong per-frame shape, or a different row count
        than `features`.
    """
    shapes = source.expected_shapes()
    for key in source.required_keys():
        if key not in arrays.keys:
            raise schema.DatasetError(
                f"file '{arrays.name}': key '{key}' is missing (all videos); expected "
                f"{_shape_text(shapes[key])} (keys found: {arrays.keys})."
            )
    num = arrays.shape("features")[0] if arrays.shape("features") else 0
    if num == 0:
        raise schema.DatasetError(f"file '{arrays.name}': key 'features' holds no frames.")
    names = _as_text(arrays.read("vid_name", 0, 1)) if arrays.shape("vid_name") else ["?"]
    for key, allowed in shapes.items():
        if key not in arrays.keys:
            continue
        shape = arrays.shape(key)
        if len(shape) == 0 or shape[1:] not in allowed:
            raise schema.DatasetError(
                f"file '{arrays.name}': key '{key}' has shape {list(shape)} (every video, "
                f"e.g. '{names[0]}'), expected {_shape_text(allowed)}."
            )
        if shape[0] != num:
            rows = arrays.shape("vid_name")[0]
            last = _as_text(arrays.read("vid_name", rows - 1, rows))[0] if rows else "?"
            raise schema.DatasetError(
                f"file '{arrays.name}': key '{key}' has {shape[0]} rows but 'features' has "
                f"{num} (expected {_shape_text(allowed, num)}, one row per frame; the videos "
                f"up to '{last}' cannot be aligned)."
            )
    return num


def normalize_keypoints(joints2d: np.ndarray, bbox: np.ndarray | None) -> np.ndarray:
    """VIBE's 2D keypoint normalisation (its keypoint crop: the bbox enlarged by 1.2).

    Args:
      joints2d: [N, J, 3] x, y (original pixels, or 224-crop pixels without a bbox) and conf.
      bbox: [N, 4] (cx, cy, w, h) in original pixels, or None for 224-crop pixels.

    Returns:
      [N, J, 3] float32: x, y in crop coordinates where the crop spans [-1, 1]; conf kept.
    """
    joints2d = np.asarray(joints2d, np.float64)
    out = joints2d.copy()
    if bbox is None:
        out[..., :2] = 2.0 * joints2d[..., :2] / CROP_SIZE - 1.0
    else:
        bbox = np.asarray(bbox, np.float64)
        half = 0.5 * KEYPOINT_CROP_SCALE * bbox[:, None, 2:4]  # half the crop's size
        out[..., :2] = (joints2d[..., :2] - bbox[:, None, 0:2]) / half
    return out.astype(np.float32)


def to_vibe49(joints: np.ndarray, slots: tuple[int, ...]) -> np.ndarray:
    """Places source joints [N, J, C] in the vibe49 slots `slots` (-1: dropped) -> [N, 49, C]."""
    slots_array = np.asarray(slots)
    keep = slots_array != NO_SLOT
    out = np.zeros((joints.shape[0], NUM_JOINTS, joints.shape[2]), np.float32)
    out[:, slots_array[keep]] = joints[:, keep]
    return out


def frame_ids(rows: dict[str, np.ndarray], num: int) -> np.ndarray:
    """Frame numbers from `frame_id` (ints, or strings ending in digits), else `img_name`
    file stems ending in digits, else 0..N-1."""
    for key in ("frame_id", "img_name"):
        if key not in rows:
            continue
        values = np.asarray(rows[key]).reshape(num, -1)[:, 0]
        if values.dtype.kind in "iu":
            return values.astype(np.int32)
        stems = [os.path.splitext(os.path.basename(str(v)))[0] for v in _as_text(values)]
        numbers = [re.search(r"(\d+)$", stem) for stem in stems]
        if all(numbers):
            return np.asarray([int(m.group(1)) for m in numbers], np.int32)
    return np.arange(num, dtype=np.int32)


def _check_finite(rows: dict, file: str, video: str) -> None:
    for key, values in rows.items():
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            frame = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0, 0])
            shape = _shape_text([values.shape[1:]], len(values))
            raise schema.DatasetError(
                f"file '{file}', key '{key}', video '{video}': NaN or inf at frame {frame} "
                f"(expected finite {shape})."
            )
    if "bbox" in rows and np.any(rows["bbox"][:, 2:4] <= 0):
        frame = int(np.argwhere(rows["bbox"][:, 2:4] <= 0)[0, 0])
        raise schema.DatasetError(
            f"file '{file}', key 'bbox', video '{video}': width or height <= 0 at frame "
            f"{frame} (expected [N, 4] rows [cx, cy, w, h] with w, h > 0)."
        )


def convert_video(rows: dict[str, np.ndarray], source: SplitSource, name: str) -> dict:
    """One video's rows of a source file -> a schema example (not yet validated).

    Args:
      rows: the file's arrays sliced to the video's frames (at least features, joints2D).
      source: how the file maps to the schema.
      name: the video's name.

    Returns:
      The example dict of DESIGN.md section 4 (vibe49 layout, cam zeros).
    """
    num = rows["features"].shape[0]
    example = schema.empty_labels(num)
    example["features"] = np.asarray(rows["features"], np.float32)
    example["vid_name"] = name
    example["frame_ids"] = frame_ids(rows, num)
    joints2d = rows["joints2D"]
    crop = rows["bbox"] if source.keypoints == "bbox" else None
    example["kp2d"] = to_vibe49(normalize_keypoints(joints2d, crop),
                                source.joints2d[joints2d.shape[1]])  # fmt: skip
    for flag in schema.FILE_FLAGS:
        example[flag] = np.ones(num, np.float32)
        if flag == source.valid_key and flag in rows:
            values = np.asarray(rows[flag]).reshape(num, -1)[:, 0]
            example[flag] = (values > 0).astype(np.float32)
    if source.joints3d is not None:
        joints3d = np.asarray(rows["joints3D"], np.float32)
        labelled = np.concatenate([joints3d, np.ones_like(joints3d[..., :1])], axis=-1)
        example["kp3d"] = to_vibe49(labelled, source.joints3d[joints3d.shape[1]])
        example["has_kp3d"] = np.ones(num, np.float32)
    if source.smpl and "pose" in rows and "shape" in rows:
        example["pose"] = np.asarray(rows["pose"], np.float32)
        example["shape"] = np.asarray(rows["shape"], np.float32)
        example["has_smpl"] = np.any(example["pose"] != 0, axis=1).astype(np.float32)
    return example


def iter_videos(
    path: str,
    source: SplitSource,
    dataset_name: str | None = None,
    found_flags: list | None = None,
) -> Iterator[dict]:
    """Streams the videos of one source file as validated schema examples.

    Args:
      path: the `*_db.pt` or `.h5` file.
      source: how its keys map to the schema.
      dataset_name: names the dataset in schema errors (default: the file name).
      found_flags: if given, the `schema.FILE_FLAGS` keys the file has are appended to it; a
        flag the source expects (`valid_key`) but the file lacks is warned about.

    Yields:
      One example dict per run of equal `vid_name`, in file order. A name that comes back in
      a later run gets a suffix '#2', '#3', ... so names stay unique.

    Raises:
      DatasetError: missing file or key, wrong shape, mismatched lengths, NaN or inf, a
        non-positive bbox, or an example that breaks the schema.
    """
    arrays = SourceArrays(path)
    try:
        check_arrays(arrays, source)
        flags = [k for k in schema.FILE_FLAGS if k == source.valid_key and k in arrays.keys]
        if source.valid_key and not flags:
            logging.warning(
                "file '%s' has no key '%s': every frame counts as valid (the "
                "'tcmr' evaluation protocol uses it).",
                arrays.name,
                source.valid_key,
            )
        if found_flags is not None:
            found_flags.extend(flags)
        keys = [k for k in source.expected_shapes() if k in arrays.keys]
        keys += [k for k in ("img_name",) if k in arrays.keys and "frame_id" not in keys]
        label = dataset_name or arrays.name
        seen: dict[str, int] = {}
        for name, start, stop in arrays.runs():
            seen[name] = seen.get(name, 0) + 1
            video = name if seen[name] == 1 else f"{name}#{seen[name]}"
            rows = {k: arrays.read(k, start, stop) for k in keys if k != "vid_name"}
            _check_finite(rows, arrays.name, video)
            example = convert_video(rows, source, video)
            schema.validate_example(example, label, feature_dim=FEATURE_DIM)
            arrays.release()
            yield example
    finally:
        arrays.close()


def find_files(
    manual_dir: str, sources: tuple[SplitSource, ...], dataset: str
) -> dict[str, tuple[str, SplitSource]]:
    """The file of each split found in `manual_dir` (first accepted name that exists).

    Raises:
      DatasetError: no split has a file (naming every accepted file name).
    """
    found = {}
    for source in sources:
        for file in source.files:
            path = os.path.join(manual_dir, file)
            if os.path.isfile(path):
                found[source.split] = (path, source)
                break
    if not found:
        wanted = "; ".join(f"{s.split}: {' or '.join(s.files)}" for s in sources)
        raise schema.DatasetError(
            f"dataset '{dataset}': none of its files is in manual_dir '{manual_dir}' "
            f"(expected {wanted})."
        )
    return found
