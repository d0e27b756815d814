"""A procedural SMPL-format body: the embedded default when no SMPL file is given.

The body is a 1.74 m mannequin on SMPL's real kinematic tree, in SMPL's frame (y up, the body
faces +z, its left side is +x), with exactly SMPL's array names and shapes: 6890 vertices,
13776 faces, 10 shape directions, 207 pose-corrective directions, a 24 x 6890 joint regressor
and 6890 x 24 skinning weights. It is made of 14 closed segments (torso, head, upper arms,
forearms, hands, thighs, shins, feet), each a deformed tube with rounded ends; 4 small faces
inside each joint bridge a segment to its parent so that the face count is SMPL's.

It also defines what VIBE's joint layouts need: mesh landmarks (nose, eyes, ears, toes, heels)
and the 9 'extra' and 17 Human3.6M regressor rows, placed where those joints are on a person.
Everything is deterministic given `seed` (the seed moves the pose-corrective directions and
two free shape directions; the template and joints are fixed).
"""

from __future__ import annotations

import functools

import numpy as np

from lmr_jax.smpl.model import NUM_FACES, NUM_VERTICES, SMPL_PARENTS, SMPLModel, from_arrays

# Rest joint positions (T-pose), close to the SMPL neutral template's.
REST_JOINTS = np.array([
    [0.000, -0.223, 0.028], [0.068, -0.314, 0.021], [-0.069, -0.314, 0.024],
    [-0.003, -0.103, 0.012], [0.103, -0.690, 0.017], [-0.105, -0.695, 0.015],
    [0.006, 0.030, 0.038], [0.087, -1.083, -0.023], [-0.088, -1.085, -0.028],
    [0.003, 0.083, 0.040], [0.120, -1.141, 0.096], [-0.118, -1.143, 0.102],
    [-0.001, 0.293, 0.011], [0.078, 0.199, 0.019], [-0.083, 0.198, 0.018],
    [0.005, 0.356, 0.061], [0.174, 0.225, -0.002], [-0.175, 0.226, -0.012],
    [0.431, 0.214, -0.036], [-0.432, 0.212, -0.039], [0.693, 0.221, -0.042],
    [-0.694, 0.219, -0.044], [0.778, 0.211, -0.053], [-0.781, 0.211, -0.055],
])  # fmt: skip

_TORSO_SEGMENTS = 30


def _segments() -> list[dict]:
    """Describes the 14 body segments: axis end points, radius profile, resolution, bones."""
    j = REST_JOINTS
    segs = [
        # Torso: pelvis floor to the base of the neck; half-widths (x, z) along the height.
        dict(name="torso", a=[0.0, -0.40, 0.02], b=[0.0, 0.31, 0.01], segs=_TORSO_SEGMENTS,
             rings=None, up=[1.0, 0, 0], parent=None,
             profile=[(0.0, 0.15, 0.10), (0.15, 0.17, 0.11), (0.35, 0.14, 0.095),
                      (0.55, 0.15, 0.10), (0.75, 0.18, 0.105), (0.88, 0.17, 0.09),
                      (1.0, 0.07, 0.06)]),
        dict(name="head", a=[0.0, 0.27, 0.02], b=[0.0, 0.56, 0.03], segs=24, rings=24,
             up=[1.0, 0, 0], parent="torso",
             profile=[(0.0, 0.055, 0.055), (0.25, 0.06, 0.06), (0.45, 0.085, 0.095),
                      (0.75, 0.09, 0.10), (1.0, 0.06, 0.07)]),
    ]  # fmt: skip
    for side, s in (("l", 1.0), ("r", -1.0)):
        sh, el, wr, hd = (16, 18, 20, 22) if s > 0 else (17, 19, 21, 23)
        hip, kn, an, ft = (1, 4, 7, 10) if s > 0 else (2, 5, 8, 11)
        tip = j[hd] + np.array([0.08 * s, 0.0, 0.0])
        heel = j[an] + np.array([0.0, -0.05, -0.07])
        toe = j[ft] + np.array([0.0, -0.02, 0.07])
        segs += [
            dict(name=f"uarm_{side}", a=j[sh] - [0.03 * s, 0, 0], b=j[el], segs=16, rings=30,
                 up=[0, 1.0, 0], parent="torso",
                 profile=[(0.0, 0.055, 0.05), (0.5, 0.048, 0.045), (1.0, 0.04, 0.038)]),
            dict(name=f"farm_{side}", a=j[el], b=j[wr], segs=16, rings=28, up=[0, 1.0, 0],
                 parent=f"uarm_{side}",
                 profile=[(0.0, 0.04, 0.038), (0.3, 0.042, 0.04), (1.0, 0.028, 0.026)]),
            dict(name=f"hand_{side}", a=j[wr], b=tip, segs=12, rings=13, up=[0, 0, 1.0],
                 parent=f"farm_{side}",
                 profile=[(0.0, 0.04, 0.018), (0.5, 0.048, 0.02), (1.0, 0.035, 0.014)]),
            dict(name=f"thigh_{side}", a=j[hip] + [0.01 * s, 0.04, 0], b=j[kn], segs=20,
                 rings=32, up=[1.0, 0, 0], parent="torso",
                 profile=[(0.0, 0.085, 0.09), (0.5, 0.07, 0.075), (1.0, 0.055, 0.058)]),
            dict(name=f"shin_{side}", a=j[kn], b=j[an], segs=16, rings=30, up=[1.0, 0, 0],
                 parent=f"thigh_{side}",
                 profile=[(0.0, 0.053, 0.055), (0.3, 0.052, 0.058), (1.0, 0.035, 0.035)]),
            dict(name=f"foot_{side}", a=heel, b=toe, segs=12, rings=12, up=[1.0, 0, 0],
                 parent=f"shin_{side}",
                 profile=[(0.0, 0.035, 0.035), (0.6, 0.045, 0.03), (1.0, 0.04, 0.018)]),
        ]  # fmt: skip
    fixed = sum(s["segs"] * s["rings"] + 2 for s in segs if s["rings"]) + 2
    rings, rest = divmod(NUM_VERTICES - fixed, _TORSO_SEGMENTS)
    assert rest == 0, "segment resolutions must add up to 6890 vertices"
    segs[0]["rings"] = rings
    return segs


def _frame(axis: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane orthogonal to `axis`, the first close to `up`."""
    e1 = up - np.dot(up, axis) * axis
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def _tube(seg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, faces and axial parameter u (0 at a, 1 at b) of one closed rounded tube."""
    a, b = np.asarray(seg["a"], float), np.asarray(seg["b"], float)
    length = np.linalg.norm(b - a)
    axis = (b - a) / length
    e1, e2 = _frame(axis, np.asarray(seg["up"], float))
    prof = np.asarray(seg["profile"])
    rings, segs = seg["rings"], seg["segs"]
    cap_a, cap_b = prof[0, 1:].mean(), prof[-1, 1:].mean()
    # Axial positions from -cap_a to length + cap_b; cosine spacing rounds the caps.
    theta = np.linspace(0.0, np.pi, rings + 2)
    z = -cap_a + (length + cap_a + cap_b) * 0.5 * (1.0 - np.cos(theta))
    u = np.clip(z / length, 0.0, 1.0)
    rx, rz = np.interp(u, prof[:, 0], prof[:, 1]), np.interp(u, prof[:, 0], prof[:, 2])
    cap = np.ones_like(z)
    cap = np.where(z < 0, np.sqrt(np.clip(1 - (z / cap_a) ** 2, 0, 1)), cap)
    over = z - length
    cap = np.where(over > 0, np.sqrt(np.clip(1 - (over / cap_b) ** 2, 0, 1)), cap)
    phi = np.linspace(0, 2 * np.pi, segs, endpoint=False)
    ring_z, ring_r = z[1:-1], (cap[:, None] * np.stack([rx, rz], -1))[1:-1]
    pts = (
        a
        + ring_z[:, None, None] * axis
        + ring_r[:, None, 0:1] * np.cos(phi)[None, :, None] * e1
        + ring_r[:, None, 1:2] * np.sin(phi)[None, :, None] * e2
    ).reshape(-1, 3)
    verts = np.concatenate([[a + z[0] * axis], pts, [a + z[-1] * axis]])
    faces = []
    ring = lambda i, k: 1 + i * segs + (k % segs)
    for k in range(segs):
        faces.append((0, ring(0, k + 1), ring(0, k)))
        faces.append((len(verts) - 1, ring(rings - 1, k), ring(rings - 1, k + 1)))
        for i in range(rings - 1):
            faces.append((ring(i, k), ring(i, k + 1), ring(i + 1, k + 1)))
            faces.append((ring(i, k), ring(i + 1, k + 1), ring(i + 1, k)))
    faces = np.asarray(faces, np.int64)
    tri = verts[faces]
    volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    if volume < 0:  # make normals point outwards
        faces = faces[:, ::-1]
    u_all = np.concatenate([[u[0]], np.repeat(u[1:-1], segs), [u[-1]]])
    return verts, faces, u_all


def _chain_weights(u: np.ndarray, nodes: list[tuple[float, int]]) -> np.ndarray:
    """Skinning weights that move linearly between bones at the given axial positions."""
    knots = np.array([n[0] for n in nodes])
    w = np.zeros((len(u), 24))
    for i, (_, joint) in enumerate(nodes):
        hat = np.zeros(len(nodes))
        hat[i] = 1.0
        w[:, joint] += np.interp(u, knots, hat)
    return w


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _torso_weights(v: np.ndarray) -> np.ndarray:
    """Spine joints by height; collars on the upper flanks; hips on the lower flanks."""
    chain = [0, 3, 6, 9, 12]
    heights = REST_JOINTS[chain, 1] + np.array([0.0, 0.0, 0.0, 0.05, 0.0])
    w = _chain_weights(v[:, 1], list(zip(heights, chain, strict=True)))
    ax = np.abs(v[:, 0])
    collar = _smoothstep((ax - 0.06) / 0.1) * _smoothstep((v[:, 1] - 0.12) / 0.08)
    hip = 0.5 * _smoothstep((-0.26 - v[:, 1]) / 0.08) * _smoothstep((ax - 0.03) / 0.05)
    for amount, left, right in ((collar, 13, 14), (hip, 1, 2)):
        target = np.zeros_like(w)
        target[np.arange(len(v)), np.where(v[:, 0] > 0, left, right)] = 1.0
        w = (1 - amount)[:, None] * w + amount[:, None] * target
    return w


_BONE_NODES = {  # (u, joint) nodes along each limb segment's axis, for both sides (l, r)
    "head": [(0.15, 12), (0.35, 15)],
    "uarm": [(-0.12, (13, 14)), (0.12, (16, 17)), (0.88, (16, 17)), (1.12, (18, 19))],
    "farm": [(-0.12, (16, 17)), (0.12, (18, 19)), (0.88, (18, 19)), (1.12, (20, 21))],
    "hand": [(-0.15, (18, 19)), (0.15, (20, 21)), (0.45, (20, 21)), (0.65, (22, 23))],
    "thigh": [(-0.1, 0), (0.15, (1, 2)), (0.88, (1, 2)), (1.12, (4, 5))],
    "shin": [(-0.12, (1, 2)), (0.12, (4, 5)), (0.88, (4, 5)), (1.12, (7, 8))],
    "foot": [(0.0, (7, 8)), (0.55, (7, 8)), (0.75, (10, 11))],
}


def _regressor_row(verts: np.ndarray, candidates: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Weights over `candidates` closest to uniform that sum to 1 and reproduce `point`."""
    pts = verts[candidates]
    k = len(candidates)
    a = np.concatenate([pts.T, np.ones((1, k))])  # [4, k]
    b = np.concatenate([point, [1.0]])
    w0 = np.full(k, 1.0 / k)
    w = w0 + a.T @ np.linalg.solve(a @ a.T + 1e-12 * np.eye(4), b - a @ w0)
    row = np.zeros(len(verts))
    row[candidates] = w
    return row


def _near(verts, seg_ids, names, point, axis, slab=0.025, radius=0.2) -> np.ndarray:
    """Vertices of the named segments in a slab through `point` orthogonal to `axis`."""
    mask = np.isin(seg_ids, names)
    d = verts - point
    mask &= (np.abs(d @ axis) < slab) & (np.linalg.norm(d, axis=1) < radius)
    return np.nonzero(mask)[0]


def _mesh() -> dict:
    """Assembles the segments into one mesh with per-vertex segment ids and skinning weights."""
    segs = _segments()
    verts, faces, weights, seg_ids, starts = [], [], [], [], {}
    offset = 0
    for seg in segs:
        v, f, u = _tube(seg)
        starts[seg["name"]] = offset
        kind, _, side = seg["name"].partition("_")
        if kind == "torso":
            w = _torso_weights(v)
        else:
            pick = lambda j: j if isinstance(j, int) else j[0 if side == "l" else 1]  # noqa: B023
            w = _chain_weights(u, [(pos, pick(j)) for pos, j in _BONE_NODES[kind]])
        verts.append(v), faces.append(f + offset), weights.append(w)
        seg_ids += [seg["name"]] * len(v)
        offset += len(v)
    verts = np.concatenate(verts)
    seg_ids = np.asarray(seg_ids)
    # A nose: a smooth 2 cm bump so that, as on a person, the nose tip is the most forward point
    # of the face (the head tube alone bulges most at the brow).
    head = (seg_ids == "head") & (verts[:, 2] > 0.05)
    d2 = ((verts[head, :2] - [0.0, 0.405]) ** 2).sum(-1)
    verts[head, 2] += 0.02 * np.exp(-d2 / (2 * 0.012**2))
    # Bridge each segment's proximal pole to its parent with 4 faces hidden inside the joint.
    for seg in segs[1:]:
        pole = starts[seg["name"]]
        parent = np.nonzero(seg_ids == seg["parent"])[0]
        near = parent[np.argsort(np.linalg.norm(verts[parent] - verts[pole], axis=1))[:4]]
        faces.append(np.array([[pole, near[i], near[(i + 1) % 4]] for i in range(4)]))
    faces = np.concatenate(faces)
    assert verts.shape == (NUM_VERTICES, 3) and faces.shape == (NUM_FACES, 3)
    return dict(verts=verts, faces=faces, weights=np.concatenate(weights), seg_ids=seg_ids,
                segs={s["name"]: s for s in segs})  # fmt: skip


def _axis(seg: dict) -> np.ndarray:
    d = np.asarray(seg["b"], float) - np.asarray(seg["a"], float)
    return d / np.linalg.norm(d)


# Segments whose vertices regress each SMPL joint; the first one's axis orients the slab.
_JOINT_SEGMENTS = {
    0: ["torso"], 3: ["torso"], 6: ["torso"], 9: ["torso"], 12: ["torso", "head"],
    15: ["head"], 1: ["thigh_l"], 2: ["thigh_r"], 4: ["shin_l", "thigh_l"],
    5: ["shin_r", "thigh_r"], 7: ["shin_l", "foot_l"], 8: ["shin_r", "foot_r"],
    10: ["foot_l"], 11: ["foot_r"], 13: ["torso"], 14: ["torso"], 16: ["uarm_l"],
    17: ["uarm_r"], 18: ["farm_l", "uarm_l"], 19: ["farm_r", "uarm_r"],
    20: ["hand_l", "farm_l"], 21: ["hand_r", "farm_r"], 22: ["hand_l"], 23: ["hand_r"],
}  # fmt: skip


def _point_row(mesh: dict, names: list[str], point, axis=None, slab=0.025) -> np.ndarray:
    seg = mesh["segs"][names[0]]
    axis = _axis(seg) if axis is None else np.asarray(axis, float)
    cand = _near(mesh["verts"], mesh["seg_ids"], names, np.asarray(point, float), axis, slab)
    return _regressor_row(mesh["verts"], cand, np.asarray(point, float))


def _joint_regressors(mesh: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 24 SMPL rows, VIBE's 9 extra rows and the 17 Human3.6M rows."""
    j = REST_JOINTS
    collar_axis = {13: [1.0, 0, 0], 14: [1.0, 0, 0]}
    smpl = np.stack([
        _point_row(mesh, _JOINT_SEGMENTS[k], j[k], collar_axis.get(k), 0.03) for k in range(24)
    ])  # fmt: skip
    y = [0.0, 1.0, 0.0]
    top = mesh["verts"][np.nonzero(mesh["seg_ids"] == "head")[0][-1]] - [0, 0.004, 0]
    extra_points = [  # order of VIBE's J_regressor_extra rows
        (["thigh_r"], j[2] + [-0.02, -0.05, 0.0], None),
        (["thigh_l"], j[1] + [0.02, -0.05, 0.0], None),
        (["head", "torso"], [0.0, 0.30, 0.0], y), (["head"], top, y),
        (["torso"], [0.0, -0.30, 0.02], y), (["torso"], [0.0, 0.22, 0.02], y),
        (["torso"], [0.0, 0.03, 0.02], y), (["head"], [0.0, 0.37, 0.07], y),
        (["head"], [0.0, 0.47, 0.03], y),
    ]  # fmt: skip
    h36m_points = [  # our h36m17 order, see layouts.H36M17_NAMES
        (["torso"], [0.0, -0.25, 0.02], y),
        (["thigh_l"], j[1] + [0.03, -0.02, 0.0], None), (["shin_l", "thigh_l"], j[4], None),
        (["shin_l", "foot_l"], j[7], None),
        (["thigh_r"], j[2] + [-0.03, -0.02, 0.0], None), (["shin_r", "thigh_r"], j[5], None),
        (["shin_r", "foot_r"], j[8], None),
        (["torso"], [0.0, 0.0, 0.02], y), (["torso"], [0.0, 0.24, 0.02], y),
        (["head"], [0.0, 0.38, 0.06], y), (["head"], [0.0, 0.56, 0.03], y),
        (["uarm_l"], j[16], None), (["farm_l", "uarm_l"], j[18], None),
        (["hand_l", "farm_l"], j[20], None),
        (["uarm_r"], j[17], None), (["farm_r", "uarm_r"], j[19], None),
        (["hand_r", "farm_r"], j[21], None),
    ]  # fmt: skip
    rows = lambda pts: np.stack([_point_row(mesh, n, p, a, 0.03) for n, p, a in pts])
    return smpl, rows(extra_points), rows(h36m_points)


def _landmarks(mesh: dict) -> tuple[int, ...]:
    """Vertex ids of the nose, eyes, ears, toes and heels (model.LANDMARK_NAMES order)."""
    v, ids = mesh["verts"], mesh["seg_ids"]

    def nearest(seg, point):
        cand = np.nonzero(ids == seg)[0]
        return int(cand[np.argmin(np.linalg.norm(v[cand] - point, axis=1))])

    out = [nearest("head", [0.0, 0.40, 0.16])]
    out += [nearest("head", [-0.035, 0.45, 0.13]), nearest("head", [0.035, 0.45, 0.13])]
    out += [nearest("head", [-0.10, 0.44, 0.02]), nearest("head", [0.10, 0.44, 0.02])]
    for side, s in (("l", 1.0), ("r", -1.0)):
        seg = mesh["segs"][f"foot_{side}"]
        tip, heel = np.asarray(seg["b"]), np.asarray(seg["a"])
        out += [nearest(f"foot_{side}", tip + [-0.02 * s, -0.01, 0.03]),
                nearest(f"foot_{side}", tip + [0.035 * s, -0.01, 0.0]),
                nearest(f"foot_{side}", heel + [0.0, -0.01, -0.04])]  # fmt: skip
    return tuple(out)


def _radial(mesh: dict) -> np.ndarray:
    """Unit vectors from each vertex's segment axis out to the vertex."""
    out = np.zeros_like(mesh["verts"])
    for name, seg in mesh["segs"].items():
        idx = np.nonzero(mesh["seg_ids"] == name)[0]
        a, axis = np.asarray(seg["a"], float), _axis(seg)
        d = mesh["verts"][idx] - a
        r = d - (d @ axis)[:, None] * axis
        out[idx] = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-6)
    return out


def _shapedirs(mesh: dict, rng: np.random.Generator) -> np.ndarray:
    """Ten smooth shape directions (metres per unit beta), most with an anatomical meaning:
    stature, girth, leg length, arm length, belly, shoulder width, hip width, head size, and
    two seeded free-form directions."""
    v, ids = mesh["verts"], mesh["seg_ids"]
    kind = np.array([s.split("_")[0] for s in ids])
    side = np.sign(v[:, 0])
    radial = _radial(mesh)
    ground = v[:, 1].min()
    d = np.zeros((NUM_VERTICES, 3, 10))
    # Stature scales about the pelvis: a direction that moved the whole body (scaling about the
    # feet did) would duplicate the camera translation and leave the shape unconstrained.
    d[:, :, 0] = (v - REST_JOINTS[0]) * [0.012, 0.035, 0.012]
    d[:, :, 1] = radial * np.where(kind == "torso", 0.022, 0.012)[:, None]
    legs = np.isin(kind, ["thigh", "shin", "foot"])
    hip_y = REST_JOINTS[1, 1]
    d[legs, 1, 2] = -0.04 * np.clip((hip_y - v[legs, 1]) / (hip_y - ground), 0, 1)
    arms = np.isin(kind, ["uarm", "farm", "hand"])
    d[arms, 0, 3] = 0.035 * side[arms] * np.clip((np.abs(v[arms, 0]) - 0.17) / 0.65, 0, 1)
    front = np.clip(radial[:, 2], 0, 1) * np.exp(-(((v[:, 1] + 0.08) / 0.12) ** 2))
    d[:, 2, 4] = np.where(kind == "torso", 0.03 * front, 0.0)
    upper = _smoothstep((v[:, 1] - 0.05) / 0.12) * (np.isin(kind, ["torso"]) | arms)
    d[:, 0, 5] = 0.015 * side * upper * _smoothstep(np.abs(v[:, 0]) / 0.1)
    lower = _smoothstep((-0.15 - v[:, 1]) / 0.15) * (kind != "head")
    d[:, 0, 6] = 0.012 * side * lower * _smoothstep(np.abs(v[:, 0]) / 0.08)
    head = kind == "head"
    d[head, :, 7] = (v[head] - [0.0, 0.45, 0.03]) * 0.08
    for k in (8, 9):
        centres = v[rng.choice(NUM_VERTICES, 6, replace=False)]
        dirs = rng.normal(size=(6, 3)) * 0.01
        dist2 = ((v[:, None, :] - centres[None]) ** 2).sum(-1)
        d[:, :, k] = np.exp(-dist2 / (2 * 0.12**2)) @ dirs
    return d


def _posedirs(mesh: dict, rng: np.random.Generator) -> np.ndarray:
    """Small seeded pose-corrective fields, each local to the joint whose rotation drives it."""
    v = mesh["verts"]
    out = np.zeros((NUM_VERTICES, 3, 207))
    for j in range(1, 24):
        falloff = np.exp(-((v - REST_JOINTS[j]) ** 2).sum(-1) / (2 * 0.06**2))
        dirs = rng.normal(size=(9, 3)) * 0.004
        out[:, :, 9 * (j - 1) : 9 * j] = falloff[:, None, None] * dirs.T[None]
    return out


@functools.lru_cache(maxsize=4)
def _procedural_arrays(seed: int) -> dict:
    mesh = _mesh()
    rng = np.random.default_rng(seed)
    smpl_rows, extra_rows, h36m_rows = _joint_regressors(mesh)
    return dict(
        v_template=mesh["verts"], shapedirs=_shapedirs(mesh, rng), posedirs=_posedirs(mesh, rng),
        J_regressor=smpl_rows, weights=mesh["weights"], faces=mesh["faces"],
        J_regressor_extra=extra_rows, J_regressor_h36m=h36m_rows, landmarks=_landmarks(mesh),
    )  # fmt: skip


def procedural(seed: int = 0) -> SMPLModel:
    """The procedural SMPL-format body (see the module docstring).

    Args:
      seed: seeds the pose-corrective directions and the two free shape directions.

    Returns:
      An SMPLModel with gender 'procedural', landmarks and both extra regressors.
    """
    arrays = _procedural_arrays(int(seed))
    return from_arrays(**arrays, parents=SMPL_PARENTS, gender="procedural", source="procedural")
