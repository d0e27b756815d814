"""Entry point: `python -m lmr_jax.main --config=experiments/<name>.py[:variant] --workdir=DIR
--mode=train|eval` (also installed as the `lmr-train` and `lmr-eval` console scripts), and
`--mode=predict --workdir=RUN --input=features.npz` (`lmr-predict`; see lmr_jax/predict.py).

Config fields are overridden with `--config.optim.lr=3e-4`; an unknown field is refused.
`--jax_distributed` joins several hosts (jax.distributed.initialize; the coordinator flags are
needed only where JAX cannot detect the cluster itself); each process reads its own data shard.

A bad input (a missing config file, an unknown variant or field, a bad flag value, a missing
dataset or checkpoint) ends in one line `lmr_jax: error: <sentence>` on stderr and exit status
2, without a traceback. `--help` lists the command's own flags, one line each.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import sys
from collections.abc import Callable, Iterator

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, experiments/<name>.py[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to do.")
_SMPL_PATH = flags.DEFINE_string("smpl_path", None, "SMPL model file or folder (overrides "
                                 "config.smpl_path and $LMR_JAX_SMPL_DIR).")  # fmt: skip
_INPUT = flags.DEFINE_string("input", None, "predict: features .npz (features [N, D], "
                             "optional bbox [N, 4], frame_ids [N]).")  # fmt: skip
_VIDEO = flags.DEFINE_string("video", None, "predict: a video name of config.eval's dataset.")
_SPLIT = flags.DEFINE_string("split", None, "predict: the split of --video (config.eval.split).")
_OUTPUT = flags.DEFINE_string("output", None, "predict: the .npz to write "
                              "(default WORKDIR/predict/NAME.npz).")  # fmt: skip
_OBJ_DIR = flags.DEFINE_string("obj_dir", None, "predict: also write one .obj per frame here.")
_GLB = flags.DEFINE_string("glb", None, "predict: also write an animated .glb here.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "predict: frames shared by neighbouring "
                                "windows (default half the window).")  # fmt: skip
_FPS = flags.DEFINE_float("fps", 30.0, "predict: frame rate of the .glb animation.")
_DISTRIBUTED = flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")

_EXIT_USAGE = 2  # a bad input, as argparse and most Unix tools report it


def fail(sentence: str) -> None:
    """Ends the command on a bad input: one line on stderr, exit status 2, no traceback."""
    print(f"lmr_jax: error: {sentence}", file=sys.stderr, flush=True)
    sys.exit(_EXIT_USAGE)


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


def _predict(config) -> None:
    from lmr_jax import predict, smpl, train
    from lmr_jax.data.schema import DatasetError

    if not _WORKDIR.value:
        fail("--workdir=RUN (or RUN/checkpoints/STEP) is required.")
    smpl_path = _SMPL_PATH.value or (config.smpl_path if config else "") or None
    try:
        written = predict.run(
            _WORKDIR.value, config=config, input_path=_INPUT.value, video=_VIDEO.value,
            split=_SPLIT.value, output=_OUTPUT.value, obj_dir=_OBJ_DIR.value, glb=_GLB.value,
            overlap=_OVERLAP.value, fps=_FPS.value, smpl_path=smpl_path,
        )  # fmt: skip
    except (ValueError, train.TrainingError, DatasetError, smpl.SMPLFileError) as e:
        fail(str(e))
    print(f"wrote {', '.join(written)}", flush=True)  # every file and folder, the .npz first


# ---------------------------------------------------------------------------------------------
# Flags: parsing with one-sentence errors, and --help
# ---------------------------------------------------------------------------------------------


def _root_cause(error: BaseException) -> BaseException:
    """The first exception of a chain: absl and config_flags re-raise a config file's error
    wrapped in theirs (with a formatted traceback in the message)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return error


def _config_argument(argv: list[str]) -> str | None:
    """The value of --config in argv (either `--config=X` or `--config X`), None if absent."""
    for i, arg in enumerate(argv):
        match = re.fullmatch(r"--?config(=(.*))?", arg)
        if match:
            return match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else "")
    return None


def _overrides(argv: list[str]) -> list[str]:
    """The field paths of `--config.a.b=V` / `--noconfig.a.b` overrides, in order."""
    found = (re.match(r"--?(?:no)?config\.([^=\[]+)", arg) for arg in argv)
    return [m.group(1) for m in found if m]


def _field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    for key, value in config.items():
        yield prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            yield from _field_paths(value, f"{prefix}{key}.")


def _config_problem(argv: list[str]) -> str | None:
    """The first problem of --config and its overrides as one sentence, None if none is seen.

    Checked again here, after config_flags refused them, because config_flags reports a missing
    file only when the config is first used, and a bad variant or field as nested tracebacks.
    """
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)  # as config_flags does
    value = _config_argument(argv)
    if value is None:
        return None
    path = value.split(":", 1)[0]
    if not os.path.isfile(path):
        names = sorted(os.path.basename(p)[:-3] for p in glob.glob("experiments/*.py"))
        return (f"--config={value}: there is no config file '{path}'; expected "
                f"experiments/<name>.py run from the repository root, <name> one of "
                f"{', '.join(names) or 'the experiments'}.")  # fmt: skip
    try:
        config = flags.FLAGS["config"].parser.parse(value)
    except (TypeError, ValueError) as e:
        return f"--config={value}: {_root_cause(e)}"
    if config is None:
        return f"--config={value}: get_config() returned None, expected a ConfigDict."
    if not isinstance(config, ml_collections.ConfigDict):  # config_flags defers an OSError
        error = " ".join(str(vars(config).get("_error", type(config).__name__)).split())
        return f"--config={value} did not load: {error}."
    fields = list(_field_paths(config))
    for field in _overrides(argv):
        if field not in fields:
            closest = difflib.get_close_matches(field, fields, n=1, cutoff=0.0)[0]
            hint = f"the closest is '{closest}'"
            if difflib.SequenceMatcher(None, field, closest).ratio() < 0.6:  # not a typo of it
                hint += f"; the top-level fields are {', '.join(sorted(config))}"
            return (
                f"--config.{field} names no field of {value}; expected an existing field ({hint})."
            )
    return None


def _flag_error(error: Exception) -> str:
    """A flag error of absl (unknown flag, bad value) on one line."""
    return " ".join(str(error).split()).rstrip(".") + "."


def _parse_flags(mode: str | None) -> Callable[[list[str]], list[str]]:
    """absl's flag parser for app.run, with `--help` and errors in the project's own words."""

    def parse(argv: list[str]) -> list[str]:
        args = argv[: argv.index("--")] if "--" in argv else argv
        if any(a in ("--help", "-help", "--helpshort", "-helpshort", "-?") for a in args):
            print(usage(mode), flush=True)
            sys.exit(0)
        try:
            remaining = flags.FLAGS(argv)
        # config_flags lets a config file's AttributeError / KeyError (an unknown field) and
        # OSError (a missing file, once an override reads it) escape absl's flags.Error.
        except (flags.Error, AttributeError, KeyError, OSError) as e:
            problem = _config_problem(argv)
            if problem is None and not isinstance(e, flags.Error):
                raise  # not a bad input we can name: keep the traceback
            fail(problem or _flag_error(e))
        loaded = isinstance(_CONFIG.value, ml_collections.ConfigDict)
        if _config_argument(argv) is not None and not loaded:
            fail(_config_problem(argv) or "--config did not give a ConfigDict.")
        return remaining

    return parse


_METAVARS = dict(config="=FILE[:VARIANT]", workdir="=DIR", mode="=MODE", smpl_path="=PATH",
                 input="=FILE.npz", video="=NAME", split="=SPLIT", output="=FILE.npz",
                 obj_dir="=DIR", glb="=FILE.glb", overlap="=N", fps="=FPS",
                 coordinator_address="=HOST:PORT", num_processes="=N", process_id="=I")  # fmt: skip
_PREDICT = ("input", "video", "split", "output", "obj_dir", "glb", "overlap", "fps")
_HOSTS = ("jax_distributed", "coordinator_address", "num_processes", "process_id")
_TRAIN_ARGS = "--config=experiments/<name>.py[:variant] --workdir=DIR"
_COMMANDS = {  # mode: (the command, what it does, its arguments, its flags)
    None: ("python -m lmr_jax.main", "Trains, evaluates or predicts with an experiment.",
           _TRAIN_ARGS + " [--mode=train|eval|predict]",
           ("config", "workdir", "mode", "smpl_path", *_PREDICT, *_HOSTS)),
    "train": ("lmr-train", "Trains an experiment into DIR, then evaluates it.", _TRAIN_ARGS,
              ("config", "workdir", "smpl_path", *_HOSTS)),
    "eval": ("lmr-eval", "Evaluates the latest checkpoint of the run in DIR.", _TRAIN_ARGS,
             ("config", "workdir", "smpl_path", *_HOSTS)),
    "predict": ("lmr-predict", "Meshes of one sequence from a trained run (lmr_jax/predict.py).",
                "--workdir=RUN (--input=FEATURES.npz | --config=FILE --video=NAME)",
                ("workdir", "config", "smpl_path", *_PREDICT)),
}  # fmt: skip


def usage(mode: str | None) -> str:
    """The `--help` text of a command: what it does and its own flags, one line each (absl's
    own `--help` lists the flags of `__main__` only, none for a console script)."""
    command, summary, arguments, names = _COMMANDS[mode]
    rows = []
    for name in names:
        flag = flags.FLAGS[name]
        text = flag.help.removeprefix("predict: ") if mode == "predict" else flag.help
        if flag.default not in (None, False) and name != "config":
            text = f"{text.removesuffix('.')} (default {flag.default})."
        rows.append((f"--{name}{_METAVARS.get(name, '')}", text[:1].upper() + text[1:]))
        if name == "config":
            rows.append(
                ("--config.FIELD=VALUE", "Overrides a config field: --config.optim.lr=3e-4.")
            )
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{command}: {summary}", f"usage: {command} {arguments} [flags]", "", "flags:"]
    lines += [f"  {name:<{width}}{text}" for name, text in rows]
    lines += ["", "--helpfull also lists absl's and JAX's flags (e.g. --verbosity)."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _entry(mode: str | None):
    def entry(argv) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {' '.join(argv[1:])}; expected only --flags (see --help).")
        run(mode or _MODE.value)

    return entry


main = _entry(None)


def _cli(mode: str | None) -> None:
    app.run(_entry(mode), flags_parser=_parse_flags(mode))


def train_cli() -> None:
    """Console script `lmr-train` (same flags; --mode is train)."""
    _cli("train")


def eval_cli() -> None:
    """Console script `lmr-eval` (same flags; --mode is eval)."""
    _cli("eval")


def predict_cli() -> None:
    """Console script `lmr-predict` (same flags; --mode is predict)."""
    _cli("predict")


if __name__ == "__main__":
    _cli(None)
