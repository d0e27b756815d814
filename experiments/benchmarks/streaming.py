"""Latency of streaming inference (predict.Stream) per call and per frame, on this machine.

    python experiments/benchmarks/streaming.py
    python experiments/benchmarks/streaming.py --models=lmr,vibe --chunks=1,4,16 --calls=60

For each model at its default width (models.default_model_config; D = 2048 features, as VIBE's)
and each chunk size, in one run: the compile time of the first call, then the median and 95th
percentile wall time of `Stream.push` over `--calls` calls (the whole output: SMPL mesh of 6890
vertices, 49 joints, 2D keypoints, copied to the host), and the median per frame. Parameters are
random: latency does not depend on their values. A call's cost does not grow with the history
(the recurrent state has a fixed size); the last column checks that by comparing the median of
the last third of the calls with that of the first third.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags

from lmr_jax import predict, smpl
from lmr_jax.models import build_model, default_model_config

_MODELS = flags.DEFINE_list("models", ["lmr", "vibe", "hmr"], "of lmr, vibe, hmr")
_CHUNKS = flags.DEFINE_list("chunks", ["1", "4", "16"], "frames per push")
_CALLS = flags.DEFINE_integer("calls", 60, "timed pushes per model and chunk size")
_FEATURES = flags.DEFINE_integer("features", 2048, "feature width D")


def time_stream(stream: predict.Stream, chunk: int, calls: int) -> dict:
    """Compile time, then per-call wall times of `calls` pushes of `chunk` frames."""
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(calls + 1, chunk, stream.width)).astype(np.float32)
    start = time.perf_counter()
    stream.push(frames[0])
    compile_s = time.perf_counter() - start
    times = []
    for x in frames[1:]:
        start = time.perf_counter()
        stream.push(x)
        times.append(time.perf_counter() - start)
    times = 1e3 * np.asarray(times)
    third = max(len(times) // 3, 1)
    return dict(compile_s=compile_s, median=np.median(times), p95=np.percentile(times, 95),
                drift=np.median(times[-third:]) / np.median(times[:third]))  # fmt: skip


def main(argv):
    del argv
    body = smpl.procedural(0)
    print(f"devices: {jax.devices()}, load average {os.getloadavg()}")
    rows = []
    for name in _MODELS.value:
        model = build_model(default_model_config(name), body)
        x = np.zeros((1, 1, _FEATURES.value), np.float32)
        params = jax.jit(model.init)(jax.random.key(0), x)["params"]
        stream = predict.Stream(model, params)
        for chunk in (int(c) for c in _CHUNKS.value):
            stream.reset()
            r = time_stream(stream, chunk, _CALLS.value)
            per_frame = r["median"] / chunk
            rows.append(f"{name:5} {chunk:5d} {r['compile_s']:9.1f} {r['median']:9.2f} "
                        f"{r['p95']:9.2f} {per_frame:9.2f} {r['drift']:10.2f}")  # fmt: skip
            print(rows[-1], flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    header = (f"{'model':5} {'chunk':>5} {'compile s':>9} {'call ms':>9} {'p95 ms':>9} "
              f"{'frame ms':>9} {'late/early':>10}")  # fmt: skip
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    app.run(main)
