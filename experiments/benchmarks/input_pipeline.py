"""Input pipeline throughput beside the training step it feeds.

    python experiments/benchmarks/input_pipeline.py --data_dir=data   # after `make setup`
    python experiments/benchmarks/input_pipeline.py --data_dir=data \
        --dataset=synthetic_motion/small --threads=1,2,4 --train_step=false

Builds nothing: the dataset must exist (`python -m lmr_jax.data.build synthetic_motion/standard
--data_dir=data`). For each number of reading threads it times `train_dataset` alone at the
paper's batch (32 windows x 16 frames x 2048 features, all on one device axis), without and
with the cache of decoded videos (filled for --warmup seconds first): batches/s after the first
batch, windows/s and MiB/s of batch arrays. Then (unless --train_step=false) it times
the LMR training step of `lmr_jax.config.base_config('lmr')` at the same batch on one fixed
batch (the step alone), and fed by the pipeline (the loop as `train.py` runs it), so one can
see whether the pipeline keeps ahead of the step on this machine.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import app, flags

from lmr_jax import optim as optim_lib
from lmr_jax.data import pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "TFDS data directory")
_DATASET = flags.DEFINE_string("dataset", "synthetic_motion/standard", "dataset/config to read")
_SPLIT = flags.DEFINE_string("split", "train", "split to read")
_BATCH = flags.DEFINE_integer("batch", 32, "global batch (windows)")
_WINDOW = flags.DEFINE_integer("window", 16, "frames per window")
_STRIDE = flags.DEFINE_integer("stride", 4, "frames between window starts")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "reading threads to try")
_CACHE_MIB = flags.DEFINE_list("cache_mib", ["0", "1024"], "video cache sizes to try (MiB)")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "seconds timed per pipeline measurement")
_WARMUP = flags.DEFINE_float("warmup", 15.0, "seconds of reading before timing a cached run")
_TRAIN_STEP = flags.DEFINE_bool("train_step", True, "also time the LMR training step")
_STEPS = flags.DEFINE_integer("steps", 3, "timed training steps (after two warm-up steps)")


def _make_iterator(spec, threads: int, cache_mib: int):
    dataset = pipeline.train_dataset(
        [spec], window=_WINDOW.value, global_batch_size=_BATCH.value, num_local_devices=1,
        seed=0, num_threads=threads, cache_mib=cache_mib,
    )  # fmt: skip
    return iter(dataset)


def time_pipeline(spec: pipeline.DatasetSpec, threads: int, cache_mib: int) -> dict:
    """Batches/s of the training stream of one dataset (after filling the cache, if any)."""
    source = pipeline.open_dataset(spec)
    source.clear_cache()  # each setting starts cold
    iterator = _make_iterator(spec, threads, cache_mib)
    start = time.perf_counter()
    batch = next(iterator)
    first = time.perf_counter() - start
    while cache_mib and time.perf_counter() - start < _WARMUP.value:
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < _SECONDS.value:
        next(iterator)
        count += 1
    rate = count / (time.perf_counter() - start)
    nbytes = sum(v.nbytes for v in batch.values())
    return dict(threads=threads, cache=cache_mib, cached=source.cached_videos, first=first,
                rate=rate, windows=rate * _BATCH.value, mib=rate * nbytes / 2**20,
                shape=batch["features"].shape)  # fmt: skip


def time_train_step(spec: pipeline.DatasetSpec, threads: int, cache_mib: int) -> dict:
    """LMR's pmapped training step on one device: on a fixed batch and fed by the pipeline."""
    from lmr_jax import config as config_lib
    from lmr_jax import models, smpl, train

    config = config_lib.base_config("lmr")
    body_model = smpl.procedural(0)
    model = models.build_model(config.model, body_model)
    schedule = optim_lib.learning_rate_schedule(config.optim, config.train.num_steps)
    optimizer = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    iterator = _make_iterator(spec, threads, cache_mib)
    batch = next(iterator)
    state = train.init_state(config, model, optimizer, batch["features"].shape)
    step = train.make_pmapped_step(config, model, body_model, optimizer, schedule)
    rng = jax.random.PRNGKey(0)
    start = time.perf_counter()
    for _ in range(2):  # compile, then one more so that nothing compiles while timed
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start

    def steps_per_second(next_batch) -> float:
        nonlocal state
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            state, metrics = step(state, next_batch(), rng)
        jax.block_until_ready(metrics)
        return _STEPS.value / (time.perf_counter() - start)

    alone = steps_per_second(lambda: batch)
    fed = steps_per_second(functools.partial(next, iterator))
    return dict(compile=compile_s, alone=alone, fed=fed)


def main(argv):
    del argv
    spec = pipeline.DatasetSpec(_DATASET.value, _SPLIT.value, data_dir=_DATA_DIR.value,
                                stride=_STRIDE.value)  # fmt: skip
    source = pipeline.open_dataset(spec)
    lengths = source.lengths
    print(f"dataset {spec.label}: {len(lengths)} videos, {lengths.sum()} frames "
          f"(mean {lengths.mean():.0f}), D = {source.feature_dim}, window "
          f"{_WINDOW.value}, stride {_STRIDE.value}; device {jax.devices()[0].platform}, "
          f"{len(jax.devices())} device(s)")  # fmt: skip
    print(f"{'threads':>7} {'cache MiB':>9} {'cached':>6} {'first (s)':>9} {'batches/s':>9} "
          f"{'windows/s':>9} {'MiB/s':>6}  batch")  # fmt: skip
    best = None
    for cache in (int(c) for c in _CACHE_MIB.value):
        for threads in (int(t) for t in _THREADS.value):
            r = time_pipeline(spec, threads, cache)
            shape = "x".join(str(s) for s in r["shape"])
            print(f"{threads:>7} {cache:>9} {r['cached']:>6} {r['first']:>9.2f} "
                  f"{r['rate']:>9.1f} {r['windows']:>9.0f} {r['mib']:>6.0f}  features {shape}",
                  flush=True)  # fmt: skip
            best = r if best is None or r["rate"] > best["rate"] else best
    if _TRAIN_STEP.value:
        t = time_train_step(spec, best["threads"], best["cache"])
        print(f"train step (lmr base config, batch {_BATCH.value} x {_WINDOW.value}, "
              f"{jax.devices()[0].platform}): compile + 1 step {t['compile']:.1f} s, "
              f"{t['alone']:.3f} steps/s on a fixed batch, {t['fed']:.3f} steps/s fed by the "
              f"pipeline ({best['threads']} threads, cache {best['cache']} MiB); the pipeline "
              f"alone gives {best['rate']:.1f} batches/s = {best['rate'] / t['alone']:.0f}x "
              "the step")  # fmt: skip
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    app.run(main)
