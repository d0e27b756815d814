"""How good is PC-HMR's calibration module before any training? Initial W and A against others.

    PYTHONPATH=. python experiments/benchmarks/calibration_init.py --videos=3 --frames=8

Frames come from the synthetic generator (lmr_jax.data.synthetic: pose, shape -> smpl.forward
gives the true mesh). A "regressed" mesh is the same frame with every joint's axis-angle
perturbed (N(0, --pose_noise) rad per component, the root at half that) and the shape
perturbed (N(0, --shape_noise) per beta); the target joints are the true mesh's joints of the
skeleton's layout (the paper's "GT 3D Pose" upper bound), or those plus N(0, --target_noise_mm)
per coordinate (a stand-in for a lifter). The table gives PVE (mm, all vertices against the
true mesh, as VIBE computes it) and MPJPE (mm, the layout's joints of the calibrated mesh
against the target, no centring) for the regressed mesh, for the untrained module as
initialised (calibration.initial_weights), and for the alternatives: W = 0 (the paper's
"w/o Non-Rigid"), W = 1, W = A0, a uniform A, a one-hot A (each vertex follows its strongest
bone), A's logits floored at 1e-3 instead of 1e-6, SMPL's 23 bones instead of Human3.6M's 16,
the template mesh instead of the regressed one ("PC-Template") and a noisy target.
Runs in seconds on a CPU; it also prints the calibration's FLOPs per frame, analytic and as
XLA's cost analysis counts them.

Measured (defaults: 24 frames, pose noise 0.2 rad, shape noise 0.5; PVE / MPJPE in mm):
regressed mesh 142.4 / 144.2; the initialisation (A0, W0) 18.6 / 0.9; W = 0 19.8 / 4.1;
W = 1 19.4 / 3.8; W = A0 19.2 / 2.9; uniform A 140.4 / 135.2; one-hot A 20.4 / 0.8; A0
floored at 1e-3 18.9 / 2.6; PC-Template 88.4 / 1.9; target + 20 mm noise 36.9 / 30.8; SMPL's
23 bones 18.9 / 3.8. FLOPs per frame (6890 vertices, 16 bones): analytic 3,563,090, XLA
3,592,074.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lmr_jax import geometry, metrics, smpl
from lmr_jax.data import synthetic
from lmr_jax.models import calibration

_VIDEOS = flags.DEFINE_integer("videos", 3, "Synthetic videos.")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per video.")
_POSE_NOISE = flags.DEFINE_float("pose_noise", 0.2, "Std of the pose perturbation, rad.")
_SHAPE_NOISE = flags.DEFINE_float("shape_noise", 0.5, "Std of the shape perturbation.")
_TARGET_NOISE = flags.DEFINE_float("target_noise_mm", 20.0, "Std of the noisy target, mm.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the videos and perturbations.")


def frames(body_model, rng):
    """True and regressed (perturbed) betas and rotation matrices of a few synthetic frames."""
    poses, betas = [], []
    for i in range(_VIDEOS.value):
        video = synthetic.generate_video((_SEED.value, i), model=body_model,
                                         num_frames=_FRAMES.value)  # fmt: skip
        poses.append(video["pose"].reshape(-1, 24, 3))
        betas.append(np.broadcast_to(video["betas"], (_FRAMES.value, 10)))
    pose, beta = np.concatenate(poses), np.concatenate(betas)
    noise = rng.normal(0.0, _POSE_NOISE.value, pose.shape)
    noise[:, 0] *= 0.5
    rot = lambda p: geometry.axis_angle_to_matrix(jnp.asarray(p, jnp.float32))
    beta_reg = beta + rng.normal(0.0, _SHAPE_NOISE.value, beta.shape)
    return (jnp.asarray(beta), rot(pose)), (jnp.asarray(beta_reg, jnp.float32), rot(pose + noise))


@functools.partial(jax.jit, static_argnames="bones")
def _calibrate(vertices, joints_src, joints_tgt, w, a, bones):
    return calibration.calibrate(vertices, joints_src, joints_tgt, w, a, bones)


def layout_mesh(body_model, betas, rotmats, layout):
    vertices, joints = smpl.forward(body_model, betas, rotmats)
    return vertices, smpl.layout_joints(body_model, vertices, joints, layout)


def row(name, vertices, joints_tgt, true_vertices, body_model, layout):
    regressor = body_model.J_regressor_h36m if layout == "h36m17" else body_model.J_regressor
    joints = jnp.einsum("jv,...vc->...jc", regressor, vertices)
    pve = float(jnp.mean(metrics.pve(vertices, true_vertices)))
    mpjpe = float(jnp.mean(jnp.linalg.norm(joints - joints_tgt, axis=-1)) * 1000.0)
    return f"{name:<44} {pve:8.1f} {mpjpe:8.1f}"


def flops_lines(num_vertices: int, num_bones: int) -> list[str]:
    bones = calibration.SKELETONS["h36m17"].bones[:num_bones]
    shapes = [
        (num_vertices, 3),
        (17, 3),
        (17, 3),
        (num_vertices, num_bones),
        (num_vertices, num_bones),
    ]
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    compiled = _calibrate.lower(*args, bones=bones).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    analytic = calibration.calibration_flops(num_vertices, num_bones)
    return [
        f"FLOPs per frame (V={num_vertices}, {num_bones} bones): analytic {analytic:,}, "
        f"XLA cost analysis {int(cost['flops']):,}"
    ]


def variant_rows(layout, body_model, rng, truth, regressed, full) -> list[str]:
    """The table rows of one skeleton (`full`: every alternative, else the initialisation)."""
    skeleton = calibration.SKELETONS[layout]
    true_vertices, target = layout_mesh(body_model, *truth, layout)
    vertices, joints_src = layout_mesh(body_model, *regressed, layout)
    a0, w0 = calibration.initial_weights(body_model, skeleton)
    floor = lambda a, f: np.maximum(a, f) / np.maximum(a, f).sum(-1, keepdims=True)
    a_default = floor(a0, 1e-6)  # the module's softmax(log(max(A0, 1e-6)))

    def cal(w, a, v=vertices, j=joints_src, t=target):
        return _calibrate(v, j, t, jnp.asarray(w), jnp.asarray(a), skeleton.bones)

    lines = []
    out = lambda name, v: lines.append(
        row(f"{layout}: {name}", v, target, true_vertices, body_model, layout)
    )
    if full:
        out("regressed mesh, no calibration", vertices)
    out("A0, W0 (the initialisation)", cal(w0, a_default))
    if not full:
        return lines
    out("A0, W = 0 (w/o non-rigid)", cal(np.zeros_like(w0), a_default))
    out("A0, W = 1", cal(np.ones_like(w0), a_default))
    out("A0, W = A0", cal(a0, a_default))
    out("uniform A, W0", cal(w0, np.full_like(a0, 1.0 / a0.shape[1])))
    one_hot = np.eye(a0.shape[1], dtype=np.float32)[np.argmax(a0, axis=-1)]
    out("one-hot A (strongest bone), W0", cal(w0, one_hot))
    out("A0 floored at 1e-3, W0", cal(w0, floor(a0, 1e-3)))
    template_vertices, template_joints = calibration.template_source(body_model, skeleton)
    template = jnp.broadcast_to(template_vertices, vertices.shape)
    template_joints = jnp.broadcast_to(template_joints, joints_src.shape)
    out("template mesh (PC-Template), A0, W0", cal(w0, a_default, template, template_joints))
    noisy = target + rng.normal(0.0, _TARGET_NOISE.value / 1000.0, target.shape)
    noisy = jnp.asarray(noisy, jnp.float32)
    out(f"A0, W0, target + {_TARGET_NOISE.value:.0f} mm noise", cal(w0, a_default, t=noisy))
    return lines


def main(argv):
    del argv
    body_model = smpl.procedural(0)
    rng = np.random.default_rng(_SEED.value)
    truth, regressed = frames(body_model, rng)
    lines = [f"{'calibration (untrained)':<44} {'PVE mm':>8} {'MPJPE mm':>8}"]
    lines += variant_rows("h36m17", body_model, rng, truth, regressed, full=True)
    lines += variant_rows("smpl24", body_model, rng, truth, regressed, full=False)
    num_frames = _VIDEOS.value * _FRAMES.value
    print(f"{num_frames} synthetic frames, pose noise {_POSE_NOISE.value} rad, shape noise "
          f"{_SHAPE_NOISE.value}; MPJPE: the layout's joints of the calibrated mesh against "
          "the true joints")  # fmt: skip
    print("\n".join(lines + flops_lines(6890, 16)))


if __name__ == "__main__":
    app.run(main)
