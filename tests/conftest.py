"""Test configuration: 8 fake CPU devices for pmap tests, set before JAX is imported."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical programs compiled again (each train() builds a new pmapped step; the CLI tests run
# subprocesses) come from a persistent compilation cache, private to this test session.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="lmr_jax_test_xla_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402  (after the XLA flags above)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir holding synthetic_motion/tiny and synthetic_motion/tiny_2d (D = 64)."""
    import tensorflow_datasets as tfds

    from lmr_jax.data import build

    tfds.disable_progress_bar()
    data_dir = tmp_path_factory.mktemp("tfds")
    for name in ("synthetic_motion/tiny", "synthetic_motion/tiny_2d"):
        build.build(name, str(data_dir))
    return str(data_dir)


@pytest.fixture(scope="session")
def smoke_run(tiny_data_dir, tmp_path_factory):
    """One trained 3-step smoke run (tests.runs.smoke_run_config) shared by the tests that only
    read it or copy it (damaged checkpoints, occlusion evaluation)."""
    from lmr_jax import train
    from tests.runs import smoke_run_config

    workdir = tmp_path_factory.mktemp("smoke_run")
    train.train(smoke_run_config(tiny_data_dir), str(workdir))
    return workdir
