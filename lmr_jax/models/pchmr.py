"""PC-HMR stage 2 (paper 003, sec. 3.2 and 4): a trained regressor run, the stage-1 pose lifter
and the learnable pose calibration (models/calibration.py, eq. 6-13) as one model, fine-tuned
end to end with 3D supervision on the lifter and on the calibrated mesh.

The model (`PCHMR`, registry name 'pchmr') holds three parts, one top-level parameter group
each: params['base'] (the base regressor's module, any system: HMR, VIBE-style, LMR, HKMR, ...;
the same tree as the base run's params), params['lifter'] (lifter.PoseLifter, the tree of a
lifter run) and params['calibration'] (W and A's logits). Per frame:

1. the base regressor gives its mesh M_hmr (`vertices`), joints3d (vibe49) and camera;
2. the target J_target (h36m17): 'serial' lifts the base's own joints3d projected with its own
   camera (the 3D-to-2D pose encoder, every joint visible); 'parallel' lifts the video's
   observed 2D keypoints (`kp2d`, standing in for a 2D detector, with its missing joints); 'gt'
   takes the h36m17 joints of the ground-truth mesh (the paper's "GT 3D Pose" upper bound;
   frames without SMPL labels keep J_hmr as the target, which leaves them uncalibrated:
   Psi = I, Delta = 0). The lifter's pelvis-relative joints are placed at the source's pelvis,
   as lmr_jax/calibrated.py does;
3. the source mesh (the base's, or with `template` the body model's template in the
   regressors' mean pose, "PC-Template") is calibrated towards J_target (eq. 12-13).

Outputs: params.smpl_outputs' dict of the base (rotmats, pose, betas, cam, iterations) with
`vertices`, `joints3d` and `kp2d` of the CALIBRATED mesh, so that training's shared losses,
evaluation, the protocols and the tables score the calibrated mesh unchanged. A calibrated mesh
has no kinematic joints: its 24 SMPL joints are J_regressor applied to its vertices (as SPIN
and VIBE regress evaluation joints from a mesh), and `joints3d` takes the base's joint layout
from those and the calibrated vertices. Beside them: `vertices_base`, `joints3d_base`,
`kp2d_base` (the uncalibrated mesh), `joints_target` [.., 17, 3] and, with a lifter,
`lifted` [.., 17, 3] (its pelvis-relative output, what the lifter loss supervises).

Inputs beyond the features (`training_inputs`, and `evaluation_inputs` for evaluation, which
passes the video's fields of the same names: evaluate.evaluate_videos' `input_fields`): 'parallel'
reads `kp2d`, 'gt' reads `pose`, `shape` and `has_smpl`; 'serial' reads nothing, so it is the
target `lmr-predict` can apply (a prediction has no labels and no keypoints). A base that reads
batch fields in training (DSD with use_gt_2d) gets them too.

Losses (`extra_losses`, beside the shared ones): `vertex` = w_vertex x the mean L1 over the 6890
vertices and 3 coordinates between the calibrated mesh and the ground-truth mesh of the
frame's pose and shape (un-centred: the PVE the evaluation reports is VIBE's, no translation),
over the frames with SMPL labels (and `valid`); `lift` = w_lift x the lifter's mean squared
error of the 17 pelvis-relative h36m17 joints (lifter.lifter_loss's form) against the
ground-truth mesh's, over the same frames (none with the 'gt' target: no lifter). Choices
where the paper is silent: L1 (GraphCMR's and SPIN's vertex loss); w_vertex = w_lift = 300,
the 'synthetic' preset's w_3d for its L1 3D joint term, so the three 3D terms weigh alike.
The shared terms are kept, not switched off: on `rotmats`/`betas` they are the base's SMPL
parameter terms (they keep the fine-tuned regressor near its labels; constant, with no
gradient, when the base is frozen), on `joints3d`/`kp2d` they are the calibrated mesh's joint
terms; neither counts a quantity twice (the vertex term is on the surface, the joint terms on
the joints). The base system's own extra terms (HKMR's L_KL, SATN's sort loss) are not added.

Learning rates (`learning_rate_scales`, applied by optim.make_optimizer): the run's optim.lr is
the calibration module's (the paper: 1e-3), params['base'] and params['lifter'] move at
base_lr_scale x that (default 0.01: the paper's 1e-5 for the other modules).

Stages: the base run (any experiment) and the lifter (experiments/pchmr_lifter.py) are trained
first; a new pchmr run takes params['base'] and params['lifter'] from their latest checkpoints
(`initial_params`, not on resume), W and A from calibration.initial_weights. `freeze_base`:
calibration only, the base behind stop_gradient and run as in inference (no dropout), so its
parameters stay exactly as loaded. The base's model config (its architecture) is read from the
base run's checkpoint metadata when the model is built (`base_model_config`) and the lifter's
from its config.json, so a pchmr run needs its base_run and lifter_run folders in place to be
rebuilt (evaluation, prediction), though every parameter it uses is in its own checkpoint.

Config (`default_config`): name, base_run (''), lifter_run (''), target ('serial'), nonrigid
(True; False: W = 0, "w/o Non-Rigid"), template (False; "PC-Template"), freeze_base (False),
w_vertex (300), w_lift (300), base_lr_scale (0.01). The shared fields (num_iterations, dtype,
mean_params, joint_layout, head_init) are the base's, read from its run: this system has none.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from lmr_jax import geometry, losses
from lmr_jax import smpl as smpl_lib
from lmr_jax.models import calibration as calibration_lib
from lmr_jax.models import common
from lmr_jax.models import pose_lifter as lifter_lib

TARGETS = ("serial", "parallel", "gt")
LAYOUT = lifter_lib.OUTPUT_LAYOUT  # h36m17: the lifter's joints, the calibration's skeleton
# models.build_model passes this system the registry's builder of a saved model config.
BUILDS_BASE_MODEL = True


class PCHMR(nn.Module):
    """The base regressor, the lifter and the calibration (module docstring).

    Attributes:
      base: the base regressor's module (params['base']).
      calibration: calibration.Calibration (params['calibration']).
      lifter: lifter.PoseLifter (params['lifter']), None with the 'gt' target.
      body_model: the SMPL model of the base.
      target_body: `body_model` restricted to the h36m17 joints (the 'gt' targets).
      target: 'serial' | 'parallel' | 'gt'.
      template_vertices, template_joints: with `template`, the mesh [V, 3] and its h36m17
        joints [17, 3] calibrated instead of the base's (calibration.template_source).
      freeze_base: the base's outputs behind stop_gradient, the base run without dropout.
    """

    base: nn.Module
    calibration: calibration_lib.Calibration
    lifter: lifter_lib.PoseLifter | None
    body_model: smpl_lib.SMPLModel
    target_body: smpl_lib.SMPLModel
    target: str = "serial"
    template_vertices: np.ndarray | None = None
    template_joints: np.ndarray | None = None
    freeze_base: bool = False

    @property
    def joint_layout(self) -> str:
        return getattr(self.base, "joint_layout", "vibe49")

    @property
    def input_ndim(self) -> int:
        return getattr(self.base, "input_ndim", 3)

    @property
    def dropout(self) -> float:
        """The largest dropout rate of the parts trained with dropout (rngs.uses_dropout)."""
        rates = [] if self.lifter is None else [self.lifter.dropout]
        if not self.freeze_base:
            rates += [getattr(self.base, f, 0.0) for f in ("dropout", "regressor_dropout")]
        return max([0.0, *rates])

    @property
    def evaluation_inputs(self) -> tuple[str, ...]:
        """The video fields the target needs, in training and evaluation alike."""
        return {"serial": (), "parallel": ("kp2d",), "gt": ("pose", "shape", "has_smpl")}[
            self.target
        ]

    @property
    def training_inputs(self) -> tuple[str, ...]:
        """The batch fields the training step passes: the target's and the base's own."""
        own = (*getattr(self.base, "training_inputs", ()), *self.evaluation_inputs)
        return tuple(dict.fromkeys(own))

    def _field(self, name: str, value, shape: tuple[int, ...]) -> jnp.ndarray:
        """An input of the target; zeros only while the parameters are initialised."""
        if value is not None:
            return value
        if self.is_initializing():
            return jnp.zeros(shape, jnp.float32)
        raise ValueError(f"the '{self.target}' PC-HMR model needs the video's '{name}' as an "
                         "input (expected it among the call's keyword arguments, as training "
                         "and evaluation pass it).")  # fmt: skip

    def __call__(self, features: jnp.ndarray, *, train: bool = False, kp2d=None, pose=None,
                 shape=None, has_smpl=None, state=None, return_state: bool = False):  # fmt: skip
        """[B, T, D] features (and the target's inputs, [B, T, ...]) -> the outputs of the
        module docstring; with `return_state` also the base's recurrent state."""
        given = {"kp2d": kp2d, "pose": pose, "shape": shape, "has_smpl": has_smpl}
        base_kwargs = {k: given[k] for k in getattr(self.base, "training_inputs", ())}
        base_train = train and not self.freeze_base
        if return_state:
            out, new_state = self.base(features, train=base_train, state=state,
                                       return_state=True, **base_kwargs)  # fmt: skip
        else:
            out = self.base(features, train=base_train, **base_kwargs)
        if self.freeze_base:
            out = jax.lax.stop_gradient(out)
        outputs = self._calibrated(out, train, given)
        return (outputs, new_state) if return_state else outputs

    def _calibrated(self, out: dict, train: bool, given: dict) -> dict:
        frames = out["cam"].shape[:-1]  # [B, T]
        vertices_base = out["vertices"]
        if self.template_vertices is None:
            source = vertices_base
            source_joints = smpl_lib.layout_joints(self.body_model, vertices_base, None, LAYOUT)
        else:
            template = jnp.asarray(self.template_vertices, vertices_base.dtype)
            source = jnp.broadcast_to(template, (*frames, *template.shape))
            joints = jnp.asarray(self.template_joints, vertices_base.dtype)
            source_joints = jnp.broadcast_to(joints, (*frames, *joints.shape))
        extra = {}
        if self.target == "gt":
            pose = self._field("pose", given["pose"], (*frames, 72))
            shape = self._field("shape", given["shape"], (*frames, 10))
            labelled = self._field("has_smpl", given["has_smpl"], frames)
            relative = lifter_lib.lifter_targets(self.target_body, pose, shape)
            own = source_joints - source_joints[..., :1, :]
            relative = jnp.where(labelled[..., None, None] > 0, relative, own)
        else:
            if self.target == "serial":
                keypoints = lifter_lib.serial_keypoints(out["joints3d"], out["cam"])
            else:
                keypoints = self._field("kp2d", given["kp2d"], (*frames, 49, 3))
            relative = self.lifter(lifter_lib.normalize_keypoints(keypoints), train=train)
            extra["lifted"] = relative
        target = relative + source_joints[..., :1, :]
        vertices = self.calibration(source, source_joints, target)
        joints24 = jnp.einsum("jv,...vc->...jc", self.body_model.J_regressor.astype(vertices.dtype),
                              vertices)  # fmt: skip
        joints3d = smpl_lib.layout_joints(self.body_model, vertices, joints24, self.joint_layout)
        return {
            **out,
            "vertices": vertices,
            "joints3d": joints3d,
            "kp2d": geometry.weak_perspective_project(joints3d, out["cam"]),
            "vertices_base": vertices_base,
            "joints3d_base": out["joints3d"],
            "kp2d_base": out["kp2d"],
            "joints_target": target,
            **extra,
        }


# ---------------------------------------------------------------------------------------------
# The other runs: the base's saved model config, its parameters, the lifter's
# ---------------------------------------------------------------------------------------------


def base_model_config(run: str) -> dict:
    """The model config saved with the latest checkpoint of the run `run` (the JSON that
    checkpoints.save_checkpoint writes to RUN/checkpoints/STEP/meta/metadata).

    Raises:
      ValueError: one sentence naming model.base_run when there is no such checkpoint.
    """
    directory = os.path.join(os.path.abspath(run), "checkpoints")
    steps = sorted((int(os.path.basename(p)) for p in glob.glob(os.path.join(directory, "*"))
                    if os.path.basename(p).isdigit()
                    and os.path.isfile(os.path.join(p, "meta", "metadata"))),
                   reverse=True)  # fmt: skip
    for step in steps:
        try:
            with open(os.path.join(directory, str(step), "meta", "metadata")) as f:
                saved = json.load(f)["compat"]["model"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged or partial checkpoint: the one before
        if isinstance(saved, dict) and "name" in saved:
            return saved
    raise ValueError(f"model.base_run is '{run}', which holds no checkpoint with a saved model "
                     "config (expected the --workdir of a trained regressor run, e.g. "
                     "experiments/hmr_framewise.py or lmr_synthetic.py).")  # fmt: skip


def _same_tree(field: str, run: str, loaded, initial) -> dict:
    """`loaded` checked against the tree and shapes of `initial`, in its dtypes."""
    have, want = traverse_util.flatten_dict(loaded), traverse_util.flatten_dict(initial)
    for path in sorted(set(have) | set(want)):
        there, here = (tuple(np.shape(t[path])) if path in t else None for t in (have, want))
        if there != here:
            raise ValueError(f"model.{field} '{run}' has parameter {'/'.join(path)} of shape "
                             f"{there}, this model {here} (features of another dimension?); "
                             "expected the same.")  # fmt: skip
    return traverse_util.unflatten_dict(
        {path: jnp.asarray(have[path], want[path].dtype) for path in want}
    )


def initial_params(config, params: dict, read_run: Callable) -> dict:
    """`params` with params['base'] from model.base_run's latest checkpoint and params['lifter']
    from model.lifter_run (models.initial_params; not called for a resumed run).

    Raises:
      ValueError: one sentence: a run without a readable checkpoint or lifter, or with other
        parameter shapes than this model's.
    """
    model = config.model
    try:
        _, loaded = read_run(model.base_run)
    except Exception as error:  # a missing, damaged or foreign run: named in one sentence
        raise ValueError(f"model.base_run is '{model.base_run}', which holds no readable "
                         f"checkpoint ({str(error).rstrip('.')}).") from error  # fmt: skip
    out = {**params, "base": _same_tree("base_run", model.base_run, loaded, params["base"])}
    if "lifter" in params:
        lifter = lifter_lib.load_lifter(model.lifter_run)
        out["lifter"] = _same_tree("lifter_run", model.lifter_run, lifter.params, params["lifter"])
    return out


# ---------------------------------------------------------------------------------------------
# Registry interface: default_config, check_config, build, extra_losses, learning_rate_scales
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """PC-HMR's model fields with their defaults (the module docstring lists them)."""
    config = ml_collections.ConfigDict()
    config.name = "pchmr"
    config.base_run = ""
    config.lifter_run = ""
    config.target = "serial"
    config.nonrigid = True
    config.template = False
    config.freeze_base = False
    config.w_vertex = 300.0
    config.w_lift = 300.0
    config.base_lr_scale = 0.01
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one clear sentence for a bad PC-HMR config (the runs' contents
    are checked when the model is built)."""
    common.check_fields(config, default_config())
    common.check_choice(config, "target", TARGETS)
    for field in ("nonrigid", "template", "freeze_base"):
        if not isinstance(config[field], bool):
            raise ValueError(f"model.{field} is {config[field]!r}, expected True or False.")
    for field in ("w_vertex", "w_lift", "base_lr_scale"):
        if not float(config[field]) >= 0:
            raise ValueError(f"model.{field} is {config[field]!r}, expected a number >= 0.")
    run = config.base_run
    if run and not os.path.isdir(os.path.join(run, "checkpoints")):
        raise ValueError(f"model.base_run is '{run}', which holds no checkpoints (expected the "
                         "--workdir of a trained regressor run).")  # fmt: skip
    run = config.lifter_run
    if run and config.target != "gt" and not os.path.isdir(lifter_lib.lifter_dir(run)):
        raise ValueError(f"model.lifter_run is '{run}', which holds no lifter (expected the "
                         "--workdir of python -m lmr_jax.models.lifter).")  # fmt: skip


def _lifter_module(config) -> lifter_lib.PoseLifter | None:
    if config.target == "gt":
        return None
    if not config.lifter_run:
        raise ValueError(f"model.lifter_run is '', expected the --workdir of a trained pose "
                         f"lifter (python -m lmr_jax.models.lifter) for the '{config.target}' "
                         "target.")  # fmt: skip
    path = os.path.join(lifter_lib.lifter_dir(config.lifter_run), "config.json")
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError) as error:
        message = (f"model.lifter_run is '{config.lifter_run}', whose lifter config {path} "
                   f"does not read ({error}); expected a lifter run.")  # fmt: skip
        raise ValueError(message) from None
    return lifter_lib.PoseLifter(**fields)


def build(config: ml_collections.ConfigDict, body_model: smpl_lib.SMPLModel,
          build_saved: Callable) -> PCHMR:  # fmt: skip
    """The PC-HMR module of a checked config; `build_saved(saved model config, body_model)`
    builds the base (models.build_model's registry builder).

    Raises:
      ValueError: one sentence: no base_run, a base run of another PC-HMR, a base whose joints
        are not vibe49, no lifter_run for a lifted target.
    """
    if not config.base_run:
        raise ValueError("model.base_run is '', expected the --workdir of a trained regressor "
                         "run (HMR, VIBE-style, LMR, HKMR, ...).")  # fmt: skip
    saved = base_model_config(config.base_run)
    if saved["name"] == "pchmr":
        raise ValueError(f"model.base_run '{config.base_run}' is a PC-HMR run, expected the run "
                         "of a regressor to calibrate.")  # fmt: skip
    if saved.get("joint_layout", "vibe49") != "vibe49":
        raise ValueError(f"model.base_run '{config.base_run}' outputs joints3d in "
                         f"'{saved['joint_layout']}', expected 'vibe49' (the lifter's "
                         "input joints).")  # fmt: skip
    base = build_saved(saved, body_model)
    skeleton = calibration_lib.get_skeleton(LAYOUT)
    template = {}
    if config.template:
        vertices, joints = calibration_lib.template_source(body_model, skeleton)
        template = dict(template_vertices=np.asarray(vertices, np.float32),
                        template_joints=np.asarray(joints, np.float32))  # fmt: skip
    return PCHMR(
        base=base,
        calibration=calibration_lib.build_calibration(body_model, skeleton,
                                                      nonrigid=bool(config.nonrigid)),
        lifter=_lifter_module(config),
        body_model=body_model,
        target_body=smpl_lib.joint_model(body_model, LAYOUT),
        target=config.target,
        freeze_base=bool(config.freeze_base),
        **template,
    )  # fmt: skip


@functools.lru_cache(maxsize=4)
def _body_models(smpl_path: str) -> tuple[smpl_lib.SMPLModel, smpl_lib.SMPLModel]:
    """(the run's body model, restricted to h36m17): train.train resolves the same one. Called
    first inside the jitted step: concrete arrays (closed over as constants), not tracers."""
    with jax.ensure_compile_time_eval():
        body = smpl_lib.resolve(smpl_path or None)
        return body, smpl_lib.joint_model(body, LAYOUT)


def vertex_loss(vertices, gt_vertices, frames, axis_name=None) -> jnp.ndarray:
    """Mean |v - v_gt| over vertices and coordinates [.., V, 3], over the frames [..] with
    weight `frames` (the global count under pmap, losses.masked_mean)."""
    error = jnp.mean(jnp.abs(vertices - gt_vertices), axis=(-2, -1))
    return losses.masked_mean(error, frames, frames, axis_name)


def lift_loss(lifted, gt_relative, frames, axis_name=None) -> jnp.ndarray:
    """lifter.lifter_loss's mean over the 17 joints of the squared error (m^2), masked."""
    error = jnp.mean(jnp.sum(jnp.square(lifted - gt_relative), -1), -1)
    return losses.masked_mean(error, frames, frames, axis_name)


def extra_losses(config, outputs: dict, batch: dict, axis_name=None) -> dict[str, jnp.ndarray]:
    """PC-HMR's terms, WEIGHTED: {'vertex': w_vertex x L_vertex, 'lift': w_lift x L_lift}
    (module docstring; no 'lift' without a lifter)."""
    model = config.model
    body, target_body = _body_models(config.get("smpl_path", ""))
    frames = batch["has_smpl"].astype(jnp.float32)
    if "valid" in batch:
        frames = frames * batch["valid"].astype(jnp.float32)
    rotmats = geometry.pose72_to_rotmats(batch["pose"])
    gt_vertices, _ = smpl_lib.forward(body, batch["shape"], rotmats)
    terms = {"vertex": float(model.w_vertex) * vertex_loss(outputs["vertices"], gt_vertices,
                                                           frames, axis_name)}  # fmt: skip
    if "lifted" in outputs:
        gt_relative = lifter_lib.lifter_targets(target_body, batch["pose"], batch["shape"])
        terms["lift"] = float(model.w_lift) * lift_loss(outputs["lifted"], gt_relative, frames,
                                                        axis_name)  # fmt: skip
    return terms


def learning_rate_scales(config) -> dict[str, float]:
    """The learning rate of each top-level parameter group relative to optim.lr (the
    calibration's): the base and the lifter (none with the 'gt' target) at model.base_lr_scale."""
    scale = float(config.model.base_lr_scale)
    groups = ("base",) if config.model.target == "gt" else ("base", "lifter")
    return dict.fromkeys(groups, scale)
