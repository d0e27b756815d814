"""`make demo`: what lmr_jax does, end to end, on this machine with nothing downloaded.

    python -m lmr_jax.demo --out_dir=out/demo

Steps (each prints what it did):
  1. builds the procedural SMPL-format body, poses it and saves a picture of it;
  2. times the jitted SMPL forward pass at a few batch sizes.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from lmr_jax import geometry, smpl, visualize

_OUT_DIR = flags.DEFINE_string("out_dir", "out/demo", "Where pictures and tables are written.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where TFDS datasets are built.")


def _demo_pose() -> np.ndarray:
    """A mid-stride pose in axis-angle [72], standing upright in a y-down camera frame."""
    pose = np.zeros((24, 3))
    pose[0] = [np.pi, 0.0, 0.0]  # SMPL is y-up; image frames are y-down
    pose[1], pose[4], pose[2] = [-0.5, 0, 0], [0.8, 0, 0], [0.4, 0, 0]
    pose[16], pose[17], pose[18] = [0, 0, -1.1], [0, 0, 1.2], [0, -1.2, 0]
    pose[15] = [0, 0.5, 0]
    return pose.reshape(72)


def body_picture(model: smpl.SMPLModel, path: str, size: int = 480) -> None:
    """Renders the body from three sides with its `vibe49` keypoints and saves a PNG."""
    base = _demo_pose()
    panels = []
    for turn in (0.0, np.pi / 2, np.pi * 0.85):
        pose = base.copy()
        root = geometry.axis_angle_to_matrix(jnp.asarray(pose[:3]))
        pose[:3] = np.asarray(
            geometry.matrix_to_axis_angle(
                root @ geometry.axis_angle_to_matrix(jnp.array([0, turn, 0.0]))
            )
        )
        rotmats = geometry.pose72_to_rotmats(jnp.asarray(pose, jnp.float32))
        verts, joints = smpl.forward(model, jnp.zeros(10), rotmats)
        kp = smpl.layout_joints(model, verts, joints, "vibe49")
        centre = np.asarray(joints[0])
        verts, kp = np.asarray(verts) - centre, np.asarray(kp) - centre
        cam = np.array([0.9, 0.0, 0.05])
        image = Image.new("RGB", (size, size), (255, 255, 255))
        visualize.render_mesh(image, visualize.project_vertices(verts, cam, size), model.faces)
        visualize.draw_keypoints(image, cam[0] * (kp[:, :2] + cam[1:]), size)
        panels.append(image)
    sheet = Image.new("RGB", (size * len(panels), size), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * size, 0))
    sheet.save(path)


def time_forward(model: smpl.SMPLModel, batch_sizes=(1, 32, 256)) -> list[tuple[int, float]]:
    """Samples per second of the jitted forward pass (vertices and joints) per batch size."""
    fwd = jax.jit(smpl.forward)
    rows = []
    for batch in batch_sizes:
        key = jax.random.PRNGKey(batch)
        pose = 0.3 * jax.random.normal(key, (batch, 24, 3))
        rotmats = geometry.axis_angle_to_matrix(pose)
        betas = jax.random.normal(key, (batch, 10))
        jax.block_until_ready(fwd(model, betas, rotmats))
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            jax.block_until_ready(fwd(model, betas, rotmats))
            calls += 1
        rows.append((batch, calls * batch / (time.perf_counter() - start)))
    return rows


def main(argv):
    del argv
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    model = smpl.procedural(seed=0)
    path = os.path.join(_OUT_DIR.value, "procedural_body.png")
    body_picture(model, path)
    print(f"[1] procedural SMPL-format body (6890 vertices, 24 joints): picture -> {path}")
    print("[2] jitted SMPL forward pass (vertices + joints), float32, this CPU:")
    print("| batch | samples/s |\n|---:|---:|")
    for batch, rate in time_forward(model):
        print(f"| {batch} | {rate:,.0f} |")


if __name__ == "__main__":
    app.run(main)
