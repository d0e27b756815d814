"""Occlusion robustness, the HKMR paper's Table 1 and Fig. 6 for any run: MPJPE and PA-MPJPE
against the degree of occlusion (DoC) of each occluder kind, averaged over the joints the
occluder is placed on; a markdown table, a JSON file and a figure.

The occluders and the occluded features are lmr_jax/data/occlusion.py's. For every video, the
reference (DoC 0) is the video's stored features; then for every kind, degree 1..5 and occluded
joint, the whole video is re-featurized with that occluder on that joint in every frame and
scored under the run's protocol and joints exactly as `evaluate.evaluate_videos` scores it (the
same frame plan, the same jitted per-frame errors), so DoC 0 is the plain evaluation's MPJPE on
the same videos. A curve's value at a degree is the mean over every (occluded joint, scored
frame) pair, which is the mean over the joints of each joint's MPJPE (every joint is occluded
on the same frames), as the paper averages "over all the joints". 'hidden' is the share of the
observed keypoints (confidence > 0) that the occluders hide, over all frames and placements.
Acceleration errors and PVE are not computed here (the paper's figure shows MPJPE).

Cost: 15 occluded runs of the model per occluded joint and video (3 kinds x 5 degrees), plus
the reference; the windows of several occluded joints share each call of the model.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable

import numpy as np

from lmr_jax import evaluate, metrics, smpl
from lmr_jax.data import occlusion
from lmr_jax.runner import run_windows

OCC_METRICS = ("MPJPE", "PA-MPJPE")
MAX_WINDOWS = 512  # windows per batch of occluded joints (bounds the host memory of a batch)


def frame_errors(pred: dict, labels: dict, body_model: smpl.SMPLModel, joints: str) -> dict:
    """MPJPE and PA-MPJPE [F] (mm, NaN where unlabelled) of predicted frames, through
    `evaluate`'s jitted chunk errors (no PVE, no acceleration).

    Args:
      pred: `joints3d` [F, 49, 3] (and `vertices` [F, 6890, 3] for the 'h36m14' joints).
      labels: the frames' `kp3d` [F, 49, 4] and `has_kp3d` [F].
      body_model: the body model (J_regressor_h36m).
      joints: the joint set, a key of `evaluate.EVAL_JOINTS`.
    """
    selection = evaluate.get_eval_joints(joints)
    slots = np.asarray(selection.gt_slots)
    gt = labels["kp3d"][:, slots, :3]
    conf = labels["kp3d"][:, slots, 3] * labels["has_kp3d"][:, None]
    vertices = pred.get("vertices") if selection.from_vertices else None
    inputs = (None if selection.from_vertices else pred["joints3d"][:, slots], vertices, gt, conf)
    count, size = len(gt), evaluate.CHUNK
    out = {k: [] for k in OCC_METRICS}
    for begin in range(0, count, size):
        part = [None if a is None else evaluate._padded(a[begin : begin + size], size)
                for a in inputs]  # fmt: skip
        _, mpjpe, pa, _, _ = evaluate._chunk_errors(
            body_model, *part, None, None, None, selection=selection, with_pve=False
        )
        out["MPJPE"].append(np.asarray(mpjpe))
        out["PA-MPJPE"].append(np.asarray(pa))
    return {k: np.concatenate(v)[:count] for k, v in out.items()}


def _predict_many(apply_fn, features: list[np.ndarray], plan: evaluate.FramePlan) -> dict:
    """`evaluate.predict_frames` of several feature arrays [N, D] of one video in shared model
    calls: {output: [K * F, ...]}, the K arrays' frames one after the other."""
    windows = np.concatenate([np.asarray(f)[plan.windows] for f in features])
    outputs = run_windows(apply_fn, windows)
    k, w = len(features), len(plan.windows)
    return {
        key: v.reshape(k, w, *v.shape[1:])[:, plan.window_of, plan.offset].reshape(
            k * len(plan.frames), *v.shape[2:]
        )
        for key, v in outputs.items()
    }  # fmt: skip


def _scored_errors(pred: dict, plan: evaluate.FramePlan, video: dict, body_model, joints) -> dict:
    """`frame_errors` of a plan's predicted frames, NaN where the plan does not score."""
    labels = {k: np.asarray(video[k])[plan.frames] for k in ("kp3d", "has_kp3d")}
    errors = frame_errors(pred, labels, body_model, joints)
    return {k: np.where(plan.scored, v, np.nan) for k, v in errors.items()}


class _Sums:
    """Sums and counts of the finite per-frame errors of each (kind, degree, joint) cell."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, key: tuple, errors: dict) -> None:
        for metric, values in errors.items():
            finite = np.isfinite(values)
            cell = (*key, metric)
            self.sums[cell] = self.sums.get(cell, 0.0) + float(np.sum(values[finite]))
            self.counts[cell] = self.counts.get(cell, 0) + int(finite.sum())

    def mean(self, cells: Iterable[tuple]) -> float:
        cells = list(cells)
        count = sum(self.counts.get(c, 0) for c in cells)
        return sum(self.sums.get(c, 0.0) for c in cells) / count if count else float("nan")


def evaluate_occlusion(
    apply_fn: Callable,
    videos: Iterable[tuple[dict, occlusion.Observations]],
    body_model: smpl.SMPLModel,
    window: int,
    protocol: str = "vibe",
    kinds: tuple[str, ...] = occlusion.KINDS,
    occluded: tuple[str, ...] = occlusion.COMMON14_NAMES,
    max_videos: int = 0,
    joints: str = "vibe49",
    seed: int = 0,
) -> dict:
    """Errors against the degree of occlusion (module docstring).

    Args:
      apply_fn: maps features [W, T, D] to `joints3d` (and `vertices` for 'h36m14' joints).
      videos: (video, its observations) pairs: the stored video (features, labels, vid_name,
        flags) and `occlusion.regenerate`'s observations of it.
      body_model: the body model of J_regressor_h36m.
      window: T.
      protocol: 'vibe' or 'tcmr' (`evaluate.frame_plan`).
      kinds: occluder kinds; occluded: names of the joints occluders are placed on.
      max_videos: stop after this many videos (0: all).
      joints: the scored joint set.
      seed: the occluders' draws (`occlusion.occluder_draws`).

    Returns:
      {'reference': {metric: mm}, 'curves': {kind: {'sizes', 'size_name', metric: [DoC 0..5],
      'hidden': [DoC 0..5], 'per_joint': {joint: MPJPE [DoC 1..5]}}}, 'occluded_joints',
      'videos', 'frames' (scored frames per placement), 'protocol', 'joints', 'seed'}.
    """
    sums, hidden, names, frames = _Sums(), {}, [], 0
    for video, obs in videos:
        plan = evaluate.frame_plan(len(video["features"]), window, protocol,
                                   video.get("valid"), video.get("valid_i"))  # fmt: skip
        if not plan.scored.any():
            continue
        names.append(str(video["vid_name"]))
        score = functools.partial(_scored_errors, plan=plan, video=video, body_model=body_model,
                                  joints=joints)  # fmt: skip
        reference = score(evaluate.predict_frames(apply_fn, video["features"], plan))
        sums.add(("reference",), reference)
        frames += int(np.isfinite(reference["MPJPE"]).sum())
        seen = obs.kp2d[..., 2] > 0
        per_batch = max(1, MAX_WINDOWS // len(plan.windows))
        for kind, degree in itertools.product(kinds, occlusion.DEGREES):
            for start in range(0, len(occluded), per_batch):
                batch = occluded[start : start + per_batch]
                kp2d = [obs.occluded_kp2d(kind, degree, j, seed) for j in batch]
                pred = _predict_many(apply_fn, [obs.features(k) for k in kp2d], plan)
                for i, joint in enumerate(batch):
                    part = slice(i * len(plan.frames), (i + 1) * len(plan.frames))
                    sums.add((kind, degree, joint), score({k: v[part] for k, v in pred.items()}))
                    cell = hidden.setdefault((kind, degree), [0, 0])
                    cell[0] += int((seen & (kp2d[i][..., 2] == 0)).sum())
                    cell[1] += int(seen.sum())
        if max_videos and len(names) >= max_videos:
            break
    if not names:
        raise ValueError(f"occlusion evaluation found no video the '{protocol}' protocol "
                         f"scores (videos need at least {window} frames).")  # fmt: skip
    ref = {m: sums.mean([("reference", m)]) for m in OCC_METRICS}
    curves = {}
    for kind in kinds:
        curve = {"sizes": [0.0, *occlusion.SIZES[kind]], "size_name": occlusion.SIZE_NAMES[kind]}
        for m in OCC_METRICS:
            curve[m] = [ref[m]] + [sums.mean([(kind, d, j, m) for j in occluded])
                                   for d in occlusion.DEGREES]  # fmt: skip
        curve["hidden"] = [0.0] + [hidden[(kind, d)][0] / max(hidden[(kind, d)][1], 1)
                                   for d in occlusion.DEGREES]  # fmt: skip
        curve["per_joint"] = {j: [sums.mean([(kind, d, j, "MPJPE")]) for d in occlusion.DEGREES]
                              for j in occluded}  # fmt: skip
        curves[kind] = curve
    return {"reference": ref, "curves": curves, "occluded_joints": list(occluded),
            "videos": len(names), "video_names": names, "frames": frames,
            "protocol": protocol, "joints": joints, "seed": seed}  # fmt: skip


def occlusion_table(runs: dict[str, dict], metric: str = "MPJPE") -> str:
    """The markdown table of several runs' occlusion results (label -> results): one row per
    run and kind, `metric` (mm) at DoC 0..5, then the occluder sizes of each kind."""
    columns = [f"DoC {d}" for d in (0, *occlusion.DEGREES)]
    rows = {}
    for label, results in runs.items():
        for kind, curve in results["curves"].items():
            rows[f"{label}, {kind}"] = dict(zip(columns, curve[metric], strict=True))
    kinds = dict.fromkeys(k for r in runs.values() for k in r["curves"])
    sizes = "; ".join(
        f"{kind} {occlusion.SIZE_NAMES[kind]} " + ", ".join(f"{s:g}" for s in occlusion.SIZES[kind])
        for kind in kinds
    )
    return f"{metric} (mm)\n\n{metrics.format_table(rows, columns)}\n\nDoC 1..5: {sizes}."


def write_occlusion_results(results: dict, workdir: str, label: str) -> str:
    """Writes workdir/occlusion/results.json (with the model's `label`) and results.md (MPJPE
    and PA-MPJPE tables); returns the markdown."""
    out_dir = os.path.join(workdir, "occlusion")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({**results, "label": label}, f, indent=1, allow_nan=True)
    text = "\n\n".join(occlusion_table({label: results}, m) for m in OCC_METRICS)
    hidden = "; ".join(f"{k} " + ", ".join(f"{h:.0%}" for h in c["hidden"][1:])
                       for k, c in results["curves"].items())  # fmt: skip
    text += (f"\n\nKeypoints hidden at DoC 1..5: {hidden}. {results['videos']} videos, "
             f"{results['frames']} scored frames, occluders on "
             f"{len(results['occluded_joints'])} joints.")  # fmt: skip
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    return text


def read_occlusion_results(workdir: str) -> dict:
    """workdir/occlusion/results.json; ValueError (one sentence) when there is none."""
    path = os.path.join(workdir, "occlusion", "results.json")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist; run --mode=eval --config.eval.occlusion=all "
                         "on that run first.")  # fmt: skip
    with open(path) as f:
        return json.load(f)
