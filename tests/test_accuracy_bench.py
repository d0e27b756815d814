"""The accuracy benchmark driver (experiments/benchmarks/accuracy.py): its intervals, breakdowns
and ridge floor against naive forms, its scores against lmr_jax.evaluate, and its reuse rules."""

import dataclasses
import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from lmr_jax import checkpoints, evaluate, models, smpl, train
from lmr_jax import config as config_lib
from lmr_jax.data import synthetic

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "benchmarks", "accuracy.py")


def _load():
    if "accuracy_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("accuracy_bench", _PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["accuracy_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["accuracy_bench"]


bench = _load()


def test_paired_bootstrap_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30) + 0.3
    out = bench.tables.paired_bootstrap(a, b, resamples=500, seed=3)
    naive, draws = [], np.random.default_rng(3)
    for _ in range(500):
        index = draws.integers(0, 30, size=30)
        naive.append(np.mean([a[i] - b[i] for i in index]))
    low, high = np.percentile(naive, [2.5, 97.5])
    assert out["low"] == pytest.approx(low) and out["high"] == pytest.approx(high)
    assert out["mean"] == pytest.approx(np.mean(a - b))
    assert out["better"] == sum(x < y for x, y in zip(a, b)) and out["videos"] == 30
    assert out["low"] < out["mean"] < out["high"]


def test_joint_breakdowns_match_a_loop_and_the_evaluator():
    rng = np.random.default_rng(1)
    frames = 6
    gt = np.concatenate([rng.normal(size=(frames, 49, 3)), np.ones((frames, 49, 1))], -1)
    gt[2, 5, 3] = 0.0  # an unlabelled joint is left out
    pred = gt[..., :3] + 0.05 * rng.normal(size=(frames, 49, 3))
    kp2d = np.ones((frames, 49, 3))
    kp2d[..., 2] = rng.random((frames, 49)) > 0.3
    errors = bench.scoring.joint_errors(pred, gt)
    hips = [27, 28]
    for f in range(frames):
        for j in range(49):
            d = (pred[f, j] - pred[f, hips].mean(0)) - (gt[f, j, :3] - gt[f, hips, :3].mean(0))
            want = np.nan if gt[f, j, 3] == 0 else 1000 * np.linalg.norm(d)
            np.testing.assert_allclose(errors[f, j], want)
    sums = bench.scoring.breakdown(errors, kp2d)
    parts = synthetic.joint_parts()
    for part in bench.scoring.PARTS:
        values = [errors[f, j] for f in range(frames) for j in range(49) if parts[j] == part]
        values = [v for v in values if not np.isnan(v)]
        assert sums[part] == [pytest.approx(sum(values)), len(values)]
    # The 14 common joints, visible and hidden together, give the evaluator's MPJPE.
    labels = {"kp3d": gt, "has_kp3d": np.ones(frames), "pose": np.zeros((frames, 72)),
              "shape": np.zeros((frames, 10)), "has_smpl": np.zeros(frames)}  # fmt: skip
    mpjpe = evaluate.video_errors({"joints3d": pred}, labels, smpl.procedural(0))["MPJPE"]
    pooled = (sums["visible"][0] + sums["hidden"][0]) / (sums["visible"][1] + sums["hidden"][1])
    per_frame_count = 14 * frames - 0  # the unlabelled joint 5 is not a common joint
    assert sums["visible"][1] + sums["hidden"][1] == per_frame_count
    assert pooled == pytest.approx(float(np.mean(mpjpe)), rel=1e-5)


def _settings(tiny_data_dir, tmp_path, **kwargs):
    return bench.Settings(
        data_dir=tiny_data_dir, out_dir=str(tmp_path / "bench"), models=("lmr", "ridge"),
        seeds=1, variant="smoke", dataset="synthetic_motion/tiny",
        shift="synthetic_motion/tiny", resamples=200, ridge_lambdas=(10.0,), **kwargs,
    )  # fmt: skip


def test_ridge_solves_the_normal_equations_of_every_training_frame(tiny_data_dir):
    config = bench.run_config(bench.ROWS[0], 0, "smoke", "synthetic_motion/tiny", tiny_data_dir)
    weights, curve = bench.scoring.fit_ridge(config, smpl.procedural(0), lambdas=(10.0,))
    x, y = [], []
    for video in bench.scoring.split_videos(config, "synthetic_motion/tiny", "train"):
        x.append(np.concatenate([video["features"], np.ones((len(video["features"]), 1))], -1))
        y.append(bench.scoring.ridge_targets(video))
    x, y = np.concatenate(x).astype(np.float64), np.concatenate(y).astype(np.float64)
    penalty = 10.0 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    np.testing.assert_allclose(weights, np.linalg.solve(x.T @ x + penalty, x.T @ y), atol=1e-8)
    assert list(curve) == [10.0] and np.isfinite(curve[10.0])


def test_the_driver_scores_reuses_resumes_and_sets_aside(
    tiny_data_dir, tmp_path, capsys, monkeypatch
):
    run_config = bench.run_config

    def small(*args, **kwargs):  # a smaller LMR than the smoke variant's: a cheaper compile
        config = run_config(*args, **kwargs)
        config.model.hidden_size, config.model.num_iterations = 16, 1
        return config

    monkeypatch.setattr(bench, "run_config", small)
    settings = _settings(tiny_data_dir, tmp_path)
    table = bench.run(settings)
    out = capsys.readouterr().out
    assert "LMR (seed 0): training 2 steps" in out and "Ridge: fitting" in out
    assert "| LMR |" in table and "| Ridge (floor) |" in table and "[95% CI]" in table
    folder = tmp_path / "bench"
    for name in ("results.md", "results.json", "curves.png"):
        assert (folder / name).exists(), name
    results = json.loads((folder / "results.json").read_text())
    assert results["info"]["Ridge (floor)"]["params"] == 65 * 157

    # The driver's test MPJPE is the evaluator's on the same checkpoint.
    workdir = str(folder / "runs" / "lmr" / "seed0")
    config = bench.run_config(bench.ROWS[0], 0, "smoke", "synthetic_motion/tiny", tiny_data_dir)
    body_model = smpl.procedural(0)
    model = models.build_model(config.model, body_model)
    params = jax.device_put(checkpoints.restore_params(workdir), jax.local_devices()[0])
    eval_set = train.config_lib.EvalSet("synthetic_motion/tiny", "test", "vibe49")
    reference = train.evaluate_set(config, model, params, body_model, eval_set)
    lmr = results["summary"]["LMR"]["test"]
    assert lmr["MPJPE"]["mean"] == pytest.approx(reference["overall"]["MPJPE"], rel=1e-5)
    assert lmr["Accel"]["mean"] == pytest.approx(reference["overall"]["Accel"], rel=1e-5)

    bench.run(settings)  # everything reused
    out = capsys.readouterr().out
    assert "finished run found" in out and "training" not in out and "scoring" not in out

    # The records (no checkpoint) make the same table in a new out_dir: nothing trained or scored.
    records = tmp_path / "records"
    recorded = dataclasses.replace(settings, record_dir=str(records))
    bench.run(recorded)
    assert sorted(os.listdir(records / "lmr" / "seed0")) == sorted(bench.RECORD_FILES)
    assert os.listdir(records / "ridge") == ["bench_eval.json"]
    elsewhere = dataclasses.replace(recorded, out_dir=str(tmp_path / "elsewhere"))
    assert bench.run(elsewhere).split("\n", 1)[1] == table.split("\n", 1)[1]
    out = capsys.readouterr().out
    assert "restored its record" in out and "finished run found" in out
    assert "training" not in out and "scoring" not in out and "fitting" not in out
    assert not os.path.exists(tmp_path / "elsewhere" / "runs" / "lmr" / "seed0" / "checkpoints")

    # A run stopped before its end is handed to train.train in its workdir again (train's own
    # tests show that it resumes exactly from the last checkpoint): recorded, not rerun.
    trained = []
    monkeypatch.setattr(bench.train, "train", lambda config, workdir: trained.append(workdir))
    os.remove(os.path.join(workdir, "bench_done.json"))
    bench.run(settings)
    out = capsys.readouterr().out
    assert "continuing the stopped run" in out and trained == [workdir]
    assert os.path.exists(os.path.join(workdir, "bench_done.json"))
    trained.clear()

    identity_file = os.path.join(workdir, "bench_run.json")
    identity = json.load(open(identity_file))
    identity["source"] = "another code version"
    json.dump(identity, open(identity_file, "w"))
    # --report_only reports the finished runs whatever code made them, and trains nothing.
    assert "| LMR |" in bench.run(dataclasses.replace(settings, report_only=True))
    assert trained == [] and "moved to" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):  # the fake training wrote no metrics
        bench.run(settings)
    out = capsys.readouterr().out
    assert "made with another config or code; moved to" in out and trained == [workdir]
    moved = [p for p in os.listdir(folder / "runs" / "lmr") if p.startswith("seed0.old-")]
    assert len(moved) == 1 and (folder / "runs" / "lmr" / moved[0] / "bench_done.json").exists()
    assert json.load(open(identity_file))["source"] != "another code version"

    with pytest.raises(ValueError, match="--models names 'nope'"):
        bench.run(bench.Settings(models=("nope",)))
    with pytest.raises(ValueError, match="no finished run in"):
        bench.run(_settings(tiny_data_dir, tmp_path / "empty", report_only=True))


def test_every_row_runs_its_experiment_files_bench_variant_and_a_budget_check_scales_it():
    lmr = bench.run_config(bench.ROWS[0], 2, "bench", "synthetic_motion/standard", "data")
    assert lmr.seed == 2 and lmr.model.hidden_size == 128 and lmr.train.num_steps == 1200
    assert lmr.eval.split == "" and lmr.data.validation.name == "synthetic_motion/standard"
    matched = bench.run_config(bench.ROWS[3], 0, "bench", "synthetic_motion/standard", "data")
    assert matched.model.single_rnn and matched.model.single_rnn_hidden_size > 128
    longer = bench.run_config(bench.ROWS[0], 0, "bench", "synthetic_motion/standard", "data",
                              steps=2400)  # fmt: skip
    assert (longer.train.num_steps, longer.optim.warmup_steps) == (2400, 100)
    assert (longer.train.eval_every, longer.train.checkpoint_every) == (200, 400)
    smoke = bench.run_config(bench.ROWS[0], 0, "smoke", "synthetic_motion/tiny", "data", steps=4)
    assert smoke.train.eval_every == 0  # off stays off
    assert bench.run_config(bench.ROWS[0], 0, "bench", "d", "data", lr=3e-3).optim.lr == 3e-3
    # HKMR: its experiment's bench variant, at its own width and loss, without a pose prior.
    row = next(r for r in bench.ROWS if r.key == "hkmr")
    hkmr = bench.run_config(row, 0, "bench", "synthetic_motion/standard", "data")
    config_lib.check(hkmr)
    assert (hkmr.model.name, hkmr.model.hidden_size, hkmr.model.pose_prior) == ("hkmr", 160, "")
    assert hkmr.loss.preset == "hkmr_paper" and hkmr.train.num_steps == 1200
    # SATN: DSD trained jointly from the seed (no row can start from another row's run).
    satn = bench.run_config(next(r for r in bench.ROWS if r.key == "satn"), 0, "bench",
                            "synthetic_motion/standard", "data")  # fmt: skip
    config_lib.check(satn)
    assert (satn.model.finetune_dsd, satn.model.dsd_run) == (True, "")
    assert satn.loss.preset == "dsd_paper" and satn.model.tcn_width == 128
    # DSD and SATN at the benchmark's width 128 (their 512 is too slow for its budget), alike.
    dsd = bench.run_config(next(r for r in bench.ROWS if r.key == "dsd"), 0, "bench",
                           "synthetic_motion/standard", "data")  # fmt: skip
    widths = ("skeleton_hidden", "detail_width", "bilinear_width")
    assert [dsd.model[k] for k in widths] == [satn.model[k] for k in widths] == [128] * 3
    assert satn.model.num_heads * satn.model.head_dim == 128
