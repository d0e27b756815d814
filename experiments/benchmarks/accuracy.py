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

Output in --out_dir: results.md (the tables), results.json (every run's per-video numbers and
the summaries), curves.png (the validation MPJPE of every run against the step, the ridge floor
as a line), runs/<row>/seed<k>/ (workdirs: checkpoints, metrics.jsonl, bench_eval.json).

Resuming: a run's workdir holds bench_run.json (its config, the package version and the source
fingerprint, lmr_jax.reuse.run_identity). A finished run with the same identity is reused; an
unfinished one continues from its last checkpoint (every 200 steps); a run made with another
config or code is moved aside (never deleted) and trained again. Scores are cached per run with
its identity and `SCORING_VERSION`. `--report_only` trains nothing and reports the finished runs
as they are, whatever code made them (results.md names the runs' source fingerprints).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lmr_jax import checkpoints, cli, evaluate, metrics, models, reuse, smpl, train
from lmr_jax.data import pipeline, synthetic
from lmr_jax.models.params import smpl_outputs
from lmr_jax.smpl import COMMON14_PELVIS, VIBE49_TO_COMMON14

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
    Row("Ridge (floor)", "ridge", ""),
)
PARTS = ("root", "head", "left_arm", "right_arm", "left_leg", "right_leg")
HIPS = [VIBE49_TO_COMMON14[i] for i in COMMON14_PELVIS]
RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)

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
    resamples: int = 10_000
    ridge_lambdas: tuple[float, ...] = RIDGE_LAMBDAS  # the penalties tried on validation

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


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def joint_errors(pred_joints: np.ndarray, gt_kp3d: np.ndarray) -> np.ndarray:
    """Per-joint distances (mm) [F, 49] of vibe49 joints, each set centred on its mid hips; NaN
    where the ground truth has confidence 0."""
    centre = lambda j: j - j[:, HIPS].mean(1, keepdims=True)
    gt = np.asarray(gt_kp3d, np.float64)
    pred = np.asarray(pred_joints, np.float64)
    dist = 1000.0 * np.linalg.norm(centre(pred) - centre(gt[..., :3]), axis=-1)
    return np.where(gt[..., 3] > 0, dist, np.nan)


def breakdown(errors: np.ndarray, kp2d: np.ndarray) -> dict[str, list[float]]:
    """Sums and counts ([sum, count]) of joint errors per part and by 2D visibility.

    Args:
      errors: [F, 49] `joint_errors`.
      kp2d: [F, 49, 3] the 2D keypoints the model saw (confidence 0: hidden).
    """
    parts = np.array(synthetic.joint_parts())
    out = {}
    for part in PARTS:
        values = errors[:, parts == part]
        out[part] = [float(np.nansum(values)), int(np.isfinite(values).sum())]
    common = np.asarray(VIBE49_TO_COMMON14)
    seen = kp2d[:, common, 2] > 0
    for name, mask in (("visible", seen), ("hidden", ~seen)):
        values = np.where(mask, errors[:, common], np.nan)
        out[name] = [float(np.nansum(values)), int(np.isfinite(values).sum())]
    return out


def score_videos(apply_fn, videos, body_model, window: int) -> dict:
    """Per-video errors of a model: {vid_name: {MPJPE, PA-MPJPE, Accel: [sum, count], parts and
    visibility: [sum, count]}} (sums and counts, so that pooling over videos is exact)."""
    out = {}
    for video in videos:
        plan = evaluate.frame_plan(len(video["features"]), window, "vibe")
        if not plan.scored.any():
            continue
        pred = evaluate.predict_frames(apply_fn, video["features"], plan)
        labels = {k: np.asarray(video[k])[plan.frames] for k in evaluate.LABEL_FIELDS}
        errors = evaluate.video_errors(pred, labels, body_model, "vibe49")
        row = {k: [float(np.nansum(errors[k])), int(np.isfinite(errors[k]).sum())]
               for k in ("MPJPE", "PA-MPJPE", "Accel")}  # fmt: skip
        per_joint = joint_errors(pred["joints3d"], labels["kp3d"])
        row.update(breakdown(per_joint, np.asarray(video["kp2d"])[plan.frames]))
        out[str(video["vid_name"])] = row
    return out


def score_run(label, config, workdir, identity, settings: Settings) -> dict:
    """{set: score_videos(...)} of a trained run's final parameters (cached in the workdir)."""
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
    scores = {name: score_videos(apply, _videos(config, dataset, "test"), body_model,
                                 config.data.window)
              for name, dataset in settings.test_sets().items()}  # fmt: skip
    with open(cache, "w") as f:
        json.dump({"key": key, "scores": scores, "params": models.count_params(params)}, f)
    return scores


def _videos(config, dataset: str, split: str):
    return pipeline.eval_videos(train.eval_spec(config, dataset, split))


# ---------------------------------------------------------------------------------------------
# The ridge floor
# ---------------------------------------------------------------------------------------------


@jax.jit
def _rot6d(pose: jnp.ndarray) -> jnp.ndarray:
    from lmr_jax import geometry

    rot6d = geometry.matrix_to_rot6d(geometry.pose72_to_rotmats(pose))
    return rot6d.reshape(pose.shape[0], -1)


def ridge_targets(video: dict) -> np.ndarray:
    """[N, 157] regression targets of a video: 6D rotations of the 24 joints, betas, camera
    (the rotations in fixed chunks of frames: one compiled program for every video length)."""
    rot6d = synthetic._chunked(_rot6d, np.asarray(video["pose"], np.float32))
    return np.concatenate([rot6d, video["shape"], video["cam"]], -1)


@jax.jit
def _ridge_forward(body_model, weights, features):
    out = features @ weights[:-1] + weights[-1]
    pose6d = out[..., :144].reshape(*out.shape[:-1], 24, 6)
    result = smpl_outputs(body_model, pose6d[None], out[None, ..., 144:154], out[None, ..., 154:],
                          "vibe49")  # fmt: skip
    return {"joints3d": result["joints3d"], "vertices": result["vertices"]}


def ridge_apply_fn(weights: np.ndarray, body_model):
    """The apply function (windows [W, T, D] -> outputs) of linear weights [D + 1, 157]; one
    compiled program serves every weight matrix of a shape."""
    return functools.partial(_ridge_forward, body_model, jnp.asarray(weights, jnp.float32))


def fit_ridge(config, body_model, lambdas=RIDGE_LAMBDAS) -> tuple[np.ndarray, dict]:
    """Ridge weights [D + 1, 157] on every training frame, the penalty chosen by the MPJPE on the
    validation videos the runs validate on (config.data.eval_max_videos of them).

    Returns: the weights and {lambda: validation MPJPE}."""
    gram, cross = None, None
    for video in _videos(config, config.data.train.synthetic.name, "train"):
        x = np.concatenate([video["features"], np.ones((len(video["features"]), 1))], -1)
        x = x.astype(np.float64)
        y = ridge_targets(video).astype(np.float64)
        gram = x.T @ x if gram is None else gram + x.T @ x
        cross = x.T @ y if cross is None else cross + x.T @ y
    penalty = np.eye(len(gram))
    penalty[-1, -1] = 0.0  # the bias is not penalised
    best, curve = None, {}
    for lam in lambdas:
        weights = np.linalg.solve(gram + lam * penalty, cross)
        results = evaluate.evaluate_videos(
            ridge_apply_fn(weights, body_model), _videos(config, config.data.validation.name,
                                                          "validation"),
            body_model, config.data.window, max_videos=config.data.eval_max_videos,
        )  # fmt: skip
        curve[lam] = results["overall"]["MPJPE"]
        if best is None or curve[lam] < curve[best[0]]:
            best = (lam, weights)
    return best[1], curve


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
    weights, curve = fit_ridge(config, body_model, settings.ridge_lambdas)
    apply = ridge_apply_fn(weights, body_model)
    scores = {name: score_videos(apply, _videos(config, dataset, "test"), body_model,
                                 config.data.window)
              for name, dataset in settings.test_sets().items()}  # fmt: skip
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
# Summaries, intervals, tables, curves
# ---------------------------------------------------------------------------------------------


def pooled(scores: dict, key: str) -> float:
    """The mean over all frames (joints) of every video of one run's `key`."""
    total = sum(v[key][0] for v in scores.values())
    count = sum(v[key][1] for v in scores.values())
    return total / count if count else float("nan")


def per_video(scores: dict, key: str = "MPJPE") -> dict[str, float]:
    return {name: v[key][0] / v[key][1] for name, v in scores.items() if v[key][1]}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """Mean of the paired differences a - b with a 95% percentile bootstrap interval.

    Args:
      a, b: [V] per-video values of two models on the same videos.
      resamples: bootstrap resamples (videos drawn with replacement).

    Returns:
      {'mean', 'low', 'high', 'better' (videos where a < b), 'videos'}.
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[index].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high),
            "better": int((diff < 0).sum()), "videos": len(diff)}  # fmt: skip


def summarize(runs: dict[str, list[dict]], resamples: int) -> dict:
    """Per row and test set: the mean and std over seeds of each metric and breakdown, and LMR's
    paired differences to every other row.

    Args:
      runs: label -> one dict per seed {'scores': {set: per-video scores}, ...}.
    """
    out = {}
    for label, seeds in runs.items():
        row = {}
        for name in seeds[0]["scores"]:
            keys = seeds[0]["scores"][name][next(iter(seeds[0]["scores"][name]))].keys()
            values = {k: [pooled(s["scores"][name], k) for s in seeds] for k in keys}
            row[name] = {k: {"mean": float(np.mean(v)),
                             "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                             "seeds": v} for k, v in values.items()}  # fmt: skip
        out[label] = row
    if "LMR" in runs:
        for label, seeds in runs.items():
            if label == "LMR":
                continue
            out[label]["vs_lmr"] = {}
            for name in seeds[0]["scores"]:
                lmr, other = _seed_mean(runs["LMR"], name), _seed_mean(seeds, name)
                common = sorted(set(lmr) & set(other))
                out[label]["vs_lmr"][name] = paired_bootstrap(
                    np.array([lmr[v] for v in common]), np.array([other[v] for v in common]),
                    resamples,
                )  # fmt: skip
    return out


def _seed_mean(seeds: list[dict], name: str) -> dict[str, float]:
    """Per-video MPJPE averaged over seeds."""
    tables = [per_video(s["scores"][name]) for s in seeds]
    return {v: float(np.mean([t[v] for t in tables])) for v in tables[0]}


def _cell(stat: dict) -> str:
    if np.isnan(stat["mean"]):
        return "-"
    if stat["std"] is None:
        return f"{stat['mean']:.1f}"
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def results_markdown(summary: dict, info: dict[str, dict], settings: Settings) -> str:
    """The tables of results.md."""
    lines = [f"## test ({settings.dataset} test) and shift ({settings.shift} test)",
             "", "Mean ± std over seeds; mm; VIBE's protocol, 14 common joints.", "",
             "Val: the final validation MPJPE (20 videos, mean over seeds) and its change over "
             "the last sixth of the steps (near 0: converged). ms/step: median in-run training "
             "step time (data pipeline included).", "",
             "| Model | Params | Seeds | ms/step | Steps | Val | Val change | MPJPE | PA-MPJPE "
             "| Accel | shift MPJPE | shift PA-MPJPE | shift Accel |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * 6]  # fmt: skip
    for label, row in summary.items():
        i = info[label]
        ms = f"{1000 / i['steps_per_s']:.0f}" if i.get("steps_per_s") else "-"
        keys = ("MPJPE", "PA-MPJPE", "Accel")
        cells = [_cell(row[s][k]) for s in ("test", "shift") for k in keys]
        val = [f"{i[k]:{fmt}}" if k in i else "-"
               for k, fmt in (("val_final", ".1f"), ("val_change", "+.1f"))]  # fmt: skip
        if "ridge" in i:
            val[0] = f"{min(i['ridge']['validation_mpjpe'].values()):.1f}"
        lines.append(f"| {label} | {metrics.format_params(i['params'])} | {i['seeds']} | {ms} | "
                     f"{i.get('steps', '-')} | " + " | ".join(val + cells) + " |")  # fmt: skip
    lines += ["", "## LMR minus each model: per-video MPJPE difference (mm), 95% bootstrap "
              "interval over the videos", "",
              "Negative: LMR better. Per-video MPJPE averaged over each model's seeds first.", "",
              "| Model | test: LMR - model | [95% CI] | LMR better in | shift: LMR - model "
              "| [95% CI] | LMR better in |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, row in summary.items():
        if "vs_lmr" not in row:
            continue
        cells = []
        for name in ("test", "shift"):
            d = row["vs_lmr"][name]
            cells += [f"{d['mean']:+.1f}", f"[{d['low']:+.1f}, {d['high']:+.1f}]",
                      f"{d['better']} / {d['videos']}"]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name in ("test", "shift"):
        lines += ["", f"## MPJPE per body part and by 2D visibility, {name} (mm)", "",
                  "All 49 vibe49 joints by LMR part (centred on the mid hips); visible / hidden: "
                  "the 14 common joints where the 2D keypoint was seen / hidden.", "",
                  "| Model | " + " | ".join(PARTS) + " | visible | hidden |",
                  "|---|" + "---:|" * (len(PARTS) + 2)]  # fmt: skip
        for label, row in summary.items():
            cells = [_cell(row[name][k]) for k in (*PARTS, "visible", "hidden")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, list[list[dict]]], floors: dict[str, float], path: str) -> None:
    """Validation MPJPE against the step of every run (one colour per model, one line per seed)
    and the training loss; `floors` (label -> validation MPJPE) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, seeds), colour in zip(curves.items(), colours, strict=False):
        for k, records in enumerate(seeds):
            val = [(r["step"], r["val_MPJPE"]) for r in records if "val_MPJPE" in r]
            loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
            name = label if k == 0 else None
            if val:
                axes[0].plot(*zip(*val, strict=True), color=colour, alpha=0.85, label=name,
                             marker="o", markersize=2.5)  # fmt: skip
            if loss:
                axes[1].plot(*zip(*loss, strict=True), color=colour, alpha=0.85, label=name)
    for (label, value), colour in zip(floors.items(), colours[len(curves) :], strict=False):
        axes[0].axhline(value, color=colour, linestyle="--", label=label)
    axes[0].set(xlabel="step", ylabel="validation MPJPE (mm)", title="validation (20 videos)")
    axes[1].set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    axes[0].legend(fontsize=8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
                if report_only and not os.path.exists(os.path.join(workdir, "bench_eval.json")):
                    continue
                ridge, scores = run_ridge(config, workdir, settings)
                info = {"params": ridge["params"], "steps": "-", "ridge": ridge}
                results[row.key, 0] = (scores, info, None)
                floors[row.label] = min(ridge["validation_mpjpe"].values())
                continue
            config = run_config(row, seed, *where)
            workdir = os.path.join(out_dir, "runs", row.key, f"seed{seed}")
            label = f"{row.label} (seed {seed})"
            done_file = os.path.join(workdir, "bench_done.json")
            if report_only and not os.path.exists(done_file):
                continue
            if report_only:  # whatever code made it: its fingerprint goes into results.md
                done = json.load(open(done_file))
            else:
                done = ensure_trained(label, config, workdir)
            scores = score_run(label, config, workdir, done["identity"], settings)
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
    summary = summarize(runs, settings.resamples)
    sources = sorted({i["source"] for i in info.values() if "source" in i})
    table = (f"Made by `{command_line(settings)}` at commit {_commit()}; the runs' lmr_jax "
             f"source fingerprint: {', '.join(sources) or '-'}.\n\n")  # fmt: skip
    table += results_markdown(summary, info, settings)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"summary": summary, "info": info, "runs": runs}, f, indent=1)
    plot_curves(curves, floors, os.path.join(out_dir, "curves.png"))
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
    flags.DEFINE_integer("resamples", default.resamples, "Bootstrap resamples.")
    flags.DEFINE_list("ridge_lambdas", [str(v) for v in default.ridge_lambdas],
                      "Ridge penalties tried on validation.")  # fmt: skip


if __name__ == "__main__":
    define_flags()
    app.run(main)
