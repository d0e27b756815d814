"""Tests for lmr_jax.smpl.layouts: the four joint layouts and the LMR part table."""

import chex
import jax
import numpy as np
import pytest

from lmr_jax.smpl import (
    COMMON14_PELVIS,
    LAYOUTS,
    PARTS,
    VIBE49_TO_COMMON14,
    from_arrays,
    get_layout,
    layout_joints,
    validate_parts,
)
from lmr_jax.smpl.model import LANDMARK_NAMES
from tests.smpl.conftest import jit_forward, random_rotmats

H36M_TO_COMMON14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]
SIZES = {"smpl24": 24, "vibe49": 49, "h36m17": 17, "common14": 14}


@pytest.fixture(scope="module")
def posed(model):
    rng = np.random.default_rng(0)
    betas = rng.normal(size=(2, 3, 10)).astype(np.float32)
    return jit_forward(model, betas, random_rotmats(rng, (2, 3, 24), max_angle=1.0))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_layout_shapes(model, posed, name):
    layout = get_layout(name)
    assert layout.num_joints == SIZES[name] == len(layout.sources)
    assert len(set(layout.joint_names)) == layout.num_joints
    joints = jax.jit(layout_joints, static_argnums=3)(model, *posed, name)
    chex.assert_shape(joints, (2, 3, SIZES[name], 3))
    assert all(0 <= p < layout.num_joints for p in layout.pelvis)


def test_layout_sources(model, posed):
    verts, joints = (np.asarray(x) for x in posed)
    np.testing.assert_array_equal(layout_joints(model, *posed, "smpl24"), joints)
    h36m = np.einsum("rv,...vc->...rc", model.J_regressor_h36m, verts)
    np.testing.assert_allclose(layout_joints(model, *posed, "h36m17"), h36m, atol=1e-5)
    np.testing.assert_allclose(
        layout_joints(model, *posed, "common14"), h36m[..., H36M_TO_COMMON14, :], atol=1e-5
    )
    vibe = np.asarray(layout_joints(model, *posed, "vibe49"))
    landmarks = dict(zip(LANDMARK_NAMES, model.landmarks, strict=True))
    np.testing.assert_array_equal(vibe[..., 0, :], verts[..., landmarks["nose"], :])
    np.testing.assert_array_equal(vibe[..., 1, :], joints[..., 12, :])  # OpenPose neck
    extra = np.einsum("rv,...vc->...rc", model.J_regressor_extra, verts)
    np.testing.assert_allclose(vibe[..., 28, :], extra[..., 1, :], atol=1e-5)  # LSP left hip


def test_common14_is_h36m_rows_and_vibe49_slice(model):
    common = get_layout("common14")
    assert common.sources == tuple(("h36m", i) for i in H36M_TO_COMMON14)
    assert COMMON14_PELVIS == common.pelvis == (2, 3)
    assert [common.joint_names[i] for i in COMMON14_PELVIS] == ["right_hip", "left_hip"]
    vibe_names = [LAYOUTS["vibe49"].joint_names[i] for i in VIBE49_TO_COMMON14]
    assert VIBE49_TO_COMMON14 == tuple(range(25, 39))
    # The same 14 joints in the same (LSP) order; VIBE's neck and head top come from LSP rows.
    assert vibe_names[:12] == list(common.joint_names[:12])
    assert vibe_names[12:] == ["neck_lsp", "head_top_lsp"]
    assert list(common.joint_names[12:]) == ["thorax", "head_top"]


def test_vibe49_and_common14_agree_on_the_body(model):
    identity = np.broadcast_to(np.eye(3, dtype=np.float32), (1, 24, 3, 3))
    rest = jit_forward(model, np.zeros((1, 10), np.float32), identity)
    vibe = np.asarray(layout_joints(model, *rest, "vibe49"))[0, 25:39]
    common = np.asarray(layout_joints(model, *rest, "common14"))[0]
    distance = np.linalg.norm(vibe - common, axis=-1)
    assert np.all(distance[:12] < 0.04), distance  # limbs: the same joints within 4 cm
    for joints in (vibe, common):  # right side is -x, the head top is the highest point
        assert np.all(joints[[0, 1, 2, 6, 7, 8], 0] < 0) and np.all(
            joints[[3, 4, 5, 9, 10, 11], 0] > 0
        )
        assert joints[13, 1] > joints[12, 1] > joints[8, 1] > joints[2, 1] > joints[0, 1]


@pytest.mark.parametrize(
    ("name", "file"), [("vibe49", "J_regressor_extra.npy"), ("common14", "J_regressor_h36m.npy")]
)
def test_missing_regressor_is_a_clear_error(model, posed, name, file):
    bare = from_arrays(
        **{k: getattr(model, k) for k in ("v_template", "shapedirs", "posedirs", "J_regressor")},
        weights=model.weights,
        faces=model.faces,
    )
    assert bare.J_regressor_extra is None and bare.J_regressor_h36m is None
    with pytest.raises(ValueError, match=f"joint layout '{name}' needs the .* regressor.*{file}"):
        layout_joints(bare, *posed, name)
    np.testing.assert_array_equal(layout_joints(bare, *posed, "smpl24"), posed[1])


def test_unknown_layout():
    with pytest.raises(ValueError, match="unknown joint layout 'coco17', expected one of"):
        get_layout("coco17")


def test_validate_parts_accepts_the_lmr_parts():
    parts = validate_parts(PARTS)
    assert list(parts) == ["root", "head", "left_arm", "right_arm", "left_leg", "right_leg"]
    assert sorted(j for joints in parts.values() for j in joints) == list(range(24))
    assert parts["root"] == (0, 3, 6, 9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head": (12, 15, 16)}, r"repeated \[16\]"),
        ({"head": (12,)}, r"missing \[15\]"),
        ({"head": (12, 15, 24)}, r"out of range \[24\]"),
        ({"head": (12, 15, -1)}, r"out of range \[-1\]"),
    ],
)
def test_validate_parts_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        validate_parts({**PARTS, **change})


def test_validate_parts_needs_root_first():
    parts = dict(PARTS)
    root = parts.pop("root")
    with pytest.raises(ValueError, match="must start with a 'root' part"):
        validate_parts({**parts, "root": root})
