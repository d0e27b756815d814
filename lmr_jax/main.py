"""Entry point: `python -m lmr_jax.main --config=experiments/<name>.py[:variant] --workdir=DIR
--mode=train|eval` (also installed as the `lmr-train` and `lmr-eval` console scripts), and
`--mode=predict --workdir=RUN --input=features.npz` (`lmr-predict`; see lmr_jax/predict.py), and
`--mode=extract --video=clip.mp4 --bboxes=track.npz --weights=CKPT --out=features.npz`
(`lmr-extract-features`; see lmr_jax/data/extract.py). `lmr-predict --video=clip.mp4` with
`--bboxes` (or `--keypoints`) and `--weights` extracts, then predicts; `--video=NAME` with
`--config` (and none of those) predicts a video of the config's evaluation dataset.

Config fields are overridden with `--config.optim.lr=3e-4`; an unknown field is refused.
`--jax_distributed` joins several hosts (jax.distributed.initialize; the coordinator flags are
needed only where JAX cannot detect the cluster itself); each process reads its own data shard.

A bad input (a missing config file, an unknown variant or field, a bad flag value, a missing
dataset, a missing or damaged checkpoint) ends in one line `lmr_jax: error: <sentence>` on stderr
and exit status 2, without a traceback (lmr_jax/cli.py). `--help` lists the command's own flags,
one line each. Library INFO logs (orbax's ~45 lines per checkpoint) are shown only with
`--verbosity=0` or more (`-v 1`); warnings always are.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lmr_jax.cli import fail, parse_flags, quiet_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, experiments/<name>.py[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "extract"], "What to do.")
_SMPL_PATH = flags.DEFINE_string("smpl_path", None, "SMPL model file or folder (overrides "
                                 "config.smpl_path and $LMR_JAX_SMPL_DIR).")  # fmt: skip
_INPUT = flags.DEFINE_string("input", None, "predict: features .npz (features [N, D], "
                             "optional bbox [N, 4], frame_ids [N]).")  # fmt: skip
_VIDEO = flags.DEFINE_string("video", None, "a video file (with --bboxes or --keypoints and "
                             "--weights), or a video name of config.eval's dataset (predict, "
                             "with --config).")  # fmt: skip
_SPLIT = flags.DEFINE_string("split", None, "predict: the split of --video (config.eval.split).")
_OUTPUT = flags.DEFINE_string("output", None, "predict: the .npz to write "
                              "(default WORKDIR/predict/NAME.npz).")  # fmt: skip
_OBJ_DIR = flags.DEFINE_string("obj_dir", None, "predict: also write one .obj per frame here.")
_GLB = flags.DEFINE_string("glb", None, "predict: also write an animated .glb here.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "predict: frames shared by neighbouring "
                                "windows (default half the window).")  # fmt: skip
_FPS = flags.DEFINE_float("fps", None, "predict: frame rate of the .glb animation (default the "
                          "video's, else 30).")  # fmt: skip
_CALIBRATION = flags.DEFINE_string("calibration", None, "predict: a pose lifter run "
                                   "(lmr_jax.models.lifter; the untrained calibration) or a "
                                   "trained serial PC-HMR run (experiments/pchmr.py): also "
                                   "write its calibrated mesh.")  # fmt: skip
_IMAGES = flags.DEFINE_string("images", None, "extract: a folder of frames (sorted image files) "
                              "instead of --video.")  # fmt: skip
_BBOXES = flags.DEFINE_string("bboxes", None, "extract: the person's boxes: .npz with bbox "
                              "[N, 4] (cx, cy, w, h) and frame_ids [N], or .json.")  # fmt: skip
_KEYPOINTS = flags.DEFINE_string("keypoints", None, "extract: 2D keypoints the boxes come from "
                                 "(COCO-17 or OpenPose-25 JSON) instead of --bboxes.")  # fmt: skip
_WEIGHTS = flags.DEFINE_string("weights", None, "extract: the backbone's PyTorch checkpoint "
                               "(SPIN's spin_model_checkpoint.pth.tar, a torchvision "
                               "ResNet).")  # fmt: skip
_OUT = flags.DEFINE_string("out", None, "extract: the features .npz to write (lmr-predict: "
                           "default RUN/predict/NAME_features.npz).")  # fmt: skip
_CROP_SCALE = flags.DEFINE_float("crop_scale", 1.2, "extract: crop side / the box's max(w, h).")
_CROP_SIZE = flags.DEFINE_integer("crop_size", 224, "extract: crop side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "extract: crops per backbone call.")
_DISTRIBUTED = flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def run(mode: str) -> None:
    """Runs `mode` with the parsed flags; known user errors end in one sentence, no traceback."""
    from lmr_jax import smpl, train
    from lmr_jax.data.schema import DatasetError

    if _DISTRIBUTED.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    logging.info("JAX processes: %d, local devices: %d, global devices: %d",
                 jax.process_count(), jax.local_device_count(), jax.device_count())  # fmt: skip
    config = _CONFIG.value
    if mode == "predict":
        _predict(config)
        return
    if mode == "extract":
        _extract()
        return
    if config is None or not _WORKDIR.value:
        fail("both --config=experiments/<name>.py and --workdir=DIR are required.")
    if _SMPL_PATH.value:
        with config.unlocked():
            config.smpl_path = _SMPL_PATH.value
    try:
        if mode == "train":
            train.train_and_evaluate(config, _WORKDIR.value)
        else:
            train.evaluate_workdir(config, _WORKDIR.value)
    except (ValueError, train.TrainingError, DatasetError, smpl.SMPLFileError) as e:
        fail(str(e))


def _extraction() -> dict | None:
    """The extraction flags as extract_features_file's arguments, None when --video names a
    dataset video (no --images, --bboxes, --keypoints or --weights given)."""
    wanted = (_IMAGES, _BBOXES, _KEYPOINTS, _WEIGHTS)
    if not any(f.value is not None for f in wanted):
        return None
    if not _WEIGHTS.value:
        fail("extracting features needs --weights=CHECKPOINT (SPIN's "
             "spin_model_checkpoint.pth.tar or a torchvision ResNet).")  # fmt: skip
    return dict(video=_VIDEO.value, images=_IMAGES.value, bboxes=_BBOXES.value,
                keypoints=_KEYPOINTS.value, weights=_WEIGHTS.value, out=_OUT.value,
                crop_scale=_CROP_SCALE.value, crop_size=_CROP_SIZE.value,
                batch_size=_BATCH_SIZE.value)  # fmt: skip


def _extract() -> None:
    from lmr_jax.data import extract

    extraction = _extraction() or {}
    if not extraction or not _OUT.value:
        fail("extraction needs --video=FILE (or --images=DIR), --bboxes=TRACK (or "
             "--keypoints=PATH), --weights=CHECKPOINT and --out=FEATURES.npz.")  # fmt: skip
    try:
        summary = extract.extract_features_file(**extraction)
    except ValueError as e:
        fail(str(e))
    print(f"wrote {summary['out']}", flush=True)


def _predict(config) -> None:
    from lmr_jax import predict, smpl, train
    from lmr_jax.data.schema import DatasetError

    if not _WORKDIR.value:
        fail("--workdir=RUN (or RUN/checkpoints/STEP) is required.")
    smpl_path = _SMPL_PATH.value or (config.smpl_path if config else "") or None
    extraction = _extraction()
    video = None if extraction else _VIDEO.value
    try:
        written = predict.run(
            _WORKDIR.value, config=config, input_path=_INPUT.value, video=video,
            extraction=extraction, split=_SPLIT.value, output=_OUTPUT.value,
            obj_dir=_OBJ_DIR.value, glb=_GLB.value, overlap=_OVERLAP.value, fps=_FPS.value,
            smpl_path=smpl_path, calibration=_CALIBRATION.value,
        )  # fmt: skip
    except (ValueError, train.TrainingError, DatasetError, smpl.SMPLFileError) as e:
        fail(str(e))
    print(f"wrote {', '.join(written)}", flush=True)  # every file and folder, the .npz first


def _entry(mode: str | None):
    def entry(argv) -> None:
        quiet_logs()  # here, after app.run raised absl's default verbosity to INFO
        if len(argv) > 1:
            fail(f"unexpected arguments {' '.join(argv[1:])}; expected only --flags (see --help).")
        run(mode or _MODE.value)

    return entry


main = _entry(None)


def _cli(mode: str | None) -> None:
    app.run(_entry(mode), flags_parser=parse_flags(mode))


def train_cli() -> None:
    """Console script `lmr-train` (same flags; --mode is train)."""
    _cli("train")


def eval_cli() -> None:
    """Console script `lmr-eval` (same flags; --mode is eval)."""
    _cli("eval")


def predict_cli() -> None:
    """Console script `lmr-predict` (same flags; --mode is predict)."""
    _cli("predict")


def extract_cli() -> None:
    """Console script `lmr-extract-features` (same flags; --mode is extract)."""
    _cli("extract")


if __name__ == "__main__":
    _cli(None)
