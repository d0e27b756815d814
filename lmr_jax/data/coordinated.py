"""A second motion family for distribution-shift tests: whole-body coordinated routines.

The training generator (`lmr_jax.data.motion`) moves each part on its own: independent
envelopes switch arms, legs and head on and off, each part in its own frequency band. Here the
whole body follows one routine at a time, every joint locked to one shared phase:

* 'walk': gait with the arms swinging against the legs (left arm with the right leg), the head
  bobbing at twice the step rate;
* 'jumping_jack': both arms rise sideways while both legs spread, in phase;
* 'squat_reach': knees and hips bend while both arms reach forward and the spine bends;
* 'twist': the spine turns left and right, the arms follow it, the head turns against it;
* 'wave': one arm waves from the elbow above the shoulder while the spine leans away;
* 'idle': a slow sway of the spine and head, the arms loose.

Timing is its own: routines last 2-5 s, each with a tempo of 0.4-1.3 Hz (one phase for the
whole body, continuous across routines) and an amplitude; routines cross-fade over ~0.5 s. The
body turns in steps (a new heading at every routine change, reached in ~1 s), leaning forward
with the squats. Joint angles use `motion.joint_limits` and its smooth clamp, and the root the
same y-down camera convention (`motion.global_orientation`), so the observation and features
pipeline (`lmr_jax.data.synthetic`) applies unchanged.
"""

from __future__ import annotations

import numpy as np

from lmr_jax.data import motion

ROUTINES = ("walk", "jumping_jack", "squat_reach", "twist", "wave", "idle")
TEMPO = (0.4, 1.3)  # Hz, one phase for the whole body
DWELL = (2.0, 5.0)  # seconds per routine
_LEFT = (1, 4, 7, 13, 16, 18, 20)  # hip, knee, ankle, collar, shoulder, elbow, wrist
_MIRROR_OF = {1: 2, 4: 5, 7: 8, 13: 14, 16: 17, 18: 19, 20: 21}
_SIGN = np.array([1.0, -1.0, -1.0])  # left (x, y, z) -> right (x, -y, -z)


def _routine_segments(rng, num_frames: int, fps: float) -> list[tuple[int, int, str]]:
    """(start, stop, routine) segments of 2-5 s, never the same routine twice in a row."""
    out, start, last = [], 0, None
    while start < num_frames:
        choices = [r for r in ROUTINES if r != last]
        routine = choices[int(rng.integers(len(choices)))]
        stop = min(num_frames, start + int(rng.uniform(*DWELL) * fps))
        out.append((start, stop, routine))
        start, last = stop, routine
    return out


def _routine_pose(name: str, phase: np.ndarray, side: int) -> np.ndarray:
    """The offsets [N, 24, 3] of one routine at full amplitude, from the rest pose; left-side
    joints are written in left coordinates and mirrored by the caller. `side` picks the waving
    arm (0 left, 1 right)."""
    n = len(phase)
    pose = np.zeros((n, 24, 3))
    s, c = np.sin(phase), np.cos(phase)
    up = 0.5 * (1.0 - c)  # 0 -> 1 -> 0 over a cycle
    legs = np.zeros((n, 2, 24, 3))  # per side, in left coordinates
    if name == "walk":
        for k, p in enumerate((phase, phase + np.pi)):  # left, right leg in antiphase
            legs[:, k, 1, 0] = -0.45 * np.sin(p)
            legs[:, k, 4, 0] = 0.7 * np.maximum(0.0, np.sin(p + 0.8)) ** 1.5
            legs[:, k, 7, 0] = 0.2 * np.sin(p - 1.0)
            legs[:, k, 16, 0] = 0.5 * np.sin(p)  # this side's arm swings with the other leg
            legs[:, k, 18, 1] = -0.3 - 0.25 * (1.0 + np.sin(p))
        pose[:, 15, 0] = 0.08 * np.sin(2 * phase)
    elif name == "jumping_jack":
        for k in range(2):
            legs[:, k, 1, 2] = 0.55 * up
            legs[:, k, 16, 2] = 1.6 * up  # from hanging to above the shoulder
            legs[:, k, 13, 2] = 0.15 * up
            legs[:, k, 18, 1] = -0.2 * up
        pose[:, 15, 0] = -0.1 * up
    elif name == "squat_reach":
        for k in range(2):
            legs[:, k, 1, 0] = -1.3 * up
            legs[:, k, 4, 0] = 1.9 * up
            legs[:, k, 7, 0] = -0.45 * up
            legs[:, k, 16, 0] = -1.1 * up  # arms forward
            legs[:, k, 16, 2] = 0.6 * up
        pose[:, [3, 6, 9], 0] = (0.3 * up)[:, None]
        pose[:, 12, 0] = -0.25 * up
    elif name == "twist":
        pose[:, [3, 6, 9], 1] = (0.3 * s)[:, None]
        pose[:, 15, 1] = -0.5 * s
        for k, sign in enumerate((1.0, -1.0)):
            legs[:, k, 16, 1] = -0.6 * s * sign
            legs[:, k, 16, 2] = 0.5
            legs[:, k, 18, 1] = -0.6
    elif name == "wave":
        legs[:, side, 16, 2] = 1.5
        legs[:, side, 18, 1] = -1.3 - 0.6 * np.sin(2 * phase)
        legs[:, side, 20, 2] = 0.3 * np.sin(2 * phase)
        lean = 0.2 if side == 0 else -0.2  # the spine leans away from the waving arm
        pose[:, [3, 6, 9], 2] = -lean * (0.7 + 0.3 * c)[:, None] / 3.0
        pose[:, 15, 2] = 0.15 * s
    elif name == "idle":
        slow = np.sin(0.5 * phase)
        pose[:, [3, 6, 9], 2] = (0.04 * slow)[:, None]
        pose[:, 15, 1] = 0.3 * slow
        for k in range(2):
            legs[:, k, 16, 0] = 0.1 * np.sin(0.5 * phase + k)
    else:
        raise ValueError(f"routine '{name}' is unknown, expected one of {ROUTINES}.")
    pose += legs[:, 0]
    for left, right in _MIRROR_OF.items():
        pose[:, right] += legs[:, 1, left] * _SIGN
    return pose


def sample_pose(rng, num_frames: int, fps: float) -> tuple[np.ndarray, list]:
    """Body joint rotations of a sequence of routines, within `motion.joint_limits`.

    Args:
      rng: a numpy Generator.
      num_frames: N.
      fps: frame rate.

    Returns:
      [N, 24, 3] axis-angle (row 0, the global orientation, zero) and the routine segments.
    """
    segments = _routine_segments(rng, num_frames, fps)
    tempo = np.zeros(num_frames)
    weights = {name: np.zeros(num_frames) for name in ROUTINES}
    side = int(rng.integers(2))
    for start, stop, name in segments:
        tempo[start:stop] = rng.uniform(*TEMPO)
        weights[name][start:stop] = rng.uniform(0.6, 1.0)
    ramp = int(0.5 * fps)
    tempo = motion.smooth(tempo, ramp)
    phase = rng.uniform(0.0, 2 * np.pi) + 2 * np.pi * np.cumsum(tempo) / fps
    body = np.zeros((num_frames, 24, 3))
    for name, weight in weights.items():
        if weight.any():
            body += motion.smooth(weight, ramp)[:, None, None] * _routine_pose(name, phase, side)
    rest = rng.normal(0.0, 0.02, size=(24, 3))
    rest[16, 2] -= rng.uniform(1.0, 1.3)  # arms hang down
    rest[17, 2] += rng.uniform(1.0, 1.3)
    rest[18, 1] -= rng.uniform(0.1, 0.3)
    rest[19, 1] += rng.uniform(0.1, 0.3)
    lo, hi = motion.joint_limits()
    pose = np.zeros((num_frames, 24, 3))
    pose[:, 1:] = motion._smooth_clamp(rest[1:] + body[:, 1:], lo[1:], hi[1:])
    return pose, segments


def global_orientation(rng, num_frames: int, fps: float, segments: list):
    """Root rotations R_x(pi) R_y(yaw) R_x(lean) R_z(roll) (motion.global_orientation's
    convention) with a new heading at each routine change and a forward lean in squats.

    Returns:
      [N, 3, 3] rotations and the true facing [N] in [-1, 1].
    """
    heading = np.zeros(num_frames)
    lean = np.zeros(num_frames)
    yaw = rng.uniform(-np.pi, np.pi)
    for start, stop, name in segments:
        heading[start:stop] = yaw
        yaw += rng.uniform(-np.pi / 2, np.pi / 2)
        lean[start:stop] = 0.25 if name == "squat_reach" else 0.0
    heading = motion.smooth(heading, int(1.0 * fps))
    lean = motion.smooth(lean, int(0.8 * fps))
    roll = 0.03 * motion.band_signals(rng, num_frames, fps, (0.1, 0.3))
    rot = (
        motion._axis_rotation(np.full(num_frames, np.pi), 0)
        @ motion._axis_rotation(heading, 1)
        @ motion._axis_rotation(lean, 0)
        @ motion._axis_rotation(roll, 2)
    )
    return rot, -rot[:, 2, 2]
