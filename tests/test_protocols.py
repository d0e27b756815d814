"""The frames each evaluation protocol scores, on VIBE-format files written by the test, against
naive transcriptions of VIBE's and TCMR's evaluation code.

The references below follow the code line by line (mkocabas/VIBE and hongsukchoi/TCMR_RELEASE,
read, not copied):
- VIBE: lib/dataset/dataset_3d.py (`Dataset3D.__init__`: `stride = int(seqlen * (1 - overlap))`
  with overlap 0 for the test sets, lib/dataset/threedpw.py and mpii3d.py), the windows of
  lib/data_utils/img_utils.py `split_into_chunks` (videos shorter than `seqlen` skipped,
  `view_as_windows(indexes, (seqlen,), step=stride)`), and lib/core/evaluate.py `Evaluator`,
  which scores every frame of every window (`pred_j3d.view(-1, n_kp, 3)`) and reads no flag.
- TCMR: evaluate.py (videos keyed by `np.unique(vid_name_list)`, frames filtered by `valid`
  when the file has it, `split_into_chunks(vid_names, seqlen=16, stride=1, is_train=False,
  match_vibe=False)`, `get_sequence(start, end)` repeating a frame when start == end, the
  model's middle frame `int(seq_len / 2)`, `valid_map = valid_i[:, 0].nonzero()` for
  MPI-INF-3DHP) and lib/data_utils/_img_utils.py `split_into_chunks` (the dummy windows
  inserted before and after the stride-1 windows when `is_train` is False).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from lmr_jax import evaluate, smpl
from lmr_jax.data import build, pipeline
from tests.data import vibe_files

T = 4
VIDEOS = (("clip_a", 3), ("clip_b", 4), ("clip_c", 9), ("clip_d", 13))


def video_rows(vid_names):
    """The rows of each video in file order, as both split_into_chunks find them."""
    _, group = np.unique(vid_names, return_index=True)
    group = group[np.argsort(group)]
    return np.split(np.arange(0, vid_names.shape[0]), group[1:])


def vibe_split_into_chunks(vid_names, seqlen, stride):
    """VIBE lib/data_utils/img_utils.py split_into_chunks: [start, end] row pairs."""
    out = []
    for indexes in video_rows(vid_names):
        if indexes.shape[0] < seqlen:
            continue
        chunks = np.lib.stride_tricks.sliding_window_view(indexes, seqlen)[::stride]
        out += chunks[:, (0, -1)].tolist()
    return out


def vibe_scored(arrays, seqlen):
    """{(vid_name, frame_id): window frame ids} of every frame VIBE's Evaluator scores."""
    names, ids = arrays["vid_name"], arrays["frame_id"]
    scored = {}
    for start, end in vibe_split_into_chunks(names, seqlen, seqlen):  # overlap 0 at test time
        rows = list(range(start, end + 1))
        for row in rows:
            scored[(str(names[row]), int(ids[row]))] = tuple(int(ids[r]) for r in rows)
    return scored


def tcmr_split_into_chunks(vid_names, seqlen, stride):
    """TCMR lib/data_utils/_img_utils.py split_into_chunks(..., is_train=False,
    match_vibe=False): [start, end] pairs, [i, i] for the dummy windows."""
    out = []
    for indexes in video_rows(vid_names):
        if indexes.shape[0] < seqlen:
            continue
        chunks = np.lib.stride_tricks.sliding_window_view(indexes, seqlen)[::stride]
        start_finish = chunks[:, (0, -1)].tolist()
        if stride != seqlen:
            d = start_finish[0][0]
            for j in range(int(seqlen / 2)):
                start_finish.insert(j, [d + j, d + j])
            d = start_finish[-1][0]
            for j in range(int(seqlen / 2 + 0.5) - 1):
                start_finish.append([d + int(seqlen / 2) + j + 1, d + int(seqlen / 2) + j + 1])
        out += start_finish
    return out


def tcmr_scored(arrays, seqlen):
    """{(vid_name, frame_id): window frame ids} of every frame TCMR's evaluate.py scores."""
    names, ids = arrays["vid_name"], arrays["frame_id"]
    scored = {}
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        if "valid" in arrays:
            rows = rows[arrays["valid"][rows].astype(bool)]
        chunks = tcmr_split_into_chunks(names[rows], seqlen, 1)
        if chunks == []:
            continue
        windows = [
            list(range(s, e + 1)) if s != e else [s] * seqlen for s, e in chunks
        ]  # get_sequence
        predicted = [w[int(seqlen / 2)] for w in windows]  # the model's mid_frame
        valid_map = np.arange(len(predicted))
        if "valid_i" in arrays:
            valid_map = arrays["valid_i"][rows][:, 0].nonzero()[0]
        for k in valid_map:
            row = rows[predicted[k]]
            scored[(str(name), int(ids[row]))] = tuple(int(ids[rows[i]]) for i in windows[k])
    return scored


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """3DPW test and MPI-INF-3DHP validation files with random flags, built as datasets."""
    root = str(tmp_path_factory.mktemp("protocols"))
    rng = np.random.default_rng(7)
    data_dir, files = os.path.join(root, "tfds"), {}
    for dataset, split, flag in (("threedpw", "test", "valid"),
                                 ("mpi_inf_3dhp", "validation", "valid_i")):  # fmt: skip
        arrays = vibe_files.make_source(dataset, split, videos=VIDEOS, seed=3)
        num = len(arrays["vid_name"])
        values = rng.uniform(size=num) > 0.25
        arrays[flag] = values if flag == "valid" else values[:, None].astype(np.float64)
        if dataset == "mpi_inf_3dhp":  # TCMR's files name frames by their image
            arrays["frame_id"] = vibe_files._frames(VIDEOS)[1]
        manual = os.path.join(root, dataset)
        os.makedirs(manual)
        vibe_files.write_source(os.path.join(manual, vibe_files.FILES[(dataset, split)]), arrays)
        build.build(dataset, data_dir, manual_dir=manual)
        files[dataset] = (split, arrays)
    return data_dir, files


def ours(data_dir, dataset, split, protocol):
    """{(vid_name, frame_id): window frame ids} of the frames our frame_plan scores."""
    spec = pipeline.DatasetSpec(name=dataset, split=split, data_dir=data_dir)
    scored = {}
    for video in pipeline.eval_videos(spec):
        plan = evaluate.frame_plan(len(video["features"]), T, protocol,
                                   video.get("valid"), video.get("valid_i"))  # fmt: skip
        ids = video["frame_ids"]
        for frame, window, keep in zip(plan.frames, plan.window_of, plan.scored, strict=True):
            if keep:
                scored[(video["vid_name"], int(ids[frame]))] = tuple(
                    int(ids[f]) for f in plan.windows[window]
                )
    return scored


@pytest.mark.parametrize("dataset", ["threedpw", "mpi_inf_3dhp"])
@pytest.mark.parametrize(("protocol", "reference"), [("vibe", vibe_scored),
                                                     ("tcmr", tcmr_scored)])  # fmt: skip
def test_scored_frames_and_their_windows_match_the_reference_code(
    fixture_files, dataset, protocol, reference
):
    data_dir, files = fixture_files
    split, arrays = files[dataset]
    want = reference(arrays, T)
    got = ours(data_dir, dataset, split, protocol)
    assert len(want) > 10  # the fixture exercises skipping, flags and edge windows
    assert got == want


def test_evaluation_reports_the_scored_frames(fixture_files):
    data_dir, files = fixture_files
    split, arrays = files["mpi_inf_3dhp"]
    spec = pipeline.DatasetSpec(name="mpi_inf_3dhp", split=split, data_dir=data_dir)
    body = smpl.procedural(0)

    def apply(windows):  # any prediction: only the frame count matters here
        shape = windows.shape[:2]
        return {"joints3d": np.zeros((*shape, 49, 3), np.float32),
                "vertices": np.zeros((*shape, 6890, 3), np.float32)}  # fmt: skip

    for protocol, joints, reference in (("vibe", "h36m14", vibe_scored),
                                        ("tcmr", "mpii3d17", tcmr_scored)):  # fmt: skip
        results = evaluate.evaluate_videos(apply, pipeline.eval_videos(spec), body, T,
                                           protocol=protocol, joints=joints)  # fmt: skip
        assert results["frames"] == len(reference(arrays, T)), protocol
        assert "clip_a" in results["skipped"]  # 3 frames < T
        assert sum(v["frames"] for v in results["videos"].values()) == results["frames"]
