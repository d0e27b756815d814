"""Joint layouts (named lists of joint sources) and the LMR body-part table.

A layout joint comes from one of four sources: an SMPL joint (0..23), a mesh landmark
(model.LANDMARK_NAMES), a row of VIBE's extra regressor (9 rows) or a row of the Human3.6M
regressor (17 rows). Built-in layouts:

- `smpl24`: the SMPL joints.
- `vibe49`: VIBE's/SPIN's 49 joints: 25 OpenPose joints (from SMPL joints and mesh landmarks)
  followed by 24 ground-truth-style joints; entries 25..38 are the 14 common joints.
- `h36m17`: the 17 Human3.6M regressor rows.
- `common14`: the evaluation joints (LSP order), J_regressor_h36m rows
  [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]; the pelvis is the mid-hips (2, 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from lmr_jax.smpl.model import LANDMARK_NAMES, SMPLModel

SMPL24_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
EXTRA9_NAMES = (
    "right_hip_lsp",
    "left_hip_lsp",
    "neck_lsp",
    "head_top_lsp",
    "pelvis_mpii",
    "thorax_mpii",
    "spine_h36m",
    "jaw_h36m",
    "head_h36m",
)
# Our names for the J_regressor_h36m rows, by the body side each row sits on.
H36M17_NAMES = (
    "pelvis",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_hip",
    "right_knee",
    "right_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head_top",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
H36M_TO_COMMON14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
COMMON14_NAMES = tuple(H36M17_NAMES[i] for i in H36M_TO_COMMON14)
COMMON14_PELVIS = (2, 3)  # right and left hip in the common-14 order

# VIBE's 49 joints as (name, source, index): 'smpl' joint, 'vertex' landmark, 'extra' row.
_L = {name: ("vertex", i) for i, name in enumerate(LANDMARK_NAMES)}
_S = {name: ("smpl", i) for i, name in enumerate(SMPL24_NAMES)}
_E = {name: ("extra", i) for i, name in enumerate(EXTRA9_NAMES)}
VIBE49 = (
    ("op_nose", *_L["nose"]),
    ("op_neck", *_S["neck"]),
    ("op_right_shoulder", *_S["right_shoulder"]),
    ("op_right_elbow", *_S["right_elbow"]),
    ("op_right_wrist", *_S["right_wrist"]),
    ("op_left_shoulder", *_S["left_shoulder"]),
    ("op_left_elbow", *_S["left_elbow"]),
    ("op_left_wrist", *_S["left_wrist"]),
    ("op_mid_hip", *_S["pelvis"]),
    ("op_right_hip", *_S["right_hip"]),
    ("op_right_knee", *_S["right_knee"]),
    ("op_right_ankle", *_S["right_ankle"]),
    ("op_left_hip", *_S["left_hip"]),
    ("op_left_knee", *_S["left_knee"]),
    ("op_left_ankle", *_S["left_ankle"]),
    ("op_right_eye", *_L["right_eye"]),
    ("op_left_eye", *_L["left_eye"]),
    ("op_right_ear", *_L["right_ear"]),
    ("op_left_ear", *_L["left_ear"]),
    ("op_left_big_toe", *_L["left_big_toe"]),
    ("op_left_small_toe", *_L["left_small_toe"]),
    ("op_left_heel", *_L["left_heel"]),
    ("op_right_big_toe", *_L["right_big_toe"]),
    ("op_right_small_toe", *_L["right_small_toe"]),
    ("op_right_heel", *_L["right_heel"]),
    ("right_ankle", *_S["right_ankle"]),
    ("right_knee", *_S["right_knee"]),
    ("right_hip", *_E["right_hip_lsp"]),
    ("left_hip", *_E["left_hip_lsp"]),
    ("left_knee", *_S["left_knee"]),
    ("left_ankle", *_S["left_ankle"]),
    ("right_wrist", *_S["right_wrist"]),
    ("right_elbow", *_S["right_elbow"]),
    ("right_shoulder", *_S["right_shoulder"]),
    ("left_shoulder", *_S["left_shoulder"]),
    ("left_elbow", *_S["left_elbow"]),
    ("left_wrist", *_S["left_wrist"]),
    ("neck_lsp", *_E["neck_lsp"]),
    ("head_top_lsp", *_E["head_top_lsp"]),
    ("pelvis_mpii", *_E["pelvis_mpii"]),
    ("thorax_mpii", *_E["thorax_mpii"]),
    ("spine_h36m", *_E["spine_h36m"]),
    ("jaw_h36m", *_E["jaw_h36m"]),
    ("head_h36m", *_E["head_h36m"]),
    ("nose", *_L["nose"]),
    ("left_eye", *_L["left_eye"]),
    ("right_eye", *_L["right_eye"]),
    ("left_ear", *_L["left_ear"]),
    ("right_ear", *_L["right_ear"]),
)
VIBE49_TO_COMMON14 = tuple(range(25, 39))


@dataclasses.dataclass(frozen=True)
class JointLayout:
    """A named list of joints and where each comes from.

    Attributes:
      name: layout name.
      joint_names: one name per joint.
      sources: one (source, index) per joint; source in 'smpl', 'vertex', 'extra', 'h36m'.
      pelvis: joint index (or indices, averaged) used to centre 3D joints.
    """

    name: str
    joint_names: tuple[str, ...]
    sources: tuple[tuple[str, int], ...]
    pelvis: tuple[int, ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


LAYOUTS: dict[str, JointLayout] = {
    "smpl24": JointLayout("smpl24", SMPL24_NAMES, tuple(("smpl", i) for i in range(24)), (0,)),
    "vibe49": JointLayout(
        "vibe49",
        tuple(n for n, _, _ in VIBE49),
        tuple((s, i) for _, s, i in VIBE49),
        (VIBE49_TO_COMMON14[2], VIBE49_TO_COMMON14[3]),
    ),  # fmt: skip
    "h36m17": JointLayout("h36m17", H36M17_NAMES, tuple(("h36m", i) for i in range(17)), (0,)),
    "common14": JointLayout(
        "common14", COMMON14_NAMES, tuple(("h36m", i) for i in H36M_TO_COMMON14), COMMON14_PELVIS
    ),
}


def get_layout(layout: str | JointLayout) -> JointLayout:
    """Returns a built-in layout by name (or the layout itself)."""
    if isinstance(layout, JointLayout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown joint layout '{layout}', expected one of {sorted(LAYOUTS)}.")
    return LAYOUTS[layout]


def layout_joints(
    model: SMPLModel, vertices: jnp.ndarray, joints: jnp.ndarray, layout: str | JointLayout
) -> jnp.ndarray:
    """Joints of `layout` from a posed mesh.

    Args:
      model: the body model (its landmarks and extra regressors).
      vertices: [..., 6890, 3] posed vertices.
      joints: [..., 24, 3] posed SMPL joints.
      layout: a layout name or JointLayout.

    Returns:
      [..., J, 3] joints in the layout's order.
    """
    layout = get_layout(layout)
    kinds = {kind for kind, _ in layout.sources}
    blocks, offsets, offset = [], {}, 0  # one block of joints per source kind, then one gather
    for kind in ("smpl", "vertex", "extra", "h36m"):
        if kind not in kinds:
            continue
        rows = sorted({i for k, i in layout.sources if k == kind})
        if kind == "smpl":
            block, rows = joints, list(range(joints.shape[-2]))
        elif kind == "vertex":
            block = jnp.take(vertices, jnp.asarray([model.landmarks[i] for i in rows]), axis=-2)
        else:
            regressor = model.J_regressor_extra if kind == "extra" else model.J_regressor_h36m
            if regressor is None:
                file = "J_regressor_extra.npy" if kind == "extra" else "J_regressor_h36m.npy"
                raise ValueError(
                    f"joint layout '{layout.name}' needs the {kind} regressor; "
                    f"load the body model with VIBE's {file} (see BUILD.md)."
                )
            sub = regressor[jnp.asarray(rows)].astype(vertices.dtype)
            block = jnp.einsum("rv,...vc->...rc", sub, vertices)
        offsets[kind] = {r: offset + n for n, r in enumerate(rows)}
        blocks.append(block)
        offset += block.shape[-2]
    index = jnp.asarray([offsets[kind][i] for kind, i in layout.sources])
    return jnp.take(jnp.concatenate(blocks, axis=-2), index, axis=-2)


# LMR's six parts (SMPL joint indices); the first is the root that conditions the others.
PARTS: dict[str, tuple[int, ...]] = {
    "root": (0, 3, 6, 9),
    "head": (12, 15),
    "left_arm": (13, 16, 18, 20, 22),
    "right_arm": (14, 17, 19, 21, 23),
    "left_leg": (1, 4, 7, 10),
    "right_leg": (2, 5, 8, 11),
}


def validate_parts(parts: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Checks a part table: a 'root' part first, and every SMPL joint 0..23 exactly once.

    Returns:
      The table as a dict of tuples.

    Raises:
      ValueError: naming the duplicated, missing or out-of-range joints.
    """
    parts = {name: tuple(int(j) for j in joints) for name, joints in parts.items()}
    if not parts or next(iter(parts)) != "root" or 0 not in parts["root"]:
        raise ValueError("the part table must start with a 'root' part that holds joint 0.")
    seen = [j for joints in parts.values() for j in joints]
    bad = sorted({j for j in seen if not 0 <= j < 24})
    dup = sorted({j for j in seen if seen.count(j) > 1})
    missing = sorted(set(range(24)) - set(seen))
    if bad or dup or missing:
        raise ValueError(
            f"the part table must cover SMPL joints 0..23 exactly once: out of "
            f"range {bad}, repeated {dup}, missing {missing}."
        )
    return parts


def layout_support(model: SMPLModel, layout: str | JointLayout) -> np.ndarray:
    """Vertex ids that the joints of `layout` depend on (landmarks and regressor columns)."""
    layout = get_layout(layout)
    ids = set()
    for kind, i in layout.sources:
        if kind == "vertex":
            ids.add(model.landmarks[i])
        elif kind in ("extra", "h36m"):
            regressor = model.J_regressor_extra if kind == "extra" else model.J_regressor_h36m
            if regressor is None:
                continue  # layout_joints names the missing regressor
            ids.update(np.nonzero(np.asarray(regressor[i]))[0].tolist())
    return np.asarray(sorted(ids), np.int64)


def joint_model(model: SMPLModel, layout: str | JointLayout) -> SMPLModel:
    """The body model restricted to the vertices `layout` needs: same joints, far less skinning.

    `forward` on the result skins only those vertices (joints still come from the full
    template through J_template / J_shapedirs), and `layout_joints` on its output gives exactly
    the joints of the full model. Training losses need joints only, so this is what a train step
    runs; vertices (for PVE, pictures, export) come from the full model. Needs concrete arrays
    (call it outside jit, e.g. when a model is built).
    """
    ids = layout_support(model, layout)
    position = {int(v): n for n, v in enumerate(ids)}
    num_verts = model.v_template.shape[0]

    def restrict(value):
        if isinstance(value, tuple):
            return tuple(restrict(v) for v in value)
        if not hasattr(value, "shape") or num_verts not in value.shape:
            return value  # e.g. faces, joint templates
        return jnp.take(value, ids, axis=value.shape.index(num_verts))

    fields = {f.name: restrict(getattr(model, f.name)) for f in dataclasses.fields(model)}
    fields["faces"] = model.faces[:0]  # faces index the full mesh; a joint model has none
    fields["landmarks"] = tuple(position.get(int(v), 0) for v in model.landmarks)
    return model.replace(**fields)
