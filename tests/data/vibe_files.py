"""Writes small VIBE/TCMR-format source files with known contents, for the builder tests.

Every `make_*` function returns the dict of frame-stacked arrays one of VIBE's or TCMR's
preprocessing scripts dumps (same keys, per-frame shapes and dtypes; see
tfds_builders/VIBE_FORMAT.md), for two short videos. `write_source` saves it like the scripts
do: `joblib.dump` for `*_db.pt`, h5py datasets (names as bytes) for InstaVariety's `.h5`.
`build_small_datasets` writes and builds a 3D and a 2D dataset (threedpw, pennaction) for
smoke runs of the training on real-format data.

Keypoints are drawn inside each frame's bounding box, so normalised values lie in [-1, 1]; the
first frame's first mapped joint sits at a known place (`KNOWN_POINT`): half a crop right of
the centre and a quarter of a crop above it, i.e. (0.5, -0.25) after normalisation.
"""

from __future__ import annotations

import os

import h5py
import joblib
import numpy as np

from lmr_jax.data import vibe_format

FEATURE_DIM = 2048  # SPIN features
VIDEOS = (("video_a", 6), ("video_b", 4))
KNOWN_POINT = (0.5, -0.25)  # normalised x, y of joint 0 (or the first mapped one) of frame 0
BBOX_SIZE = 200.0  # pixels, w == h as in VIBE's files

# (builder, split) -> the file name the builders look for first.
FILES = {
    ("threedpw", "train"): "3dpw_train_db.pt",
    ("threedpw", "validation"): "3dpw_val_db.pt",
    ("threedpw", "test"): "3dpw_test_db.pt",
    ("mpi_inf_3dhp", "train"): "mpii3d_train_db.pt",
    ("mpi_inf_3dhp", "validation"): "mpii3d_val_db.pt",
    ("human36m", "train"): "h36m_train_25fps_db.pt",
    ("human36m", "test"): "h36m_test_25fps_nosmpl_db.pt",
    ("pennaction", "train"): "pennaction_train_db.pt",
    ("posetrack", "train"): "posetrack_train_db.pt",
    ("insta_variety", "train"): "insta_train_db.h5",
}


def _frames(videos) -> tuple[np.ndarray, np.ndarray]:
    names = np.concatenate([np.array([name] * length) for name, length in videos])
    ids = np.concatenate([np.arange(length) + 10 for _, length in videos])
    return names, ids


def _keypoints(rng, num, joints, bbox, mapped) -> np.ndarray:
    """[num, joints, 3] pixels inside each bbox, conf 1 on `mapped` joints, 0 elsewhere."""
    half = 0.6 * bbox[:, None, 2:4]  # VIBE's crop: the bbox enlarged by 1.2, half of it
    unit = rng.uniform(-0.9, 0.9, (num, joints, 2))
    out = np.zeros((num, joints, 3))
    out[..., :2] = bbox[:, None, :2] + unit * half
    out[0, mapped[0], :2] = bbox[0, :2] + np.array(KNOWN_POINT) * half[0, 0]
    out[:, mapped, 2] = 1.0
    unmapped = np.setdiff1d(np.arange(joints), mapped)
    out[:, unmapped] = 0.0  # convert_kps leaves joints a source lacks at zero
    return out


def _common(rng, videos, joints2d, mapped) -> dict[str, np.ndarray]:
    names, ids = _frames(videos)
    num = len(names)
    bbox = np.stack([rng.uniform(300, 700, num), rng.uniform(200, 500, num),
                     np.full(num, BBOX_SIZE), np.full(num, BBOX_SIZE)], axis=1)  # fmt: skip
    return {
        "vid_name": names,
        "features": rng.normal(size=(num, FEATURE_DIM)).astype(np.float32),
        "bbox": bbox,
        "joints2D": _keypoints(rng, num, joints2d, bbox, mapped),
        "img_name": np.array([f"images/{n}/{i:06d}.jpg" for n, i in zip(names, ids)]),
    }


def make_threedpw(split: str, videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """threedpw_utils.py: 14 common 2D joints (neck, head top = nose copies at conf 0), 3D joints
    [N, 49, 3] (train) or [N, 14, 3] (validation, test), pose, shape, valid, frame_id."""
    rng = np.random.default_rng(seed)
    arrays = _common(rng, videos, 14, np.arange(12))
    num = len(arrays["vid_name"])
    nose = arrays["bbox"][:, None, :2] + rng.uniform(-50, 50, (num, 1, 2))
    arrays["joints2D"][:, 12:, :2] = nose  # VIBE's `perm_idxs += [0, 0]`: 3DPW's nose, conf 0
    arrays["frame_id"] = _frames(videos)[1]
    joints3d = 49 if split == "train" else 14
    arrays["joints3D"] = rng.normal(size=(num, joints3d, 3)).astype(np.float32)
    arrays["pose"] = rng.normal(0, 0.3, (num, 72)).astype(np.float32)
    arrays["shape"] = rng.normal(0, 1, (num, 10)).astype(np.float32)
    arrays["valid"] = np.ones(num, bool)
    arrays["valid"][1] = False
    return arrays


def make_mocap(dataset: str, split: str, videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """mpii3d_utils.py / h36m_utils.py: 49-joint 2D (conf 1 on the 17 mocap joints) and 3D
    (metres, centred on joint 39; joints the mocap lacks become minus the root)."""
    rng = np.random.default_rng(seed)
    mapped = np.asarray(vibe_format.MOCAP_SLOTS)
    arrays = _common(rng, videos, 49, mapped)
    num = len(arrays["vid_name"])
    raw = np.zeros((num, 49, 3))
    raw[:, mapped] = rng.normal(size=(num, len(mapped), 3)) + [0.0, 0.0, 4.0]
    arrays["joints3D"] = raw - raw[:, [39]]
    if dataset == "mpi_inf_3dhp":
        arrays["frame_id"] = np.array([f"img_{i:06d}" for i in _frames(videos)[1]])
        if split == "validation":
            arrays["valid_i"] = np.ones((num, 1))
            arrays["valid_i"][2] = 0
    else:  # TCMR's Human3.6M: float32 arrays, zero SMPL unless annotated
        arrays["frame_id"] = _frames(videos)[1]
        arrays["joints3D"] = arrays["joints3D"].astype(np.float32)
        arrays["joints2D"] = arrays["joints2D"].astype(np.float32)
        arrays["pose"] = np.zeros((num, 72), np.float32)
        arrays["shape"] = np.zeros((num, 10), np.float32)
        arrays["pose"][0] = 0.1  # one annotated frame
    return arrays


def make_pennaction(videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """penn_action_utils.py: 14 joints in the common order, neck (12) missing; no frame_id."""
    rng = np.random.default_rng(seed)
    return _common(rng, videos, 14, np.array([*range(12), 13]))


def make_posetrack(videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """posetrack_utils.py: 49 joints after convert_kps(src='posetrack', dst='spin')."""
    rng = np.random.default_rng(seed)
    mapped = np.array([44, 37, 38, 47, 48, 34, 33, 35, 32, 36, 31, 28, 27, 29, 26, 30, 25])
    return _common(rng, videos, 49, mapped)


def make_insta(videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """insta_utils.py: 25 joints in 224-crop pixels, frame_id, features, names (no bbox)."""
    rng = np.random.default_rng(seed)
    names, ids = _frames(videos)
    num = len(names)
    joints = np.zeros((num, 25, 3))
    joints[..., :2] = rng.uniform(10, 214, (num, 25, 2))
    joints[0, 0, :2] = 112.0 * (1.0 + np.array(KNOWN_POINT))
    joints[..., 2] = rng.integers(0, 2, (num, 25))
    return {
        "vid_name": names,
        "frame_id": ids,
        "joints2D": joints,
        "features": rng.normal(size=(num, FEATURE_DIM)).astype(np.float32),
    }


def make_source(dataset: str, split: str, videos=VIDEOS, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of `dataset`'s `split` file (see the make_* functions)."""
    if dataset == "threedpw":
        return make_threedpw(split, videos, seed)
    if dataset in ("mpi_inf_3dhp", "human36m"):
        return make_mocap(dataset, split, videos, seed)
    return {"pennaction": make_pennaction, "posetrack": make_posetrack,
            "insta_variety": make_insta}[dataset](videos, seed)  # fmt: skip


def write_source(path: str, arrays: dict[str, np.ndarray]) -> str:
    """Saves arrays as VIBE does: joblib for `*_db.pt`, HDF5 (names as bytes) for `.h5`."""
    if path.endswith(".h5"):
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=np.array(value, np.bytes_) if key == "vid_name"
                                 else value)  # fmt: skip
    else:
        joblib.dump(arrays, path)
    return path


def write_dataset(dataset: str, manual_dir: str, seed: int = 0) -> dict[str, dict]:
    """Writes every split file of `dataset` into `manual_dir`; returns split -> arrays."""
    os.makedirs(manual_dir, exist_ok=True)
    out = {}
    for (name, split), file in FILES.items():
        if name == dataset:
            out[split] = make_source(dataset, split, seed=seed)
            write_source(os.path.join(manual_dir, file), out[split])
    return out


def build_small_datasets(root: str) -> str:
    """Writes and builds threedpw (3D) and pennaction (2D) under `root`; returns the data dir.

    For smoke runs of a VIBE-style mixture: `DatasetSpec('threedpw', 'train', data_dir)` and
    `DatasetSpec('pennaction', 'train', data_dir)` (2048-D features, vibe49 layout).
    """
    from lmr_jax.data import build

    data_dir = os.path.join(root, "tfds")
    for dataset in ("threedpw", "pennaction"):
        manual_dir = os.path.join(root, "manual", dataset)
        write_dataset(dataset, manual_dir)
        build.build(dataset, data_dir, manual_dir=manual_dir)
    return data_dir
