"""The coordinated motion family (the distribution-shift test set): limits, routines that move
the whole body on one phase, and the same observation pipeline as the training family."""

import numpy as np
import pytest

from lmr_jax.data import coordinated, motion, synthetic

CONFIG = synthetic.MotionConfig(family="coordinated")


@pytest.fixture(scope="module")
def videos():
    return [synthetic.generate_video((5, 2, i), CONFIG, num_frames=450) for i in range(6)]


def test_deterministic_within_limits_and_observed_like_the_training_family(videos):
    again = synthetic.generate_video((5, 2, 0), CONFIG, num_frames=450)
    for key in ("pose", "kp2d", "cam", "facing_cue"):
        np.testing.assert_array_equal(again[key], videos[0][key])
    lo, hi = motion.joint_limits()
    pose = np.concatenate([v["pose"] for v in videos]).reshape(-1, 24, 3)
    assert np.all(pose[:, 1:] >= lo[1:] - 1e-6) and np.all(pose[:, 1:] <= hi[1:] + 1e-6)
    parts = synthetic.generate_video((5, 2, 0), num_frames=450)
    assert not np.allclose(parts["pose"], videos[0]["pose"])  # another family, same seed
    for v in videos:
        assert v["kp2d"].shape == (450, 49, 3) and 0.5 < v["kp2d"][..., 2].mean() < 1.0
    with pytest.raises(ValueError, match="motion family 'dance' is unknown"):
        synthetic.generate_video(0, synthetic.MotionConfig(family="dance"), num_frames=10)


def test_routines_last_two_to_five_seconds_and_all_occur(videos):
    seen = set()
    for v in videos:
        marks = np.stack([v["envelopes"][r] for r in coordinated.ROUTINES], 1)
        assert np.all(marks.sum(1) == 1)  # one routine at a time
        current = marks.argmax(1)
        changes = np.flatnonzero(np.diff(current)) + 1
        lengths = np.diff(changes)  # inner segments, not cut by the video's ends
        assert np.all(lengths >= 2.0 * CONFIG.fps - 1) and np.all(lengths <= 5.0 * CONFIG.fps)
        assert np.all(current[changes] != current[changes - 1])
        seen |= {coordinated.ROUTINES[i] for i in set(current)}
    assert len(seen) >= 5


def _segment_frames(video, routine):
    """Frames in the middle of each segment of `routine` (away from the cross-fades)."""
    mark = video["envelopes"][routine] > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mark.astype(int), [0]]))).reshape(-1, 2)
    return [np.arange(a + 20, b - 20) for a, b in edges if b - a > 60]


def test_the_whole_body_moves_on_one_phase():
    # Jumping jacks: the left shoulder rises while the left hip spreads; walking: the left arm
    # swings forward with the right leg (against the left leg).
    found = {"jumping_jack": 0, "walk": 0}
    for i in range(40):
        video = synthetic.generate_video((9, 2, i), CONFIG, num_frames=300)
        pose = video["pose"].reshape(-1, 24, 3)
        for frames in _segment_frames(video, "jumping_jack"):
            assert np.corrcoef(pose[frames, 16, 2], pose[frames, 1, 2])[0, 1] > 0.9
            found["jumping_jack"] += 1
        for frames in _segment_frames(video, "walk"):
            arm, left_hip, right_hip = pose[frames, 16, 0], pose[frames, 1, 0], pose[frames, 2, 0]
            assert np.corrcoef(arm, left_hip)[0, 1] < -0.8
            assert np.corrcoef(arm, right_hip)[0, 1] > 0.8
            found["walk"] += 1
        if min(found.values()) >= 3:
            break
    assert min(found.values()) >= 3, found


def test_the_parts_family_has_no_such_lock():
    # In the training family the arms and legs have independent signals and envelopes.
    corr = []
    for i in range(8):
        pose = synthetic.generate_video((9, 0, i), num_frames=300)["pose"].reshape(-1, 24, 3)
        corr.append(np.corrcoef(pose[:, 16, 2], pose[:, 1, 2])[0, 1])
    assert np.median(np.abs(corr)) < 0.5
