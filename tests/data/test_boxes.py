"""Person boxes for feature extraction (lmr_jax/data/boxes.py): track files in every layout,
VIBE's box of visible keypoints against a hand computation, OpenPose and COCO keypoint files,
and one-sentence errors."""

import json

import numpy as np
import pytest

from lmr_jax.data import boxes


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Track files
# ---------------------------------------------------------------------------------------------


def test_track_layouts_give_the_same_boxes_sorted_by_frame(tmp_path):
    bbox = [[50.0, 60.0, 20.0, 40.0], [52.0, 61.0, 22.0, 41.0], [55.0, 62.0, 21.0, 39.0]]
    frames = [4, 0, 2]
    want_ids, want_bbox = np.array([0, 2, 4]), np.array(bbox)[[1, 2, 0]]
    np.savez(tmp_path / "track.npz", bbox=np.array(bbox), frame_ids=np.array(frames))
    per_frame = [None] * 5
    for f, b in zip(frames, bbox, strict=True):
        per_frame[f] = b
    paths = [
        str(tmp_path / "track.npz"),
        _write_json(tmp_path / "object.json", {"bbox": bbox, "frame_ids": frames}),
        _write_json(tmp_path / "list.json", per_frame),  # frame i = entry i, null: no box
        _write_json(
            tmp_path / "entries.json",
            [{"frame_id": f, "bbox": b} for f, b in zip(frames, bbox, strict=True)]
            + [{"frame_id": 7, "bbox": None}],
        ),  # fmt: skip
    ]
    for path in paths:
        ids, got = boxes.read_boxes(path)
        np.testing.assert_array_equal(ids, want_ids, err_msg=path)
        np.testing.assert_array_equal(got, want_bbox, err_msg=path)


def test_rows_without_a_box_are_left_out_and_frame_ids_default_to_rows(tmp_path):
    bbox = np.array([[1.0, 2.0, 3.0, 4.0], [np.nan, 0, 0, 0], [5, 6, 0, 0], [7, 8, 0, 9]])
    np.savez(tmp_path / "track.npz", bbox=bbox)  # no frame_ids: rows are frames 0, 1, ...
    ids, got = boxes.read_boxes(str(tmp_path / "track.npz"))
    np.testing.assert_array_equal(ids, [0, 3])
    np.testing.assert_array_equal(got, bbox[[0, 3]])


def test_square_boxes_take_the_larger_side():
    got = boxes.square_boxes(np.array([[10.0, 20.0, 30.0, 50.0], [1.0, 2.0, 8.0, 3.0]]))
    np.testing.assert_array_equal(got, [[10, 20, 50, 50], [1, 2, 8, 8]])


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("nope.npz", None, "box file .*nope.npz does not exist; expected a .npz or .json"),
        ("empty.npz", b"", "is not a readable .npz or .json file"),
        ("other.npz", {"boxes": np.zeros((2, 4))},
         r"has no 'bbox' array \(it has \['boxes'\]\); expected bbox \[N, 4\]"),
        ("narrow.npz", {"bbox": np.zeros((2, 3))}, r"the boxes have shape \[2, 3\], expected "
         r"\[N, 4\] \(cx, cy, w, h in pixels\)"),
        ("ids.npz", {"bbox": np.ones((2, 4)), "frame_ids": np.arange(3)},
         r"frame_ids has shape \[3\] and type int64, expected \[2\] integers"),
        ("float_ids.npz", {"bbox": np.ones((2, 4)), "frame_ids": np.array([0.5, 1.0])},
         "expected \\[2\\] integers"),
        ("twice.npz", {"bbox": np.ones((2, 4)), "frame_ids": np.array([3, 3])},
         "frame 3 has 2 boxes, expected one box per frame"),
        ("negative.npz", {"bbox": np.ones((1, 4)), "frame_ids": np.array([-1])},
         "frame id -1 is negative"),
        ("bad.json", b"{not json", "is not a readable JSON file"),
        ("number.json", 3, "holds a JSON number, expected a list of boxes or an object"),
        ("ragged.json", [[1, 2, 3, 4], [1, 2]], "the boxes are not rows of 4 numbers"),
        ("keys.json", [{"frame": 0, "bbox": [1, 2, 3, 4]}], "an entry has no 'frame_id'"),
    ],
)  # fmt: skip
def test_bad_track_files_are_refused_in_one_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        _write_json(path, content)
    with pytest.raises(boxes.BoxError, match=message):
        boxes.read_boxes(str(path))


# ---------------------------------------------------------------------------------------------
# Keypoints
# ---------------------------------------------------------------------------------------------


def _coco_person(seed=0, offset=(0.0, 0.0)):
    """17 keypoints (x, y, conf) with some below VIBE's 0.3 and one exactly at it."""
    rng = np.random.default_rng(seed)
    keypoints = np.zeros((17, 3))
    keypoints[:, 0] = rng.uniform(100, 200, 17) + offset[0]
    keypoints[:, 1] = rng.uniform(50, 300, 17) + offset[1]
    keypoints[:, 2] = rng.uniform(0.4, 1.0, 17)
    keypoints[[2, 9], 2] = 0.1  # not visible
    keypoints[5, 2] = 0.3  # not visible either: VIBE keeps conf > 0.3
    keypoints[2, :2] = (1000.0, -500.0)  # far away, so a box that used it would be wrong
    keypoints[5, :2] = (-300.0, 900.0)
    return keypoints


def test_keypoint_box_is_vibes_box_of_the_visible_keypoints():
    keypoints = _coco_person()
    visible = [i for i in range(17) if i not in (2, 5, 9)]
    xs, ys = keypoints[visible, 0], keypoints[visible, 1]
    width, height = xs.max() - xs.min(), ys.max() - ys.min()
    diagonal = (width**2 + height**2) ** 0.5  # kp_to_bbox_param's person_height
    want = [(xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2, diagonal, diagonal]
    np.testing.assert_allclose(boxes.keypoint_box(keypoints), want, rtol=1e-12)
    hidden = keypoints.copy()
    hidden[:, 2] = 0.3
    assert boxes.keypoint_box(hidden) is None  # nothing visible
    point = np.array([[10.0, 10.0, 0.9], [10.2, 10.3, 0.9], [0.0, 0.0, 0.0]])
    point = np.concatenate([point, np.zeros((14, 3))])
    assert boxes.keypoint_box(point) is None  # a diagonal of 0.36 px < 0.5


def test_openpose_folder_picks_the_most_confident_person_per_frame(tmp_path):
    folder = tmp_path / "openpose"
    folder.mkdir()
    person = np.zeros((25, 3))
    person[:17] = _coco_person(1)
    weak = person.copy()
    weak[:, 2] *= 0.5
    weak[:, :2] += 400.0
    frames = [
        {"people": [{"pose_keypoints_2d": weak.ravel().tolist()},
                    {"pose_keypoints_2d": person.ravel().tolist()}]},
        {"people": []},  # nobody: a frame without a box
        {"people": [{"pose_keypoints_2d": np.zeros(75).tolist()}]},  # nothing visible
        {"people": [{"pose_keypoints_2d": weak.ravel().tolist()}]},
    ]  # fmt: skip
    for i, frame in enumerate(frames):
        _write_json(folder / f"clip_{i:012d}_keypoints.json", frame)
    ids, keypoints = boxes.read_keypoints(str(folder))
    assert ids == [0, 1, 2, 3] and keypoints[1] is None
    np.testing.assert_array_equal(keypoints[0], person)
    box_ids, bbox = boxes.keypoint_boxes(ids, keypoints)
    np.testing.assert_array_equal(box_ids, [0, 3])
    np.testing.assert_allclose(bbox, [boxes.keypoint_box(person), boxes.keypoint_box(weak)])


def test_keypoint_json_lists_and_coco_results(tmp_path):
    a, b = _coco_person(2), _coco_person(3, offset=(30.0, 0.0))
    per_frame = _write_json(tmp_path / "frames.json", [a.tolist(), None, b.ravel().tolist(), []])
    ids, keypoints = boxes.read_keypoints(per_frame)
    assert ids == [0, 1, 2, 3] and keypoints[1] is None and keypoints[3] is None
    np.testing.assert_array_equal(keypoints[2], b)
    results = [{"image_id": 5, "keypoints": a.ravel().tolist(), "score": 0.4},
               {"image_id": 5, "keypoints": b.ravel().tolist(), "score": 0.9},
               {"image_id": 2, "keypoints": a.ravel().tolist(), "score": 0.1}]  # fmt: skip
    ids, keypoints = boxes.read_keypoints(_write_json(tmp_path / "coco.json", results))
    assert ids == [2, 5]
    np.testing.assert_array_equal(keypoints[1], b)  # the better detection of frame 5


@pytest.mark.parametrize(
    "content,message",
    [
        ([np.zeros((16, 3)).tolist()],
         r"entry 0 holds keypoints of shape \[16, 3\], expected 17 \(COCO\) or 25 \(OpenPose"),
        ([None, list(range(50))], r"entry 1 holds keypoints of shape \[50\]"),
        ([[[1, 2, 3]] * 16 + [[1, 2]]], "holds keypoints in lists of unequal lengths"),
        ([{"people": [{"keypoints": []}]}], "a person has no 'pose_keypoints_2d'"),
        ([{"persons": []}], "has no 'people' list, expected an OpenPose frame"),
        ({"people": []}, "is one OpenPose frame; pass the folder"),
        ({"frames": []}, "holds a JSON object, expected a list with one entry per frame"),
        ([{"image_id": "a", "keypoints": []}], "has frame_id / image_id 'a'"),
        ([np.full((17, 3), np.nan).tolist()], "holds NaN or infinite keypoint values"),
    ],
)  # fmt: skip
def test_bad_keypoint_files_are_refused_in_one_sentence(tmp_path, content, message):
    with pytest.raises(boxes.BoxError, match=message):
        boxes.read_keypoints(_write_json(tmp_path / "keypoints.json", content))


def test_missing_keypoint_paths_are_named(tmp_path):
    with pytest.raises(boxes.BoxError, match="keypoint path .*nope.json does not exist"):
        boxes.read_keypoints(str(tmp_path / "nope.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(boxes.BoxError, match="keypoint folder .*empty holds no .json files"):
        boxes.read_keypoints(str(tmp_path / "empty"))
