"""Part-wise body dynamics of the synthetic motion generator (see lmr_jax.data.synthetic).

A Markov chain of activity modes (arms, legs, both, calm; 1-3 s each) switches the parts'
amplitude envelopes on and off, so arms are busy while legs rest and then the reverse. Each
part has its own frequency band (`BANDS`): the root (global orientation and spine) 0.05-0.35 Hz,
the head 0.25-0.8 Hz plus smooth head turns, the legs gait-like cycles at a 0.75-1.05 Hz stride
(left and right in antiphase) or slow in-phase squats, the arms 1.0-2.2 Hz. Within a part,
joints are driven by a few shared latent signals (coordinated motion). Every body joint's
axis-angle components stay inside `joint_limits` through a smooth clamp; the root turns slowly
about the vertical and sometimes leans. Everything is numpy, driven by one Generator.
"""

from __future__ import annotations

import functools

import numpy as np

# Frequency bands (Hz) of the parts' latent signals; `legs` is the stride frequency of the gait.
BANDS = {
    "root": (0.05, 0.35),
    "head": (0.25, 0.8),
    "arms": (1.0, 2.2),
    "legs": (0.75, 1.05),
}
# Activity modes of the parts and their transition probabilities (rows: from; cols: to).
MODES = ("arms", "legs", "both", "calm")
_MODE_TRANSITIONS = np.array([
    [0.0, 0.5, 0.2, 0.3],
    [0.5, 0.0, 0.2, 0.3],
    [0.35, 0.35, 0.0, 0.3],
    [0.4, 0.4, 0.2, 0.0],
])  # fmt: skip

# Anatomical limits of the left/centre joints' axis-angle components (x, y, z), radians, in
# SMPL's frame (x to the body's left, y up, z forward). Right joints mirror their left twin:
# (x, y, z) -> (x, -y, -z). E.g. knee flexion is +x, hip flexion -x, left elbow flexion -y,
# left arm down -z.
_LEFT_LIMITS = {
    1: ((-1.6, 0.4), (-0.5, 0.5), (-0.25, 0.7)),  # hip
    3: ((-0.35, 0.5), (-0.35, 0.35), (-0.25, 0.25)),  # spine1
    4: ((0.0, 2.2), (-0.1, 0.1), (-0.1, 0.1)),  # knee
    6: ((-0.35, 0.5), (-0.35, 0.35), (-0.25, 0.25)),  # spine2
    7: ((-0.5, 0.6), (-0.2, 0.2), (-0.3, 0.3)),  # ankle
    9: ((-0.35, 0.5), (-0.35, 0.35), (-0.25, 0.25)),  # spine3
    10: ((-0.3, 0.3), (-0.1, 0.1), (-0.1, 0.1)),  # foot
    12: ((-0.4, 0.5), (-0.6, 0.6), (-0.3, 0.3)),  # neck
    13: ((-0.2, 0.2), (-0.3, 0.3), (-0.3, 0.2)),  # collar
    15: ((-0.4, 0.5), (-0.8, 0.8), (-0.3, 0.3)),  # head
    16: ((-1.2, 1.2), (-1.5, 0.7), (-1.5, 0.6)),  # shoulder
    18: ((-0.6, 0.6), (-2.4, 0.0), (-0.1, 0.1)),  # elbow
    20: ((-0.5, 0.5), (-0.4, 0.4), (-0.8, 0.6)),  # wrist
    22: ((-0.2, 0.2), (-0.2, 0.2), (-0.4, 0.4)),  # hand
}
_MIRROR = {2: 1, 5: 4, 8: 7, 11: 10, 14: 13, 17: 16, 19: 18, 21: 20, 23: 22}
# Amplitudes (radians RMS at full activity) of the latent-signal motion per joint and axis.
_ARM_AMPLITUDE = {13: (0.08, 0.1, 0.1), 16: (0.5, 0.6, 0.6), 18: (0.3, 0.8, 0.05),
                  20: (0.3, 0.3, 0.4), 22: (0.1, 0.1, 0.2)}  # fmt: skip
_SPINE_AMPLITUDE = (0.12, 0.12, 0.08)


@functools.cache
def joint_limits() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits of the 23 body joints' axis-angle components.

    Returns:
      (lo, hi), each [24, 3]; row 0 (the global orientation) is unlimited (-inf, inf).
    """
    lo = np.full((24, 3), -np.inf)
    hi = np.full((24, 3), np.inf)
    for joint, axes in _LEFT_LIMITS.items():
        lo[joint], hi[joint] = np.array(axes).T
    for right, left in _MIRROR.items():
        sign = np.array([1.0, -1.0, -1.0])
        a, b = lo[left] * sign, hi[left] * sign
        lo[right], hi[right] = np.minimum(a, b), np.maximum(a, b)
    return lo, hi


def _smooth_clamp(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, sharpness: float = 12.0):
    """Identity well inside [lo, hi], saturating smoothly and strictly inside the limits."""

    def softplus(y):
        return np.logaddexp(0.0, sharpness * y) / sharpness

    return lo + softplus(x - lo) - softplus(x - hi)


def band_signals(rng, num_frames, fps, band, shape=(), components=3) -> np.ndarray:
    """Sums of `components` random sinusoids with frequencies in `band`, unit RMS.

    Args:
      rng: a numpy Generator.
      num_frames: N.
      fps: frame rate.
      band: (low, high) frequencies in Hz.
      shape: independent signals to draw.
      components: sinusoids per signal.

    Returns:
      [num_frames, *shape] float64.
    """
    t = np.arange(num_frames) / fps
    freq = rng.uniform(*band, size=(*shape, components))
    phase = rng.uniform(0.0, 2 * np.pi, size=(*shape, components))
    amp = rng.uniform(0.5, 1.0, size=(*shape, components))
    waves = amp * np.sin(2 * np.pi * freq * t.reshape(-1, *[1] * (len(shape) + 1)) + phase)
    return waves.sum(-1) / np.sqrt(0.5 * (amp**2).sum(-1))


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Smooths along axis 0 with a normalised Hann window of `width` frames (edge-padded).

    Args:
      x: [N, ...] signals.
      width: window length in frames (< 2: no smoothing).

    Returns:
      The smoothed signals, same shape.
    """
    if width < 2:
        return x
    window = np.hanning(width + 2)[1:-1]
    window /= window.sum()
    pad = np.pad(x, [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda v: np.convolve(v, window, mode="valid"), 0, pad)


def _segments(rng, num_frames, fps, dwell=(1.0, 3.0)):
    """A Markov chain of activity modes, as (start, stop, mode) frame segments."""
    out, start, mode = [], 0, int(rng.integers(len(MODES)))
    while start < num_frames:
        stop = min(num_frames, start + max(1, int(rng.uniform(*dwell) * fps)))
        out.append((start, stop, MODES[mode]))
        start, mode = stop, int(rng.choice(len(MODES), p=_MODE_TRANSITIONS[mode]))
    return out


def part_envelopes(rng, num_frames, fps) -> dict[str, np.ndarray]:
    """Amplitude envelopes in [0, 1] per part, switched by the activity modes.

    Args:
      rng: a numpy Generator.
      num_frames: N.
      fps: frame rate.

    Returns:
      {'left_arm', 'right_arm', 'gait', 'squat', 'head'}: [num_frames] each. Legs follow
      either a gait ('gait') or in-phase squats ('squat') in each active segment.
    """
    env = {k: np.zeros(num_frames) for k in ("left_arm", "right_arm", "gait", "squat", "head")}
    for start, stop, mode in _segments(rng, num_frames, fps):
        if mode in ("arms", "both"):
            sides = [s for s in ("left_arm", "right_arm") if rng.random() < 0.75]
            for side in sides or [("left_arm", "right_arm")[rng.integers(2)]]:
                env[side][start:stop] = rng.uniform(0.5, 1.0)
        if mode in ("legs", "both"):
            style = "gait" if rng.random() < 0.7 else "squat"
            env[style][start:stop] = rng.uniform(0.6, 1.0)
    for start, stop, _ in _segments(rng, num_frames, fps, dwell=(0.7, 2.5)):
        env["head"][start:stop] = rng.uniform(0.4, 1.0) if rng.random() < 0.6 else 0.0
    ramp = int(0.4 * fps)  # parts ease in and out over ~0.4 s
    return {k: np.clip(smooth(v, ramp), 0.0, 1.0) for k, v in env.items()}


def _latent_motion(rng, num_frames, fps, band, amplitude, latents=3) -> np.ndarray:
    """Joint angles driven by a few shared band signals: [num_frames, *amplitude.shape]."""
    z = band_signals(rng, num_frames, fps, band, shape=(latents,))
    mix = rng.normal(size=(*amplitude.shape, latents))
    mix /= np.linalg.norm(mix, axis=-1, keepdims=True)
    return np.einsum("tk,...k->t...", z, mix) * amplitude


def _legs(rng, num_frames, fps, env) -> np.ndarray:
    """Left/right leg motion [num_frames, 2, 4 joints (hip, knee, ankle, foot), 3]."""
    out = np.zeros((num_frames, 2, 4, 3))
    wobble = band_signals(rng, num_frames, fps, (0.05, 0.2))
    stride = rng.uniform(*BANDS["legs"]) * (1 + 0.1 * wobble)
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(stride) / fps
    squat = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(0.3, 0.6) * np.arange(num_frames) / fps))
    for side in range(2):
        p = phase + np.pi * side  # the legs alternate
        gait = env["gait"]
        out[:, side, 0, 0] = -0.4 * gait * np.sin(p) - 0.9 * env["squat"] * squat
        out[:, side, 1, 0] = gait * 0.6 * np.maximum(0.0, np.sin(p + 0.8)) ** 1.5
        out[:, side, 1, 0] += 1.4 * env["squat"] * squat
        out[:, side, 2, 0] = 0.2 * gait * np.sin(p - 1.0) - 0.3 * env["squat"] * squat
        out[:, side, 0, 2] = 0.05 * gait * np.sin(2 * p)
    busy = np.maximum(env["gait"], env["squat"])[:, None, None, None]
    jitter = _latent_motion(rng, num_frames, fps, (0.5, 1.5), np.full((2, 4, 3), 0.04))
    return out + busy * jitter


def _head(rng, num_frames, fps, env) -> np.ndarray:
    """Neck and head rotations [num_frames, 2, 3]: smooth turns plus nods."""
    target = np.zeros(num_frames)
    for start, stop, _ in _segments(rng, num_frames, fps, dwell=(0.7, 2.5)):
        target[start:stop] = rng.uniform(-0.9, 0.9)
    turn = smooth(target, int(0.3 * fps)) * env
    nods = _latent_motion(rng, num_frames, fps, BANDS["head"], np.full((2, 3), 0.15))
    out = nods * env[:, None, None]
    out[:, 0, 1] += 0.4 * turn  # the neck takes 40% of a head turn, the head 60%
    out[:, 1, 1] += 0.6 * turn
    return out


def global_orientation(rng, num_frames, fps) -> tuple[np.ndarray, np.ndarray]:
    """Root rotations in the y-down camera frame: R_x(pi) R_y(yaw) R_x(lean) R_z(roll).

    Args:
      rng: a numpy Generator.
      num_frames: N.
      fps: frame rate.

    Returns:
      [N, 3, 3] rotations and the true facing [N] in [-1, 1] (1: the body faces the camera).
    """
    yaw_rate = rng.uniform(-0.5, 0.5) + 0.3 * band_signals(rng, num_frames, fps, (0.02, 0.1))
    yaw = rng.uniform(-np.pi, np.pi) + np.cumsum(yaw_rate) / fps
    lean_events = np.zeros(num_frames)
    for start, stop, _ in _segments(rng, num_frames, fps, dwell=(1.0, 3.0)):
        lean_events[start:stop] = rng.uniform(0.1, 0.35) if rng.random() < 0.25 else 0.0
    lean = smooth(lean_events, int(0.6 * fps)) + 0.05 * band_signals(
        rng, num_frames, fps, BANDS["root"]
    )
    roll = 0.05 * band_signals(rng, num_frames, fps, BANDS["root"])
    rot = (
        _axis_rotation(np.full(num_frames, np.pi), 0)
        @ _axis_rotation(yaw, 1)
        @ _axis_rotation(lean, 0)
        @ _axis_rotation(roll, 2)
    )
    facing = -rot[:, 2, 2]  # minus the camera-z of the body's forward axis: 1 faces the camera
    return rot, facing


def _axis_rotation(angle: np.ndarray, axis: int) -> np.ndarray:
    """Rotation matrices [N, 3, 3] about a coordinate axis."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.zeros((*angle.shape, 3, 3))
    rot[..., axis, axis] = 1.0
    rot[..., i, i], rot[..., i, j], rot[..., j, i], rot[..., j, j] = c, -s, s, c
    return rot


def sample_pose(rng, num_frames: int, fps: float, env: dict[str, np.ndarray]) -> np.ndarray:
    """Body joint rotations within `joint_limits` (up to float32 rounding).

    Args:
      rng: a numpy Generator.
      num_frames: N.
      fps: frame rate.
      env: the part envelopes of `part_envelopes`.

    Returns:
      [N, 24, 3] axis-angle; row 0 (the global orientation) is left at zero.
    """
    lo, hi = joint_limits()
    rest = rng.normal(0.0, 0.02, size=(24, 3))
    rest[[3, 6, 9], 0] += rng.uniform(-0.03, 0.08, size=3)
    rest[16, 2] -= rng.uniform(1.0, 1.3)  # arms hang down, not SMPL's T-pose
    rest[17, 2] += rng.uniform(1.0, 1.3)
    rest[18, 1] -= rng.uniform(0.1, 0.5)
    rest[19, 1] += rng.uniform(0.1, 0.5)
    rest[[4, 5], 0] += rng.uniform(0.0, 0.15, size=2)
    body = np.zeros((num_frames, 24, 3))
    body[:, [3, 6, 9]] = _latent_motion(
        rng, num_frames, fps, BANDS["root"], np.tile(_SPINE_AMPLITUDE, (3, 1))
    )
    for side, joints in (("left_arm", (13, 16, 18, 20, 22)), ("right_arm", (14, 17, 19, 21, 23))):
        amp = np.array([_ARM_AMPLITUDE[j] for j in (13, 16, 18, 20, 22)])
        motion = _latent_motion(rng, num_frames, fps, BANDS["arms"], amp)
        body[:, list(joints)] = env[side][:, None, None] * motion
    legs = _legs(rng, num_frames, fps, env)
    body[:, [1, 4, 7, 10]] = legs[:, 0]
    body[:, [2, 5, 8, 11]] = legs[:, 1] * np.array([1.0, -1.0, -1.0])  # mirror to the right
    body[:, [12, 15]] = _head(rng, num_frames, fps, env["head"])
    pose = np.zeros((num_frames, 24, 3))
    pose[:, 1:] = _smooth_clamp(rest[1:] + body[:, 1:], lo[1:], hi[1:])
    return pose
