"""The grain input pipeline: windows, mixtures, determinism, resume, sharding, bad input."""

import json

import numpy as np
import pytest

from lmr_jax.data import pipeline
from lmr_jax.data.pipeline import DatasetSpec, eval_videos, train_dataset, window_index
from tests.data.datasets import make_video, write_dataset

LENGTHS_3D = (5, 20, 33, 16)  # T=16, stride 8 -> 1 + 2 + 4 + 1 = 8 windows
LENGTHS_2D = (40, 25)  # -> 4 + 2 = 6 windows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Hand-made datasets whose features say where they come from: [video id, frame, ...]."""
    root = tmp_path_factory.mktemp("fake")
    three_d = [make_video(n, value=100 + i, name=f"a{i}") for i, n in enumerate(LENGTHS_3D)]
    for video in three_d:
        video["has_smpl"][:] = 1.0
    write_dataset(
        root, "fake_3d/a", {"train": three_d}, metadata={"num_frames": {"train": list(LENGTHS_3D)}}
    )
    two_d = [make_video(n, value=200 + i, name=f"b{i}") for i, n in enumerate(LENGTHS_2D)]
    write_dataset(root, "fake_2d/a", {"train": two_d})  # no recorded lengths: scanned
    return str(root)


def _spec(data_dir, name="fake_3d/a", **kwargs):
    return DatasetSpec(name, data_dir=data_dir, **kwargs)


def _windows(batch):
    """(video id, first frame) of every window of a batch, flattened over devices."""
    features = batch["features"].reshape(-1, *batch["features"].shape[2:])
    return [(int(f[0, 0]), int(f[0, 1])) for f in features]


def _take(dataset, num):
    iterator = iter(dataset)
    return [next(iterator) for _ in range(num)]


def test_window_index_covers_every_frame():
    index = window_index(LENGTHS_3D, window=16, stride=8)
    expected = [(0, 0), (1, 0), (1, 4), (2, 0), (2, 8), (2, 16), (2, 17), (3, 0)]
    assert [tuple(r) for r in index] == expected
    with pytest.raises(ValueError, match="must be positive"):
        window_index([10], window=16, stride=0)


def test_window_index_without_tail_windows_is_vibes_split_into_chunks():
    index = window_index(LENGTHS_3D, window=16, stride=8, tail=False)
    # VIBE: videos shorter than T skipped, view_as_windows(step=stride) full windows only.
    want = []
    for video, length in enumerate(LENGTHS_3D):
        if length >= 16:
            starts = np.lib.stride_tricks.sliding_window_view(np.arange(length), 16)[::8, 0]
            want += [(video, int(s)) for s in starts]
    assert [tuple(r) for r in index] == want == [(1, 0), (2, 0), (2, 8), (2, 16), (3, 0)]


def test_short_video_is_padded_with_a_valid_mask():
    window = pipeline.cut_window(make_video(5, value=1), 0, 16)
    np.testing.assert_array_equal(window["valid"], [1] * 5 + [0] * 11)
    assert window["features"].shape == (16, 8) and not window["features"][5:].any()
    assert not window["kp2d"][5:, :, 2].any()


def test_batches_for_pmap(data_dir):
    dataset = train_dataset(
        [_spec(data_dir)], window=16, global_batch_size=8, num_local_devices=2, seed=0
    )
    batch, second = _take(dataset, 2)
    assert batch["features"].shape == (2, 4, 16, 8)
    assert batch["kp2d"].shape == (2, 4, 16, 49, 3) and batch["kp3d"].shape == (2, 4, 16, 49, 4)
    assert batch["pose"].shape == (2, 4, 16, 72) and batch["shape"].shape == (2, 4, 16, 10)
    assert batch["has_smpl"].shape == batch["valid"].shape == (2, 4, 16)
    # One epoch is exactly the window index, in a shuffled order; the next one reshuffles.
    index = [(100 + v, s) for v, s in window_index(LENGTHS_3D, 16, 8)]
    assert sorted(_windows(batch)) == sorted(index) and _windows(batch) != index
    assert sorted(_windows(second)) == sorted(index) and _windows(second) != _windows(batch)
    # Frames are consecutive inside a window; padding is marked.
    features = batch["features"].reshape(8, 16, 8)
    valid = batch["valid"].reshape(8, 16)
    for f, v in zip(features, valid):
        n = int(v.sum())
        np.testing.assert_array_equal(f[:n, 1], f[0, 1] + np.arange(n))
        assert n == min(16, LENGTHS_3D[int(f[0, 0]) - 100] - int(f[0, 1]))


def test_mixture_follows_the_weights(data_dir):
    specs = [_spec(data_dir, weight=0.4), _spec(data_dir, "fake_2d/a", weight=0.6)]
    batches = _take(train_dataset(specs, global_batch_size=10, num_local_devices=1, seed=1), 20)
    ids = np.array([v for b in batches for v, _ in _windows(b)])
    assert np.mean(ids >= 200) == pytest.approx(0.6, abs=0.01)
    assert set(ids) == {100, 101, 102, 103, 200, 201}


def test_per_dataset_stride(data_dir):
    specs = [_spec(data_dir, stride=16)]  # 1 + 2 + 3 + 1 = 7 windows
    batch = _take(train_dataset(specs, global_batch_size=7, num_local_devices=1, seed=0), 1)[0]
    assert sorted(_windows(batch)) == [
        (100, 0),
        (101, 0),
        (101, 4),
        (102, 0),
        (102, 16),
        (102, 17),
        (103, 0),
    ]


def test_same_seed_same_batches_other_seed_other_order(data_dir):
    specs = [_spec(data_dir, weight=0.5), _spec(data_dir, "fake_2d/a", weight=0.5)]
    make = lambda seed: train_dataset(specs, global_batch_size=4, num_local_devices=2, seed=seed)
    a, b, c = _take(make(3), 6), _take(make(3), 6), _take(make(4), 6)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert [_windows(x) for x in a] != [_windows(x) for x in c]


def test_iterator_state_resumes_the_same_stream(data_dir):
    specs = [_spec(data_dir, weight=0.3), _spec(data_dir, "fake_2d/a", weight=0.7)]
    dataset = train_dataset(specs, global_batch_size=6, num_local_devices=2, seed=5)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))  # what grain's orbax handler writes
    expected = [_windows(next(iterator)) for _ in range(4)]
    resumed = iter(train_dataset(specs, global_batch_size=6, num_local_devices=2, seed=5))
    resumed.set_state(state)
    assert [_windows(next(resumed)) for _ in range(4)] == expected


def test_iterator_checkpoints_with_orbax(data_dir, tmp_path):
    grain = pytest.importorskip("grain")
    ocp = pytest.importorskip("orbax.checkpoint")
    make = lambda: iter(
        train_dataset([_spec(data_dir)], global_batch_size=4, num_local_devices=1, seed=2)
    )
    iterator = make()
    next(iterator)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
        manager.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = _windows(next(iterator))
    restored = make()
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
        manager.restore(
            7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored))
        )
    assert _windows(next(restored)) == expected


def test_two_processes_get_disjoint_complete_shards(data_dir):
    specs = [_spec(data_dir, weight=0.5), _spec(data_dir, "fake_2d/a", weight=0.5)]
    single = _take(train_dataset(specs, global_batch_size=8, num_local_devices=2, seed=9), 5)
    shards = [
        _take(
            train_dataset(
                specs,
                global_batch_size=8,
                num_local_devices=2,
                seed=9,
                process_index=p,
                process_count=2,
            ),
            5,
        )
        for p in range(2)
    ]
    assert shards[0][0]["features"].shape == (2, 2, 16, 8)
    for step in range(5):
        mine, theirs = _windows(shards[0][step]), _windows(shards[1][step])
        # Global batch k holds the same windows whatever the process count.
        assert sorted(mine + theirs) == sorted(_windows(single[step]))
    first_epoch_0 = [w for b in shards[0][:1] for w in _windows(b)]
    first_epoch_1 = [w for b in shards[1][:1] for w in _windows(b)]
    assert not set(first_epoch_0) & set(first_epoch_1)


def test_eval_videos_are_whole_and_shardable(data_dir):
    videos = list(eval_videos(_spec(data_dir)))
    assert [v["vid_name"] for v in videos] == ["a0", "a1", "a2", "a3"]
    assert [len(v["features"]) for v in videos] == list(LENGTHS_3D)
    assert videos[2]["kp3d"].shape == (33, 49, 4) and videos[2]["frame_ids"][-1] == 32
    shards = [
        [v["vid_name"] for v in eval_videos(_spec(data_dir), process_index=p, process_count=2)]
        for p in range(2)
    ]
    assert shards == [["a0", "a2"], ["a1", "a3"]]


def test_lengths_come_from_metadata_or_a_scan(data_dir):
    assert list(pipeline.open_dataset(_spec(data_dir)).lengths) == list(LENGTHS_3D)
    assert list(pipeline.open_dataset(_spec(data_dir, "fake_2d/a")).lengths) == list(LENGTHS_2D)


def test_synthetic_mixture_end_to_end(tiny_data_dir):
    specs = [
        DatasetSpec("synthetic_motion/tiny", data_dir=tiny_data_dir, weight=0.4),
        DatasetSpec("synthetic_motion/tiny_2d", data_dir=tiny_data_dir, weight=0.6),
    ]
    batches = _take(train_dataset(specs, global_batch_size=10, num_local_devices=2, seed=0), 4)
    has_3d = np.concatenate([b["has_kp3d"].reshape(-1, 16)[:, 0] for b in batches])
    assert has_3d.mean() == pytest.approx(0.4)
    assert batches[0]["features"].shape == (2, 5, 16, 64)
    assert all(np.isfinite(b["features"]).all() for b in batches)
    test_videos = list(
        eval_videos(DatasetSpec("synthetic_motion/tiny", "test", data_dir=tiny_data_dir))
    )
    assert [v["vid_name"] for v in test_videos] == [
        "synthetic_motion/tiny/test/00000",
        "synthetic_motion/tiny/test/00001",
    ]


def test_sub_split(data_dir):
    spec = _spec(data_dir, split="train[1:3]")
    assert [v["vid_name"] for v in eval_videos(spec)] == ["a1", "a2"]
    assert list(pipeline.open_dataset(spec).lengths) == [20, 33]  # recorded lengths don't apply


def test_video_cache_changes_speed_not_batches(data_dir):
    spec = _spec(data_dir, "fake_2d/a", window=8)
    make = lambda cache: train_dataset(
        [spec], global_batch_size=4, num_local_devices=1, seed=0, cache_mib=cache
    )
    source = pipeline.open_dataset(spec)
    source.clear_cache()  # the source is shared with the other tests
    uncached = [_windows(b) for b in _take(make(0), 3)]
    assert source.cached_videos == 0
    assert [_windows(b) for b in _take(make(1), 3)] == uncached
    assert source.cached_videos == 2  # both videos are now kept decoded
