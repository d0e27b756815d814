"""Throughput of the SMPL forward pass: ours against smplfitter's and body-models' JAX backends.

    python experiments/benchmarks/smpl_forward.py --batch_sizes=1,32,256,1024

Every implementation runs the procedural body, written once in the official SMPL `.pkl` layout
to a temporary folder and read back by each (ours through `lmr_jax.smpl.load`), so all compute
on the same arrays. For every batch size and implementation, in one process:

- forward: vertices [N, 6890, 3] and joints [N, 24, 3] from betas [N, 10] and local rotation
  matrices [N, 24, 3, 3] (body-models: `forward_vertices` and `forward_skeleton` in one jit);
- forward+backward: the gradient of the sum of the vertices with respect to betas and
  rotation matrices;
- compile time of each (`jit(...).lower(...).compile()`), then a warm-up call, then timed calls
  (`jax.block_until_ready`) until --repeats or --max_seconds, reporting the median. The
  implementations are timed in interleaved rounds, so that load from other processes on a
  shared machine falls on all of them alike.

The allocator matters on CPU: the script re-executes itself with
GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...
(it is only read at process start), so that every implementation runs under it.
The target: at batch 256, ours does at least 2x smplfitter's forward samples/s (column 'vs sf').
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
)
IMPLS = ("ours", "smplfitter", "body_models")
SMPL_FILE = "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"  # the name smplfitter looks for

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32", "256", "1024"], "batch sizes N")
_IMPLS = flags.DEFINE_list("impls", list(IMPLS), f"implementations, of {list(IMPLS)}")
_REPEATS = flags.DEFINE_integer("repeats", 20, "timed calls per measurement, at most")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 6.0, "time budget per batch size and mode")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the procedural body and of the inputs")


def write_official_model(folder: str, seed: int) -> str:
    """Saves the procedural body as smplfitter's `smpl/` model root; returns the .pkl path."""
    from lmr_jax import smpl

    root = os.path.join(folder, "smpl")
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, SMPL_FILE)
    smpl.save_official(smpl.procedural(seed), path)
    np.save(os.path.join(root, "kid_template.npy"), np.zeros((6890, 3)))  # all zeros: no kid
    return path


def build_forward(impl: str, path: str):
    """(betas [N, 10], rotmats [N, 24, 3, 3]) -> (vertices, joints) for one implementation."""
    if impl == "ours":
        from lmr_jax import smpl

        model = smpl.load(path)
        return lambda betas, rotmats: smpl.forward(model, betas, rotmats)
    if impl == "smplfitter":
        import smplfitter.jax

        body = smplfitter.jax.BodyModel("smpl", "neutral", model_root=os.path.dirname(path))

        def smplfitter_forward(betas, rotmats):
            out = body(rel_rotmats=rotmats, shape_betas=betas)
            return out["vertices"], out["joints"]

        return smplfitter_forward
    if impl == "body_models":
        from body_models.smpl.jax import SMPL

        body = SMPL(model_path=path, rotation_type="matrix")

        def body_models_forward(betas, rotmats):
            kwargs = dict(pelvis_rotation=rotmats[:, 0], shape=betas)
            vertices = body.forward_vertices(rotmats[:, 1:], **kwargs)
            joints = body.forward_skeleton(rotmats[:, 1:], **kwargs)[..., :3, 3]
            return vertices, joints

        return body_models_forward
    raise ValueError(f"unknown implementation '{impl}', expected one of {list(IMPLS)}.")


def random_inputs(batch: int, seed: int):
    """Betas N(0, 1) and rotations with uniform axes and angles up to 1.5 rad, float32."""
    from lmr_jax.geometry import axis_angle_to_matrix

    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(batch, 24, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    axis_angle = axis * rng.uniform(0, 1.5, size=(batch, 24, 1))
    rotmats = jax.jit(axis_angle_to_matrix)(jnp.asarray(axis_angle, jnp.float32))
    return jnp.asarray(rng.normal(size=(batch, 10)), jnp.float32), rotmats


def compiled(fn, args) -> tuple:
    """Compiles `fn` for `args`; returns (executable, seconds spent tracing and compiling)."""
    start = time.perf_counter()
    executable = jax.jit(fn).lower(*args).compile()
    return executable, time.perf_counter() - start


def time_interleaved(executables: dict, args, repeats: int, max_seconds: float) -> dict:
    """Median seconds per call of each executable, timed in alternating rounds."""
    for run in executables.values():  # warm-up
        jax.block_until_ready(run(*args))
    times = {name: [] for name in executables}
    start = time.perf_counter()
    while len(times[next(iter(times))]) < repeats:
        for name, run in executables.items():
            tic = time.perf_counter()
            jax.block_until_ready(run(*args))
            times[name].append(time.perf_counter() - tic)
        if len(times[next(iter(times))]) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return {name: (statistics.median(t), len(t)) for name, t in times.items()}


def device_line() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):  # no /proc/cpuinfo: keep platform's name
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    device = jax.devices()[0]
    return (
        f"device: {device.platform} ({device.device_kind}), {cpu}, {os.cpu_count()} cores; "
        f"jax {jax.__version__}; float32"
    )


def main(argv):
    del argv
    impls = list(_IMPLS.value)
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    print(__doc__.splitlines()[0])
    print(device_line())
    print(f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']} (set at process start for all impls)")
    with tempfile.TemporaryDirectory() as folder:
        path = write_official_model(folder, _SEED.value)
        forwards = {impl: build_forward(impl, path) for impl in impls}
        rows = []
        for batch in batch_sizes:
            args = random_inputs(batch, _SEED.value + batch)
            for mode in ("fwd", "fwd+bwd"):
                executables, compile_s = {}, {}
                for impl, fn in forwards.items():
                    if mode == "fwd+bwd":
                        fn = jax.grad(lambda b, r, fn=fn: jnp.sum(fn(b, r)[0]), argnums=(0, 1))
                    executables[impl], compile_s[impl] = compiled(fn, args)
                timed = time_interleaved(executables, args, _REPEATS.value, _MAX_SECONDS.value)
                for impl in impls:
                    seconds, calls = timed[impl]
                    rows.append((batch, mode, impl, seconds, calls, compile_s[impl]))
                    print(f"  done: N={batch} {mode} {impl}", file=sys.stderr, flush=True)
    print_table(rows, impls)


def print_table(rows, impls) -> None:
    """One line per (batch, implementation): samples/s and ms per call for both modes."""
    by_key = {(b, m, i): (s, c, comp) for b, m, i, s, c, comp in rows}
    header = (
        f"{'N':>5} {'impl':<12} | {'fwd samples/s':>13} {'ms':>8} {'vs sf':>6} {'compile s':>9} |"
        f" {'fwd+bwd samples/s':>17} {'ms':>8} {'vs sf':>6} {'compile s':>9} | calls"
    )
    print(header)
    print("-" * len(header))
    for batch in sorted({r[0] for r in rows}):
        for impl in impls:
            cells, calls = [], []
            for mode in ("fwd", "fwd+bwd"):
                seconds, count, compile_s = by_key[batch, mode, impl]
                reference = by_key.get((batch, mode, "smplfitter"))
                ratio = f"{reference[0] / seconds:5.2f}x" if reference else "     -"
                width = 13 if mode == "fwd" else 17
                cells.append(
                    f"{batch / seconds:>{width},.0f} {seconds * 1e3:8.2f} {ratio:>6} "
                    f"{compile_s:9.2f}"
                )
                calls.append(str(count))
            print(f"{batch:>5} {impl:<12} | {cells[0]} | {cells[1]} | {'/'.join(calls)}")


def reexec_with_allocator_settings() -> None:
    """GLIBC_TUNABLES is read at process start only: run this script again with it set."""
    if os.environ.get("GLIBC_TUNABLES") != GLIBC_TUNABLES:
        env = dict(os.environ, GLIBC_TUNABLES=GLIBC_TUNABLES)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


if __name__ == "__main__":
    reexec_with_allocator_settings()
    app.run(main)
