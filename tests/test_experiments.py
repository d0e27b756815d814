"""Every experiment file and variant loads, passes the config check and holds only its model's
fields (each system owns its config: lmr_jax/models/<system>.py)."""

import importlib.util
import os

import pytest

from lmr_jax import config as config_lib
from lmr_jax import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Experiments that train something else than a mesh regressor (tested where they live).
OTHER = {
    "hkmr_pose_prior": "tests/models/test_pose_prior.py",
    "pchmr_lifter": "tests/models/test_lifter.py",
}
EXPERIMENTS = sorted(n[:-3] for n in os.listdir(f"{REPO}/experiments")
                     if n.endswith(".py") and n[:-3] not in OTHER)  # fmt: skip
# Experiments that choose their own widths (lmr_frames: LMR beside a ResNet on the CPU budget).
OWN_WIDTHS = {"lmr_frames"}
WIDTHS = {"": None, "smoke": 32, "cpu": 256, "bench": 128}  # the variants' GRU width


def load(name):
    spec = importlib.util.spec_from_file_location(name, f"{REPO}/experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(name):
    module = load(name)
    default = config_lib.VIBE_VARIANTS if name.endswith("_vibe") else config_lib.VARIANTS
    return sorted(getattr(module, "VARIANTS", default))


# The matched-width variants trace models to size them: tests/models/test_capacity.py.
CASES = [(name, variant) for name in EXPERIMENTS for variant in variants(name)
         if "matched" not in variant]  # fmt: skip


def test_every_experiment_is_covered():
    assert {"hmr_framewise", "vibe_baseline", "lmr_synthetic", "lmr_vibe"} <= set(EXPERIMENTS)
    assert ("hmr_framewise", "bench") in CASES and ("vibe_baseline_vibe", "smoke") in CASES


@pytest.mark.parametrize("name,variant", CASES)
def test_experiment_loads_with_its_models_fields(name, variant):
    config = load(name).get_config(variant)
    config_lib.check(config)
    system = config.model.name
    assert set(config.model) - {models.BACKBONE} == set(models.default_model_config(system))
    width, field = WIDTHS.get(variant), models.variant_width_field(system)
    if field is not None and width is not None and name not in OWN_WIDTHS:
        assert config.model[field] == width
    if system == "hkmr" and variant in ("", "cpu", "bench"):
        assert config.model.hidden_size == 160  # psi's width d: the paper's, in every variant
    if system == "hmr":
        assert config.model.regressor_hidden == 1024  # the variants leave HMR's width alone
