"""The accuracy benchmark: every model trained on synthetic_motion/standard with one budget rule,
several seeds, scored on the test split and on a distribution-shift test set, with intervals.

    .venv/bin/python -m lmr_jax.data.build synthetic_motion/standard --data_dir=data
    .venv/bin/python -m lmr_jax.data.build synthetic_motion/shift --data_dir=data
    .venv/bin/python experiments/benchmarks/accuracy.py --data_dir=data --out_dir=out/bench

Rows (`ROWS`): LMR, its no-root and single-RNN ablations (the single RNN at equal width and
parameter-matched), the VIBE-style baseline and per-frame HMR, each the `bench` variant of its
experiment file (lmr_jax.config.bench: hidden 128, batch 32, 1,200 steps, Adam 1e-3 with
warm-up and cosine decay; the same rule for every model), and a ridge regression from the frame
features to the SMPL parameters (6D rotations, shape, camera) as a floor. A model that joins
later adds its row to `ROWS`. Seeds: `--seeds` (default 3) for LMR and its ablations,
`--baseline_seeds` (default 1) for the others.

Scoring: VIBE's protocol (windows of T at stride T) on the 14 common joints centred on the mid
hips (MPJPE, PA-MPJPE, Accel as lmr_jax.evaluate computes them), on
- `test`: synthetic_motion/standard test (60 videos, the training generator's motion), and
- `shift`: synthetic_motion/shift test (60 videos of whole-body coordinated routines,
  lmr_jax/data/coordinated.py, observed and featurized the same way).
Breakdowns: MPJPE per body part over all 49 vibe49 joints, each joint in the LMR part it
belongs to (lmr_jax.data.synthetic.joint_parts), centred on the mid hips; MPJPE of the 14 common
joints where their 2D keypoint was hidden (occluded or outside the crop) and where it was seen.
For LMR against every other row: the per-video MPJPE difference (each model's per-video MPJPE
averaged over its seeds), its mean and a 95% percentile bootstrap interval over the videos
(10,000 resamples), and in how many videos LMR is better.

The scoring and the ridge floor live in accuracy_scoring.py beside this file, the summaries,
tables and curves in accuracy_tables.py.

Output in --out_dir: results.md (the tables), results.json (every run's per-video numbers and
the summaries), curves.png (the validation MPJPE of every run against the step, the ridge floor
as a line), runs/<row>/seed<k>/ (workdirs: checkpoints, metrics.jsonl, bench_eval.json).

Resuming: a run's workdir holds bench_run.json (its config, the package version and the source
fingerprint, lmr_jax.reuse.run_identity). A finished run with the same identity is reused; an
unfinished one continues from its last checkpoint (every 200 steps); a run made with another
config or code is moved aside (never deleted) and trained again. Scores are cached per run with
its identity and `SCORING_VERSION`. `--record_dir` keeps a copy of every finished run's
small files (identity, log, scores; no checkpoint) and restores them into a new --out_dir: a
table can be made over several sessions or machines (with the same code and data), and the
records can be committed. `--report_only` trains nothing and reports the finished runs
as they are, whatever code made them (results.md names the runs' source fingerprints).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags

from lmr_jax import checkpoints, cli, models, reuse, smpl, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the two modules beside this one
import accuracy_scoring as scoring  # noqa: E402
import accuracy_tables as tables  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Row:
    """One model of the comparison.

    Attributes:
      label: its name in the tables.
      key: short name (--models, folder names).
      experiment: its experiment file under experiments/ ('' for the ridge floor).
      suffix: appended to the variant's name ('_matched': bench_matched).
      ablation: LMR or one of its ablations (run with --seeds, else --baseline_seeds).
    """

    label: str
    key: str
    experiment: str
    suffix: str = ""
    ablation: bool = False


ROWS = (
    Row("LMR", "lmr", "lmr_synthetic.py", ablation=True),
    Row("LMR no root", "no_root", "ablation_no_root.py", ablation=True),
    Row("Single RNN", "single_rnn", "ablation_single_rnn.py", ablation=True),
    Row("Single RNN, matched", "single_rnn_matched", "ablation_single_rnn.py", "_matched", True),
    Row("VIBE-style", "vibe", "vibe_baseline.py"),
    Row("HMR per frame", "hmr", "hmr_framewise.py"),
    Row("HKMR", "hkmr", "hkmr.py"),  # bench variant: no pose prior, so no L_KL
    Row("DSD", "dsd", "dsd.py"),
    # bench variant: DSD trained jointly from the seed (finetune_dsd): a row cannot start from
    # another row's run, so SATN's is not the paper's two stages.
    Row("SATN", "satn", "satn.py"),
    Row("Ridge (floor)", "ridge", ""),
)

# Scores are cached with the run's identity and this number: raise it when a change to the
# scoring (score_videos, joint_errors, breakdown, the ridge floor) must re-score finished runs.
SCORING_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run (the command-line flags of `main`)."""

    data_dir: str = "data"
    out_dir: str = "out/bench"
    models: tuple[str, ...] = tuple(r.key for r in ROWS)
    seeds: int = 3  # LMR and its ablations
    baseline_seeds: int = 1  # the other models
    variant: str = "bench"
    steps: int = 0  # > 0: the schedule scaled to this many steps (a budget check)
    lr: float = 0.0  # > 0: another peak learning rate (a schedule check on validation)
    dataset: str = "synthetic_motion/standard"  # train, validation, test
    shift: str = "synthetic_motion/shift"  # its test split
    report_only: bool = False
    record_dir: str = ""  # finished runs' small files are copied here and restored from here
    resamples: int = 10_000
    ridge_lambdas: tuple[float, ...] = scoring.RIDGE_LAMBDAS  # the penalties tried on validation

    def test_sets(self) -> dict[str, str]:
        return {"test": self.dataset, "shift": self.shift}


def load_experiment(path: str, variant: str):
    """The config of an experiment file's variant (as `--config=path:variant`)."""
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def run_config(
    row: Row, seed: int, variant: str, dataset: str, data_dir: str, steps: int = 0,
    lr: float = 0.0,
):  # fmt: skip
    """The config of one run: the row's experiment file at `variant`, trained and validated on
    `dataset`; `steps` > 0 scales the schedule (steps, warm-up, validation and checkpoint
    periods) to that many steps, `lr` > 0 replaces the peak learning rate."""
    path = os.path.join(ROOT, "experiments", row.experiment)
    config = load_experiment(path, variant + row.suffix)
    if lr:
        config.optim.lr = lr
    if steps:
        scale = steps / config.train.num_steps
        config.train.num_steps = steps
        config.optim.warmup_steps = round(config.optim.warmup_steps * scale)
        for period in ("eval_every", "checkpoint_every", "log_every"):
            if config.train[period] > 0:  # 0 (off) stays off
                config.train[period] = max(1, round(config.train[period] * scale))
    config.seed = seed
    config.data.data_dir = data_dir
    for source in config.data.train.values():
        source.name = dataset
    config.data.validation.name = config.eval.name = dataset
    config.eval.split = ""  # the driver scores the runs itself (`score_run`)
    return config


RECORD_FILES = ("bench_run.json", "bench_done.json", "bench_eval.json", "metrics.jsonl")


def restore_record(record: str, workdir: str) -> bool:
    """Copies a finished run's record (RECORD_FILES, no checkpoint) into `workdir` when the
    workdir does not exist yet; returns whether it did. `ensure_trained` then reuses it only if
    its identity matches, and `score_run` reads its cached scores."""
    present = [os.path.exists(os.path.join(record, name)) for name in RECORD_FILES]
    if not record or os.path.exists(workdir) or not any(present):
        return False
    os.makedirs(workdir)
    for name, there in zip(RECORD_FILES, present, strict=True):
        if there:
            shutil.copy(os.path.join(record, name), workdir)
    return True


def save_record(workdir: str, record: str) -> None:
    """Copies a finished, scored run's RECORD_FILES from `workdir` to `record` (if set)."""
    if not record:
        return
    os.makedirs(record, exist_ok=True)
    for name in RECORD_FILES:
        if os.path.exists(os.path.join(workdir, name)):
            shutil.copy(os.path.join(workdir, name), record)


def _median_rate(workdir: str) -> float:
    """The median training steps/s of a run's log rows after the first (which holds compiling)."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    rates = [r["steps_per_s"] for r in rows if "steps_per_s" in r][1:]
    return statistics.median(rates) if rates else float("nan")


def ensure_trained(label: str, config, workdir: str) -> dict:
    """Trains a run, continues a stopped one, or reuses a finished one (module docstring).

    Returns: {'identity', 'steps_per_s', 'train_seconds'} (seconds of this call's training)."""
    identity = reuse.run_identity(config)
    id_file = os.path.join(workdir, "bench_run.json")
    done_file = os.path.join(workdir, "bench_done.json")
    same = os.path.exists(id_file) and json.load(open(id_file)) == identity
    if same and os.path.exists(done_file):
        print(f"{label}: finished run found in {workdir}, not retrained", flush=True)
        return json.load(open(done_file))
    if os.path.exists(workdir) and not same:
        aside = reuse.set_aside(workdir)
        print(f"{label}: the run in {workdir} was made with another config or code; moved to "
              f"{aside}", flush=True)  # fmt: skip
    if same:
        print(f"{label}: continuing the stopped run in {workdir}", flush=True)
    os.makedirs(workdir, exist_ok=True)
    with open(id_file, "w") as f:
        json.dump(identity, f, indent=1)
    print(f"{label}: training {config.train.num_steps} steps in {workdir}", flush=True)
    start = time.perf_counter()
    train.train(config, workdir)
    done = {"identity": identity, "steps_per_s": _median_rate(workdir),
            "train_seconds": time.perf_counter() - start}  # fmt: skip
    with open(done_file, "w") as f:
        json.dump(done, f, indent=1)
    return done


def score_run(label, config, workdir, identity, settings: Settings) -> dict:
    """{set: per-video scores} of a trained run's final parameters (cached in the workdir)."""
    cache = os.path.join(workdir, "bench_eval.json")
    key = {"identity": identity, "scoring": SCORING_VERSION, "sets": settings.test_sets()}
    if os.path.exists(cache):
        saved = json.load(open(cache))
        if saved["key"] == key:
            return saved["scores"]
    print(f"{label}: scoring {', '.join(settings.test_sets())}", flush=True)
    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    params = jax.device_put(checkpoints.restore_params(workdir), jax.local_devices()[0])
    apply = functools.partial(train.make_apply_fn(model), params)
    scores = score_sets(apply, config, body_model, settings)
    with open(cache, "w") as f:
        json.dump({"key": key, "scores": scores, "params": models.count_params(params)}, f)
    return scores


def score_sets(apply_fn, config, body_model, settings: Settings) -> dict:
    """{set: per-video scores} of an apply function on every test set of `settings`."""
    return {name: scoring.score_videos(apply_fn, scoring.split_videos(config, dataset, "test"),
                                       body_model, config.data.window)
            for name, dataset in settings.test_sets().items()}  # fmt: skip


def run_ridge(config, workdir: str, settings: Settings) -> tuple[dict, dict]:
    """Fits (or reuses) the ridge floor and scores it; returns (info, scores)."""
    identity = {**reuse.run_identity(config), "scoring": SCORING_VERSION,
                "sets": settings.test_sets(), "lambdas": list(settings.ridge_lambdas)}  # fmt: skip
    cache = os.path.join(workdir, "bench_eval.json")
    if os.path.exists(cache):
        saved = json.load(open(cache))
        if saved["key"] == identity or settings.report_only:
            print(f"Ridge: finished run found in {workdir}, not refitted", flush=True)
            return saved["info"], saved["scores"]
    print("Ridge: fitting on the training frames", flush=True)
    start = time.perf_counter()
    body_model = smpl.resolve(config.smpl_path or None)
    weights, curve = scoring.fit_ridge(config, body_model, settings.ridge_lambdas)
    apply = scoring.ridge_apply_fn(weights, body_model)
    scores = score_sets(apply, config, body_model, settings)
    info = {
        "validation_mpjpe": {str(k): v for k, v in curve.items()},
        "params": int(weights.size),
        "fit_seconds": time.perf_counter() - start,
    }
    os.makedirs(workdir, exist_ok=True)
    with open(cache, "w") as f:
        json.dump({"key": identity, "info": info, "scores": scores}, f)
    return info, scores


# ---------------------------------------------------------------------------------------------


def run_rows(settings: Settings) -> tuple[dict, dict, dict, dict]:
    """Trains (unless report_only) and scores every run, seed 0 of every row first, then seed 1,
    ...; returns (runs, info, curves, floors), rows in `rows` order."""
    known = {r.key: r for r in ROWS}
    rows = [known[k] for k in settings.models]
    out_dir, report_only = os.path.abspath(settings.out_dir), settings.report_only
    results = {}  # (row key, seed) -> (scores, info, metrics log)
    seeds_of = {r.key: settings.seeds if r.ablation else settings.baseline_seeds for r in rows}
    where = (settings.variant, settings.dataset, settings.data_dir, settings.steps, settings.lr)
    floors = {}
    for seed in range(max(seeds_of.values())):
        for row in rows:
            if seed >= seeds_of[row.key] or (not row.experiment and seed > 0):
                continue
            if not row.experiment:
                config = run_config(ROWS[0], 0, *where)
                workdir = os.path.join(out_dir, "runs", row.key)
                record = os.path.join(settings.record_dir, row.key) if settings.record_dir else ""
                restore_record(record, workdir)
                if report_only and not os.path.exists(os.path.join(workdir, "bench_eval.json")):
                    continue
                ridge, scores = run_ridge(config, workdir, settings)
                save_record(workdir, record)
                info = {"params": ridge["params"], "steps": "-", "ridge": ridge}
                results[row.key, 0] = (scores, info, None)
                floors[row.label] = min(ridge["validation_mpjpe"].values())
                continue
            config = run_config(row, seed, *where)
            workdir = os.path.join(out_dir, "runs", row.key, f"seed{seed}")
            label = f"{row.label} (seed {seed})"
            done_file = os.path.join(workdir, "bench_done.json")
            record = settings.record_dir and os.path.join(
                settings.record_dir, row.key, f"seed{seed}"
            )
            if restore_record(record, workdir):
                print(f"{label}: restored its record from {record}", flush=True)
            if report_only and not os.path.exists(done_file):
                continue
            if report_only:  # whatever code made it: its fingerprint goes into results.md
                done = json.load(open(done_file))
            else:
                done = ensure_trained(label, config, workdir)
            scores = score_run(label, config, workdir, done["identity"], settings)
            save_record(workdir, record)
            params = json.load(open(os.path.join(workdir, "bench_eval.json")))["params"]
            info = {"params": params, "steps": config.train.num_steps,
                    "steps_per_s": done["steps_per_s"],
                    "source": done["identity"]["source"][:12]}  # fmt: skip
            log = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
            info.update(convergence(log, config.train.num_steps))
            results[row.key, seed] = (scores, info, log)
    runs, info, curves = {}, {}, {}
    for row in rows:
        mine = sorted((seed, r) for (key, seed), r in results.items() if key == row.key)
        if not mine:
            continue
        runs[row.label] = [{"seed": seed, "scores": r[0]} for seed, r in mine]
        rates = [r[1]["steps_per_s"] for _, r in mine if "steps_per_s" in r[1]]
        info[row.label] = {**mine[0][1][1], "seeds": len(mine)}
        for key in ("val_final", "val_change"):
            if key in mine[0][1][1]:
                info[row.label][key] = float(np.mean([r[1][key] for _, r in mine]))
        if rates:
            info[row.label]["steps_per_s"] = float(np.median(rates))
        if mine[0][1][2] is not None:
            curves[row.label] = [r[2] for _, r in mine]
    return runs, info, curves, floors


def convergence(log: list[dict], num_steps: int) -> dict:
    """The final validation MPJPE of a run and its change over the last sixth of the steps
    (final minus the last validation at or before 5/6 of them): near 0 on a plateau."""
    val = [(r["step"], r["val_MPJPE"]) for r in log if "val_MPJPE" in r]
    if not val:
        return {}
    before = [v for step, v in val if step <= num_steps * 5 / 6]
    change = val[-1][1] - before[-1] if before else float("nan")
    return {"val_final": val[-1][1], "val_change": change}


def run(settings: Settings) -> str:
    """Runs the benchmark; writes results.md, results.json and curves.png; returns the tables.

    Raises:
      ValueError: an unknown model key, or no finished run to report.
    """
    known = [r.key for r in ROWS]
    unknown = [k for k in settings.models if k not in known]
    if unknown:
        raise ValueError(f"--models names '{unknown[0]}', expected keys of {tuple(known)}.")
    runs, info, curves, floors = run_rows(settings)
    out_dir = os.path.abspath(settings.out_dir)
    if not runs:
        raise ValueError(f"no finished run in {out_dir}, expected at least one (run without "
                         "--report_only first).")  # fmt: skip
    summary = tables.summarize(runs, settings.resamples)
    sources = sorted({i["source"] for i in info.values() if "source" in i})
    table = (f"Made by `{command_line(settings)}` at commit {_commit()}; the runs' lmr_jax "
             f"source fingerprint: {', '.join(sources) or '-'}.\n\n")  # fmt: skip
    table += tables.results_markdown(summary, info, settings.test_sets())
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"summary": summary, "info": info, "runs": runs}, f, indent=1)
    tables.plot_curves(curves, floors, os.path.join(out_dir, "curves.png"))
    return table


def command_line(settings: Settings) -> str:
    """The command that reproduces `settings` (flags that differ from the defaults)."""
    default = Settings()
    parts = ["experiments/benchmarks/accuracy.py"]
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value != getattr(default, field.name):
            value = ",".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"--{field.name}={value}")
    return " ".join(parts)


def _commit() -> str:
    """The git commit of this checkout (with '+changes' when the tree differs from it)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--", "lmr_jax", "tfds_builders", "experiments").strip()
    return head + ("+changes" if dirty else "")


def main(argv):
    del argv
    cli.quiet_logs()
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    values = {f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(Settings)}
    values["models"] = tuple(values["models"])
    values["ridge_lambdas"] = tuple(float(v) for v in values["ridge_lambdas"])
    start = time.perf_counter()
    try:
        table = run(Settings(**values))
    except ValueError as error:
        cli.fail(str(error))
    print(table)
    print(f"wrote {os.path.abspath(values['out_dir'])}/results.md, results.json and curves.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")  # fmt: skip


def define_flags() -> None:
    """The command line: one flag per `Settings` field, with its default."""
    default = Settings()
    flags.DEFINE_string("data_dir", default.data_dir, "Where the TFDS datasets are built.")
    flags.DEFINE_string("out_dir", default.out_dir, "Workdirs, tables and pictures.")
    flags.DEFINE_list("models", list(default.models), "Rows to run, of ROWS' keys.")
    flags.DEFINE_integer("seeds", default.seeds, "Seeds of LMR and its ablations.")
    flags.DEFINE_integer("baseline_seeds", default.baseline_seeds, "Seeds of the other models.")
    flags.DEFINE_string("variant", default.variant, "The experiment files' variant.")
    flags.DEFINE_integer("steps", default.steps, "> 0: scale the schedule to this many steps.")
    flags.DEFINE_float("lr", default.lr, "> 0: another peak learning rate.")
    flags.DEFINE_string("dataset", default.dataset, "Train, validation and test dataset.")
    flags.DEFINE_string("shift", default.shift, "The distribution-shift test set (its test split).")
    flags.DEFINE_bool("report_only", default.report_only, "Train nothing; report finished runs.")
    flags.DEFINE_string("record_dir", default.record_dir,
                        "Copy finished runs' records here; restore them from here.")  # fmt: skip
    flags.DEFINE_integer("resamples", default.resamples, "Bootstrap resamples.")
    flags.DEFINE_list("ridge_lambdas", [str(v) for v in default.ridge_lambdas],
                      "Ridge penalties tried on validation.")  # fmt: skip


if __name__ == "__main__":
    define_flags()
    app.run(main)
