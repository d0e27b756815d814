"""PC-HMR's 2D-to-3D pose lifter (paper 003, section 3.2: the pose decoder of serial PC-HMR, the
pose stream of parallel PC-HMR): Martinez et al.'s residual MLP, one frame at a time.

The paper's Human3.6M experiments use VideoPose3D; this is the per-frame design of Martinez et
al. 2017 ("A simple yet effective baseline"), which the paper cites as the other well-known
lifter: Dense(1024) -> 2 residual blocks of [Dense(1024), norm, ReLU, dropout] x 2 -> Dense to
the 3D joints. It sees one frame, so any regressor (per-frame or temporal) can sit under it.

Choices where the paper (and Martinez et al.) leave room:

- Input joints: the 14 common joints of the dataset's `vibe49` 2D keypoints (entries 25..38,
  LSP order, `INPUT_SLOTS`): every VIBE-format dataset labels them (the 2D-only sets too), and
  a regressor's projected `vibe49` joints have them, so the serial input (the base's own
  projection) and the parallel input (the observed keypoints, standing in for a 2D detector)
  are the same 14 joints. The h36m17 joints the calibration needs (spine, thorax, nose, ...)
  are not in `vibe49`: they are outputs, never inputs.
- Normalisation (`normalize_keypoints`): centred on the mid-hips (entries 2 and 3 of the 14;
  the confidence-weighted mean of the visible joints when a hip is missing), divided by the
  root-mean-square distance of the visible joints from that centre (so the camera scale s
  goes away: the output is in metres, the body size is learned from the training bodies).
- Missing keypoints (confidence 0): their normalised coordinates are 0 and the 14 confidences
  are an extra input (Martinez et al. have no missing joints); a frame with no visible joint
  gives zeros only. The input is [..., 14 * 2 + 14].
- Norm: LayerNorm where Martinez et al. have batch norm (our train states keep no
  batch_stats), dropout 0.5 as theirs (`dropout`), max-norm not used.
- Output: the 17 `h36m17` joints (the calibration skeleton's layout) relative to the pelvis
  (joint 0, always exactly 0: 16 joints are predicted), in metres, in the camera frame of the
  weak-perspective camera (x right, y down, as the 2D).
- Targets: the `h36m17` joints (J_regressor_h36m) of the ground-truth SMPL mesh of every frame
  with SMPL labels (`has_smpl`), pelvis-centred: the dataset's `kp3d` is in `vibe49`, which
  holds no Human3.6M spine / thorax / nose, so the exact targets come from the pose and shape
  labels through the body model. Frames without SMPL labels are not used.
- Loss: mean squared error of the 16 joints in metres (Martinez et al.'s L2); Adam, lr 1e-3
  with exponential decay (theirs: 0.96 every 100k steps; ours `decay` per `decay_steps`),
  batch 256, minibatches drawn with replacement from a seeded numpy generator.

The model's pieces live in models/pose_lifter.py (re-exported here); this file trains it.
The checkpoint (`train_lifter`, `load_lifter`) is the folder `WORKDIR/lifter` with the
Orbax-saved parameters and `config.json` (the model fields), as models/pose_prior.py does.

Run: `python -m lmr_jax.models.lifter --config=experiments/pchmr_lifter.py:cpu
--workdir=workdirs/pchmr_lifter`.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from lmr_jax import smpl as smpl_lib
from lmr_jax.models.pose_lifter import (  # noqa: F401  (the model's names, re-exported here)
    INPUT_DIM,
    INPUT_HIPS,
    INPUT_SLOTS,
    NUM_OUTPUT,
    OUTPUT_LAYOUT,
    Lifter,
    PoseLifter,
    lifter_dir,
    lifter_loss,
    lifter_targets,
    load_lifter,
    normalize_keypoints,
    save_lifter,
    serial_keypoints,
)

# ---------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------


def pairs_from_videos(videos, body_model: smpl_lib.SMPLModel, stride: int = 1, chunk: int = 512):
    """(inputs [N, 42], targets [N, 17, 3]) of the frames with SMPL labels of `videos` (dicts
    with kp2d [n, 49, 3], pose [n, 72], shape [n, 10], has_smpl [n]), every `stride`-th."""
    joint_body = smpl_lib.joint_model(body_model, OUTPUT_LAYOUT)
    targets_fn = jax.jit(lambda p, s: lifter_targets(joint_body, p, s))
    kp2d, pose, shape = [], [], []
    for video in videos:
        keep = np.flatnonzero(np.asarray(video["has_smpl"]) > 0)[::stride]
        kp2d.append(np.asarray(video["kp2d"], np.float32)[keep])
        pose.append(np.asarray(video["pose"], np.float32)[keep])
        shape.append(np.asarray(video["shape"], np.float32)[keep])
    kp2d, pose, shape = (np.concatenate(x) for x in (kp2d, pose, shape))
    if not len(kp2d):
        raise ValueError("the lifter's training videos have no frame with SMPL labels.")
    targets = []
    for begin in range(0, len(pose), chunk):
        p, s = pose[begin : begin + chunk], shape[begin : begin + chunk]
        pad = chunk - len(p)  # one compiled shape for every chunk
        out = targets_fn(np.pad(p, ((0, pad), (0, 0))), np.pad(s, ((0, pad), (0, 0))))
        targets.append(np.asarray(out)[: len(p)])
    inputs = np.asarray(jax.jit(normalize_keypoints)(kp2d))
    return inputs, np.concatenate(targets)


def pairs_from_dataset(name: str, split: str, data_dir: str, body_model, stride: int = 1):
    """`pairs_from_videos` of every video of a dataset split."""
    from lmr_jax.data import pipeline  # models do not depend on data: only this reader does

    source = pipeline.open_dataset(pipeline.DatasetSpec(name, split, data_dir=data_dir or None))
    videos = (source.read(i) for i in range(len(source.data_source)))
    return pairs_from_videos(videos, body_model, stride)


# ---------------------------------------------------------------------------------------------
# Training, checkpoint
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """The lifter's experiment fields (experiments/pchmr_lifter.py changes a few)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.smpl_path = ""  # '' = $LMR_JAX_SMPL_DIR or the procedural body
    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "data"
    c.data.name = "synthetic_motion/standard"
    c.data.split = "train"
    c.data.validation_split = "validation"
    c.data.stride = 1
    c.model = ml_collections.ConfigDict({"hidden_size": 1024, "num_blocks": 2, "dropout": 0.5})
    c.optim = ml_collections.ConfigDict(
        {"lr": 1e-3, "decay": 0.96, "decay_steps": 1_000, "batch_size": 256, "num_steps": 20_000}
    )
    c.log_every = 1_000
    return c


def evaluate_lifter(lifter: Lifter, inputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean per-joint position error (mm) over the 16 non-root joints, no dropout."""
    pred = jax.jit(lambda p, x: lifter.module().apply({"params": p}, x))(lifter.params, inputs)
    return float(1000.0 * np.mean(np.linalg.norm(np.asarray(pred) - targets, axis=-1)[:, 1:]))


def train_lifter(
    inputs: np.ndarray,
    targets: np.ndarray,
    config: ml_collections.ConfigDict,
    workdir: str,
) -> tuple[Lifter, list[dict]]:
    """Trains the lifter on (inputs [N, 42], targets [N, 17, 3]), saves it to WORKDIR/lifter.

    Returns:
      (the trained Lifter, the metrics of every step as floats).
    """
    if inputs.ndim != 2 or inputs.shape[1] != INPUT_DIM or targets.shape[1:] != (NUM_OUTPUT, 3):
        raise ValueError(f"lifter training pairs have shapes {inputs.shape} and {targets.shape}, "
                         f"expected [N, {INPUT_DIM}] and [N, {NUM_OUTPUT}, 3].")  # fmt: skip
    module = PoseLifter(**config.model.to_dict())
    base = jax.random.key(config.seed)
    params = jax.jit(module.init)(jax.random.fold_in(base, 0), inputs[:1])["params"]
    schedule = optax.exponential_decay(
        config.optim.lr, int(config.optim.decay_steps), float(config.optim.decay)
    )
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y, step):
        rng = jax.random.fold_in(jax.random.fold_in(base, 1), step)
        grads, metrics = jax.grad(
            lambda p: lifter_loss(module, p, x, y, rng), has_aux=True
        )(params)  # fmt: skip
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    sampler = np.random.default_rng(config.seed)
    history = []
    for step in range(int(config.optim.num_steps)):
        rows = sampler.integers(0, len(inputs), int(config.optim.batch_size))
        params, opt_state, metrics = train_step(params, opt_state, inputs[rows], targets[rows],
                                                step)  # fmt: skip
        history.append(metrics)
        if config.log_every and (step + 1) % config.log_every == 0:
            logging.info("lifter step %d: %s", step + 1,
                         {k: round(float(v), 4) for k, v in metrics.items()})  # fmt: skip
    history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
    lifter = Lifter(params=jax.device_get(params), model=config.model)
    save_lifter(lifter, workdir)
    return lifter, history


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from lmr_jax.cli import fail, quiet_logs
    from lmr_jax.data.schema import DatasetError

    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiments/pchmr_lifter.py[:variant]", lock_config=True
    )
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where the lifter's checkpoint goes.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        quiet_logs()
        config = _CONFIG.value
        try:
            body_model = smpl_lib.resolve(config.smpl_path or None)
            data = config.data
            train = pairs_from_dataset(data.name, data.split, data.data_dir, body_model,
                                       int(data.stride))  # fmt: skip
            val = pairs_from_dataset(data.name, data.validation_split, data.data_dir, body_model)
            print(f"pose lifter: {len(train[0])} training frames, {len(val[0])} validation")
            lifter, history = train_lifter(*train, config, _WORKDIR.value)
        except (ValueError, DatasetError) as error:
            fail(str(error))
        last = history[-1] if history else {}
        print(f"pose lifter saved to {lifter_dir(_WORKDIR.value)}; last step: "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))  # fmt: skip
        print(f"validation MPJPE (16 joints, root-relative): {evaluate_lifter(lifter, *val):.1f} "
              f"mm on {data.name}:{data.validation_split}")  # fmt: skip

    app.run(main)
