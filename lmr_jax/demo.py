"""`make demo`: LMR, its single-RNN ablation and the VIBE-style baseline, trained and compared on
the embedded synthetic dataset, on this machine, with nothing downloaded.

    python -m lmr_jax.demo --data_dir=data --out_dir=out/demo

Steps (each prints what it did):
  1. builds synthetic_motion/small (TFDS, array_record) unless it is already there;
  2. trains each model with its experiment's `cpu` variant (a few minutes each on 2 cores) and
     evaluates it on the test split (workdirs under --out_dir; a finished run is reused only
     when it was made with the same config, package version and source, else moved aside);
  3. prints one comparison table (MPJPE, PA-MPJPE, PVE, Accel in mm, the scored frames and
     the parameter counts) and writes it to results.md, with each run's training curves
     (plots/curves.png) and LMR's pictures of a test video: ground truth above the prediction
     with the 2D keypoints and the per-frame error under the frames (test_video.png, and
     test_video.gif of the whole video).
"""

from __future__ import annotations

import json
import os
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lmr_jax import checkpoints, cli, evaluate, reuse, train, visualize
from lmr_jax import config as config_lib
from lmr_jax.data import build, pipeline

_OUT_DIR = flags.DEFINE_string("out_dir", "out/demo", "Where workdirs, tables and pictures go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where TFDS datasets are built.")
_STEPS = flags.DEFINE_integer(
    "steps", None, "Training steps per model (default: the cpu variant's)."
)

DATASET = "synthetic_motion/small"
CAVEAT = (
    "Short runs (one seed, a few hundred steps on synthetic_motion/small; the whole demo takes "
    "about 7 minutes on 2 cores), far from converged: not a comparison of the models. The "
    "comparison of converged runs with several seeds and intervals is the benchmark table in "
    "README.md (experiments/benchmarks/accuracy.py)."
)


def demo_configs() -> dict:
    """The three compared runs: the `cpu` variants of their experiment files."""
    lmr = config_lib.cpu(config_lib.base_config("lmr"))
    single = config_lib.cpu(config_lib.base_config("lmr"))
    single.model.single_rnn = True
    vibe = config_lib.cpu(config_lib.base_config("vibe"))
    return {"LMR": lmr, "Single RNN": single, "VIBE-style": vibe}


def run_model(label: str, config, workdir: str) -> dict:
    """Trains and evaluates one model, or reads the results of a finished run made with the
    same config and code (`reuse.run_identity`); a run made otherwise is moved aside, not
    deleted."""
    results_file = os.path.join(workdir, "eval", f"{config.eval.split}.json")
    identity_file = os.path.join(workdir, "demo_run.json")
    identity = reuse.run_identity(config)
    if os.path.exists(results_file) and os.path.exists(identity_file):
        with open(identity_file) as f:
            if json.load(f) == identity:
                print(f"[2] {label}: finished run found in {workdir}, not retrained")
                with open(results_file) as f:
                    return json.load(f)
    if os.path.exists(workdir):
        aside = reuse.set_aside(workdir)
        print(f"[2] {label}: the run in {workdir} was made with another config or code; "
              f"moved to {aside}")  # fmt: skip
    start = time.perf_counter()
    print(f"[2] {label}: training {config.train.num_steps} steps in {workdir}", flush=True)
    results = train.train_and_evaluate(config, workdir)
    with open(identity_file, "w") as f:
        json.dump(identity, f, indent=1)
    print(f"    {label}: trained and evaluated in {(time.perf_counter() - start) / 60:.1f} min")
    return results


def test_video_pictures(config, workdir: str, path: str, num_frames: int = 6) -> list[str]:
    """Ground truth (orange) above the prediction (blue) on the first test video, with the 2D
    keypoints and the per-frame MPJPE under the frames: a PNG at `path` and a GIF beside it.

    The whole video is predicted as `lmr-predict` does (overlapping windows, stitched)."""
    from lmr_jax import geometry, models, predict, smpl

    body_model = smpl.resolve(config.smpl_path or None)
    model = models.build_model(config.model, body_model)
    params = checkpoints.restore_params(workdir)
    spec = train.eval_spec(config, config.eval.name, config.eval.split)
    video = next(pipeline.eval_videos(spec))
    result = predict.predict_sequence(model, params, body_model, video["features"],
                                      config.data.window)  # fmt: skip
    pred = {"joints3d": result["joints_vibe49"], "vertices": result["vertices"]}
    errors = evaluate.video_errors(pred, video, body_model)["MPJPE"]
    rotmats = geometry.pose72_to_rotmats(jnp.asarray(video["pose"]))
    gt_vertices, _ = smpl.forward(body_model, jnp.asarray(video["shape"]), rotmats)
    n = len(errors)
    args = (np.asarray(gt_vertices), result["vertices"], np.asarray(body_model.faces))
    kwargs = dict(gt_cams=video["cam"], pred_cams=result["cam"], kp2d_gt=video["kp2d"],
                  kp2d_pred=result["kp2d"], errors=errors)  # fmt: skip
    frames = np.linspace(0, n - 1, num_frames).round().astype(int)
    visualize.video_figure(path, *args, frames=frames, **kwargs)
    gif = os.path.splitext(path)[0] + ".gif"
    visualize.video_gif(gif, *args, frames=range(0, n, 2), **kwargs)
    return [path, gif]


def main(argv):
    del argv
    cli.quiet_logs()  # the demo prints its own progress lines (--verbosity for library logs)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    out_dir = os.path.abspath(_OUT_DIR.value)
    data_dir = os.path.abspath(_DATA_DIR.value)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    builder = build.build(DATASET, data_dir)
    splits = ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items())
    print(f"[1] {DATASET} ready in {builder.data_dir}: {splits} videos "
          f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip

    rows, configs = {}, demo_configs()
    for label, config in configs.items():
        config.data.data_dir = data_dir
        if _STEPS.value:
            config.train.num_steps = _STEPS.value
        workdir = os.path.join(out_dir, label.lower().replace(" ", "_").replace("-", "_"))
        rows[label] = run_model(label, config, workdir)
        configs[label] = (config, workdir)

    table = evaluate.results_table(rows) + "\n\n" + CAVEAT
    print(f"\n[3] test split of {DATASET} ({configs['LMR'][0].eval.protocol} protocol, mm):")
    print(table)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    pictures = test_video_pictures(*configs["LMR"], os.path.join(out_dir, "test_video.png"))
    print(f"    table -> {out_dir}/results.md; curves -> {out_dir}/*/plots/curves.png; "
          f"pictures -> {' and '.join(pictures)}")  # fmt: skip
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min")


def run() -> None:
    """Console script `lmr-demo`."""
    app.run(main)


if __name__ == "__main__":
    run()
