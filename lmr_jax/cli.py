"""The command line's words: flag parsing whose bad inputs end in one sentence (`fail`), each
command's `--help` (`usage`), and quiet library logs unless `--verbosity` is given
(`quiet_logs`). The flags themselves and the commands are in lmr_jax/main.py.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import sys
from collections.abc import Callable, Iterator

import ml_collections
from absl import flags, logging

_EXIT_USAGE = 2  # a bad input, as argparse and most Unix tools report it


def fail(sentence: str) -> None:
    """Ends the command on a bad input: one line on stderr, exit status 2, no traceback."""
    print(f"lmr_jax: error: {sentence}", file=sys.stderr, flush=True)
    sys.exit(_EXIT_USAGE)


def quiet_logs() -> None:
    """Shows warnings and errors only, unless the command line set `--verbosity` (`-v`).

    Orbax logs some 45 INFO lines per checkpoint through absl (grain and TFDS add theirs); they
    drowned the progress line and the errors. absl's own default is INFO once flags are parsed.
    """
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# Flags: parsing with one-sentence errors
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
        if field not in fields and _model_field_problem(config, field):
            return f"--config.{field}: {_model_field_problem(config, field)}"
        if field not in fields:
            closest = difflib.get_close_matches(field, fields, n=1, cutoff=0.0)[0]
            hint = f"the closest is '{closest}'"
            if difflib.SequenceMatcher(None, field, closest).ratio() < 0.6:  # not a typo of it
                hint += f"; the top-level fields are {', '.join(sorted(config))}"
            return (
                f"--config.{field} names no field of {value}; expected an existing field ({hint})."
            )
    return None


def _model_field_problem(config: ml_collections.ConfigDict, field: str) -> str | None:
    """For `model.X` where the config's model has no X: the registry's sentence naming the
    model's system and its fields (X may be another system's field), else None."""
    from lmr_jax import models

    path = field.split(".")
    model = config.get("model")
    if len(path) < 2 or path[0] != "model" or not isinstance(model, ml_collections.ConfigDict):
        return None
    if path[1] in model or model.get("name") not in models.SYSTEMS:
        return None
    return models.unknown_field_message(model.name, path[1])


def _flag_error(error: Exception) -> str:
    """A flag error of absl (unknown flag, bad value) on one line."""
    return " ".join(str(error).split()).rstrip(".") + "."


def parse_flags(mode: str | None) -> Callable[[list[str]], list[str]]:
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
        loaded = isinstance(flags.FLAGS["config"].value, ml_collections.ConfigDict)
        if _config_argument(argv) is not None and not loaded:
            fail(_config_problem(argv) or "--config did not give a ConfigDict.")
        return remaining

    return parse


# ---------------------------------------------------------------------------------------------
# --help
# ---------------------------------------------------------------------------------------------


_METAVARS = dict(config="=FILE[:VARIANT]", workdir="=DIR", mode="=MODE", smpl_path="=PATH",
                 input="=FILE.npz", video="=FILE|NAME", split="=SPLIT", output="=FILE.npz",
                 obj_dir="=DIR", glb="=FILE.glb", overlap="=N", fps="=FPS",
                 images="=DIR", bboxes="=TRACK", keypoints="=PATH", weights="=CKPT",
                 out="=FILE.npz", crop_scale="=S", crop_size="=PIXELS", batch_size="=N",
                 coordinator_address="=HOST:PORT", num_processes="=N", process_id="=I")  # fmt: skip
_PREDICT = ("input", "video", "split", "output", "obj_dir", "glb", "overlap", "fps")
_EXTRACT = ("images", "bboxes", "keypoints", "weights", "out", "crop_scale", "crop_size",
            "batch_size")  # fmt: skip
_HOSTS = ("jax_distributed", "coordinator_address", "num_processes", "process_id")
_TRAIN_ARGS = "--config=experiments/<name>.py[:variant] --workdir=DIR"
_COMMANDS = {  # mode: (the command, what it does, its arguments, its flags)
    None: ("python -m lmr_jax.main", "Trains, evaluates or predicts with an experiment.",
           _TRAIN_ARGS + " [--mode=train|eval|predict|extract]",
           ("config", "workdir", "mode", "smpl_path", *_PREDICT, *_EXTRACT, *_HOSTS)),
    "train": ("lmr-train", "Trains an experiment into DIR, then evaluates it.", _TRAIN_ARGS,
              ("config", "workdir", "smpl_path", *_HOSTS)),
    "eval": ("lmr-eval", "Evaluates the latest checkpoint of the run in DIR.", _TRAIN_ARGS,
             ("config", "workdir", "smpl_path", *_HOSTS)),
    "predict": ("lmr-predict", "Meshes of one sequence from a trained run (lmr_jax/predict.py).",
                "--workdir=RUN (--input=FEATURES.npz | --config=FILE --video=NAME | "
                "--video=FILE --bboxes=TRACK --weights=CKPT)",
                ("workdir", "config", "smpl_path", *_PREDICT, *_EXTRACT)),
    "extract": ("lmr-extract-features",
                "Backbone features of a person's crops in a video (lmr_jax/data/extract.py).",
                "(--video=FILE | --images=DIR) (--bboxes=TRACK | --keypoints=PATH) "
                "--weights=CKPT --out=FEATURES.npz", ("video", *_EXTRACT)),
}  # fmt: skip


def usage(mode: str | None) -> str:
    """The `--help` text of a command: what it does and its own flags, one line each (absl's
    own `--help` lists the flags of `__main__` only, none for a console script)."""
    command, summary, arguments, names = _COMMANDS[mode]
    rows = []
    for name in names:
        flag = flags.FLAGS[name]
        text = flag.help
        if mode in ("predict", "extract"):  # the command's own flags, without the prefix
            text = text.removeprefix("predict: ").removeprefix("extract: ")
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
    lines += [
        "",
        "Library logs (orbax, grain) are hidden: --verbosity=0 (-v 0) shows their INFO lines.",
        "--helpfull also lists absl's and JAX's flags.",
    ]
    return "\n".join(lines)
