"""The VIBE-format builders: files written in VIBE's/TCMR's layouts, built, read back, checked."""

import os

import h5py
import joblib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmr_jax import smpl
from lmr_jax.data import build, pipeline, schema, vibe_format
from lmr_jax.data import vibe_files as importer
from tests.data import vibe_files
from tfds_builders import insta_variety, posetrack, threedpw

DATASETS = ("threedpw", "mpi_inf_3dhp", "human36m", "pennaction", "posetrack", "insta_variety")
SPLITS = sorted(vibe_files.FILES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every dataset written and built once: (data_dir, {dataset: {split: source arrays}})."""
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("vibe")
    sources = {}
    for dataset in DATASETS:
        manual_dir = str(root / "manual" / dataset)
        sources[dataset] = vibe_files.write_dataset(dataset, manual_dir)
        build.build(dataset, str(root / "tfds"), manual_dir=manual_dir)
    return str(root / "tfds"), sources


def _videos(data_dir, dataset, split):
    source = tfds.data_source(dataset, split=split, data_dir=data_dir)
    return [source[i] for i in range(len(source))]


def _rows(arrays, video):
    start = sum(n for _, n in vibe_files.VIDEOS[:video])
    return slice(start, start + vibe_files.VIDEOS[video][1])


@pytest.mark.parametrize("dataset,split", SPLITS)
def test_every_split_round_trips(built, dataset, split):
    data_dir, sources = built
    arrays = sources[dataset][split]
    info = tfds.builder(dataset, data_dir=data_dir).info
    assert info.metadata["layout"] == "vibe49" and info.metadata["feature_dim"] == 2048
    assert info.metadata["source_files"][split] == vibe_files.FILES[dataset, split]
    videos = _videos(data_dir, dataset, split)
    assert [v["vid_name"].decode() for v in videos] == ["video_a", "video_b"]
    assert info.metadata["num_frames"][split] == [6, 4]
    for k, video in enumerate(videos):
        schema.validate_example(video, f"{dataset}:{split}", feature_dim=2048)
        np.testing.assert_array_equal(video["features"], arrays["features"][_rows(arrays, k)])
        np.testing.assert_array_equal(
            video["frame_ids"], np.arange(10, 10 + len(video["features"]))
        )
        assert not video["cam"].any()


def test_keypoints_normalised_by_the_enlarged_bbox(built):
    data_dir, sources = built
    first_slots = [("threedpw", "test", 25), ("mpi_inf_3dhp", "train", 25),
                   ("human36m", "test", 25), ("pennaction", "train", 25),
                   ("posetrack", "train", 44), ("insta_variety", "train", 24)]  # fmt: skip
    for dataset, split, slot in first_slots:
        kp2d = _videos(data_dir, dataset, split)[0]["kp2d"]
        # Frame 0's first joint was put 0.5 crop half-widths right and 0.25 above the centre.
        np.testing.assert_allclose(kp2d[0, slot, :2], [0.5, -0.25], atol=1e-6, err_msg=dataset)
    # Every joint: (x - cx) / (0.5 * 1.2 * w), e.g. a 200-pixel box: (x - cx) / 120.
    arrays = sources["threedpw"]["test"]
    joints, bbox = arrays["joints2D"][_rows(arrays, 1)], arrays["bbox"][_rows(arrays, 1)]
    expected = (joints[:, :12, :2] - bbox[:, None, :2]) / 120.0
    kp2d = _videos(data_dir, "threedpw", "test")[1]["kp2d"]
    np.testing.assert_allclose(kp2d[:, 25:37, :2], expected, atol=1e-6)
    insta_arrays = sources["insta_variety"]["train"]
    insta = insta_arrays["joints2D"][_rows(insta_arrays, 1)]
    kp2d = _videos(data_dir, "insta_variety", "train")[1]["kp2d"]
    np.testing.assert_allclose(kp2d[:, 38, :2], insta[:, 13, :2] / 112.0 - 1.0, atol=1e-6)


def test_joint_layout_mapping(built):
    data_dir, sources = built
    pw = sources["threedpw"]
    test = _videos(data_dir, "threedpw", "test")[0]
    np.testing.assert_array_equal(test["kp2d"][:, 25:39, 2], pw["test"]["joints2D"][:6, :, 2])
    assert not test["kp2d"][:, :25].any() and not test["kp2d"][:, 39:].any()
    assert not test["kp2d"][:, 37:39, 2].any()  # 3DPW has no neck and head top
    np.testing.assert_allclose(test["kp3d"][:, 25:39, :3], pw["test"]["joints3D"][:6])
    assert (test["kp3d"][:, 25:39, 3] == 1).all() and not test["kp3d"][:, :25].any()
    train = _videos(data_dir, "threedpw", "train")[0]
    np.testing.assert_allclose(train["kp3d"][..., :3], pw["train"]["joints3D"][:6])
    assert (train["kp3d"][..., 3] == 1).all()

    mpi = _videos(data_dir, "mpi_inf_3dhp", "train")[0]
    labelled = np.flatnonzero(mpi["kp3d"][0, :, 3])
    assert labelled.tolist() == [*range(25, 40), 41, 43]
    joints3d = sources["mpi_inf_3dhp"]["train"]["joints3D"][:6]
    np.testing.assert_allclose(mpi["kp3d"][:, labelled, :3], joints3d[:, labelled], atol=1e-6)
    assert not mpi["kp3d"][:, :25].any()  # the file holds minus the root there
    np.testing.assert_allclose(mpi["kp3d"][:, 39, :3], 0.0)  # centred on the MPII pelvis

    insta = _videos(data_dir, "insta_variety", "train")[0]["kp2d"]
    conf = sources["insta_variety"]["train"]["joints2D"][:6, :, 2]
    # VIBE's insta names -> spin slots: 'OP RHeel' 24, 'OP Neck' 1, 'headtop' 38, 'OP Nose' 0,
    # 'OP RAnkle' 11.
    for joint, slot in [(0, 24), (12, 1), (13, 38), (14, 0), (24, 11)]:
        np.testing.assert_array_equal(insta[:, slot, 2], conf[:, joint])
    assert not insta[:, 25:38].any() and not insta[:, 39:].any() and not insta[:, 8].any()

    penn = _videos(data_dir, "pennaction", "train")[0]["kp2d"]
    assert np.flatnonzero(penn[0, :, 2]).tolist() == [*range(25, 37), 38]
    posetrack = _videos(data_dir, "posetrack", "train")[0]["kp2d"]
    np.testing.assert_array_equal(
        posetrack[..., 2], sources["posetrack"]["train"]["joints2D"][:6, :, 2]
    )


def test_label_flags(built):
    data_dir, sources = built
    pw = _videos(data_dir, "threedpw", "validation")[0]
    # Every frame is labelled (VIBE's w_3d, w_smpl are 1); the file's `valid` (0 on frame 1)
    # is kept as it is, and the absent `valid_i` reads as ones.
    np.testing.assert_array_equal(pw["has_kp3d"], np.ones(6))
    np.testing.assert_array_equal(pw["has_smpl"], pw["has_kp3d"])
    np.testing.assert_array_equal(pw["valid"], [1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(pw["valid_i"], np.ones(6))
    np.testing.assert_array_equal(pw["pose"], sources["threedpw"]["validation"]["pose"][:6])
    np.testing.assert_array_equal(pw["shape"], sources["threedpw"]["validation"]["shape"][:6])
    mpi = _videos(data_dir, "mpi_inf_3dhp", "validation")[0]
    np.testing.assert_array_equal(mpi["has_kp3d"], np.ones(6))
    np.testing.assert_array_equal(mpi["valid_i"], [1, 1, 0, 1, 1, 1])
    assert mpi["valid"].all()
    assert not mpi["has_smpl"].any() and not mpi["pose"].any()
    h36m = _videos(data_dir, "human36m", "train")
    np.testing.assert_array_equal(h36m[0]["has_smpl"], [1, 0, 0, 0, 0, 0])  # zero pose rows
    assert h36m[0]["has_kp3d"].all() and not h36m[1]["has_smpl"].any()
    for dataset in ("pennaction", "posetrack", "insta_variety"):
        for video in _videos(data_dir, dataset, "train"):
            assert not video["has_kp3d"].any() and not video["has_smpl"].any()
            assert not video["kp3d"].any() and not video["pose"].any()


def test_small_datasets_feed_a_mixture(tmp_path):
    data_dir = vibe_files.build_small_datasets(str(tmp_path))
    specs = [pipeline.DatasetSpec("threedpw", "train", data_dir, weight=0.4),
             pipeline.DatasetSpec("pennaction", "train", data_dir, weight=0.6)]  # fmt: skip
    stream = pipeline.train_dataset(specs, window=4, global_batch_size=8, num_local_devices=2,
                                    seed=0, num_threads=0, cache_mib=0)  # fmt: skip
    batch = next(iter(stream))
    assert batch["features"].shape == (2, 4, 4, 2048) and batch["kp2d"].shape == (2, 4, 4, 49, 3)
    assert 0 < batch["has_kp3d"].mean() < 1  # both datasets are in the batch
    videos = list(pipeline.eval_videos(pipeline.DatasetSpec("threedpw", "test", data_dir)))
    assert [v["vid_name"] for v in videos] == ["video_a", "video_b"]


def test_only_the_splits_present_are_built(tmp_path):
    (tmp_path / "m").mkdir()
    arrays = vibe_files.make_source("threedpw", "test")
    vibe_files.write_source(str(tmp_path / "m" / "3dpw_test_db.pt"), arrays)
    builder = build.build("threedpw", str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert list(builder.info.splits) == ["test"]
    assert builder.info.metadata["source_files"] == {"test": "3dpw_test_db.pt"}


def _threedpw_error(tmp_path, change):
    arrays = vibe_files.make_source("threedpw", "test")
    change(arrays)
    path = vibe_files.write_source(str(tmp_path / "3dpw_test_db.pt"), arrays)
    source = threedpw.Builder.SOURCES[2]
    with pytest.raises(schema.DatasetError) as error:
        list(vibe_format.iter_videos(path, source))
    return str(error.value)


def _set(key, value):
    def change(arrays):
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key])

    return change


def _nan_at(row, key="features"):
    def change(arrays):
        arrays[key][(row,) + (0,) * (arrays[key].ndim - 1)] = np.nan

    return change


@pytest.mark.parametrize(
    "change,parts",
    [
        (_set("joints3D", None), ["key 'joints3D' is missing", "[N, 14, 3] or [N, 49, 3]"]),
        (_set("pose", None), ["key 'pose' is missing", "[N, 72]"]),
        (_set("joints2D", lambda a: a[:, :13]),
         ["key 'joints2D' has shape [10, 13, 3]", "video_a", "expected [N, 14, 3]"]),
        (_set("features", lambda a: a[:, :64]),
         ["key 'features' has shape [10, 64]", "expected [N, 2048]"]),
        (_set("bbox", lambda a: a[:-1]),
         ["key 'bbox' has 9 rows but 'features' has 10", "[10, 4]", "video_b"]),
        (_set("vid_name", lambda a: a[:-2]), ["key 'vid_name' has 8 rows", "[10]"]),
        (_nan_at(7), ["key 'features', video 'video_b': NaN or inf at frame 1", "[4, 2048]"]),
        (_nan_at(2, "joints3D"), ["key 'joints3D', video 'video_a'", "frame 2", "[6, 14, 3]"]),
        (_set("bbox", lambda a: a * [1, 1, 0, 0]), ["key 'bbox', video 'video_a'", "<= 0"]),
        (_set("joints2D", lambda a: a * [1, 1, 2]),
         ["video 'video_a'", "field 'kp2d' has confidences outside [0, 1]"]),
    ],
)  # fmt: skip
def test_bad_inputs_name_file_key_video_and_shape(tmp_path, change, parts):
    message = _threedpw_error(tmp_path, change)
    assert "3dpw_test_db.pt" in message
    for part in parts:
        assert part in message


def test_unreadable_and_missing_files(tmp_path):
    source = threedpw.Builder.SOURCES[2]
    for name, content, part in [("missing.pt", None, "does not exist"),
                                ("text.pt", b"not a dump", "could not be read as a joblib dump"),
                                ("list.pt", [1, 2], "holds a list")]:  # fmt: skip
        path = str(tmp_path / name)
        if isinstance(content, bytes):
            open(path, "wb").write(content)
        elif content is not None:
            joblib.dump(content, path)
        with pytest.raises(schema.DatasetError, match=part):
            list(vibe_format.iter_videos(path, source))
    insta = vibe_files.make_source("insta_variety", "train")
    del insta["joints2D"]
    path = vibe_files.write_source(str(tmp_path / "insta_train_db.h5"), insta)
    source = insta_variety.Builder.SOURCES[0]
    with pytest.raises(schema.DatasetError, match=r"key 'joints2D' is missing .*\[N, 25, 3\]"):
        list(vibe_format.iter_videos(path, source))


def test_command_line_errors(tmp_path, capsys):
    args = ["threedpw", f"--data_dir={tmp_path}/d"]
    assert build.main([*args, f"--manual_dir={tmp_path}/none"]) == 2
    err = capsys.readouterr().err
    assert "manual_dir" in err and "3dpw_test_db.pt" in err and "does not exist" in err
    os.makedirs(tmp_path / "other")
    open(tmp_path / "other" / "readme.txt", "w").write("x")
    assert build.main([*args, f"--manual_dir={tmp_path}/other"]) == 2
    assert "none of its files" in capsys.readouterr().err
    arrays = vibe_files.make_source("threedpw", "test")
    arrays["features"][3, 0] = np.inf
    vibe_files.write_source(str(tmp_path / "other" / "3dpw_test_db.pt"), arrays)
    assert build.main([*args, f"--manual_dir={tmp_path}/other"]) == 2
    assert "key 'features', video 'video_a': NaN or inf at frame 3" in capsys.readouterr().err


def test_runs_across_blocks_and_repeated_names(tmp_path, monkeypatch):
    monkeypatch.setattr(vibe_format, "_BLOCK", 3)
    videos = (("a", 4), ("b", 2), ("c", 1), ("a", 2))
    arrays = vibe_files.make_source("posetrack", "train", videos=videos)
    path = vibe_files.write_source(str(tmp_path / "posetrack_train_db.pt"), arrays)
    runs = list(vibe_format.SourceArrays(path).runs())
    assert runs == [("a", 0, 4), ("b", 4, 6), ("c", 6, 7), ("a", 7, 9)]
    source = posetrack.Builder.SOURCES[0]
    names = [v["vid_name"] for v in vibe_format.iter_videos(path, source)]
    assert names == ["a", "b", "c", "a#2"]
    insta = vibe_files.make_source("insta_variety", "train", videos=videos)
    path = vibe_files.write_source(str(tmp_path / "insta_train_db.h5"), insta)
    with h5py.File(path, "r") as f:
        assert f["vid_name"].dtype.kind == "S"  # names as bytes, as VIBE's save_hdf5 writes
    assert list(vibe_format.SourceArrays(path).runs()) == runs


def test_spilling_shuffler_orders_examples_and_rejects_duplicates(tmp_path):
    from tensorflow_datasets.core import shuffle

    ordered = build._SpillingShuffler(tmp_path, "salt", disable_shuffling=True)
    for key in (2, 0, 1):
        ordered.add(key, f"example {key}".encode())
    assert ordered.num_examples == 3 and ordered.size == 27
    assert [data for _, data in ordered] == [b"example 0", b"example 1", b"example 2"]
    hashed = build._SpillingShuffler(tmp_path, "salt")
    for key in range(20):
        hashed.add(key, bytes([key]))
    values = [data[0] for _, data in hashed]
    assert sorted(values) == list(range(20)) and values != list(range(20))
    twice = build._SpillingShuffler(tmp_path, "salt", disable_shuffling=True)
    twice.add(1, b"a")
    twice.add(1, b"b")
    with pytest.raises(shuffle.DuplicatedKeysError):
        list(twice)


@pytest.fixture
def vibe_data(tmp_path):
    folder = tmp_path / "vibe_data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "J_regressor_extra.npy", rng.uniform(0, 1e-3, (9, 6890)))
    np.save(folder / "J_regressor_h36m.npy", rng.uniform(0, 1e-3, (17, 6890)))
    np.savez(folder / "smpl_mean_params.npz", pose=rng.normal(size=144), shape=np.zeros(10),
             cam=np.array([0.9, 0.0, 0.0]))  # fmt: skip
    return folder


def test_importer_copies_files_the_smpl_loader_finds(tmp_path, vibe_data):
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    smpl.save_official(smpl.procedural(0), str(smpl_dir / "SMPL_NEUTRAL.pkl"))
    result = importer.import_vibe_files(str(vibe_data), str(smpl_dir / "SMPL_NEUTRAL.pkl"))
    assert {name: status for name, (_, status) in result.items()} == dict.fromkeys(
        importer.FILES, "copied"
    )
    model = smpl.load(str(smpl_dir / "SMPL_NEUTRAL.pkl"))
    expected = np.load(vibe_data / "J_regressor_extra.npy")
    np.testing.assert_allclose(model.J_regressor_extra, expected, rtol=1e-6)
    assert model.J_regressor_h36m.shape == (17, 6890)
    again = importer.import_vibe_files(str(vibe_data), str(smpl_dir))
    assert {status for _, status in again.values()} == {"unchanged"}


def test_importer_never_replaces_a_different_file_silently(tmp_path, vibe_data, capsys):
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    np.save(smpl_dir / "J_regressor_h36m.npy", np.zeros((17, 6890)))
    with pytest.raises(smpl.SMPLFileError, match="exists and differs"):
        importer.import_vibe_files(str(vibe_data), str(smpl_dir))
    assert not (smpl_dir / "J_regressor_extra.npy").exists()  # nothing copied
    result = importer.import_vibe_files(str(vibe_data), str(smpl_dir), overwrite=True)
    assert result["J_regressor_h36m.npy"][1] == "replaced"
    args = [f"--vibe_data={vibe_data}", f"--smpl_dir={smpl_dir}"]
    assert importer.main(args) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and "no SMPL model file" in out and "mean_params=" in out


@pytest.mark.parametrize(
    "name,content,part",
    [
        ("J_regressor_extra.npy", np.zeros((9, 100)), "shape [9, 100], expected [9, 6890]"),
        ("J_regressor_h36m.npy", np.full((17, 6890), np.nan), "NaN or inf"),
        ("J_regressor_h36m.npy", None, "does not exist"),
        ("smpl_mean_params.npz", {"pose": np.zeros(144), "cam": np.zeros(3)}, "no 'shape'"),
        ("smpl_mean_params.npz", {"pose": np.zeros(72), "shape": np.zeros(10),
                                  "cam": np.zeros(3)}, "'pose' has shape"),
    ],
)  # fmt: skip
def test_importer_rejects_bad_files(tmp_path, vibe_data, capsys, name, content, part):
    path = vibe_data / name
    if content is None:
        path.unlink()
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        np.save(path, content)
    args = [f"--vibe_data={vibe_data}", f"--smpl_dir={tmp_path}"]
    assert importer.main(args) == 2
    assert part in capsys.readouterr().err
    assert not any(n.endswith((".npy", ".npz")) for n in os.listdir(tmp_path))
