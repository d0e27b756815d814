"""What prediction reads and writes: a run's checkpoint, the features of a video, the output `.npz`.

`load_run` rebuilds a trained run's model from the config saved with its checkpoint and checks
the parameters against it; `read_features_file` reads and validates a features `.npz` (what
`lmr-extract-features` writes), `dataset_video` takes one video of an evaluation dataset, and
`write_prediction` writes the output `.npz`, with image-pixel cameras (`crop_to_image`) when the
input had person boxes. The formats of the input and output files are in lmr_jax/predict.py's
docstring (the `lmr-predict` command); the inference itself (windows, stitching, streaming) is
there too, and predict re-exports this module's public names.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import checkpoints, models, smpl
from lmr_jax.data import schema
from lmr_jax.data.vibe_format import KEYPOINT_CROP_SCALE  # the crop is the bbox x 1.2 (VIBE)


class PredictError(ValueError):
    """A bad input to prediction: missing checkpoint, wrong file, mismatched model."""


# ---------------------------------------------------------------------------------------------
# Loading a run
# ---------------------------------------------------------------------------------------------


def _split_checkpoint_path(path: str) -> tuple[str, int | None]:
    """(workdir, step or None) of a run directory or a `RUN/checkpoints/STEP` directory."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(name)
    return path, None


def load_run(path: str, model_config: ml_collections.ConfigDict | None = None,
             smpl_path: str | None = None):  # fmt: skip
    """The model, parameters and training window of a run's checkpoint.

    Args:
      path: run directory (latest checkpoint) or `RUN/checkpoints/STEP`.
      model_config: if given, must equal the model config saved with the checkpoint.
      smpl_path: SMPL model file or folder (None: $LMR_JAX_SMPL_DIR or the procedural body).

    Returns:
      (model, params, info) with info = {model_config, window, step, body_model}.

    Raises:
      PredictError: no checkpoint there, another model, or parameters that do not fit.
      checkpoints.DamagedCheckpointError: the checkpoint's files do not read (the message names
        the intact checkpoints).
    """
    workdir, step = _split_checkpoint_path(path)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise PredictError(f"no checkpoints folder in {workdir}; pass a training run's --workdir "
                           "or one of its checkpoints/STEP folders.")  # fmt: skip
    mngr = checkpoints.open_checkpoints(workdir)
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
        raise PredictError(f"no checkpoint {'' if step is None else step} in {directory}.")
    meta, params = checkpoints.read_checkpoint(mngr, step)
    saved = ml_collections.ConfigDict(meta["compat"]["model"])
    if model_config is not None:
        wanted = checkpoints.json_view(model_config)
        mismatch = checkpoints.first_mismatch(saved.name, wanted["name"], "model.name")
        mismatch = mismatch or checkpoints.first_mismatch(meta["compat"]["model"], wanted, "model")
        if mismatch:
            raise PredictError(f"the checkpoint at step {step} in {directory} holds another "
                               f"model than the config asks for ({mismatch}).")  # fmt: skip
    body_model = smpl.resolve(smpl_path)
    model = models.build_model(saved, body_model)
    window = int(meta["compat"]["data.window"])
    _check_params(model, params, window, f"the checkpoint at step {step} in {directory}")
    info = dict(model_config=saved, window=window, step=step, body_model=body_model)
    return model, params, info


def feature_width(params) -> int:
    """D of the features the parameters expect: the input width of the models' static
    projections (every model projects the frame features through one), -1 if none."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [getattr(k, "key", None) for k in path]
        if "static_projection" in names and names[-1] == "kernel":
            return int(leaf.shape[-2])
    return -1


def _check_params(model, params, window: int, where: str) -> None:
    """Raises PredictError when `params` do not have the tree and shapes `model` needs."""
    width = feature_width(params)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, window, width)))
    got = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), params)
    want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), expected["params"])
    if got != want:
        raise PredictError(f"{where} does not hold the parameters of its '{model.name or ''}"
                           f"{type(model).__name__}' model config.")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The features in, the output `.npz` out
# ---------------------------------------------------------------------------------------------


def read_features_file(path: str, width: int) -> dict[str, np.ndarray]:
    """features [N, D], and bbox [N, 4] / frame_ids [N] when present, from a `.npz` file.

    Raises:
      PredictError: missing or unreadable file, no `features`, wrong width, empty, NaN, or
        `bbox` / `frame_ids` of another length.
    """
    if not os.path.isfile(path):
        raise PredictError(f"features file {path} does not exist.")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        raise PredictError(f"{path} is not a readable .npz file ({e or 'empty'}).") from e
    if "features" not in arrays:
        raise PredictError(f"{path} has no 'features' array (it has {sorted(arrays)}); "
                           "expected features [N, D].")  # fmt: skip
    features = arrays["features"]
    if features.ndim != 2 or features.shape[1] != width or len(features) == 0:
        raise PredictError(f"{path}: features has shape {list(features.shape)}, expected "
                           f"[N, {width}] with N >= 1 for this model.")  # fmt: skip
    if not np.isfinite(features).all():
        raise PredictError(f"{path}: features holds NaN or infinite values.")
    n = len(features)
    out = {"features": features.astype(np.float32)}
    out["frame_ids"] = arrays.get("frame_ids", np.arange(n)).astype(np.int32)
    if "bbox" in arrays:
        out["bbox"] = arrays["bbox"].astype(np.float32)
    expected = {"frame_ids": (n,), "bbox": (n, 4)}
    for key, shape in expected.items():
        if key in out and out[key].shape != shape:
            raise PredictError(f"{path}: {key} has shape {list(out[key].shape)}, expected "
                               f"{list(shape)} (one row per frame of features).")  # fmt: skip
    for key in ("crop_scale", "fps"):
        if key in arrays:
            value = arrays[key]
            if value.shape != () or value.dtype.kind not in "iuf" or not value > 0:
                raise PredictError(f"{path}: {key} is {value!r}, expected a positive "
                                   "number.")  # fmt: skip
            out[key] = float(value)
    return out


def dataset_video(config: ml_collections.ConfigDict, name: str, split: str) -> dict:
    """One video of config.eval's dataset by `vid_name` (features, labels, frame_ids)."""
    from lmr_jax.data import pipeline

    spec = pipeline.DatasetSpec(name=config.eval.name, split=split,
                                data_dir=config.data.data_dir)  # fmt: skip
    names = []
    for video in pipeline.eval_videos(spec):
        if video["vid_name"] == name:
            return video
        names.append(video["vid_name"])
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise schema.DatasetError(f"{spec.label} has no video '{name}' (it has {shown}).")


def crop_to_image(cam: np.ndarray, bbox: np.ndarray,
                  crop_scale: float = KEYPOINT_CROP_SCALE) -> np.ndarray:  # fmt: skip
    """Weak-perspective crop cameras [N, 3] -> image cameras [N, 3] in pixels.

    A crop coordinate u in [-1, 1] is the pixel cx + (crop_scale * w / 2) * u (the crop is the
    bbox [cx, cy, w, h] enlarged by crop_scale), so x_crop = s * (X + t) becomes
    x_pixel = s_px * X + t_px with s_px = s * crop_scale * w / 2 and t_px = s_px * t + (cx, cy).
    """
    half = 0.5 * crop_scale * bbox[:, 2]
    s_px = cam[:, 0] * half
    return np.stack([s_px, s_px * cam[:, 1] + bbox[:, 0], s_px * cam[:, 2] + bbox[:, 1]], -1)


def write_prediction(path: str, result: dict, faces: np.ndarray, frame_ids: np.ndarray,
                     bbox: np.ndarray | None, meta: dict,
                     crop_scale: float = KEYPOINT_CROP_SCALE) -> None:  # fmt: skip
    """Writes the output `.npz` (keys in lmr_jax/predict.py's docstring)."""
    arrays = {k: np.asarray(v, np.float32) for k, v in result.items()}
    arrays["faces"] = np.asarray(faces, np.int32)
    arrays["frame_ids"] = np.asarray(frame_ids, np.int32)
    if bbox is not None:
        cam_image = crop_to_image(arrays["cam"], bbox, crop_scale)
        arrays["bbox"] = bbox
        arrays["cam_image"] = cam_image
        joints = arrays["joints_vibe49"][..., :2]
        arrays["kp2d_image"] = cam_image[:, None, :1] * joints + cam_image[:, None, 1:]
    for key, value in meta.items():
        arrays[key] = np.asarray(value)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
