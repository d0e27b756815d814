"""Person boxes per frame for feature extraction: read from a track file, or derived from 2D
keypoints as VIBE's demo derives them. No person detector is bundled (BUILD.md says where boxes
come from).

A box is [cx, cy, w, h] in image pixels (centre, width, height), VIBE's and multi-person-
tracker's convention. Boxes come as `(frame_ids [M] int, bbox [M, 4] float64)`, sorted by
frame, one box per frame (one person).

Track files (`read_boxes`):
- `.npz` with `bbox` [M, 4] and optionally `frame_ids` [M] (default 0..M-1);
- `.json`: the same two keys in an object, or a list with one entry per frame (frame i = entry
  i), each [cx, cy, w, h] or null, or a list of objects {"frame_id": i, "bbox": [cx, cy, w, h]}.
A row that is not finite or whose box has no size is a frame without a box.

Keypoints (`read_keypoints`, then `keypoint_boxes`): COCO-17 or OpenPose BODY_25 (x, y,
confidence) in pixels, either a folder of OpenPose's per-frame JSON files (`{"people":
[{"pose_keypoints_2d": [75 numbers]}, ...]}`, frame i = the i-th file in sorted order, as
OpenPose writes one file per frame) or one JSON file holding a list with one entry per frame
(null, [K, 3] or 3K numbers, or an OpenPose frame object), or a list of objects {"frame_id" (or
"image_id"): i, "keypoints": 3K numbers} (COCO's result format). Where a frame holds several
people, the one with the highest "score" (else the highest summed confidence) is taken.
The box of one frame's keypoints is VIBE's (lib/utils/smooth_bbox.py `kp_to_bbox_param`, with
the demo's `vis_thresh=0.3`, then `bboxes[:, 2:] = 150 / scale` in lib/dataset/inference.py):
the keypoints with confidence above 0.3 are visible; the box is centred on the middle of their
extent and is square with side the extent's diagonal; with no visible keypoint, or a diagonal
under 0.5 px, the frame has no box. VIBE's demo then interpolates boxes over such frames inside a
track; here they are skipped and reported, as frames without a box from a track file.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence

import numpy as np

VISIBLE_CONFIDENCE = 0.3  # VIBE's demo: get_all_bbox_params(joints2d, vis_thresh=0.3)
MIN_DIAGONAL = 0.5  # kp_to_bbox_param: no box for a person under half a pixel
KEYPOINT_COUNTS = {17: "COCO-17", 25: "OpenPose BODY_25"}


class BoxError(ValueError):
    """A box or keypoint file that cannot be read; the message names the file and the entry."""


# ---------------------------------------------------------------------------------------------
# Track files
# ---------------------------------------------------------------------------------------------


def read_boxes(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of a track file (`.npz` or `.json`, see the module docstring).

    Returns:
      (frame_ids [M] int64, bbox [M, 4] float64 [cx, cy, w, h]), sorted by frame; rows that are
      not finite or have no size are left out (frames without a box).

    Raises:
      BoxError: a missing or unreadable file, arrays of the wrong shape, negative or repeated
        frame ids.
    """
    if not os.path.isfile(path):
        raise BoxError(f"box file {path} does not exist; expected a .npz or .json track.")
    if path.endswith(".json"):
        frame_ids, bbox = _json_boxes(_load_json(path), path)
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, EOFError) as e:
            raise BoxError(f"box file {path} is not a readable .npz or .json file "
                           f"({e or 'empty'}).") from e  # fmt: skip
        if "bbox" not in arrays:
            raise BoxError(f"box file {path} has no 'bbox' array (it has {sorted(arrays)}); "
                           "expected bbox [N, 4] (cx, cy, w, h) and frame_ids [N].")  # fmt: skip
        frame_ids, bbox = arrays.get("frame_ids"), arrays["bbox"]
    return _checked(frame_ids, bbox, path)


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BoxError(f"{path} is not a readable JSON file ({e}).") from e


def _json_boxes(data, path: str) -> tuple[np.ndarray | None, object]:
    """(frame_ids or None, rows) of the JSON layouts of a track file."""
    if isinstance(data, dict) and "bbox" in data:
        return data.get("frame_ids"), data["bbox"]
    if not isinstance(data, list):
        raise BoxError(f"{path} holds a JSON {_json_kind(data)}, expected a list of boxes or an "
                       "object with 'bbox' and 'frame_ids'.")  # fmt: skip
    if all(isinstance(entry, dict) for entry in data) and data:
        try:
            rows = [(e["frame_id"], e["bbox"]) for e in data]
        except KeyError as e:
            raise BoxError(f"{path}: an entry has no {e}; expected objects with 'frame_id' "
                           "and 'bbox'.") from None  # fmt: skip
        rows = [row for row in rows if row[1] is not None]
        return [f for f, _ in rows], [b for _, b in rows]
    frames = [i for i, entry in enumerate(data) if entry is not None]
    return frames, [data[i] for i in frames]


def _checked(frame_ids, bbox, path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        bbox = np.asarray(bbox, np.float64)
    except (TypeError, ValueError):
        raise BoxError(f"{path}: the boxes are not rows of 4 numbers, expected [N, 4] (cx, cy, "
                       "w, h in pixels).") from None  # fmt: skip
    if bbox.size == 0 and bbox.ndim == 1:  # an empty track
        bbox = bbox.reshape(0, 4)
    if bbox.ndim != 2 or bbox.shape[1] != 4:
        raise BoxError(f"{path}: the boxes have shape {list(bbox.shape)}, expected [N, 4] "
                       "(cx, cy, w, h in pixels).")  # fmt: skip
    frame_ids = np.arange(len(bbox)) if frame_ids is None else np.asarray(frame_ids)
    if frame_ids.shape != (len(bbox),) or (len(bbox) and frame_ids.dtype.kind not in "iu"):
        raise BoxError(f"{path}: frame_ids has shape {list(frame_ids.shape)} and type "
                       f"{frame_ids.dtype}, expected [{len(bbox)}] integers "
                       "(one per box).")  # fmt: skip
    frame_ids = frame_ids.astype(np.int64)
    if len(frame_ids) and frame_ids.min() < 0:
        raise BoxError(f"{path}: frame id {frame_ids.min()} is negative, expected frame "
                       "indices from 0.")  # fmt: skip
    unique, counts = np.unique(frame_ids, return_counts=True)
    if (counts > 1).any():
        raise BoxError(f"{path}: frame {unique[counts > 1][0]} has {counts.max()} boxes, "
                       "expected one box per frame (one person's track).")  # fmt: skip
    usable = np.isfinite(bbox).all(axis=1) & (np.maximum(bbox[:, 2], bbox[:, 3]) > 0)
    order = np.argsort(frame_ids[usable], kind="stable")
    return frame_ids[usable][order], bbox[usable][order]


def square_boxes(bbox: np.ndarray) -> np.ndarray:
    """[M, 4] [cx, cy, w, h] -> [cx, cy, s, s] with s = max(w, h) (VIBE's square box)."""
    bbox = np.asarray(bbox, np.float64)
    side = np.maximum(bbox[:, 2], bbox[:, 3])
    return np.stack([bbox[:, 0], bbox[:, 1], side, side], axis=-1)


# ---------------------------------------------------------------------------------------------
# Keypoints
# ---------------------------------------------------------------------------------------------


def keypoint_box(keypoints: np.ndarray) -> np.ndarray | None:
    """VIBE's box of one person's keypoints [K, 3] (x, y, confidence): [cx, cy, d, d], d the
    diagonal of the visible keypoints' extent, or None (module docstring)."""
    keypoints = np.asarray(keypoints, np.float64)
    visible = keypoints[keypoints[:, 2] > VISIBLE_CONFIDENCE, :2]
    if len(visible) == 0:
        return None
    low, high = visible.min(axis=0), visible.max(axis=0)
    diagonal = float(np.linalg.norm(high - low))
    if diagonal < MIN_DIAGONAL:
        return None
    centre = (low + high) / 2
    return np.array([centre[0], centre[1], diagonal, diagonal])


def keypoint_boxes(frame_ids: Sequence[int], keypoints: Sequence[np.ndarray | None]):
    """Boxes of per-frame keypoints: (frame_ids [M], bbox [M, 4]) of the frames that have one."""
    found = [(f, keypoint_box(k)) for f, k in zip(frame_ids, keypoints, strict=True)
             if k is not None]  # fmt: skip
    found = [(f, box) for f, box in found if box is not None]
    ids = np.array([f for f, _ in found], np.int64)
    bbox = np.array([box for _, box in found], np.float64).reshape(-1, 4)
    return ids, bbox


def read_keypoints(path: str) -> tuple[list[int], list[np.ndarray | None]]:
    """Per-frame keypoints of a folder of OpenPose files or one JSON file (module docstring).

    Returns:
      (frame ids, per frame the chosen person's [K, 3] keypoints or None when nobody is there).

    Raises:
      BoxError: a missing or unreadable path, or an entry that is not 17 or 25 keypoints.
    """
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.json")))
        if not files:
            raise BoxError(f"keypoint folder {path} holds no .json files; expected OpenPose's "
                           "per-frame files (*_keypoints.json).")  # fmt: skip
        entries = [(_load_json(f), os.path.basename(f)) for f in files]
        return list(range(len(files))), [_frame_keypoints(e, where) for e, where in entries]
    if not os.path.isfile(path):
        raise BoxError(f"keypoint path {path} does not exist; expected a JSON file or a folder "
                       "of OpenPose JSON files.")  # fmt: skip
    data = _load_json(path)
    if isinstance(data, dict) and "people" in data:
        raise BoxError(f"{path} is one OpenPose frame; pass the folder of all frames' files.")
    if not isinstance(data, list):
        raise BoxError(f"{path} holds a JSON {_json_kind(data)}, expected a list with one "
                       "entry per frame.")  # fmt: skip
    if data and all(isinstance(e, dict) and "keypoints" in e for e in data):
        return _coco_results(data, path)
    keypoints = [_frame_keypoints(e, f"{path} entry {i}") for i, e in enumerate(data)]
    return list(range(len(data))), keypoints


def _coco_results(data: list[dict], path: str) -> tuple[list[int], list[np.ndarray | None]]:
    """COCO's keypoint results: several detections per frame; the best score is taken."""
    best: dict[int, tuple[float, np.ndarray]] = {}
    for i, entry in enumerate(data):
        frame = entry.get("frame_id", entry.get("image_id"))
        if not isinstance(frame, int) or frame < 0:
            raise BoxError(f"{path} entry {i} has frame_id / image_id {frame!r}, expected a "
                           "frame index from 0.")  # fmt: skip
        keypoints = _person(entry["keypoints"], f"{path} entry {i}")
        score = float(entry.get("score", keypoints[:, 2].sum()))
        if frame not in best or score > best[frame][0]:
            best[frame] = (score, keypoints)
    frames = sorted(best)
    return frames, [best[f][1] for f in frames]


def _frame_keypoints(entry, where: str) -> np.ndarray | None:
    """One frame's chosen person: entry null / [] / [K, 3] / 3K numbers / OpenPose object."""
    if entry is None or (isinstance(entry, list) and not entry):
        return None
    if isinstance(entry, dict):
        people = entry.get("people")
        if not isinstance(people, list):
            raise BoxError(f"{where} has no 'people' list, expected an OpenPose frame "
                           '{"people": [{"pose_keypoints_2d": [...]}]}.')  # fmt: skip
        persons = []
        for person in people:
            if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
                raise BoxError(f"{where}: a person has no 'pose_keypoints_2d'.")
            persons.append(_person(person["pose_keypoints_2d"], where))
        return max(persons, key=lambda k: k[:, 2].sum()) if persons else None
    return _person(entry, where)


def _person(values, where: str) -> np.ndarray:
    try:
        array = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.ndim == 1 and array.size % 3 == 0:
        array = array.reshape(-1, 3)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) not in KEYPOINT_COUNTS:
        raise BoxError(f"{where} holds keypoints {_shape(values)}, expected "
                       "17 (COCO) or 25 (OpenPose BODY_25) keypoints of (x, y, confidence), "
                       "as [K, 3] or 3K numbers.")  # fmt: skip
    if not np.isfinite(array).all():
        raise BoxError(f"{where} holds NaN or infinite keypoint values.")
    return array


def _json_kind(value) -> str:
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def _shape(values) -> str:
    try:
        return f"of shape {list(np.shape(values))}"
    except ValueError:  # ragged nested lists
        return "in lists of unequal lengths"
