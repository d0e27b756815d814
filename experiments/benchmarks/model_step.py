"""Forward and forward+backward cost of LMR, its ablations and the VIBE-style baseline.

    python experiments/benchmarks/model_step.py --settings=small,paper

For every setting and model, in one run: parameter count, compile time, median wall time after a
warm-up, and FLOPs from XLA's cost analysis. The timed calls are interleaved (one call of every
model and step per round, rounds capped by --repeats and --max_seconds) so that a shared
machine's changing load falls on all models alike. XLA counts the body
of a while loop once, not once per step, so the FLOPs come from the same step built with fully
unrolled scans (`scan_unroll=T`, lowered only, never compiled or timed).

The forward is `model.apply` (body model included, on the final iteration); the forward+backward
is the gradient of the full training loss (losses.compute_losses, final iteration, dropout on)
with respect to the parameters, the features being inputs, as in training.
The body model (6890 vertices for every frame) is part of both models' cost.

Settings: 'bench' is the accuracy benchmark's (hidden 128 for every model, batch 32, T = 16,
D = 2048); 'paper' is the paper-size setting (batch 32, T = 16, D = 2048, V = 3) with every
model at its default width (models.default_model_config: 512 for each of LMR's seven GRUs, 1024
for VIBE's GRU and regressor); row 'lmr_1024' is LMR with VIBE's width in every GRU.
''small' is a quick one (batch 4, T = 8, D = 256, hidden 128 for all, V = 3). The target is
LMR's forward+backward time at most 2x the VIBE-style baseline's (column 'vs vibe').
Row 'hkmr' keeps psi's width d = 160 in every setting (as HMR keeps its regressor's 1024) and
its P = 4 inner iterations; its step here is the same loss as every row's (final iteration, no
L_KL), not its experiment's 'hkmr_paper' sum over iterations. Rows 'dsd' and 'satn' are one
shot (V = 1 in every setting) and keep DSD's widths (512); 'satn' is stage 2 (DSD frozen, the
shuffle on), the setting's hidden width is its tcn_width (models.variant_width_field), and its
FFN is the default 2048 (experiments/satn.py's cpu and bench variants use 512); their steps
have the shared loss only (no skeleton or sort term); rows 'dsd_128' and 'satn_128' are them
at the widths of experiments/dsd.py's and satn.py's `bench` variants (DSD's three widths 128;
SATN's keys and values 8 x 16, FFN 512).
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from lmr_jax import losses, smpl
from lmr_jax.models import (
    build_model,
    default_model_config,
    matched_single_rnn_width,
    variant_width_field,
)

SETTINGS = {
    "small": dict(batch=4, frames=8, features=256, hidden=128, iterations=3),
    "paper": dict(batch=32, frames=16, features=2048, hidden=None, iterations=3),
    # The accuracy benchmark's runs (lmr_jax.config.bench, experiments/benchmarks/accuracy.py).
    "bench": dict(batch=32, frames=16, features=2048, hidden=128, iterations=3),
}
_WIDTHS_128 = {"skeleton_hidden": 128, "detail_width": 128, "bilinear_width": 128}
MODELS = {
    "lmr": ("lmr", {}),
    "lmr_single_rnn": ("lmr", {"single_rnn": True}),
    "lmr_no_root": ("lmr", {"no_root_dependency": True}),
    # The single RNN widened to LMR's parameter count at the setting's width.
    "lmr_single_matched": ("lmr", {"single_rnn": True, "single_rnn_hidden_size": "matched"}),
    "lmr_1024": ("lmr", {"hidden_size": 1024}),  # LMR at VIBE's width
    "vibe": ("vibe", {}),
    "hmr": ("hmr", {}),
    "hkmr": ("hkmr", {}),  # d = 160 in every setting (models.variant_width_field), T = 3, P = 4
    "dsd": ("dsd", {"num_iterations": 1}),  # one shot; its widths (512) in every setting
    "satn": ("satn", {"num_iterations": 1}),  # on DSD (frozen); the setting's width: its TCN's
    # DSD and SATN at the width 128 (experiments/dsd.py's and satn.py's `bench` variants).
    "dsd_128": ("dsd", {"num_iterations": 1, **_WIDTHS_128}),
    "satn_128": ("satn", {"num_iterations": 1, **_WIDTHS_128, "head_dim": 16, "ffn_width": 512}),
}

_SETTINGS = flags.DEFINE_list("settings", ["small", "paper"], f"of {sorted(SETTINGS)}")
_MODELS = flags.DEFINE_list(
    "models", ["lmr", "lmr_single_rnn", "lmr_no_root", "lmr_1024", "vibe"], f"of {sorted(MODELS)}"
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds over all models (after a warm-up)")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0, "no new round after this many seconds")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "matmul dtype")


def synthetic_batch(key, batch: int, frames: int, features: int, joints: int = 49) -> dict:
    """Random features and labels of the right shapes (values do not matter for speed)."""
    keys = jax.random.split(key, 6)
    bt = (batch, frames)
    return {
        "features": jax.random.normal(keys[0], (*bt, features)),
        "kp2d": jnp.concatenate(
            [jax.random.normal(keys[1], (*bt, joints, 2)), jnp.ones((*bt, joints, 1))], -1
        ),
        "kp3d": jnp.concatenate(
            [jax.random.normal(keys[2], (*bt, joints, 3)), jnp.ones((*bt, joints, 1))], -1
        ),
        "pose": 0.3 * jax.random.normal(keys[3], (*bt, 72)),
        "shape": jax.random.normal(keys[4], (*bt, 10)),
        "has_smpl": jnp.ones(bt),
        "has_kp3d": jnp.ones(bt),
    }


def _flops(lowered) -> float:
    """Total FLOPs of a lowered computation from XLA's cost analysis (nan if unavailable)."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def compile_step(fn, unrolled_fn, args) -> dict:
    """Compiles `jax.jit(fn)` (timed, then warmed up) and counts the FLOPs of `unrolled_fn`."""
    flops = _flops(jax.jit(unrolled_fn).lower(*args))
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    return dict(run=lambda: jax.block_until_ready(compiled(*args)), compile_s=compile_s,
                flops=flops, times=[])  # fmt: skip


def time_interleaved(steps: list[dict], repeats: int, max_seconds: float) -> None:
    """Times every step once per round, round after round (so that the load of a shared machine
    hits all models alike), until `repeats` rounds or `max_seconds`; appends to steps' times."""
    begin = time.perf_counter()
    for _ in range(repeats):
        for step in steps:
            start = time.perf_counter()
            step["run"]()
            step["times"].append(time.perf_counter() - start)
        if time.perf_counter() - begin > max_seconds:
            break


def prepare_model(name: str, setting: dict, body, data: dict) -> dict:
    """Builds, initialises and compiles one model's forward and training step."""
    model_name, overrides = MODELS[name]
    matched = overrides.get("single_rnn_hidden_size") == "matched"
    overrides = {k: v for k, v in overrides.items() if v != "matched"}
    config = default_model_config(model_name)
    width_field = variant_width_field(model_name)  # HMR and HKMR have no GRU: widths kept
    if setting["hidden"] is not None and width_field is not None:
        config[width_field] = setting["hidden"]
    config.num_iterations = setting["iterations"]
    config.dtype = _DTYPE.value
    if setting["hidden"] is None:
        config.update(overrides)  # widths are the defaults unless the model row names one
    else:
        config.update({k: v for k, v in overrides.items() if k != "hidden_size"})
    if matched:
        config.single_rnn_hidden_size = matched_single_rnn_width(config, setting["features"])
    model = build_model(config, body)
    if "scan_unroll" in config:  # HMR has no scan: its step is the same program
        config.scan_unroll = setting["frames"]
    unrolled = build_model(config, body)
    features = data["features"]
    params = jax.jit(lambda x: model.init(jax.random.key(0), x)["params"])(features)
    num_params = sum(p.size for p in jax.tree.leaves(params))
    forward, train_step = _step_functions(model, body)
    unrolled_forward, unrolled_train_step = _step_functions(unrolled, body)
    key = jax.random.key(1)
    fwd = compile_step(forward, unrolled_forward, (params, features))
    step = compile_step(train_step, unrolled_train_step, (params, data, key))
    return dict(model=name, params=num_params, fwd=fwd, step=step)


def _step_functions(model, body):
    """(forward(params, features), train_step(params, data, key) -> (loss, grads))."""
    loss_config = losses.default_loss_config()

    def forward(params, features):
        return model.apply({"params": params}, features, train=False)

    def loss_fn(params, data, key):
        outputs = model.apply({"params": params}, data["features"], train=True,
                              rngs={"dropout": key})  # fmt: skip
        return losses.compute_losses(outputs, data, loss_config, body)[0]

    def train_step(params, data, key):
        return jax.value_and_grad(loss_fn)(params, data, key)

    return forward, train_step


def main(argv):
    del argv
    body = smpl.procedural(0)
    print(f"devices: {jax.devices()}, dtype {_DTYPE.value}, load average {os.getloadavg()}")
    header = (f"{'setting':7} {'model':15} {'params':>8} {'fwd GF':>8} {'fwd ms':>9} "
              f"{'f+b GF':>8} {'f+b ms':>9} {'vs vibe':>7} {'compile f/f+b s':>16}")  # fmt: skip
    rows = []
    for setting_name in _SETTINGS.value:
        setting = SETTINGS[setting_name]
        data = synthetic_batch(
            jax.random.key(0), setting["batch"], setting["frames"], setting["features"]
        )
        results = [prepare_model(name, setting, body, data) for name in _MODELS.value]
        steps = [r[kind] for r in results for kind in ("fwd", "step")]
        time_interleaved(steps, _REPEATS.value, _MAX_SECONDS.value)
        for step in steps:
            step["ms"] = 1e3 * statistics.median(step["times"])
        vibe = next((r for r in results if r["model"] == "vibe"), None)
        for r in results:
            ratio = r["step"]["ms"] / vibe["step"]["ms"] if vibe else float("nan")
            rows.append(
                f"{setting_name:7} {r['model']:15} {r['params'] / 1e6:7.1f}M "
                f"{r['fwd']['flops'] / 1e9:8.1f} {r['fwd']['ms']:9.1f} "
                f"{r['step']['flops'] / 1e9:8.1f} {r['step']['ms']:9.1f} {ratio:7.2f} "
                f"{r['fwd']['compile_s']:7.1f} /{r['step']['compile_s']:6.1f}"
            )
            print(rows[-1], f"  (runs {len(r['step']['times'])})", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    app.run(main)
