"""Test configuration: 8 fake CPU devices for pmap tests, set before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
