"""Summaries and tables of the accuracy benchmark (experiments/benchmarks/accuracy.py): means and
standard deviations over seeds, LMR's paired per-video differences with bootstrap intervals,
results.md and the validation curves.
"""

from __future__ import annotations

import os

import numpy as np
from accuracy_scoring import PARTS

from lmr_jax import metrics


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


def results_markdown(summary: dict, info: dict[str, dict], sets: dict[str, str]) -> str:
    """The tables of results.md; `sets`: {'test': dataset, 'shift': dataset}."""
    lines = [f"## test ({sets['test']} test) and shift ({sets['shift']} test)",
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
