"""The experiment configuration: defaults shared by every file in experiments/, and checks.

An experiment file (`experiments/<name>.py`) calls `base_config(model_name)` and changes a few
fields. Fields (all overridable on the command line as `--config.optim.lr=3e-4`):

- `seed`, `smpl_path` ('' = $LMR_JAX_SMPL_DIR, else the procedural body);
- `data`: `data_dir`, `window` (T), `train` (a dict of datasets: name, split, weight, stride,
  group; weight 0 leaves a dataset out), `ratio_2d` (the share of the '2d' group when the
  datasets name groups, see `dataset_config`), `tail_window` (see
  `lmr_jax.data.pipeline.window_index`), `validation` (name, split, joints), `eval_max_videos`;
- `model`: the fields of the model's system (`lmr_jax.models.default_model_config`, e.g.
  lmr_jax/models/lmr.py; a field of another system is refused); `loss`: see `lmr_jax.losses`
  (a named `preset`, 'synthetic' here, 'vibe' in `vibe_setting`, and per-term fields that
  override it);
- `optim`: the optimizer ('adam' or plain 'sgd'), learning rate, schedule ('constant',
  'cosine' or 'plateau': the learning rate drops by `plateau_factor` when the validation
  metric `plateau_metric` has not improved by a relative `plateau_threshold` for more than
  `plateau_patience` validations, as torch's ReduceLROnPlateau in VIBE), warmup, gradient
  clipping, weight decay;
- `train`: global batch size, steps, logging/eval/checkpoint periods, checkpoints kept, what a
  non-finite loss does ('stop' or 'skip');
- `eval`: protocol ('vibe' or 'tcmr'); the evaluation after training: `sets` (names of
  `EVAL_SETS`, comma-separated, e.g. '3dpw,mpi_inf_3dhp,human36m'), or when `sets` is empty
  one dataset split (`name`, `split`, `joints`; `split=''` switches evaluation off);
  `occlusion` ('' off; 'bar', 'circle', 'rectangle' or 'all'): `--mode=eval` then evaluates
  occlusion robustness on that split instead (lmr_jax/evaluate_occlusion.py), with occluders on
  `occlusion_joints` ('' the 14 common joints) of the first `occlusion_max_videos` videos.

Hyperparameters follow VIBE's setting (Adam 5e-5, batch 32, T = 16) unless a file says why not.
`vibe_setting` is the paper's real-data setting (VIBE's datasets, schedule and losses).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lmr_jax import evaluate, losses, models
from lmr_jax.data import occlusion

GROUPS = ("", "2d", "3d")


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A named evaluation: a dataset split and the joints it is scored on."""

    name: str
    split: str
    joints: str


# The test sets of the paper (Table 2), scored as VIBE and TCMR score them (lmr_jax/evaluate.py).
# MPI-INF-3DHP's joints depend on the protocol (joints ''): VIBE scores the 14 J_regressor_h36m
# joints (its Evaluator always passes J_regressor), TCMR the 17 MPI-INF-3DHP test joints.
EVAL_SETS = {
    "3dpw": EvalSet("threedpw", "test", "h36m14"),
    "mpi_inf_3dhp": EvalSet("mpi_inf_3dhp", "validation", ""),
    "human36m": EvalSet("human36m", "test", "h36m14"),
}
PROTOCOL_JOINTS = {"vibe": "h36m14", "tcmr": "mpii3d17"}


def dataset_config(
    name: str, split: str = "train", weight: float = 1.0, stride: int = 4, group: str = ""
) -> ml_collections.ConfigDict:
    """One training dataset of a mixture (a TFDS name such as 'synthetic_motion/small').

    Without groups the datasets are mixed in proportion to `weight`. With groups ('2d' or '3d'
    on every dataset), the '2d' group takes `data.ratio_2d` of the windows and the '3d' group
    the rest, and inside a group each dataset's share is proportional to weight x its number
    of windows (VIBE's ConcatDataset of the 2D and of the 3D datasets).
    """
    return ml_collections.ConfigDict(
        {"name": name, "split": split, "weight": weight, "stride": stride, "group": group}
    )


def base_config(model_name: str = "lmr") -> ml_collections.ConfigDict:
    """Defaults for training `model_name` ('lmr', 'vibe' or 'hmr') on synthetic_motion."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.smpl_path = ""

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "data"
    c.data.window = 16
    c.data.train = ml_collections.ConfigDict(
        {"synthetic": dataset_config("synthetic_motion/standard")}
    )
    c.data.ratio_2d = 0.6  # VIBE's DATA_2D_RATIO; used only when the datasets name groups
    # An extra window per video ending at its last frame (and one padded window for a video
    # shorter than T); VIBE's windows have neither (see vibe_setting).
    c.data.tail_window = True
    c.data.validation = ml_collections.ConfigDict(
        {"name": "synthetic_motion/standard", "split": "validation", "joints": "vibe49"}
    )
    c.data.eval_max_videos = 0  # 0 = all videos
    # The model's input: 'features' or 'frames' (rendered images, e.g. synthetic_motion/frames,
    # for models with a backbone: experiments/lmr_frames.py), resized to image_size (0: stored).
    c.data.inputs = "features"
    c.data.image_size = 0

    c.model = models.default_model_config(model_name)
    c.loss = losses.default_loss_config()

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"  # 'adam' (AdamW with weight decay) | 'sgd' (plain, for tests)
    c.optim.lr = 5e-5
    c.optim.schedule = "constant"  # 'constant' | 'cosine' | 'plateau'
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 1.0  # global norm; 0 disables
    c.optim.weight_decay = 0.0
    c.optim.plateau_metric = "PA-MPJPE"  # a validation metric (lower is better)
    c.optim.plateau_factor = 0.1
    c.optim.plateau_patience = 5  # validations without improvement tolerated
    c.optim.plateau_threshold = 1e-4  # relative improvement that counts (torch's default)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global, split over all devices of all processes
    c.train.num_steps = 15_000
    c.train.log_every = 50
    c.train.eval_every = 1_000
    c.train.checkpoint_every = 1_000
    c.train.max_to_keep = 3
    c.train.nonfinite = "stop"  # 'stop' | 'skip'

    c.eval = ml_collections.ConfigDict()
    c.eval.sets = ""  # names of EVAL_SETS, comma-separated; '' = the split below
    c.eval.name = "synthetic_motion/standard"
    c.eval.split = "test"
    c.eval.joints = "vibe49"  # 'vibe49' | 'h36m14' | 'mpii3d17' (lmr_jax/evaluate.py)
    c.eval.protocol = "vibe"  # 'vibe' (full windows, stride T) | 'tcmr' (middle frames)
    # Occlusion robustness with --mode=eval (lmr_jax/evaluate_occlusion.py): '' off, or 'bar',
    # 'circle', 'rectangle' (comma-separated) or 'all', on the split above; occluders on the
    # 14 common joints ('' ) or those named (e.g. 'right_knee,left_wrist'), on the first
    # occlusion_max_videos videos of the split (0: all).
    c.eval.occlusion = ""
    c.eval.occlusion_joints = ""
    c.eval.occlusion_max_videos = 6
    c.eval.occlusion_seed = 0
    return c


def set_hidden_size(config: ml_collections.ConfigDict, width: int) -> None:
    """Sets the GRU width (models.variant_width_field: model.hidden_size) where the model has
    one: HMR and HKMR have no GRU, and keep their widths (HMR's model.regressor_hidden, HKMR's
    psi width d, model.hidden_size) in every variant."""
    field = models.variant_width_field(config.model.name)
    if field is not None and field in config.model:
        config.model[field] = width


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns a config into its tiny 'smoke' variant: small model, a few steps, tiny data."""
    config.data.train = ml_collections.ConfigDict(
        {"synthetic": dataset_config("synthetic_motion/small", stride=8)}
    )
    config.data.validation.name = "synthetic_motion/small"
    config.eval.name = "synthetic_motion/small"
    config.data.eval_max_videos = 2
    return _tiny_run(config, window=8, eval_every=0)


def _tiny_run(config: ml_collections.ConfigDict, window: int, eval_every: int):
    """The model, optimizer and loop fields of every smoke variant: hidden 32 (GRUs), batch 8,
    2 steps, a checkpoint after each."""
    config.data.window = window
    set_hidden_size(config, 32)
    config.optim.lr = 1e-3
    config.train.batch_size = 8
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.eval_every = eval_every
    config.train.checkpoint_every = 1
    return config


def eval_sets(config: ml_collections.ConfigDict) -> dict[str, EvalSet]:
    """The evaluations after training (and of `--mode=eval`): label -> EvalSet.

    Named sets are labelled by their name ('3dpw'); without `eval.sets` the one split of
    `eval.name` is labelled by the split ('test'), or nothing is evaluated when it is ''.
    """
    names = [n.strip() for n in config.eval.sets.split(",") if n.strip()]
    if names:
        joints = PROTOCOL_JOINTS[config.eval.protocol]
        return {n: dataclasses.replace(EVAL_SETS[n], joints=EVAL_SETS[n].joints or joints)
                for n in names}  # fmt: skip
    if not config.eval.split:
        return {}
    return {config.eval.split: EvalSet(config.eval.name, config.eval.split, config.eval.joints)}


def _check_choices(config: ml_collections.ConfigDict) -> None:
    choices = {
        "optim.optimizer": ("adam", "sgd"),
        "optim.schedule": ("constant", "cosine", "plateau"),
        "optim.plateau_metric": evaluate.METRICS,
        "train.nonfinite": ("stop", "skip"),
        "eval.protocol": ("vibe", "tcmr"),
        "eval.joints": tuple(evaluate.EVAL_JOINTS),
        "data.validation.joints": tuple(evaluate.EVAL_JOINTS),
        "data.inputs": ("features", "frames"),
    }
    for path, allowed in choices.items():
        node = config
        for key in path.split("."):
            node = node[key]
        if node not in allowed:
            raise ValueError(f"config field {path} is {node!r}, expected one of {allowed}.")
    occlusion.parse_kinds(config.eval.get("occlusion", ""))
    occlusion.parse_joints(config.eval.get("occlusion_joints", ""))
    for name in (n.strip() for n in config.eval.sets.split(",")):
        if name and name not in EVAL_SETS:
            raise ValueError(f"config field eval.sets names '{name}', expected names from "
                             f"{tuple(EVAL_SETS)} separated by commas.")  # fmt: skip


def _check_mixture(config: ml_collections.ConfigDict) -> None:
    chosen = {key: d for key, d in config.data.train.items() if d.weight != 0}
    if not chosen:
        raise ValueError("config field data.train has no dataset with a weight > 0, expected "
                         "at least one.")  # fmt: skip
    for key, d in config.data.train.items():
        if d.weight < 0:
            raise ValueError(f"config field data.train.{key}.weight is {d.weight!r}, "
                             "expected >= 0 (0 leaves the dataset out).")  # fmt: skip
        if d.get("group", "") not in GROUPS:
            raise ValueError(f"config field data.train.{key}.group is {d.group!r}, "
                             f"expected one of {GROUPS}.")  # fmt: skip
    grouped = {key for key, d in chosen.items() if d.get("group", "")}
    if grouped and grouped != set(chosen):
        missing = sorted(set(chosen) - grouped)[0]
        raise ValueError(f"config field data.train.{missing}.group is '', expected '2d' or "
                         "'3d' like the other datasets of the mixture.")  # fmt: skip
    if not 0 <= config.data.ratio_2d <= 1:
        raise ValueError(f"config field data.ratio_2d is {config.data.ratio_2d!r}, expected "
                         "a value in [0, 1].")  # fmt: skip


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one sentence naming the first invalid field."""
    models.check_model_config(config.model)
    _check_choices(config)
    losses.resolve(config.loss)
    positive = ("train.batch_size", "train.num_steps", "data.window", "optim.lr")
    for path in positive:
        section, field = path.split(".")
        if not config[section][field] > 0:
            raise ValueError(f"config field {path} is {config[section][field]!r}, expected > 0.")
    if not config.data.train:
        raise ValueError("config field data.train is empty, expected at least one dataset.")
    _check_mixture(config)
    if config.model.get("backbone") is not None and config.optim.weight_decay > 0:
        raise ValueError(f"config field optim.weight_decay is {config.optim.weight_decay!r}, "
                         "expected 0 with model.backbone: decay would shrink the backbone's "
                         "frozen weights and BatchNorm statistics (models/pixels.py).")  # fmt: skip
    if config.optim.schedule == "plateau":
        if config.train.eval_every <= 0:
            raise ValueError("config field train.eval_every is "
                             f"{config.train.eval_every!r}, expected > 0: optim.schedule "
                             "'plateau' watches the validation metric.")  # fmt: skip
        if not 0 < config.optim.plateau_factor < 1:
            factor = config.optim.plateau_factor
            raise ValueError(
                f"config field optim.plateau_factor is {factor!r}, expected a value in (0, 1)."
            )
        if config.optim.plateau_patience < 0 or config.optim.plateau_threshold < 0:
            raise ValueError("config fields optim.plateau_patience and "
                             "optim.plateau_threshold must be >= 0.")  # fmt: skip


def cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Scales a config for a 2-core CPU: hidden 256, lr 1e-3 with cosine decay, 400 steps on
    synthetic_motion/small (what `make demo` runs); see experiments/lmr_synthetic.py."""
    config.data.train.synthetic.name = "synthetic_motion/small"
    config.data.validation.name = "synthetic_motion/small"
    config.eval.name = "synthetic_motion/small"
    config.data.eval_max_videos = 4
    set_hidden_size(config, 256)
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.train.num_steps = 400
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    return config


def bench(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The accuracy benchmark's setting (experiments/benchmarks/accuracy.py): every model on
    synthetic_motion/standard with one budget rule, sized for a 2-core CPU (about 5 minutes for
    LMR, the slowest model).

    Hidden 128 for every GRU (VIBE's and HMR's regressor keep their 1024), batch 32, T = 16,
    1,200 steps (38k windows, about 1.2 passes over the 31k training windows of stride 4), Adam
    1e-3 with 50 warm-up steps and cosine decay to 0, validation every 100 steps on 20 of the 60
    validation videos (the curves), a checkpoint every 200 steps (a stopped run resumes there).
    The learning rate is the `cpu` variant's, chosen on synthetic_motion/small's validation
    split; nothing here was chosen on a test split.
    """
    config.data.train.synthetic.name = "synthetic_motion/standard"
    config.data.validation.name = "synthetic_motion/standard"
    config.eval.name = "synthetic_motion/standard"
    config.data.eval_max_videos = 20
    set_hidden_size(config, 128)
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 50
    config.train.batch_size = 32
    config.train.num_steps = 1_200
    config.train.log_every = 50
    config.train.eval_every = 100
    config.train.checkpoint_every = 200
    config.train.max_to_keep = 1
    return config


VARIANTS = {"": lambda c: c, "cpu": cpu, "smoke": smoke, "bench": bench}


# ---------------------------------------------------------------------------------------------
# The paper's real-data setting (VIBE's)
# ---------------------------------------------------------------------------------------------

ITERATIONS_PER_EPOCH = 500  # VIBE's TRAIN.NUM_ITERS_PER_EPOCH


def vibe_setting(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The LMR paper's setting, "exactly the same settings as" VIBE (configs/config.yaml).

    Data: windows of T = 16 from the 2D datasets InstaVariety, PoseTrack, PennAction (60% of
    each batch, VIBE's DATA_2D_RATIO) and the 3D datasets 3DPW, MPI-INF-3DHP, Human3.6M (40%);
    inside each group a dataset's share follows its number of windows (VIBE's ConcatDataset).
    Strides are VIBE's overlaps (lib/dataset/*.py, stride = T x (1 - overlap)): PennAction,
    PoseTrack 0.75 (stride 4); InstaVariety, MPI-INF-3DHP 0 (stride 16); 3DPW 0 (stride 16:
    lib/dataset/threedpw.py hard-codes `is_train = False`, so its overlap is always 0, also in
    training); Human3.6M 0.75 (stride 4, TCMR's class default; VIBE has no Human3.6M loader).
    Windows are VIBE's `split_into_chunks` (lib/data_utils/img_utils.py): full windows only, no
    extra window for a video's last frames, videos shorter than T left out
    (`data.tail_window=False`). Validation on 3DPW 'validation' (VIBE validates on
    its 3dpw_val_db.pt, which holds the 3DPW test sequences; see tfds_builders/VIBE_FORMAT.md)
    with the 14 J_regressor_h36m joints, once per epoch; evaluation on 3DPW test.
    Optimisation: Adam 5e-5, no weight decay, no gradient clipping, batch 32, 30 epochs of 500
    iterations, the learning rate times 0.1 when the validation PA-MPJPE has not improved for
    more than 5 epochs (torch ReduceLROnPlateau, mode 'min', patience LR_PATIENCE = 5).
    Losses: `loss.preset='vibe'` (lmr_jax/losses.py): VIBE's weights (2D 300, 3D 300, pose 60,
    shape 0.06) on squared errors (VIBE's MSELoss), 3D on the 14 common joints without
    confidence, 2D averaged over all joints, last iteration only.

    Not reproduced: VIBE's motion discriminator on AMASS and its regressor initialised from
    SPIN's checkpoint (pass VIBE's mean parameters with `--config.model.mean_params=PATH`).
    """
    config.data.window = 16
    config.data.train = ml_collections.ConfigDict({
        "insta_variety": dataset_config("insta_variety", stride=16, group="2d"),
        "posetrack": dataset_config("posetrack", stride=4, group="2d"),
        "pennaction": dataset_config("pennaction", stride=4, group="2d"),
        "threedpw": dataset_config("threedpw", stride=16, group="3d"),
        "mpi_inf_3dhp": dataset_config("mpi_inf_3dhp", stride=16, group="3d"),
        "human36m": dataset_config("human36m", stride=4, group="3d"),
    })  # fmt: skip
    config.data.ratio_2d = 0.6
    config.data.tail_window = False
    config.data.validation = ml_collections.ConfigDict(
        {"name": "threedpw", "split": "validation", "joints": "h36m14"}
    )
    config.data.eval_max_videos = 0
    config.loss = losses.default_loss_config("vibe")
    config.optim.lr = 5e-5
    config.optim.schedule = "plateau"
    config.optim.plateau_metric = "PA-MPJPE"
    config.optim.plateau_factor = 0.1
    config.optim.plateau_patience = 5
    config.optim.warmup_steps = 0
    config.optim.grad_clip = 0.0
    config.optim.weight_decay = 0.0
    config.train.batch_size = 32
    config.train.num_steps = 30 * ITERATIONS_PER_EPOCH
    config.train.eval_every = ITERATIONS_PER_EPOCH
    config.train.checkpoint_every = ITERATIONS_PER_EPOCH
    config.train.log_every = 50
    config.eval.sets = "3dpw"
    config.eval.name = "threedpw"
    config.eval.split = "test"
    config.eval.joints = "h36m14"
    return config


def vibe_w_3dpw(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """VIBE's released training mixture (configs/config_w_3dpw.yaml): InstaVariety as the only
    2D dataset (PoseTrack and PennAction are commented out there), 3DPW and MPI-INF-3DHP."""
    for key in ("posetrack", "pennaction", "human36m"):
        config.data.train[key].weight = 0.0
    return config


def vibe_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tiny variant of `vibe_setting`: the 3DPW + PennAction mixture only (what
    tests/data/vibe_files.build_small_datasets builds), T = 4, a small model, 2 steps with a
    validation after each."""
    config.data.train = ml_collections.ConfigDict({
        "threedpw": dataset_config("threedpw", stride=2, group="3d"),
        "pennaction": dataset_config("pennaction", stride=2, group="2d"),
    })  # fmt: skip
    config.optim.plateau_patience = 0
    return _tiny_run(config, window=4, eval_every=1)


VIBE_VARIANTS = {"": lambda c: c, "vibe_w_3dpw": vibe_w_3dpw, "smoke": vibe_smoke}


def model_variants(bases: dict, overrides: dict[str, dict]) -> dict:
    """An experiment file's variants: every base variant ('' included) as it is, and every
    (base, name) pair as `<base>_<name>` (or `<name>` for the base ''): the base variant, then
    the model fields `overrides[name]` (HKMR's and PC-HMR's ablations, e.g. `cpu_no_hierarchy`).
    """

    def combined(base, fields):
        def apply(config):
            config = bases[base](config)
            config.model.update(fields)
            return config

        return apply

    named = {"_".join(filter(None, (base, name))): combined(base, fields)
             for base in bases for name, fields in overrides.items()}  # fmt: skip
    return {**bases, **named}


def apply_variant(
    config: ml_collections.ConfigDict, arg: str | None, variants: dict | None = None
) -> ml_collections.ConfigDict:
    """Applies the named variant of an experiment file (`--config=file.py:variant`).

    Args:
      config: the experiment's config.
      arg: the variant's name ('' or None: the default).
      variants: name -> function (default `VARIANTS`; `VIBE_VARIANTS` for the real-data files).
    """
    variants = VARIANTS if variants is None else variants
    arg = arg or ""
    if arg not in variants:
        raise ValueError(f"unknown config variant '{arg}', expected one of {sorted(variants)}.")
    return variants[arg](config)
