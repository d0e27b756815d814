"""The SMPL body model as a frozen pytree, and reading/writing it in the official file layouts.

Official SMPL `.pkl` files are Python 2 pickles holding numpy arrays, `chumpy` objects (for
`shapedirs`, sometimes `v_template`) and a `scipy.sparse` matrix (`J_regressor`). They are read
here with a restricted unpickler that turns those objects into numpy arrays, so neither chumpy
nor any particular scipy version is needed. `.npz` files with the same keys are read too.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import flax.struct
import jax.numpy as jnp
import numpy as np

NUM_JOINTS = 24
NUM_VERTICES = 6890
NUM_FACES = 13776
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Mesh landmarks used by VIBE's 49-joint layout (OpenPose face and foot points), in this order.
LANDMARK_NAMES = (
    "nose",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
)
# Vertex ids of those landmarks on the official SMPL mesh (the SMPL vertex ids used by SPIN/VIBE).
SMPL_LANDMARK_VERTICES = (332, 6260, 2800, 4071, 583, 3216, 3226, 3387, 6617, 6624, 6787)

SMPL_FILES_HELP = (
    "SMPL files come from https://smpl.is.tue.mpg.de (male/female, "
    "basicModel_{m,f}_lbs_10_207_0_v1.0.0.pkl or basicmodel_{m,f}_lbs_10_207_0_v1.1.0.pkl) and "
    "https://smplify.is.tue.mpg.de (neutral, basicModel_neutral_lbs_10_207_0_v1.0.0.pkl); point "
    "lmr_jax at them with --smpl_path or the LMR_JAX_SMPL_DIR environment variable (see BUILD.md)"
)


class SMPLFileError(ValueError):
    """A body-model file is missing, of the wrong kind, or has arrays of the wrong shape."""


@flax.struct.dataclass
class SMPLModel:
    """An SMPL-format body model: official array names and shapes, plus precomputed terms.

    Attributes:
      v_template: [6890, 3] template vertices (metres).
      shapedirs: [6890, 3, B] shape blend directions, B >= 10.
      posedirs: [6890, 3, 207] pose-corrective directions, driven by (R - I) of joints 1..23.
      J_regressor: [24, 6890] dense joint regressor.
      weights: [6890, 24] skinning weights.
      faces: [13776, 3] int32 triangle indices.
      J_template: [24, 3] = J_regressor @ v_template (precomputed).
      J_shapedirs: [24, 3, B] = J_regressor applied to shapedirs (precomputed), so that joints
        come from betas without touching the 6890 vertices.
      blend_dirs: three [B + 207, 6890] matrices, shapedirs then posedirs for the x, y and z
        coordinates: the blend GEMMs' operands (precomputed; separate arrays, so that no
        GEMM has to slice, that is copy, its operand).
      weights_t: [24, 6890] = weights.T (precomputed, vertex-minor for skinning).
      v_template_t: [3, 6890] = v_template.T (precomputed).
        `lbs.forward` reads the precomputed fields, so gradients with respect to the model
        land on them, not on the official arrays they were made from.
      J_regressor_extra: [9, 6890] VIBE's extra regressor (or None).
      J_regressor_h36m: [17, 6890] the Human3.6M regressor used for evaluation (or None).
      parents: static kinematic tree, parents[0] == -1.
      landmarks: static vertex ids of LANDMARK_NAMES.
      gender: static 'neutral', 'male', 'female' or 'procedural'.
    """

    v_template: jnp.ndarray
    shapedirs: jnp.ndarray
    posedirs: jnp.ndarray
    J_regressor: jnp.ndarray
    weights: jnp.ndarray
    faces: jnp.ndarray
    J_template: jnp.ndarray
    J_shapedirs: jnp.ndarray
    blend_dirs: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]
    weights_t: jnp.ndarray
    v_template_t: jnp.ndarray
    J_regressor_extra: jnp.ndarray | None = None
    J_regressor_h36m: jnp.ndarray | None = None
    parents: tuple[int, ...] = flax.struct.field(pytree_node=False, default=SMPL_PARENTS)
    landmarks: tuple[int, ...] = flax.struct.field(
        pytree_node=False, default=SMPL_LANDMARK_VERTICES
    )
    gender: str = flax.struct.field(pytree_node=False, default="neutral")

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])


def _expect_shape(name: str, array: np.ndarray, shape: tuple, source: str) -> None:
    """Raise SMPLFileError unless `array` has `shape` (None matches any size >= 10 there)."""
    ok = array.ndim == len(shape) and all(
        (want is None and got >= 10) or want == got
        for want, got in zip(shape, array.shape, strict=False)
    )
    if not ok:
        want = "(" + ", ".join("B>=10" if s is None else str(s) for s in shape) + ")"
        raise SMPLFileError(f"{source}: '{name}' has shape {array.shape}, expected {want}.")


def from_arrays(
    v_template,
    shapedirs,
    posedirs,
    J_regressor,
    weights,
    faces,
    parents=SMPL_PARENTS,
    J_regressor_extra=None,
    J_regressor_h36m=None,
    landmarks=SMPL_LANDMARK_VERTICES,
    gender: str = "neutral",
    source: str = "arrays",
) -> SMPLModel:
    """Validates official-layout arrays and builds an SMPLModel with its precomputed terms.

    Args:
      v_template, shapedirs, posedirs, J_regressor, weights, faces: official arrays (posedirs
        may be [6890, 3, 207] or the flat [207, 20670] / [20670, 207] forms).
      parents: kinematic tree, 24 entries with parents[0] == -1.
      J_regressor_extra, J_regressor_h36m: optional [9, 6890] and [17, 6890] regressors.
      landmarks: 11 vertex ids, see LANDMARK_NAMES.
      gender: a label kept with the model.
      source: file name used in error messages.

    Returns:
      An SMPLModel with float32 arrays.

    Raises:
      SMPLFileError: naming the array and the expected shape.
    """
    arrays = {
        "v_template": np.asarray(v_template, np.float64),
        "shapedirs": np.asarray(shapedirs, np.float64),
        "posedirs": np.asarray(posedirs, np.float64),
        "J_regressor": np.asarray(J_regressor, np.float64),
        "weights": np.asarray(weights, np.float64),
        "faces": np.asarray(faces),
    }
    pd = arrays["posedirs"]
    if pd.shape == (207, NUM_VERTICES * 3):
        arrays["posedirs"] = pd.T.reshape(NUM_VERTICES, 3, 207)
    elif pd.shape == (NUM_VERTICES * 3, 207):
        arrays["posedirs"] = pd.reshape(NUM_VERTICES, 3, 207)
    expected = {
        "v_template": (NUM_VERTICES, 3),
        "shapedirs": (NUM_VERTICES, 3, None),
        "posedirs": (NUM_VERTICES, 3, 207),
        "J_regressor": (NUM_JOINTS, NUM_VERTICES),
        "weights": (NUM_VERTICES, NUM_JOINTS),
        "faces": (NUM_FACES, 3),
    }
    for name, shape in expected.items():
        _expect_shape(name, arrays[name], shape, source)
    parents = tuple(int(p) for p in np.asarray(parents).reshape(-1))
    if len(parents) != NUM_JOINTS or parents[0] != -1:
        raise SMPLFileError(
            f"{source}: kinematic tree has parents {parents}, expected 24 joints "
            "with parents[0] == -1."
        )
    if any(not 0 <= p < j for j, p in enumerate(parents) if j > 0):
        raise SMPLFileError(f"{source}: kinematic tree {parents} is not topologically ordered.")
    extras = {}
    for name, value, rows in (
        ("J_regressor_extra", J_regressor_extra, 9),
        ("J_regressor_h36m", J_regressor_h36m, 17),
    ):
        if value is not None:
            value = np.asarray(value, np.float64)
            _expect_shape(name, value, (rows, NUM_VERTICES), source)
            value = jnp.asarray(value, jnp.float32)
        extras[name] = value
    landmarks = tuple(int(i) for i in landmarks)
    if len(landmarks) != len(LANDMARK_NAMES) or not all(0 <= i < NUM_VERTICES for i in landmarks):
        raise SMPLFileError(f"{source}: landmarks must be {len(LANDMARK_NAMES)} vertex ids.")
    j_reg = arrays["J_regressor"]
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return SMPLModel(
        v_template=f32(arrays["v_template"]),
        shapedirs=f32(arrays["shapedirs"]),
        posedirs=f32(arrays["posedirs"]),
        J_regressor=f32(j_reg),
        weights=f32(arrays["weights"]),
        faces=jnp.asarray(arrays["faces"], jnp.int32),
        J_template=f32(j_reg @ arrays["v_template"]),
        J_shapedirs=f32(np.einsum("jv,vck->jck", j_reg, arrays["shapedirs"])),
        blend_dirs=tuple(
            f32(np.concatenate([arrays["shapedirs"][:, c], arrays["posedirs"][:, c]], -1).T)
            for c in range(3)
        ),
        weights_t=f32(arrays["weights"].T),
        v_template_t=f32(arrays["v_template"].T),
        parents=parents,
        landmarks=landmarks,
        gender=gender,
        **extras,
    )


class _PickledObject:
    """Stands in for chumpy and scipy.sparse classes while unpickling; keeps their state."""

    def __init__(self, *args, **kwargs):
        self.state: Any = {}

    def __setstate__(self, state):
        self.state = state

    def __reduce__(self):  # pragma: no cover - never re-pickled
        raise TypeError("placeholder objects are not picklable")


def _stand_in(module: str, name: str) -> type:
    return type(name, (_PickledObject,), {"module": module})


# The only globals an SMPL pickle needs: numpy array/dtype/scalar reconstruction, Python 2/3
# byte strings, sets and the copy_reg object reconstructor. Anything else (builtins.eval,
# os.system, numpy.load, ...) could run code while unpickling and is refused.
_NUMPY_MODULES = (
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
)
_ALLOWED_GLOBALS = {
    **{(m, n): m for m in _NUMPY_MODULES for n in ("_reconstruct", "scalar", "ndarray", "dtype")},
    **{(m, "_frombuffer"): m for m in _NUMPY_MODULES},
    ("_codecs", "encode"): "_codecs",
    ("copy_reg", "_reconstructor"): "copyreg",
    ("copyreg", "_reconstructor"): "copyreg",
    **{(m, n): "builtins" for m in ("__builtin__", "builtins")
       for n in ("object", "set", "frozenset", "slice", "complex", "bytearray")},
}  # fmt: skip


class _SMPLUnpickler(pickle.Unpickler):
    """Unpickler for an allow-list of globals; chumpy/scipy.sparse objects become stand-ins."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy" or module.startswith("scipy.sparse"):
            return _stand_in(module, name)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(_ALLOWED_GLOBALS[module, name], name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _to_numpy(value: Any) -> Any:
    """Converts chumpy/scipy.sparse stand-ins (and plain arrays) to numpy arrays."""
    if not isinstance(value, _PickledObject):
        return value
    state = value.state if isinstance(value.state, dict) else {}
    kind = type(value).__name__
    if kind in ("csc_matrix", "csr_matrix", "csc_array", "csr_array") or "indptr" in state:
        shape = tuple(state.get("_shape", state.get("shape")))
        data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        dense = np.zeros(shape, np.float64)
        compressed_rows = kind.startswith("csr")
        for major in range(len(indptr) - 1):
            sl = slice(indptr[major], indptr[major + 1])
            if compressed_rows:
                dense[major, indices[sl]] = data[sl]
            else:
                dense[indices[sl], major] = data[sl]
        return dense
    if "x" in state:  # chumpy.Ch
        return np.asarray(_to_numpy(state["x"]))
    if "a" in state and "idxs" in state:  # chumpy.reordering.Select
        source = np.asarray(_to_numpy(state["a"]))
        out = source.ravel()[np.asarray(state["idxs"])]
        shape = state.get("preferred_shape")
        return out.reshape(shape) if shape is not None else out
    raise SMPLFileError(f"cannot convert pickled {type(value).module}.{kind} to an array.")


def _read_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = _SMPLUnpickler(f, encoding="latin1").load()
    except Exception as e:  # any byte string can reach the unpickler; report, never crash
        raise SMPLFileError(f"{path} is not an SMPL model pickle ({e}).") from None
    if not isinstance(data, dict):
        raise SMPLFileError(
            f"{path} is not an SMPL model pickle (it holds a "
            f"{type(data).__name__}, expected a dict of arrays)."
        )
    return {k: _to_numpy(v) for k, v in data.items()}


def _gender_from_name(path: str) -> str:
    name = os.path.basename(path).lower()
    for gender, keys in (("female", ("female", "_f_")), ("male", ("male", "_m_"))):
        if any(k in name for k in keys):
            return gender
    return "neutral"


def load(path: str, J_regressor_extra=None, J_regressor_h36m=None) -> SMPLModel:
    """Loads an official SMPL `.pkl` (no chumpy needed) or an `.npz` with the same keys.

    Args:
      path: a model file, or a directory holding one (the neutral model is preferred).
      J_regressor_extra, J_regressor_h36m: optional VIBE regressors (arrays or .npy paths);
        when the file itself holds them (as our .npz files may) those are used.

    Returns:
      The SMPLModel.

    Raises:
      SMPLFileError: the file is missing (the message says where SMPL files come from), not an
        SMPL model, or has a missing key or a wrong shape.
    """
    path = _resolve_model_path(os.path.expanduser(str(path)))
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                data = dict(f)
        except Exception as e:
            raise SMPLFileError(f"{path} is not an SMPL model .npz ({e}).") from None
    else:
        data = _read_pickle(path)
    required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f")
    if not any(k in data for k in required):
        raise SMPLFileError(f"{path} is not an SMPL model: it has none of the keys {required}.")
    for key in required:
        if key not in data and not (key == "f" and "faces" in data):
            raise SMPLFileError(f"{path}: missing key '{key}' of the official SMPL layout.")
    if "kintree_table" in data:
        parents = np.asarray(data["kintree_table"])[0].astype(np.int64)
        parents[0] = -1  # stored as 2**32-1 in the official files
    else:
        parents = data.get("parents", SMPL_PARENTS)
    # VIBE keeps its regressors beside the model file (data/vibe_data); use them when present.
    folder = os.path.dirname(path)
    extra = _maybe_npy(J_regressor_extra, data.get("J_regressor_extra"), folder, "extra")
    h36m = _maybe_npy(J_regressor_h36m, data.get("J_regressor_h36m"), folder, "h36m")
    return from_arrays(
        data["v_template"],
        data["shapedirs"],
        data["posedirs"],
        data["J_regressor"],
        data["weights"],
        data.get("f", data.get("faces")),
        parents=parents,
        J_regressor_extra=extra,
        J_regressor_h36m=h36m,
        landmarks=data.get("landmarks", SMPL_LANDMARK_VERTICES),
        gender=str(data.get("gender", _gender_from_name(path))),
        source=path,
    )


def _maybe_npy(value, fallback, folder: str, kind: str):
    if value is None:
        beside = os.path.join(folder, f"J_regressor_{kind}.npy")
        if fallback is None and os.path.exists(beside):
            return np.load(beside)
        return fallback
    if isinstance(value, str | os.PathLike):
        if not os.path.exists(value):
            raise SMPLFileError(
                f"regressor file {value} does not exist (VIBE's auxiliary files "
                "J_regressor_extra.npy and J_regressor_h36m.npy, see BUILD.md)."
            )
        return np.load(value)
    return value


def _resolve_model_path(path: str) -> str:
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith((".pkl", ".npz")))
        preferred = [n for n in names if "neutral" in n.lower()] or names
        if not preferred:
            raise SMPLFileError(
                f"no SMPL .pkl or .npz file in directory {path}; {SMPL_FILES_HELP}."
            )
        return os.path.join(path, preferred[0])
    if not os.path.exists(path):
        raise SMPLFileError(f"SMPL model file {path} does not exist; {SMPL_FILES_HELP}.")
    return path


def save_official(model: SMPLModel, path: str) -> None:
    """Writes `model` as an official-layout SMPL `.pkl` (plain numpy arrays, protocol 2).

    Third-party SMPL code (smplx, smplfitter, body-models) loads the result like an official
    file. Writing to a name ending in `.npz` writes our `.npz` layout instead, which also keeps
    the landmark ids and extra regressors.
    """
    data = {
        "v_template": np.asarray(model.v_template, np.float64),
        "shapedirs": np.asarray(model.shapedirs, np.float64),
        "posedirs": np.asarray(model.posedirs, np.float64),
        "J_regressor": np.asarray(model.J_regressor, np.float64),
        "weights": np.asarray(model.weights, np.float64),
        "f": np.asarray(model.faces, np.uint32),
        "kintree_table": np.stack(
            [np.array([2**32 - 1, *model.parents[1:]], np.int64), np.arange(NUM_JOINTS)]
        ),
        "J": np.asarray(model.J_template, np.float64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    if str(path).endswith(".npz"):
        data.pop("bs_style"), data.pop("bs_type")
        data["kintree_table"][0, 0] = -1
        data["landmarks"] = np.asarray(model.landmarks, np.int64)
        for name in ("J_regressor_extra", "J_regressor_h36m"):
            if getattr(model, name) is not None:
                data[name] = np.asarray(getattr(model, name), np.float64)
        np.savez(path, **data)
        return
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
