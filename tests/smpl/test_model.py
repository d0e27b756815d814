"""Tests for lmr_jax.smpl.model (loading, saving, errors) and lmr_jax.smpl.procedural."""

import importlib
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from lmr_jax.smpl import SMPL_PARENTS, SMPLFileError, from_arrays, load, procedural, save_official
from lmr_jax.smpl.model import LANDMARK_NAMES

# The package exports the function `procedural`, which hides the module of the same name.
procedural_module = importlib.import_module("lmr_jax.smpl.procedural")
ARRAY_FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces")


def _official_arrays(model) -> dict:
    return {name: np.asarray(getattr(model, name)) for name in ARRAY_FIELDS}


def _assert_same_model(a, b, extras=True):
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    # Derived terms are recomputed from the float32 arrays the file holds: equal to rounding.
    for name in ("J_template", "J_shapedirs"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-7)
    assert a.parents == b.parents
    if extras:
        assert a.landmarks == b.landmarks
        for name in ("J_regressor_extra", "J_regressor_h36m"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# --- Round trips ----------------------------------------------------------------------------


def test_official_pkl_round_trip(model, tmp_path):
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    save_official(model, str(path))
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    # The official layout: flat keys, faces 'f', kintree_table with 2**32-1 as the root's parent.
    assert raw["kintree_table"][0, 0] == 2**32 - 1
    assert raw["f"].dtype == np.uint32 and raw["bs_style"] == "lbs"
    loaded = load(str(path))
    _assert_same_model(model, loaded, extras=False)
    assert loaded.gender == "neutral"


def test_npz_round_trip_keeps_landmarks_and_regressors(model, tmp_path):
    path = tmp_path / "procedural.npz"
    save_official(model, str(path))
    _assert_same_model(model, load(str(path)))


def test_load_directory_prefers_neutral(model, tmp_path):
    female = from_arrays(**{**_official_arrays(model), "v_template": model.v_template + 1.0})
    save_official(female, str(tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl"))
    save_official(model, str(tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"))
    loaded = load(str(tmp_path))
    np.testing.assert_array_equal(loaded.v_template, model.v_template)
    assert load(str(tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl")).gender == "female"


# --- Official pickles with chumpy and scipy.sparse objects ------------------------------------


class _FakeCh:
    """Pickles like chumpy.ch.Ch: an object whose state dict holds the array in 'x'."""


class _FakeSelect:
    """Pickles like chumpy.reordering.Select: a.r.ravel()[idxs].reshape(preferred_shape)."""


def _write_chumpy_pickle(path, arrays: dict, rng: np.random.Generator, scipy_module=None):
    """Writes `arrays` the way the official SMPL files store them, with fake chumpy modules."""
    fake = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.reordering")}
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    _FakeSelect.__module__, _FakeSelect.__qualname__ = "chumpy.reordering", "Select"
    fake["chumpy.ch"].Ch = _FakeCh
    fake["chumpy.reordering"].Select = _FakeSelect

    def ch(x):
        obj = _FakeCh()
        obj.__dict__.update(x=np.asarray(x), _dirty_vars=set(), _itr=None, _parents={})
        return obj

    flat = arrays["shapedirs"].ravel()
    idxs = rng.permutation(flat.size)
    source = np.empty_like(flat)
    source[idxs] = flat
    select = _FakeSelect()
    select.__dict__.update(
        a=ch(source.reshape(-1, 10)), idxs=idxs, preferred_shape=arrays["shapedirs"].shape
    )
    data = {
        "v_template": ch(arrays["v_template"]),
        "shapedirs": select,
        "posedirs": ch(arrays["posedirs"]),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
        "weights": ch(arrays["weights"]),
        "f": arrays["faces"].astype(np.uint32),
        "kintree_table": np.stack(
            [np.array([2**32 - 1, *SMPL_PARENTS[1:]], np.uint32), np.arange(24, dtype=np.uint32)]
        ),
        "J": ch(arrays["J_regressor"] @ arrays["v_template"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(6890),
    }
    saved = {name: sys.modules.get(name) for name in fake}
    sys.modules.update(fake)
    try:
        payload = pickle.dumps(data, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    assert b"chumpy.ch\nCh" in payload and b"chumpy.reordering\nSelect" in payload
    if scipy_module is not None:  # the module path older scipy versions pickled
        payload = payload.replace(b"scipy.sparse._csc\n", scipy_module.encode() + b"\n")
    path.write_bytes(payload)


@pytest.mark.parametrize("scipy_module", [None, "scipy.sparse.csc"])
def test_load_official_pickle_without_chumpy(model, tmp_path, scipy_module):
    arrays = {k: v.astype(np.float64) for k, v in _official_arrays(model).items()}
    arrays["faces"] = np.asarray(model.faces)
    path = tmp_path / "basicModel_m_lbs_10_207_0_v1.0.0.pkl"
    _write_chumpy_pickle(path, arrays, np.random.default_rng(0), scipy_module)
    assert "chumpy" not in sys.modules
    loaded = load(str(path))
    assert "chumpy" not in sys.modules
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(loaded, name)), getattr(model, name))
    assert loaded.parents == SMPL_PARENTS and loaded.gender == "male"


# --- Errors -----------------------------------------------------------------------------------


def test_missing_file_says_where_smpl_comes_from(tmp_path):
    with pytest.raises(SMPLFileError, match="does not exist") as e:
        load(str(tmp_path / "SMPL_NEUTRAL.pkl"))
    message = str(e.value)
    assert "smpl.is.tue.mpg.de" in message and "LMR_JAX_SMPL_DIR" in message
    assert "SMPL_NEUTRAL.pkl" in message


def test_directory_without_model(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(SMPLFileError, match=r"no SMPL \.pkl or \.npz file in directory") as e:
        load(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "LMR_JAX_SMPL_DIR" in str(e.value)


def test_missing_key_is_named(model, tmp_path):
    arrays = _official_arrays(model)
    del arrays["weights"]
    np.savez(tmp_path / "model.npz", **arrays, f=arrays.pop("faces"))
    with pytest.raises(SMPLFileError, match="missing key 'weights'"):
        load(str(tmp_path / "model.npz"))


def test_wrong_shape_names_key_and_expected_shape(model, tmp_path):
    arrays = _official_arrays(model)
    arrays["weights"] = arrays["weights"][:, :23]
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({**arrays, "f": arrays.pop("faces")}, f, protocol=2)
    with pytest.raises(
        SMPLFileError, match=r"'weights' has shape \(6890, 23\), expected \(6890, 24\)"
    ):
        load(str(path))
    with pytest.raises(
        SMPLFileError, match=r"'shapedirs' has shape .* expected \(6890, 3, B>=10\)"
    ):
        from_arrays(**{**_official_arrays(model), "shapedirs": np.zeros((6890, 3, 5))})


def test_non_smpl_pickle(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(SMPLFileError, match="not an SMPL model pickle .*holds a list"):
        load(str(path))
    path.write_bytes(pickle.dumps({"cameras": np.zeros(3)}, protocol=2))
    with pytest.raises(SMPLFileError, match="not an SMPL model: it has none of the keys"):
        load(str(path))


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, exec])
def test_pickle_with_code_is_refused_not_run(tmp_path, func):
    marker = tmp_path / "ran"
    code = {
        os.system: f"touch {marker}",
        eval: f"open({str(marker)!r}, 'w').close()",
        exec: f"open({str(marker)!r}, 'w').close()",
    }[func]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Exploit(func, code)}, protocol=2))
    with pytest.raises(SMPLFileError, match=r"not an SMPL model pickle \(refusing to load"):
        load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pkl", "model.npz"])
def test_file_of_the_wrong_kind(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n not a body model at all")
    with pytest.raises(SMPLFileError, match=f"{name} is not an SMPL model"):
        load(str(tmp_path / name))


def test_bad_parents(model, tmp_path):
    arrays = _official_arrays(model)
    with pytest.raises(SMPLFileError, match="not topologically ordered"):
        from_arrays(
            **arrays, parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12) + (23,) * 8
        )
    with pytest.raises(SMPLFileError, match=r"expected 24 joints with parents\[0\] == -1"):
        from_arrays(**arrays, parents=SMPL_PARENTS[:-1])
    table = np.stack([np.array([2**32 - 1, *SMPL_PARENTS[1:]]), np.arange(24)])
    table[0, 5] = 7  # joint 5 below a later joint
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({**arrays, "f": arrays.pop("faces"), "kintree_table": table}, f, protocol=2)
    with pytest.raises(SMPLFileError, match="model.pkl: kinematic tree .* not topologically"):
        load(str(path))


# --- The procedural body ----------------------------------------------------------------------


def test_procedural_arrays(model):
    v, f = np.asarray(model.v_template), np.asarray(model.faces)
    assert v.shape == (6890, 3) and f.shape == (13776, 3)
    assert f.min() == 0 and f.max() == 6889
    assert np.all(f[:, 0] != f[:, 1]) and np.all(f[:, 1] != f[:, 2]) and np.all(f[:, 0] != f[:, 2])
    assert model.shapedirs.shape == (6890, 3, 10) and model.posedirs.shape == (6890, 3, 207)
    weights = np.asarray(model.weights, np.float64)
    assert weights.min() >= 0.0
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    for regressor, rows in (
        (model.J_regressor, 24),
        (model.J_regressor_extra, 9),
        (model.J_regressor_h36m, 17),
    ):
        assert regressor.shape == (rows, 6890)
        np.testing.assert_allclose(np.asarray(regressor, np.float64).sum(1), 1.0, atol=1e-5)
    assert model.parents == SMPL_PARENTS and model.gender == "procedural"


def test_procedural_rest_joints_and_frame(model):
    joints = np.asarray(model.J_regressor, np.float64) @ np.asarray(model.v_template, np.float64)
    np.testing.assert_allclose(joints, procedural_module.REST_JOINTS, atol=1e-5)
    np.testing.assert_allclose(model.J_template, procedural_module.REST_JOINTS, atol=1e-5)
    height = float(model.v_template[:, 1].max() - model.v_template[:, 1].min())
    assert 1.6 < height < 1.9
    # SMPL's frame: y up, facing +z, the body's left is +x (odd joints 1..23 are left ones here).
    left = [1, 4, 7, 10, 13, 16, 18, 20, 22]
    assert np.all(joints[left, 0] > 0) and np.all(joints[[j + 1 for j in left], 0] < 0)
    assert joints[15, 1] > joints[12, 1] > joints[0, 1] > joints[4, 1] > joints[7, 1]


def test_procedural_landmarks(model):
    v = np.asarray(model.v_template)
    mark = {name: v[i] for name, i in zip(LANDMARK_NAMES, model.landmarks, strict=True)}
    head = ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
    assert max(head, key=lambda n: mark[n][2]) == "nose"
    for side in ("left", "right"):
        sign = 1.0 if side == "left" else -1.0
        assert mark[f"{side}_eye"][1] > mark["nose"][1]
        assert mark[f"{side}_big_toe"][2] > mark[f"{side}_heel"][2] + 0.1
        assert mark[f"{side}_small_toe"][2] > mark[f"{side}_heel"][2] + 0.1
        for part in ("eye", "ear", "big_toe", "small_toe", "heel"):
            assert sign * mark[f"{side}_{part}"][0] > 0.01, f"{side}_{part}"
    assert abs(mark["nose"][0]) < 0.01
    floor = v[:, 1].min()
    for name in LANDMARK_NAMES[5:]:  # toes and heels sit near the floor
        assert mark[name][1] < floor + 0.05, name


def test_procedural_faces_point_outwards(model):
    v = np.asarray(model.v_template, np.float64)
    tri = v[np.asarray(model.faces)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    volume = np.einsum("fi,fi->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    assert 0.05 < volume < 0.1  # cubic metres: a 70 kg person is about 0.07
    # Per face: outward means away from the axis of the segment the face belongs to.
    mesh = procedural_module._mesh()
    np.testing.assert_allclose(mesh["verts"], v, rtol=0, atol=1e-7)
    segments = mesh["seg_ids"][np.asarray(model.faces)[:, 0]]
    centroid = tri.mean(1)
    outward = np.zeros(len(tri), bool)
    for name, seg in mesh["segs"].items():
        sel = segments == name
        a, b = np.asarray(seg["a"], float), np.asarray(seg["b"], float)
        t = (centroid[sel] - a) @ (b - a) / np.dot(b - a, b - a)
        centre = a + np.clip(t, 0.0, 1.0)[:, None] * (b - a)
        outward[sel] = np.einsum("fi,fi->f", normals[sel], centroid[sel] - centre) > 0
    assert outward.mean() > 0.99


def test_procedural_seed_moves_posedirs_only(model):
    other = procedural(1)
    np.testing.assert_array_equal(other.v_template, model.v_template)
    np.testing.assert_array_equal(other.J_regressor, model.J_regressor)
    np.testing.assert_array_equal(other.shapedirs[..., :8], model.shapedirs[..., :8])
    assert np.abs(np.asarray(other.posedirs - model.posedirs)).max() > 1e-4
    assert np.abs(np.asarray(other.shapedirs[..., 8:] - model.shapedirs[..., 8:])).max() > 1e-4
    np.testing.assert_array_equal(procedural(0).posedirs, model.posedirs)
