"""The demo reuses a finished run only when it was made with the same config and code."""

import importlib.metadata
import json
import os

from lmr_jax import config as config_lib
from lmr_jax import demo, reuse


def fake_training(calls):
    """A train_and_evaluate that records its calls and writes a results file as the real one."""

    def train_and_evaluate(config, workdir):
        calls.append(workdir)
        results = {"overall": {"MPJPE": float(len(calls))}, "frames": 1}
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        with open(os.path.join(workdir, "eval", f"{config.eval.split}.json"), "w") as f:
            json.dump(results, f)
        return results

    return train_and_evaluate


def test_a_run_is_reused_only_with_the_same_config_and_code(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(demo.train, "train_and_evaluate", fake_training(calls))
    workdir = str(tmp_path / "lmr")
    config = config_lib.cpu(config_lib.base_config("lmr"))
    assert demo.run_model("LMR", config, workdir)["overall"]["MPJPE"] == 1.0
    assert demo.run_model("LMR", config, workdir)["overall"]["MPJPE"] == 1.0  # reused
    assert len(calls) == 1
    config.optim.lr = 3e-4  # another config: retrained, the old run moved aside
    assert demo.run_model("LMR", config, workdir)["overall"]["MPJPE"] == 2.0
    moved = [p for p in os.listdir(tmp_path) if p.startswith("lmr.old-")]
    assert len(moved) == 1 and os.path.exists(tmp_path / moved[0] / "eval" / "test.json")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: real(name) + ".post1")
    assert demo.run_model("LMR", config, workdir)["overall"]["MPJPE"] == 3.0  # new version
    assert len(calls) == 3


def test_the_source_fingerprint_follows_the_code(tmp_path, monkeypatch):
    config = config_lib.base_config("lmr")
    first = reuse.run_identity(config)
    assert first == reuse.run_identity(config)
    package = tmp_path / "lmr_jax"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(reuse, "__file__", str(package / "reuse.py"))
    before = reuse.run_identity(config)["source"]
    (package / "a.py").write_text("x = 2\n")
    assert reuse.run_identity(config)["source"] != before != first["source"]
