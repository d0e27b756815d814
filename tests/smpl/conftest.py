"""Fixtures shared by the SMPL tests: the procedural body, its official file, random poses."""

import os

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lmr_jax.smpl import forward, procedural, save_official

# The file name and folder layout smplfitter expects under its model_root.
SMPLFITTER_FILE = "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"

# Eager dispatch compiles every primitive separately (slow on CPU); one jitted forward serves all.
jit_forward = jax.jit(forward)


@pytest.fixture(scope="session")
def model():
    return procedural(0)


@pytest.fixture(scope="session")
def official_dir(model, tmp_path_factory):
    """A folder holding the procedural body as smplfitter's `smpl/` model root."""
    root = tmp_path_factory.mktemp("body_models") / "smpl"
    os.makedirs(root)
    save_official(model, str(root / SMPLFITTER_FILE))
    # smplfitter reads a kid template next to the model; all zeros means "none" to it.
    np.save(root / "kid_template.npy", np.zeros((6890, 3)))
    return root


def random_rotmats(rng: np.random.Generator, shape, max_angle=np.pi) -> np.ndarray:
    """Rotation matrices [*shape, 3, 3] (float32) with uniform axes and angles up to max_angle."""
    axis = rng.normal(size=(*shape, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=(*shape, 1))
    rotvec = (axis * angle).reshape(-1, 3)
    return Rotation.from_rotvec(rotvec).as_matrix().reshape(*shape, 3, 3).astype(np.float32)
