"""PC-HMR's side-by-side evaluation: a base run's mesh and its serial, parallel and
ground-truth-target calibrations (lmr_jax/calibrated.py) over whole videos, or a trained pchmr
run's (models/pchmr.py) calibrated mesh beside its own uncalibrated one (`evaluate_run`).

Scoring (`evaluate_calibrated`): the evaluation protocols' frames (`evaluate.frame_plan`), and
`evaluate.video_errors` with the 'h36m14' joints (J_regressor_h36m of the vertices, VIBE's 3DPW
joints): a calibrated mesh has vertices only, so every row is scored on joints regressed from
its mesh, the uncalibrated row included. PVE is VIBE's (no translation, no re-centring).

Run: `python -m lmr_jax.calibrated_eval --base=RUN --lifter=LIFTER_RUN --workdir=OUT
--dataset=synthetic_motion/small` (prints the table, writes OUT/eval/calibrated_<split>.{md,json});
the untrained rows are the paper's "w/o Fine-Tune". For a trained pchmr run:
`python -m lmr_jax.calibrated_eval --run=PCHMR_RUN --workdir=OUT --dataset=...` (rows 'base',
the run's fine-tuned base uncalibrated, and 'trained', its calibrated mesh; the video's kp2d or
labels reach the model as its `evaluation_inputs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import jax
import numpy as np

from lmr_jax import evaluate, metrics, smpl
from lmr_jax.calibrated import MODES, calibrate_frames, initial_weights, map_chunks
from lmr_jax.models import lifter as lifter_lib


def evaluate_calibrated(
    apply_fn: Callable,
    videos: Iterable[dict],
    body_model: smpl.SMPLModel,
    window: int,
    lift: Callable | None,
    weights: tuple[np.ndarray, np.ndarray],
    protocol: str = "vibe",
    max_videos: int = 0,
    modes=MODES,
) -> dict[str, dict]:
    """The base run and its calibrated meshes over whole videos (module docstring).

    Args:
      apply_fn: the base run's features [W, T, D] -> outputs (`vertices`, `joints3d`, `cam`).
      videos: whole videos (features, kp2d, and the labels of `evaluate.LABEL_FIELDS`).
      body_model: the body model.
      window: T of the base run.
      lift: the lifter's `lift` (None: only 'gt').
      weights: (W, A) of the calibration.
      protocol: 'vibe' or 'tcmr'.
      max_videos: stop after this many videos (0: all).
      modes: the calibrations to score.

    Returns:
      {row: {'overall': {metric: mm}, 'frames': scored frames}} for rows 'base' and each mode.
    """
    calibrate_fn = jax.jit(lambda pred, labels: calibrate_frames(
        body_model, lift, pred, labels, weights, modes))  # fmt: skip
    pooled: dict[str, dict[str, list]] = {}
    for video, plan in _planned(videos, window, protocol, max_videos):
        pred = evaluate.predict_frames(apply_fn, video["features"], plan)
        fields = (*evaluate.LABEL_FIELDS, "kp2d")
        labels = {k: np.asarray(video[k])[plan.frames] for k in fields}
        meshes = map_chunks(calibrate_fn, pred, labels, evaluate.CHUNK)
        _pool(pooled, meshes, labels, plan, body_model)
    return _summaries(pooled, ("base", *modes), protocol, window)


def _planned(videos: Iterable[dict], window: int, protocol: str, max_videos: int):
    """(video, its frame plan) of the first `max_videos` videos (0: all) that the protocol
    scores."""
    for i, video in enumerate(videos):
        if max_videos and i >= max_videos:
            break
        plan = evaluate.frame_plan(len(video["features"]), window, protocol,
                                   video.get("valid"), video.get("valid_i"))  # fmt: skip
        if plan.scored.any():
            yield video, plan


def _pool(pooled: dict, meshes: dict, labels: dict, plan, body_model) -> None:
    """Adds each row's per-frame errors (h36m14 joints from its mesh) of one video to `pooled`."""
    for row, vertices in meshes.items():
        errors = evaluate.video_errors({"vertices": vertices}, labels, body_model, "h36m14")
        for k, v in errors.items():
            pooled.setdefault(row, {}).setdefault(k, []).append(np.where(plan.scored, v, np.nan))


def _summaries(pooled: dict, rows: tuple[str, ...], protocol: str, window: int) -> dict:
    if not pooled:
        raise ValueError(f"the calibrated evaluation found no video the '{protocol}' protocol "
                         f"scores (videos need at least {window} frames).")  # fmt: skip
    results = {}
    for row in rows:  # the table's order (a jitted dict comes back key-sorted)
        errors = {k: np.concatenate(v) for k, v in pooled[row].items()}
        results[row] = {"overall": metrics.summarize(errors),
                        "frames": int(np.isfinite(errors["MPJPE"]).sum())}  # fmt: skip
    return results


def evaluate_run(model, params, videos: Iterable[dict], body_model: smpl.SMPLModel,
                 window: int, protocol: str = "vibe",
                 max_videos: int = 0) -> dict[str, dict]:  # fmt: skip
    """A trained pchmr model's uncalibrated ('base') and calibrated ('trained') meshes over
    whole videos, scored as `evaluate_calibrated` scores its rows.

    Args:
      model, params: the pchmr model (models/pchmr.py) and its run's parameters.
      videos, body_model, window, protocol, max_videos: as `evaluate_calibrated`.
    """
    from lmr_jax import runner

    apply_fn = runner.make_apply_fn(model, ("vertices_base", "vertices"))
    fields = tuple(model.evaluation_inputs)
    pooled: dict[str, dict[str, list]] = {}
    for video, plan in _planned(videos, window, protocol, max_videos):
        pred = evaluate.predict_frames(lambda f, **x: apply_fn(params, f, **x),
                                       video["features"], plan,
                                       inputs={k: video[k] for k in fields})  # fmt: skip
        labels = {k: np.asarray(video[k])[plan.frames] for k in evaluate.LABEL_FIELDS}
        meshes = {"base": pred["vertices_base"], "trained": pred["vertices"]}
        _pool(pooled, meshes, labels, plan, body_model)
    return _summaries(pooled, ("base", "trained"), protocol, window)


ROW_LABELS = {"base": "base (uncalibrated)", "serial": "serial PC-HMR",
              "parallel": "parallel PC-HMR", "gt": "GT 3D pose (upper bound)",
              "trained": "PC-HMR (fine-tuned)"}  # fmt: skip


def results_table(results: dict[str, dict]) -> str:
    """The markdown table of `evaluate_calibrated`'s rows: MPJPE, PA-MPJPE, PVE (mm), Frames."""
    rows = {ROW_LABELS.get(k, k): {**r["overall"], "Frames": r["frames"]}
            for k, r in results.items()}  # fmt: skip
    return metrics.format_table(rows, ("MPJPE", "PA-MPJPE", "PVE", "Frames"))


def write_results(results: dict, workdir: str, split: str) -> str:
    """Writes WORKDIR/eval/calibrated_<split>.{json,md}; returns the table."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"calibrated_{split}.json"), "w") as f:
        json.dump(results, f, indent=1, allow_nan=True)
    table = results_table(results)
    with open(os.path.join(out_dir, f"calibrated_{split}.md"), "w") as f:
        f.write(table + "\n")
    return table


def run(base: str, lifter_run: str, workdir: str, dataset: str, data_dir: str = "data",
        split: str = "test", max_videos: int = 0, protocol: str = "vibe",
        nonrigid: bool = True) -> str:  # fmt: skip
    """Evaluates a base run's checkpoint and its calibrations on `dataset`'s `split` (whole
    videos); writes the table to `workdir` and returns it."""
    from lmr_jax import predict_io, runner
    from lmr_jax.data import pipeline

    model, params, info = predict_io.load_run(base)
    lifter = lifter_lib.load_lifter(lifter_run)
    body_model = info["body_model"]
    spec = pipeline.DatasetSpec(name=dataset, split=split, data_dir=data_dir or None)
    apply_fn = runner.make_apply_fn(model, ("vertices", "joints3d", "cam"))
    results = evaluate_calibrated(
        lambda f: apply_fn(params, f), pipeline.eval_videos(spec), body_model, info["window"],
        lifter.lift, initial_weights(body_model, nonrigid), protocol, max_videos)  # fmt: skip
    return write_results(results, workdir, split)


def run_trained(run_dir: str, workdir: str, dataset: str, data_dir: str = "data",
                split: str = "test", max_videos: int = 0,
                protocol: str = "vibe") -> str:  # fmt: skip
    """Evaluates a trained pchmr run (`evaluate_run`) on `dataset`'s `split`; writes the table
    to `workdir` and returns it.

    Raises:
      ValueError: one sentence when `run_dir` is not a pchmr run.
    """
    from lmr_jax import predict_io
    from lmr_jax.data import pipeline

    model, params, info = predict_io.load_run(run_dir)
    if info["model_config"].name != "pchmr":
        raise ValueError(f"--run={run_dir} is a run of model '{info['model_config'].name}', "
                         "expected a PC-HMR run (experiments/pchmr.py); pass a base run as "
                         "--base with --lifter.")  # fmt: skip
    spec = pipeline.DatasetSpec(name=dataset, split=split, data_dir=data_dir or None)
    results = evaluate_run(model, params, pipeline.eval_videos(spec), info["body_model"],
                           info["window"], protocol, max_videos)  # fmt: skip
    return write_results(results, workdir, split)


if __name__ == "__main__":
    from absl import app, flags

    from lmr_jax.cli import fail, quiet_logs
    from lmr_jax.data.schema import DatasetError

    _RUN = flags.DEFINE_string("run", None, "A trained pchmr run (instead of --base, --lifter).")
    _BASE = flags.DEFINE_string("base", None, "The base regressor run (its --workdir).")
    _LIFTER = flags.DEFINE_string("lifter", None, "The lifter run (lmr_jax.models.lifter).")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where eval/calibrated_<split>.md goes.")
    _DATASET = flags.DEFINE_string("dataset", "synthetic_motion/standard", "TFDS name.")
    _DATA_DIR = flags.DEFINE_string("data_dir", "data", "TFDS data dir.")
    _SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
    _MAX_VIDEOS = flags.DEFINE_integer("max_videos", 0, "0 = all videos.")
    _PROTOCOL = flags.DEFINE_enum("protocol", "vibe", ["vibe", "tcmr"], "Frame protocol.")
    _NONRIGID = flags.DEFINE_bool("nonrigid", True, "False: the w/o Non-Rigid ablation.")
    flags.mark_flags_as_required(["workdir"])

    def main(argv):
        del argv
        quiet_logs()
        if not _RUN.value and not (_BASE.value and _LIFTER.value):
            fail("pass --run=PCHMR_RUN, or --base=RUN with --lifter=LIFTER_RUN.")
        try:
            if _RUN.value:
                table = run_trained(_RUN.value, _WORKDIR.value, _DATASET.value, _DATA_DIR.value,
                                    _SPLIT.value, _MAX_VIDEOS.value, _PROTOCOL.value)  # fmt: skip
            else:
                table = run(_BASE.value, _LIFTER.value, _WORKDIR.value, _DATASET.value,
                            _DATA_DIR.value, _SPLIT.value, _MAX_VIDEOS.value, _PROTOCOL.value,
                            _NONRIGID.value)  # fmt: skip
        except (ValueError, DatasetError) as error:
            fail(str(error))
        print(f"{_DATASET.value}:{_SPLIT.value}, h36m14 joints from each mesh (mm):")
        print(table)

    app.run(main)
