"""lmr_jax: Learning Local Recurrent Models for Human Mesh Recovery, in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="lmr_jax",
    version="0.1.0",
    description="LMR video human mesh recovery (local recurrent models over SMPL) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["lmr_jax", "lmr_jax.*", "tfds_builders", "tfds_builders.*"]),
    package_data={"tfds_builders": ["*/README.md", "*/CITATIONS.bib", "*/*.txt"]},
    install_requires=[
        # The user's list.
        # pmap takes the train state unreplicated (in_axes=None) without copying it from 0.8.
        "jax>=0.8",
        "jaxlib>=0.8",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "chex",
        "tensorflow-datasets>=4.9.7",
        "absl-py",
        # Named by the design.
        "ml-collections",
        "grain",
        "array-record",
        "pillow",
        "matplotlib",
        # VIBE's preprocessed datasets: *_db.pt files are joblib dumps, InstaVariety is HDF5.
        "joblib",
        "h5py",
        # TensorBoard event files of the training scalars without TensorFlow or PyTorch (needs
        # only numpy, protobuf and packaging); flax's and clu's writers need TensorFlow.
        "tensorboardX",
        # Video decoding for lmr-extract-features: PyAV's wheels bundle FFmpeg (no system
        # ffmpeg, no OpenCV).
        "av",
    ],
    extras_require={
        # The third-party SMPL implementations the parity tests compare with, through their
        # numpy backends (no PyTorch): smplfitter and body-models.
        # pygltflib: an independent glTF reader the export tests parse our .glb files with.
        # pytest-xdist: `make test` runs the suite in two worker processes (most tests are
        # compile-bound, one XLA compile keeps one core busy: two workers use both cores).
        "test": ["pytest", "pytest-xdist", "ruff", "smplfitter", "body-models", "pygltflib"],
        # Third-party JAX SMPL implementations timed beside ours in experiments/benchmarks.
        "bench": ["smplfitter", "body-models[jax]"],
    },
    entry_points={
        "console_scripts": [
            "lmr-demo=lmr_jax.demo:run",
            "lmr-train=lmr_jax.main:train_cli",
            "lmr-eval=lmr_jax.main:eval_cli",
            "lmr-predict=lmr_jax.main:predict_cli",
            "lmr-extract-features=lmr_jax.main:extract_cli",
            "lmr-build-data=lmr_jax.data.build:main",
        ],
    },
)
