"""Inference on whole sequences: a trained run's meshes for a features file or a dataset video.

    python -m lmr_jax.main --mode=predict --workdir=RUN --input=video.npz --output=pred.npz
    python -m lmr_jax.main --mode=predict --workdir=RUN --config=experiments/X.py --video=NAME
    lmr-predict --workdir=RUN/checkpoints/400 --input=video.npz --glb=pred.glb --obj_dir=objs

`--workdir` is a run directory (its latest checkpoint) or one checkpoint step directory
(`RUN/checkpoints/STEP`). The model is rebuilt from the config saved with the checkpoint; a
`--config` given as well must describe the same model.

Input `.npz`: `features` [N, D] float32 (required, D the model's feature width), `bbox` [N, 4]
(optional; [cx, cy, w, h] in image pixels of the square person box the features were cropped
from, VIBE's convention), `frame_ids` [N] (optional), `crop_scale` (optional scalar: the crop
is the bbox enlarged by it; default 1.2, VIBE's) and `fps` (optional scalar, the video's frame
rate: the `.glb`'s rate unless --fps is given). `lmr-extract-features`
(lmr_jax/data/extract.py) writes such files, and `--video=clip.mp4` with `--bboxes` (or
`--keypoints`) and `--weights` runs it first, writing RUN/predict/clip_features.npz.

Windows: the model runs on windows of T frames (the training window) with `overlap` frames in
common between neighbours; in an overlap both windows' parameters are blended with weights
that ramp linearly across it (6D-free: rotation matrices are averaged and projected back onto
rotations), then the body is posed once from the blended parameters, so there is no seam. A
video of at most T frames is one pass.

Output `.npz` keys (N frames; lengths in metres, SMPL's frame: x right, y down, z away from the
camera, as the training data; crop coordinates in [-1, 1] across the person crop):
  frame_ids [N] int32; pose [N, 72] axis-angle (global orientation first); rotmats
  [N, 24, 3, 3]; betas [N, 10]; cam [N, 3] weak-perspective [s, tx, ty] of the crop
  (x_crop = s * (X + t)); vertices [N, 6890, 3]; faces [F, 3] int32; joints_vibe49 [N, 49, 3];
  joints_common14 [N, 14, 3]; kp2d [N, 49, 2] crop coordinates; with --calibration=RUN (a
  lifter run or a trained serial PC-HMR run; serial PC-HMR, lmr_jax/calibrated.py), or with a
  PC-HMR run as --workdir, vertices_calibrated [N, 6890, 3] and
  joints_h36m17_target [N, 17, 3] (the lifted target joints); and with a bbox:
  bbox [N, 4], cam_image [N, 3] = [s, tx, ty] in pixels with x_pixel = s * X + (tx, ty) (and
  the same for y), kp2d_image [N, 49, 2] pixels. Scalars: model, step, window, overlap.
Vertices and joints are in the model's own frame (not centred); project them with `cam` or
`cam_image`.

Streaming (`Stream`): frames' features pushed one at a time or in chunks return their outputs
at once, under the `.npz`'s key names; the recurrent states are kept between calls, so the
outputs equal those of one pass over all frames so far (unidirectional models only), with a
cost per call that does not grow with the history. `predict_sequence` (`lmr-predict`) instead
stitches windows of the training length, as the model was trained: on clips longer than one
window the two differ (by up to a few cm), on shorter ones they agree.

Loading the run, reading the features and writing the `.npz` live in predict_io.py; this module
re-exports them (`predict.load_run`, `predict.read_features_file`, ...).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmr_jax import geometry, jit_cache, runner, smpl
from lmr_jax.data.vibe_format import KEYPOINT_CROP_SCALE  # the crop is the bbox x 1.2 (VIBE)
from lmr_jax.predict_io import (  # the files prediction reads and writes; re-exported here
    PredictError,
    _split_checkpoint_path,
    crop_to_image,
    dataset_video,
    feature_width,
    load_run,
    read_features_file,
    write_prediction,
)

__all__ = [
    "PredictError",
    "load_run",
    "feature_width",
    "stitch_plan",
    "nearest_rotation",
    "pose_body",
    "predict_sequence",
    "crop_to_image",
    "read_features_file",
    "dataset_video",
    "write_prediction",
    "Stream",
    "run",
]

_BODY_CHUNK = 64  # frames per call of the jitted body model (one compiled shape)


# ---------------------------------------------------------------------------------------------
# Windows and stitching
# ---------------------------------------------------------------------------------------------


def stitch_plan(num_frames: int, window: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows over a video and the weight of every window at every frame.

    Windows start every `window - overlap` frames; the last one is moved back to end at the
    last frame. A window's raw weight ramps linearly from 1 / (overlap + 1) at its ends up to 1
    `overlap` frames in; at each frame the weights are divided by their sum, so every frame's
    weights add up to 1 and a frame seen by one window takes that window's output unchanged.

    Args:
      num_frames: N > window (shorter videos are one pass).
      window: T.
      overlap: frames shared by neighbouring windows, 0 <= overlap < T.

    Returns:
      (starts [W] int, weights [W, T] float64, the normalised weight of window w at frame
      starts[w] + t).
    """
    if not 0 <= overlap < window:
        raise PredictError(f"overlap is {overlap}, expected 0 <= overlap < window ({window}).")
    stride = window - overlap
    starts = np.unique(np.minimum(np.arange(0, num_frames - overlap, stride), num_frames - window))
    t = np.arange(window)
    ramp = np.minimum(1.0, np.minimum(t + 1, window - t) / (overlap + 1))
    total = np.zeros(num_frames)
    for s in starts:
        total[s : s + window] += ramp
    weights = np.stack([ramp / total[s : s + window] for s in starts])
    return starts, weights


def nearest_rotation(matrices: np.ndarray) -> np.ndarray:
    """Projects [..., 3, 3] matrices onto the nearest rotations (SVD, det +1)."""
    u, _, vt = np.linalg.svd(matrices)
    sign = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= sign[..., None]
    return u @ vt


def _posed_body(body_model: smpl.SMPLModel) -> Callable:
    """Jitted (betas [F, 10], rotmats [F, 24, 3, 3]) -> vertices, vibe49 and common14 joints."""
    return jit_cache.per_object("body", body_model, lambda: _make_posed_body(body_model))


def _make_posed_body(body_model: smpl.SMPLModel) -> Callable:

    @jax.jit
    def posed(betas, rotmats):
        vertices, joints = smpl.forward(body_model, betas, rotmats)
        vibe49 = smpl.layout_joints(body_model, vertices, joints, "vibe49")
        common14 = smpl.layout_joints(body_model, vertices, joints, "common14")
        return vertices, vibe49, common14

    return posed


def pose_body(body_model: smpl.SMPLModel, betas: np.ndarray, rotmats: np.ndarray) -> dict:
    """Vertices [N, 6890, 3] and joints (vibe49, common14) of N frames, in chunks of 64."""
    posed = _posed_body(body_model)
    n, parts = len(betas), []
    for i in range(0, n, _BODY_CHUNK):
        b, r = betas[i : i + _BODY_CHUNK], rotmats[i : i + _BODY_CHUNK]
        pad = _BODY_CHUNK - len(b)
        b = np.concatenate([b, np.zeros((pad, *b.shape[1:]), b.dtype)])
        r = np.concatenate([r, np.broadcast_to(np.eye(3, dtype=r.dtype), (pad, 24, 3, 3))])
        parts.append([np.asarray(x)[: _BODY_CHUNK - pad] for x in posed(b, r)])
    vertices, vibe49, common14 = (np.concatenate(x) for x in zip(*parts, strict=True))
    return {"vertices": vertices, "joints_vibe49": vibe49, "joints_common14": common14}


def predict_sequence(
    model, params, body_model: smpl.SMPLModel, features: np.ndarray, window: int,
    overlap: int | None = None, batch_size: int = 32,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-frame outputs over a whole video, windows stitched (see the module docstring).

    Args:
      model, params: the model and its parameters.
      body_model: the SMPL model the outputs are posed with.
      features: [N, D] frame features.
      window: T, frames per window.
      overlap: frames shared by neighbouring windows (None: T // 2).
      batch_size: windows per model call.

    Returns:
      pose, rotmats, betas, cam, vertices, joints_vibe49, joints_common14, kp2d ([N, ...]).
    """
    features = np.asarray(features, np.float32)
    n = len(features)
    overlap = window // 2 if overlap is None else overlap
    apply = _apply_fn(model)
    keys = ("rotmats", "betas", "cam")
    if n <= window:  # one pass over exactly the video's frames
        out = jax.device_get(apply(params, jnp.asarray(features[None])))
        rotmats, betas, cam = (np.asarray(out[k][0], np.float64) for k in keys)
    else:
        starts, weights = stitch_plan(n, window, overlap)
        windows = np.stack([features[s : s + window] for s in starts])
        out = runner.run_windows(functools.partial(apply, params), windows, batch_size)
        blended = {k: np.zeros((n, *out[k].shape[2:])) for k in keys}
        for w, s in enumerate(starts):
            for k in keys:
                weight = weights[w].reshape(-1, *(1,) * (out[k].ndim - 2))
                blended[k][s : s + window] += weight * out[k][w]
        rotmats, betas, cam = (blended[k] for k in keys)
        rotmats = nearest_rotation(rotmats)
    rotmats, betas, cam = (x.astype(np.float32) for x in (rotmats, betas, cam))
    result = {"rotmats": rotmats, "betas": betas, "cam": cam}
    result["pose"] = np.asarray(geometry.rotmats_to_pose72(jnp.asarray(rotmats)))
    result.update(pose_body(body_model, betas, rotmats))
    result["kp2d"] = np.asarray(
        geometry.weak_perspective_project(jnp.asarray(result["joints_vibe49"]), jnp.asarray(cam))
    )
    return result


def _apply_fn(model) -> Callable:
    """Jitted (params, features [W, T, D]) -> the final rotmats, betas and cam."""
    return runner.make_apply_fn(model, ("rotmats", "betas", "cam"))


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


class Stream:
    """Online inference: push features as they come, get each frame's outputs at once.

        model, params, _ = predict.load_run("RUN")
        stream = predict.Stream(model, params)
        out = stream.push(features)  # [D] or [n, D] -> out["vertices"] [n, 6890, 3], ...

    `push(features)` takes [D] (one frame) or [n, D] (a chunk) and returns that many frames'
    outputs as numpy arrays [n, ...], under the names of the `.npz` that `lmr-predict` writes
    (module docstring): rotmats, pose, betas, cam, vertices, joints_vibe49 (joints_<layout> for
    a model of another `joint_layout`), joints_common14 and kp2d.

    The model's recurrent states are carried from call to call, so the outputs equal those of
    ONE pass over every frame pushed since the last `reset()`; a call costs the same whatever
    came before. `predict_sequence` (`lmr-predict`) instead stitches windows of the training
    length, so on a clip longer than one window the two differ (by up to a few cm). One
    compilation per distinct chunk length.
    """

    def __init__(self, model, params):
        if getattr(model, "bidirectional", False):
            raise PredictError("a bidirectional model cannot stream (each output needs later "
                               "frames); use predict_sequence.")  # fmt: skip
        self.width = feature_width(params)
        self._params = params
        joints_key = f"joints_{getattr(model, 'joint_layout', 'vibe49')}"

        @jax.jit
        def step(params, state, features):
            out, state = model.apply({"params": params}, features, state=state, return_state=True)
            keys = ("rotmats", "pose", "betas", "cam", "vertices", "kp2d")
            result = {k: out[k][0] for k in keys}
            result[joints_key] = out["joints3d"][0]
            # The evaluation joints come from the mesh alone (J_regressor_h36m rows), as in
            # pose_body; the SMPL joints argument is unused by this layout.
            vertices = result["vertices"]
            result["joints_common14"] = smpl.layout_joints(
                model.body_model, vertices, jnp.zeros((*vertices.shape[:-2], 24, 3)), "common14"
            )
            return result, state

        self._step = step
        abstract = jax.eval_shape(
            lambda p, x: model.apply({"params": p}, x, return_state=True)[1],
            params, jax.ShapeDtypeStruct((1, 1, self.width), jnp.float32),
        )  # fmt: skip
        self._zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
        self.reset()

    def reset(self) -> None:
        """Starts a new sequence (zero recurrent states)."""
        self._state = self._zeros
        self.frames_seen = 0

    def push(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of the next frame(s): features [D] or [n, D] -> dict of [n, ...] arrays.

        Raises:
          PredictError (a ValueError): features of another shape, or NaN / infinite values.
            The whole call is refused and the stream is left as it was, so the next push
            continues from the last good frame (a NaN would otherwise spread through the
            recurrent states into every later frame).
        """
        features = np.asarray(features, np.float32)
        chunk = features[None] if features.ndim == 1 else features
        if chunk.ndim != 2 or chunk.shape[1] != self.width or len(chunk) == 0:
            raise PredictError(f"Stream.push got features of shape {list(features.shape)}, "
                               f"expected [{self.width}] or [n, {self.width}].")  # fmt: skip
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if len(bad):
            frame = self.frames_seen + int(bad[0])
            raise PredictError(f"Stream.push: frame {frame} (row {bad[0]} of this call) holds "
                               "NaN or infinite features, expected finite values; the call was "
                               f"refused, the stream still holds {self.frames_seen} "
                               "frames.")  # fmt: skip
        out, self._state = self._step(self._params, self._state, jnp.asarray(chunk[None]))
        self.frames_seen += len(chunk)
        return jax.device_get(out)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def run(
    workdir: str,
    *,
    config: ml_collections.ConfigDict | None = None,
    input_path: str | None = None,
    video: str | None = None,
    extraction: dict | None = None,
    split: str | None = None,
    output: str | None = None,
    obj_dir: str | None = None,
    glb: str | None = None,
    overlap: int | None = None,
    fps: float | None = None,
    smpl_path: str | None = None,
    calibration: str | None = None,
) -> list[str]:
    """`--mode=predict`: predicts one sequence, writes the `.npz` (and `.obj`s / `.glb`).

    Args:
      workdir: run directory or `RUN/checkpoints/STEP`.
      config: the experiment config (needed for `video`; if given, must match the run).
      input_path: a features `.npz` (see the module docstring), or None with `video`.
      video: a video name of config.eval's dataset, read from `split` (default config.eval.split).
      extraction: instead of `input_path` and `video`, the keyword arguments of
        lmr_jax.data.extract.extract_features_file (video or images, bboxes or keypoints,
        weights, ...): the features are extracted first, to `extraction['out']` (default
        RUN/predict/<video or folder name>_features.npz), then predicted.
      output: the `.npz` to write (default RUN/predict/<input or video name>.npz).
      obj_dir: if set, one `.obj` per frame there; glb: if set, an animated `.glb` at that path.
      overlap: frames shared by neighbouring windows (None: half the window).
      fps: frame rate of the `.glb` animation (None: the features file's `fps`, else 30).
      smpl_path: SMPL model file or folder.
      calibration: a pose lifter run (lmr_jax.models.lifter; the untrained calibration
        module) or a trained serial PC-HMR run (experiments/pchmr.py; its lifter, W and A):
        serial PC-HMR on the prediction (lmr_jax.calibrated.serial_calibration) adds
        `vertices_calibrated` and `joints_h36m17_target` to the `.npz`, and the `.obj`s /
        `.glb` show the calibrated mesh. A PC-HMR run as `workdir` is its own calibration
        (its fine-tuned base predicts, its lifter, W and A calibrate).

    Returns:
      The paths written: the features file when extracted, the `.npz`, then `obj_dir` and `glb`
      when given.
    """
    from lmr_jax import export

    if sum(x is not None for x in (input_path, video, extraction)) != 1:
        raise PredictError("predict needs exactly one of --input=FEATURES.npz, --video=NAME "
                           "(a dataset's) and a video file or image folder to extract "
                           "features from.")  # fmt: skip
    if video is not None and config is None and os.path.isfile(video):
        raise PredictError(f"--video={video} is a file: predicting from it needs "
                           "--bboxes=TRACK (or --keypoints=PATH) and --weights=CHECKPOINT to "
                           "extract its features.")  # fmt: skip
    if video is not None and config is None:
        raise PredictError("--video needs --config=experiments/<name>.py to know the dataset.")
    model, params, info = load_run(workdir, config.model if config else None, smpl_path)
    calibrator = _calibrator(calibration, (model, params, info), workdir, smpl_path)  # first
    width = feature_width(params)
    run_dir, _ = _split_checkpoint_path(workdir)
    written, name = [], None
    if extraction is not None:
        input_path, name = _extract(extraction, width, run_dir)
        written.append(input_path)
    if video is not None:
        source = dataset_video(config, video, split or config.eval.split)
        got = source["features"].shape[1]
        if got != width:
            raise PredictError(f"video '{video}' has features of width {got}, the model "
                               f"expects {width}.")  # fmt: skip
        source["bbox"] = None
        name = video.replace("/", "_")  # dataset video names hold slashes
    else:
        source = read_features_file(input_path, width)
        name = name or os.path.splitext(os.path.basename(input_path))[0]
    result = predict_sequence(model, params, info["body_model"], source["features"],
                              info["window"], overlap)  # fmt: skip
    shown = result["vertices"]
    if calibrator is not None:
        from lmr_jax import calibrated

        lifter, weights, template = calibrator
        result.update(calibrated.serial_calibration(
            lifter, info["body_model"], result["vertices"], result["joints_vibe49"],
            result["cam"], weights=weights, template=template))  # fmt: skip
        shown = result["vertices_calibrated"]
    output = output or os.path.join(run_dir, "predict", f"{name}.npz")
    meta = dict(model=info["model_config"].name, step=info["step"], window=info["window"],
                overlap=info["window"] // 2 if overlap is None else overlap)  # fmt: skip
    faces = np.asarray(info["body_model"].faces)
    write_prediction(output, result, faces, source["frame_ids"], source.get("bbox"), meta,
                     source.get("crop_scale", KEYPOINT_CROP_SCALE))  # fmt: skip
    written.append(output)
    if obj_dir:
        export.write_obj_sequence(obj_dir, shown, faces,
                                  frame_ids=source["frame_ids"])  # fmt: skip
        written.append(obj_dir)
    if glb:
        export.write_glb(glb, shown, faces, fps=fps or source.get("fps") or 30.0)
        written.append(glb)
    return written


def _calibrator(calibration: str | None, run: tuple, workdir: str, smpl_path: str | None):
    """(lifter, weights, template) of `--calibration` (None: none) for serial_calibration: a
    lifter run gives the untrained W0, A0 (weights None); a pchmr run its trained lifter, W and
    A; without --calibration a pchmr --workdir calibrates with its own. `run`: the --workdir's
    (model, params, info) from load_run.

    Raises:
      PredictError: one sentence for a path that is neither, or a pchmr run that is not serial.
    """
    from lmr_jax.models import lifter as lifter_lib
    from lmr_jax.models import saved

    model, params, info = run
    if calibration is None and info["model_config"].name != "pchmr":
        return None
    if calibration is not None and saved.holds_saved(lifter_lib.lifter_dir(calibration)):
        return lifter_lib.load_lifter(calibration), None, None
    if calibration is not None:
        if not os.path.isdir(os.path.join(calibration, "checkpoints")):
            raise PredictError(f"--calibration={calibration} holds neither a pose lifter "
                               "(lmr_jax.models.lifter) nor checkpoints of a PC-HMR run "
                               "(experiments/pchmr.py); expected one of them.")  # fmt: skip
        model, params, info = load_run(calibration, smpl_path=smpl_path)
        workdir = calibration
        if info["model_config"].name != "pchmr":
            raise PredictError(f"--calibration={calibration} is a run of model "
                               f"'{info['model_config'].name}', expected a pose lifter run or a "
                               "PC-HMR run (experiments/pchmr.py).")  # fmt: skip
    from lmr_jax import calibrated

    try:
        trained = calibrated.trained_calibration(model, params, workdir)
    except ValueError as error:
        raise PredictError(str(error)) from None
    return trained, trained.weights, trained.template


def _extract(extraction: dict, width: int, run_dir: str) -> tuple[str, str]:
    """Runs feature extraction for `run`: (the features file's path, the video's name)."""
    from lmr_jax.data import extract

    frames = extraction.get("video") or extraction.get("images") or ""
    name = os.path.splitext(os.path.basename(os.path.normpath(frames)))[0] or "video"
    out = extraction.get("out") or os.path.join(run_dir, "predict", f"{name}_features.npz")
    try:
        extract.extract_features_file(**{**extraction, "out": out}, expected_width=width)
    except extract.ExtractError as e:
        raise PredictError(str(e)) from e
    return out, name
