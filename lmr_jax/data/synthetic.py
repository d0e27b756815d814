"""The synthetic motion generator: seeded videos of an SMPL-format body with part-wise dynamics.

It makes lmr_jax runnable with nothing downloaded and is the benchmark our model comparisons are
measured on, so the motion is built to need both time and body structure:

* Parts move on their own (`lmr_jax.data.motion`): activity switches between parts every
  1-3 s (arms busy while legs rest, then the reverse), each part has its own frequency band
  (root, head, gait-like legs, arms), joint angles stay within anatomical limits, and the root
  turns slowly and sometimes leans.
* Per-video shape betas ~ N(0, 1) clipped to [-2, 2]; a weak-perspective camera
  `cam = [s, tx, ty]` that zooms (s) and drifts (t) smoothly.
* Observations: the `vibe49` joints projected with `geometry.weak_perspective_project`,
  Gaussian pixel noise (1-4 px on a 224-pixel crop), occlusion events that hide a body part
  (a limb, both legs, one side, the head) for 6-40 consecutive frames, confidence 0 (and
  coordinates 0) where occluded or outside the [-1, 1] crop; and a noisy front/back facing cue.

Axis convention (the same as VIBE's labels of real data): the camera frame has x right, y DOWN,
z away from the camera. The global orientation is `R_x(pi) @ R_y(yaw) @ R_x(lean) @ R_z(roll)`:
the 180-degree turn about x stands SMPL's y-up body upright in the y-down frame, so yaw = 0
faces the camera, and projected keypoints look like image keypoints (head at the top, the
person's left on image right when facing the camera). `kp3d` is the posed body with zero
translation in that frame (metres); `pose[:, :3]` includes the flip.

Everything except the body model forward is numpy; the same seed gives the same video.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax import geometry, smpl
from lmr_jax.data import coordinated, motion
from lmr_jax.smpl.layouts import EXTRA9_NAMES

LAYOUT = "vibe49"
NUM_JOINTS = 49
CROP_PIXELS = 224  # VIBE's crops; pixel noise is given in these pixels


@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """Knobs of the generator; the defaults are the benchmark's.

    Attributes:
      fps: frame rate (3DPW in VIBE's data is 30 fps).
      num_frames: (min, max) video length, drawn uniformly per video.
      pixel_noise: (min, max) std of the 2D noise in crop pixels, drawn per video.
      occlusions_per_second: rate of occlusion events.
      occlusion_frames: (min, max) duration of one occlusion event in frames.
      facing_noise: std of the Gaussian noise on the facing cue.
      scale: (min, max) mean camera scale s per video (0.9, VIBE's mean camera: a 1.75 m person
        fills ~80% of the crop height).
      family: the motion model: 'parts' (independent part dynamics, `lmr_jax.data.motion`, the
        benchmark's training family) or 'coordinated' (whole-body routines,
        `lmr_jax.data.coordinated`, the distribution-shift test family).
    """

    fps: float = 30.0
    num_frames: tuple[int, int] = (120, 300)
    pixel_noise: tuple[float, float] = (1.0, 4.0)
    occlusions_per_second: float = 0.6
    occlusion_frames: tuple[int, int] = (6, 40)
    facing_noise: float = 0.3
    scale: tuple[float, float] = (0.6, 0.95)
    family: str = "parts"


@functools.cache
def joint_parts(layout: str = LAYOUT) -> tuple[str, ...]:
    """The LMR part (`smpl.PARTS` key) each joint of a layout belongs to, for occlusions."""
    smpl_part = {j: part for part, joints in smpl.PARTS.items() for j in joints}
    by_name = {"pelvis_mpii": "root", "thorax_mpii": "root", "spine_h36m": "root"}
    out = []
    for kind, index in smpl.get_layout(layout).sources:
        if kind == "smpl":
            out.append(smpl_part[index])
            continue
        name = (smpl.LANDMARK_NAMES if kind == "vertex" else EXTRA9_NAMES)[index]
        if name in by_name:
            out.append(by_name[name])
        elif any(k in name for k in ("toe", "heel", "hip")):
            out.append(name.split("_")[0] + "_leg")  # 'left_big_toe' -> 'left_leg'; LSP hips
        else:
            out.append("head")  # nose, eyes, ears, neck, head top, jaw
    return tuple(out)


_OCCLUDERS = (
    ("head",), ("left_arm",), ("right_arm",), ("left_leg",), ("right_leg",),
    ("left_leg", "right_leg"), ("left_arm", "left_leg"), ("right_arm", "right_leg"),
)  # fmt: skip


def sample_occlusions(rng, num_frames: int, config: MotionConfig) -> np.ndarray:
    """Occlusion events, each hiding a group of parts (`_OCCLUDERS`) for several frames.

    Args:
      rng: a numpy Generator.
      num_frames: N.
      config: rate and durations of the events.

    Returns:
      [N, 49] bool, True where the joint is visible.
    """
    parts = np.array(joint_parts())
    visible = np.ones((num_frames, len(parts)), bool)
    for _ in range(rng.poisson(config.occlusions_per_second * num_frames / config.fps)):
        start = int(rng.integers(num_frames))
        length = int(rng.integers(config.occlusion_frames[0], config.occlusion_frames[1] + 1))
        hidden = np.isin(parts, _OCCLUDERS[rng.integers(len(_OCCLUDERS))])
        visible[start : start + length, hidden] = False
    return visible


def sample_camera(rng, kp3d: np.ndarray, config: MotionConfig) -> np.ndarray:
    """A zooming, drifting weak-perspective camera that loosely tracks the body.

    Like a tracked crop, t follows the (0.5 s smoothed) centre of the body's 2D box, plus a
    slow drift; s zooms by up to ~+-20% around the video's scale.

    Args:
      rng: a numpy Generator.
      kp3d: [N, J, 3] joints in the camera frame.
      config: the scale range and frame rate.

    Returns:
      [N, 3] cameras [s, tx, ty].
    """
    num_frames, fps = kp3d.shape[0], config.fps
    centre = 0.5 * (kp3d[..., :2].min(axis=1) + kp3d[..., :2].max(axis=1))
    centre = motion.smooth(centre, int(0.5 * fps))
    drift = 0.08 * motion.band_signals(rng, num_frames, fps, (0.03, 0.25), shape=(2,))
    trans = -centre + rng.uniform(-0.05, 0.05, size=2) + drift
    scale = rng.uniform(*config.scale) * np.exp(
        0.1 * motion.band_signals(rng, num_frames, fps, (0.03, 0.2))
    )
    return np.concatenate([scale[:, None], trans], axis=1)


@functools.partial(jax.jit, static_argnames=("layout",))
def _render_chunk(model, betas, pose, layout=LAYOUT):
    rotmats = geometry.pose72_to_rotmats(pose)
    verts, joints = smpl.forward(model, jnp.broadcast_to(betas, (pose.shape[0], 10)), rotmats)
    return smpl.layout_joints(model, verts, joints, layout)


_root_axis_angle = jax.jit(geometry.matrix_to_axis_angle)
_project = jax.jit(geometry.weak_perspective_project)


def _chunked(fn, *arrays, chunk: int = 64) -> np.ndarray:
    """Applies a jitted `fn` over the leading axis in fixed chunks, so that one compilation
    serves every video length (eager jnp calls would compile once per length)."""
    num = arrays[0].shape[0]
    size = -(-num // chunk) * chunk
    padded = [np.zeros((size, *a.shape[1:]), np.float32) for a in arrays]
    for p, a in zip(padded, arrays, strict=True):
        p[:num] = a
    out = [np.asarray(fn(*(p[i : i + chunk] for p in padded))) for i in range(0, size, chunk)]
    return np.concatenate(out)[:num]


def render_joints(model: smpl.SMPLModel, betas: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """`vibe49` joints of the posed body with zero translation.

    Args:
      model: the body model.
      betas: [10] shape.
      pose: [N, 72] axis-angle pose.

    Returns:
      [N, 49, 3] float32 joints in metres.
    """
    betas = jnp.asarray(betas, jnp.float32)
    return _chunked(lambda p: _render_chunk(model, betas, p), pose)


def observe(rng, kp3d: np.ndarray, cam: np.ndarray, facing: np.ndarray, config: MotionConfig):
    """What a detector would see: noisy, occluded 2D keypoints and a noisy facing cue.

    The facing cue is tanh(3 * facing) + N(0, facing_noise): mostly front versus back, as
    image features tell, little about the exact angle. Depth (kp3d's z) is never used.

    Args:
      rng: a numpy Generator.
      kp3d: [N, 49, 3] joints in the camera frame.
      cam: [N, 3] cameras.
      facing: [N] true facing in [-1, 1] (1: the body faces the camera).
      config: noise, occlusion and frame-rate settings.

    Returns:
      kp2d [N, 49, 3] (x, y zeroed where the confidence is 0) and the cue [N], float32.
    """
    num_frames = kp3d.shape[0]
    xy = _chunked(_project, kp3d, cam)
    sigma = rng.uniform(*config.pixel_noise) / (CROP_PIXELS / 2)
    xy = xy + rng.normal(0.0, sigma, size=xy.shape)
    inside = np.all(np.abs(xy) <= 1.0, axis=-1)
    conf = (sample_occlusions(rng, num_frames, config) & inside).astype(np.float32)
    kp2d = np.concatenate([xy * conf[..., None], conf[..., None]], axis=-1).astype(np.float32)
    cue = np.tanh(3.0 * facing) + rng.normal(0.0, config.facing_noise, size=num_frames)
    return kp2d, cue.astype(np.float32)


def generate_video(seed, config: MotionConfig | None = None, model=None, num_frames=None) -> dict:
    """One synthetic video, fully determined by `seed`.

    Args:
      seed: an int or a sequence of ints (numpy SeedSequence entropy), e.g. (base, split, i).
      config: generator settings (defaults: MotionConfig()).
      model: the body model; None uses `smpl.procedural(0)`.
      num_frames: the length; None draws it from config.num_frames.

    Returns:
      A dict of numpy arrays: pose [N, 72], betas [10], cam [N, 3], kp3d [N, 49, 3],
      kp2d [N, 49, 3] (noisy, crop-normalised xy + confidence), facing [N] (true, in [-1, 1]),
      facing_cue [N] (noisy), envelopes {part: [N]} (family 'coordinated': {routine: [N]},
      1 where the routine plays).
    """
    config = config or MotionConfig()
    model = smpl.procedural(0) if model is None else model
    rng = np.random.default_rng(seed)
    if num_frames is None:
        num_frames = int(rng.integers(config.num_frames[0], config.num_frames[1] + 1))
    if config.family == "parts":
        env = motion.part_envelopes(rng, num_frames, config.fps)
        pose = motion.sample_pose(rng, num_frames, config.fps, env)
        root, facing = motion.global_orientation(rng, num_frames, config.fps)
    elif config.family == "coordinated":
        pose, segments = coordinated.sample_pose(rng, num_frames, config.fps)
        root, facing = coordinated.global_orientation(rng, num_frames, config.fps, segments)
        env = {name: np.zeros(num_frames) for name in coordinated.ROUTINES}
        for start, stop, name in segments:
            env[name][start:stop] = 1.0
    else:
        raise ValueError(f"motion family '{config.family}' is unknown, expected 'parts' or "
                         "'coordinated'.")  # fmt: skip
    pose[:, 0] = _chunked(_root_axis_angle, root)
    pose = pose.reshape(num_frames, 72).astype(np.float32)
    betas = np.clip(rng.normal(size=10), -2.0, 2.0).astype(np.float32)
    kp3d = render_joints(model, betas, pose)
    cam = sample_camera(rng, kp3d, config).astype(np.float32)
    kp2d, cue = observe(rng, kp3d, cam, facing, config)
    return dict(pose=pose, betas=betas, cam=cam, kp3d=kp3d, kp2d=kp2d,
                facing=facing.astype(np.float32), facing_cue=cue, envelopes=env)  # fmt: skip


def make_example(video: dict, features: np.ndarray, vid_name: str, *, with_3d: bool = True):
    """A schema example (lmr_jax.data.schema) from a generated video and its features.

    Args:
      video: the output of `generate_video`.
      features: [N, D] features of the video (`featurize(video['kp2d'], video['facing_cue'])`).
      vid_name: the video's name.
      with_3d: False masks every 3D and SMPL label (zeros, flags 0, camera unknown), giving
        the 2D-only variant that stands in for VIBE's 2D datasets.

    Returns:
      A dict with the schema's fields.
    """
    num = features.shape[0]
    example = dict(
        features=np.asarray(features, np.float32),
        kp2d=video["kp2d"],
        kp3d=np.concatenate([video["kp3d"], np.ones((num, NUM_JOINTS, 1), np.float32)], -1),
        pose=video["pose"],
        shape=np.tile(video["betas"], (num, 1)),
        cam=video["cam"],
        has_smpl=np.ones(num, np.float32),
        has_kp3d=np.ones(num, np.float32),
        frame_ids=np.arange(num, dtype=np.int32),
        vid_name=vid_name,
    )
    if not with_3d:
        for field in ("kp3d", "pose", "shape", "cam", "has_smpl", "has_kp3d"):
            example[field] = np.zeros_like(example[field])
    return example
