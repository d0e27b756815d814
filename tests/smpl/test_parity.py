"""Parity of lmr_jax.smpl.forward with third-party SMPL code on bodies saved in the official layout.

The references read the procedural body (and a randomly perturbed copy of it, with dense skinning
weights and regressor rows) from the official `.pkl` that `save_official` writes: smplfitter's
NumPy backend and body-models. NumPy backend (both in the test extra). Both return the kinematic
joints (the posed rest joints, as SMPL defines them), which is what `forward` returns, and add no
translation when none is given. Poses are rotation matrices given to both sides, so the test
compares the body model and nothing else.
"""

import os

import numpy as np
import pytest
import smplfitter.np as smplfitter_np

from lmr_jax.smpl import from_arrays, save_official
from tests.smpl.conftest import SMPLFITTER_FILE, jit_forward, random_rotmats

BATCH = 16
TOLERANCE = 1e-5  # metres


@pytest.fixture(scope="module")
def perturbed(model, tmp_path_factory):
    """The procedural body with seeded noise on every array, and its smplfitter model root."""
    rng = np.random.default_rng(11)
    noise = lambda a, scale: np.asarray(a, np.float64) + scale * rng.normal(size=a.shape)
    weights = np.abs(noise(model.weights, 0.05))
    j_regressor = np.asarray(model.J_regressor, np.float64)
    j_regressor = j_regressor + (j_regressor != 0) * 0.02 * rng.normal(size=j_regressor.shape)
    body = from_arrays(
        v_template=noise(model.v_template, 0.01),
        shapedirs=noise(model.shapedirs, 1e-3),
        posedirs=noise(model.posedirs, 1e-3),
        J_regressor=j_regressor / j_regressor.sum(1, keepdims=True),
        weights=weights / weights.sum(1, keepdims=True),
        faces=model.faces,
    )
    assert np.all(np.asarray(body.weights) > 0)  # every vertex follows all 24 joints
    root = tmp_path_factory.mktemp("perturbed") / "smpl"
    os.makedirs(root)
    save_official(body, str(root / SMPLFITTER_FILE))
    np.save(root / "kid_template.npy", np.zeros((6890, 3)))
    return body, root


def _random_inputs(seed):
    rng = np.random.default_rng(seed)
    betas = (2.0 * rng.normal(size=(BATCH, 10))).astype(np.float32)
    return betas, random_rotmats(rng, (BATCH, 24))


def _bodies(model, official_dir, perturbed):
    return {"procedural": (model, official_dir), "perturbed": perturbed}


@pytest.mark.parametrize("which", ["procedural", "perturbed"])
def test_matches_smplfitter(model, official_dir, perturbed, which):
    body, root = _bodies(model, official_dir, perturbed)[which]
    reference = smplfitter_np.BodyModel("smpl", "neutral", model_root=str(root))
    betas, rotmats = _random_inputs(seed=len(which))
    want = reference(rel_rotmats=rotmats, shape_betas=betas)
    verts, joints = jit_forward(body, betas, rotmats)
    assert np.abs(np.asarray(verts) - want["vertices"]).max() < TOLERANCE
    assert np.abs(np.asarray(joints) - want["joints"]).max() < TOLERANCE
    # Not vacuous: the poses move the mesh far from the template.
    assert np.abs(want["vertices"] - np.asarray(body.v_template)).max() > 0.5


@pytest.mark.parametrize("which", ["procedural", "perturbed"])
def test_matches_body_models(model, official_dir, perturbed, which):
    import body_models.smpl.numpy as body_models_smpl

    body, root = _bodies(model, official_dir, perturbed)[which]
    reference = body_models_smpl.SMPL(
        model_path=str(root / SMPLFITTER_FILE), rotation_type="matrix"
    )
    betas, rotmats = _random_inputs(seed=10 + len(which))
    kwargs = dict(pelvis_rotation=rotmats[:, 0], shape=betas)
    want_v = reference.forward_vertices(rotmats[:, 1:], **kwargs)
    want_j = reference.forward_skeleton(rotmats[:, 1:], **kwargs)[..., :3, 3]
    verts, joints = jit_forward(body, betas, rotmats)
    assert np.abs(np.asarray(verts) - want_v).max() < TOLERANCE
    assert np.abs(np.asarray(joints) - want_j).max() < TOLERANCE
