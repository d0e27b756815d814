"""PC-HMR on top of a trained regressor run: serial and parallel target poses, the calibrated
meshes, and their evaluation side by side with the uncalibrated mesh (paper 003, section 3.2).

- Serial (`serial_targets`): the base run's own 3D joints (`joints3d`, vibe49) projected with its
  own weak-perspective camera (`geometry.weak_perspective_project`: the 3D-to-2D pose encoder),
  every joint visible, lifted back to 3D (the pose decoder, models/lifter.py).
- Parallel (`parallel_targets`): the video's observed 2D keypoints (the dataset's `kp2d`,
  standing in for a 2D detector, with its missing joints) lifted to 3D.
- Ground truth (`gt_targets`): the h36m17 joints of the ground-truth mesh (the paper's "GT 3D
  Pose" upper bound).

The lifter gives pelvis-relative joints; every target is placed at the pelvis of the base mesh's
own h36m17 joints J_hmr (the calibration moves bones, not the body as a whole, and the weak-
perspective camera gives no depth to place it otherwise). The mesh is then calibrated by the
untrained `calibration.Calibration` (initial W0 and A0, already a sensible calibration, see
experiments/benchmarks/calibration_init.py), or by a trained pchmr run's W and A.

Stage 2 (W, A, the lifter and the base fine-tuned end to end) is the 'pchmr' system
(models/pchmr.py, experiments/pchmr.py); `trained_calibration` takes a trained pchmr model's
lifter, W, A (and template) for `serial_calibration`.

`serial_calibration` is what `lmr-predict --calibration=RUN` adds to a prediction (RUN a lifter
run: the untrained W0, A0; or a trained serial pchmr run: its lifter and W, A); the
side-by-side evaluation lives in lmr_jax/calibrated_eval.py (prediction never imports
evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import smpl
from lmr_jax.models import calibration as calibration_lib
from lmr_jax.models import lifter as lifter_lib
from lmr_jax.models import pchmr as pchmr_lib

MODES = ("serial", "parallel", "gt")
_LAYOUT = lifter_lib.OUTPUT_LAYOUT


serial_keypoints = lifter_lib.serial_keypoints  # the projection the serial lifter reads


def place_at_root(relative: jnp.ndarray, joints_hmr: jnp.ndarray) -> jnp.ndarray:
    """Pelvis-relative h36m17 joints [..., 17, 3] moved to the pelvis of J_hmr [..., 17, 3]."""
    return relative + joints_hmr[..., :1, :]


def serial_targets(lift: Callable, joints3d, cam, joints_hmr) -> jnp.ndarray:
    """Serial PC-HMR's J_target [..., 17, 3]: lift(project(joints3d, cam)) at J_hmr's root.

    Args:
      lift: [..., 49, 3] vibe49 keypoints -> [..., 17, 3] pelvis-relative joints (`Lifter.lift`).
      joints3d: [..., 49, 3] the base run's vibe49 joints; cam: [..., 3] its cameras.
      joints_hmr: [..., 17, 3] the h36m17 joints of the base mesh.
    """
    return place_at_root(lift(serial_keypoints(joints3d, cam)), joints_hmr)


def parallel_targets(lift: Callable, kp2d, joints_hmr) -> jnp.ndarray:
    """Parallel PC-HMR's J_target [..., 17, 3]: lift(observed kp2d [..., 49, 3]) at J_hmr's root."""
    return place_at_root(lift(kp2d), joints_hmr)


def gt_targets(body_model: smpl.SMPLModel, pose, shape, joints_hmr) -> jnp.ndarray:
    """The ground-truth meshes' h36m17 joints [..., 17, 3], pelvis-relative, at J_hmr's root."""
    return place_at_root(lifter_lib.lifter_targets(body_model, pose, shape), joints_hmr)


def calibrated_meshes(
    body_model: smpl.SMPLModel,
    vertices: jnp.ndarray,
    targets: dict[str, jnp.ndarray],
    weights: tuple[jnp.ndarray, jnp.ndarray],
) -> dict[str, jnp.ndarray]:
    """Each target's calibrated mesh: {name: [..., V, 3]} (eq. 12-13 with (W, A) = `weights`)."""
    joints_hmr = smpl.layout_joints(body_model, vertices, None, _LAYOUT)
    bones = calibration_lib.get_skeleton(_LAYOUT).bones
    w, a = weights
    return {k: calibration_lib.calibrate(vertices, joints_hmr, t, w, a, bones)
            for k, t in targets.items()}  # fmt: skip


def calibrate_frames(body_model, lift: Callable | None, pred: dict, labels: dict, weights,
                     modes=MODES) -> dict[str, jnp.ndarray]:  # fmt: skip
    """The uncalibrated and calibrated vertices of a chunk of frames.

    Args:
      body_model: the body model.
      lift: the lifter's `lift` (None: only the 'gt' mode).
      pred: the base run's `vertices` [F, V, 3], `joints3d` [F, 49, 3], `cam` [F, 3].
      labels: the frames' `kp2d` [F, 49, 3], `pose` [F, 72], `shape` [F, 10].
      weights: (W, A) of the calibration.
      modes: a subset of MODES.

    Returns:
      {'base': vertices, mode: calibrated vertices for each mode}, [F, V, 3] each.
    """
    vertices = jnp.asarray(pred["vertices"])
    joints_hmr = smpl.layout_joints(body_model, vertices, None, _LAYOUT)
    makers = {
        "serial": lambda: serial_targets(lift, pred["joints3d"], pred["cam"], joints_hmr),
        "parallel": lambda: parallel_targets(lift, labels["kp2d"], joints_hmr),
        "gt": lambda: gt_targets(body_model, labels["pose"], labels["shape"], joints_hmr),
    }
    targets = {mode: makers[mode]() for mode in modes}
    out = calibrated_meshes(body_model, vertices, targets, weights)
    return {"base": vertices, **out}


def initial_weights(body_model: smpl.SMPLModel, nonrigid: bool = True):
    """(W, A) of the untrained calibration module (W0 and A0 of models/calibration.py)."""
    module = calibration_lib.build_calibration(body_model, _LAYOUT, nonrigid=nonrigid)
    variables = module.init(jax.random.key(0), method="weights")
    return jax.device_get(module.apply(variables, method="weights"))


@dataclasses.dataclass(frozen=True)
class TrainedCalibration:
    """A trained serial pchmr model's calibration: anything with `lift` (as a Lifter), its (W, A)
    and, for PC-Template, the template mesh [V, 3] and joints [17, 3] it calibrates."""

    lift: Callable
    weights: tuple[np.ndarray, np.ndarray]
    template: tuple[np.ndarray, np.ndarray] | None = None


def trained_calibration(model: pchmr_lib.PCHMR, params: dict, where: str) -> TrainedCalibration:
    """The lifter, W and A of a trained pchmr model (`params`: its run's).

    Raises:
      ValueError: one sentence naming `where` (the run) when its target is not 'serial' (a
        prediction has no 2D keypoints or labels for the others).
    """
    if model.target != "serial":
        raise ValueError(f"{where} is a PC-HMR run with model.target '{model.target}', which "
                         "needs the video's keypoints or labels; expected a 'serial' run for "
                         "prediction.")  # fmt: skip
    lifter_params = params["lifter"]
    lift = lambda kp2d: model.lifter.apply({"params": lifter_params},
                                           lifter_lib.normalize_keypoints(kp2d))  # fmt: skip
    weights = model.calibration.apply({"params": params["calibration"]}, method="weights")
    template = None
    if model.template_vertices is not None:
        template = (model.template_vertices, model.template_joints)
    return TrainedCalibration(lift, jax.device_get(weights), template)


def serial_calibration(lifter, body_model: smpl.SMPLModel, vertices: np.ndarray,
                       joints3d: np.ndarray, cam: np.ndarray, nonrigid: bool = True,
                       weights=None, template=None) -> dict[str, np.ndarray]:  # fmt: skip
    """Serial PC-HMR on a predicted sequence (what `lmr-predict --calibration=RUN` adds).

    Args:
      lifter: the trained lifter (anything with its `lift`; a TrainedCalibration too).
      body_model: the body model of `vertices`.
      vertices: [N, V, 3], joints3d: [N, 49, 3] (vibe49), cam: [N, 3] of the base prediction.
      nonrigid: False: W = 0 (the w/o Non-Rigid ablation) with the untrained weights.
      weights: (W, A) of a trained calibration (None: the untrained W0, A0).
      template: (vertices [V, 3], h36m17 joints [17, 3]) to calibrate instead of the
        predicted mesh (PC-Template), None: the predicted mesh.

    Returns:
      {'vertices_calibrated' [N, V, 3], 'joints_h36m17_target' [N, 17, 3]}.
    """
    w, a = initial_weights(body_model, nonrigid) if weights is None else weights
    bones = calibration_lib.get_skeleton(_LAYOUT).bones

    @jax.jit
    def chunk_fn(pred, labels):
        del labels
        if template is None:
            source = pred["vertices"]
            joints_src = smpl.layout_joints(body_model, source, None, _LAYOUT)
        else:
            frames = pred["cam"].shape[:-1]
            source = jnp.broadcast_to(template[0], (*frames, *np.shape(template[0])))
            joints_src = jnp.broadcast_to(template[1], (*frames, *np.shape(template[1])))
        target = serial_targets(lifter.lift, pred["joints3d"], pred["cam"], joints_src)
        mesh = calibration_lib.calibrate(source, joints_src, target, w, a, bones)
        return {"vertices_calibrated": mesh, "joints_h36m17_target": target}

    n = len(vertices)
    labels = {"kp2d": np.zeros((n, 49, 3), np.float32), "pose": np.zeros((n, 72), np.float32),
              "shape": np.zeros((n, 10), np.float32)}  # fmt: skip
    pred = {"vertices": vertices, "joints3d": joints3d, "cam": cam}
    return map_chunks(chunk_fn, pred, labels, chunk=64)


def map_chunks(fn: Callable, pred: dict, labels: dict, chunk: int = 128) -> dict:
    """`fn(pred, labels)` over chunks of `chunk` frames (the last padded): one compiled shape."""
    n = len(pred["vertices"])
    keys = ("vertices", "joints3d", "cam")
    parts = []
    for begin in range(0, n, chunk):
        cut = lambda d, ks, b=begin: {k: _padded(np.asarray(d[k])[b : b + chunk], chunk)
                                      for k in ks}  # fmt: skip
        out = fn(cut(pred, keys), cut(labels, ("kp2d", "pose", "shape")))
        parts.append({k: np.asarray(v)[: min(chunk, n - begin)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """`array` [n, ...] padded with zeros to [size, ...]."""
    return np.pad(array, [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1))
