"""Test-time occluders of the HKMR paper's occlusion experiment (Table 1, Fig. 6) on the features
path: occluder shapes, the keypoints they hide, and the features re-computed without them.

The paper (seed 002, "Robustness to Degree of Occlusions", after Sárándi et al. 2018) draws
three patterns into the test images, at a degree of occlusion (DoC) 1-5, "on one joint at a
time", and averages the MPJPE over the joints. Here, in the 224-pixel crop of the data (the
normalised crop frame [-1, 1] maps to pixels as x_px = (x + 1) / 2 * 224, `to_pixels`):

* 'bar': a stripe through the joint, `BAR_WIDTHS` = 10, 20, 30, 40, 50 px wide, long enough to
  cross the whole crop (a point is covered when its distance to the bar's axis is <= w / 2),
  its axis at an angle drawn uniformly in [0, pi);
* 'circle': a disc of radius `CIRCLE_RADII` = 10, 20, 30, 40, 50 px centred on the joint
  (covered: distance <= r);
* 'rectangle': an axis-aligned rectangle of area `RECTANGLE_AREAS` = 3,000 ... 15,000 px
  centred on the joint, its aspect ratio (width / height) drawn log-uniformly in [1/2, 2]
  (covered: |dx| <= w / 2 and |dy| <= h / 2).

The random angle and aspect ratio are drawn once per (video, occluded joint) from a stream
seeded by (seed, the video's name, the joint) (`occluder_draws`) and kept for every frame and
degree: the occluder follows its joint through the video with one shape, and a higher degree
covers a superset of the keypoints a lower one covers, so the degree is the only change along a
curve. The occluder sits on the joint's true (noise-free) 2D position, the projection of the
video's 3D joints through its camera, as an object placed on the joint in the image would; the
joints it is placed on are the 14 common evaluation joints (`OCCLUDED_JOINTS`: the vibe49
entries 25..38, the joints the paper's Human3.6M MPJPE is scored on), or a subset of them.

Features path: every keypoint of the video's observed kp2d (the noisy detections the dataset
stores) inside the occluder gets confidence 0 and x = y = 0, exactly as `synthetic.observe`
marks an occluded keypoint, and the dataset's featurizer (`featurize.featurize`, with the
dataset's feature size and featurizer seed) recomputes the features from the occluded
observations. The featurizer also reads the video's noisy facing cue, which the dataset does
not store; it is not recoverable from the features in general (D = 64 has fewer linear features
than the featurizer's 148 inputs), so `regenerate` regenerates the video from its seeds as the
builder does (`Builder.regenerate_video`), checks that the regenerated keypoints are the stored
ones and that re-featurizing the unoccluded observations reproduces the stored features bit for
bit, and refuses otherwise. Datasets without such a builder (VIBE-format datasets with
precomputed SPIN image features) cannot be occluded on the features path: there is no image to
draw into and no featurizer to re-run. The frames path (drawing the occluder into rendered
frames) is not implemented.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from lmr_jax import geometry, smpl
from lmr_jax.data import featurize
from lmr_jax.smpl import VIBE49_TO_COMMON14
from lmr_jax.smpl.layouts import COMMON14_NAMES

CROP_PIXELS = 224  # VIBE's crops: the paper's occluder sizes are pixels of these
KINDS = ("bar", "circle", "rectangle")
DEGREES = (1, 2, 3, 4, 5)
BAR_WIDTHS = (10.0, 20.0, 30.0, 40.0, 50.0)  # px, DoC 1..5
CIRCLE_RADII = (10.0, 20.0, 30.0, 40.0, 50.0)  # px
RECTANGLE_AREAS = (3000.0, 6000.0, 9000.0, 12000.0, 15000.0)  # px^2
SIZES = {"bar": BAR_WIDTHS, "circle": CIRCLE_RADII, "rectangle": RECTANGLE_AREAS}
SIZE_NAMES = {"bar": "width px", "circle": "radius px", "rectangle": "area px^2"}
ASPECT_RANGE = (0.5, 2.0)  # rectangle width / height, log-uniform
OCCLUDED_JOINTS = dict(zip(COMMON14_NAMES, VIBE49_TO_COMMON14, strict=True))  # name -> slot


def parse_kinds(value: str) -> tuple[str, ...]:
    """The kinds of `config.eval.occlusion`: '' none, 'all' every kind, or comma-separated
    names; ValueError naming the allowed ones for an unknown name."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if names == ["all"]:
        return KINDS
    for name in names:
        if name not in KINDS:
            raise ValueError(f"config field eval.occlusion names '{name}', expected one of "
                             f"{(*KINDS, 'all')} (or '' for none).")  # fmt: skip
    return tuple(dict.fromkeys(names))


def parse_joints(value: str) -> tuple[str, ...]:
    """The joints of `config.eval.occlusion_joints`: '' all 14 common joints, else
    comma-separated names of them; ValueError naming the allowed ones for an unknown name."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in OCCLUDED_JOINTS:
            raise ValueError(f"config field eval.occlusion_joints names '{name}', expected "
                             f"names from {COMMON14_NAMES} (or '' for all).")  # fmt: skip
    return tuple(dict.fromkeys(names)) or COMMON14_NAMES


def to_pixels(xy: np.ndarray) -> np.ndarray:
    """Crop-frame coordinates [..., 2] in [-1, 1] as pixels of the 224-pixel crop."""
    return (np.asarray(xy, np.float64) + 1.0) / 2.0 * CROP_PIXELS


@dataclasses.dataclass(frozen=True)
class Draws:
    """The random part of one occluder: the bar's angle (radians) and the rectangle's aspect
    ratio (width / height)."""

    angle: float
    aspect: float


def occluder_draws(vid_name: str, joint: str, seed: int = 0) -> Draws:
    """The seeded angle and aspect ratio of the occluder on `joint` of video `vid_name`."""
    rng = np.random.default_rng([seed, zlib.crc32(vid_name.encode()), OCCLUDED_JOINTS[joint]])
    angle = rng.uniform(0.0, np.pi)
    aspect = float(np.exp(rng.uniform(*np.log(ASPECT_RANGE))))
    return Draws(float(angle), aspect)


def covered(
    kind: str, degree: int, centre: np.ndarray, points: np.ndarray, draws: Draws
) -> np.ndarray:
    """Which points an occluder covers.

    Args:
      kind: 'bar', 'circle' or 'rectangle'.
      degree: the degree of occlusion, 1..5.
      centre: [N, 2] the occluder's centre per frame (pixels).
      points: [N, J, 2] the points (pixels).
      draws: the bar's angle and the rectangle's aspect ratio.

    Returns:
      [N, J] bool.
    """
    size = SIZES[kind][degree - 1]
    offset = np.asarray(points, np.float64) - np.asarray(centre, np.float64)[:, None]
    if kind == "circle":
        return np.hypot(offset[..., 0], offset[..., 1]) <= size
    if kind == "bar":  # distance to the axis = |offset . normal|
        normal = np.array([-np.sin(draws.angle), np.cos(draws.angle)])
        return np.abs(offset @ normal) <= size / 2
    width, height = np.sqrt(size * draws.aspect), np.sqrt(size / draws.aspect)
    return (np.abs(offset[..., 0]) <= width / 2) & (np.abs(offset[..., 1]) <= height / 2)


def occlude(kp2d: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """kp2d [N, 49, 3] with the `hidden` [N, 49] keypoints marked as `synthetic.observe` marks
    an occluded keypoint: confidence 0 and x = y = 0."""
    keep = (~np.asarray(hidden)).astype(np.float32)[..., None]
    return (np.asarray(kp2d, np.float32) * keep).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Observations:
    """What the featurizer of one video reads, and where its joints truly are.

    Attributes:
      vid_name: the video's name (it seeds the occluders' draws).
      kp2d: [N, 49, 3] the observed keypoints (as stored).
      cue: [N] the noisy facing cue (regenerated).
      true_px: [N, 49, 2] the noise-free projections of the vibe49 joints, in pixels.
      dim: the feature size D; seed: the featurizer's seed.
    """

    vid_name: str
    kp2d: np.ndarray
    cue: np.ndarray
    true_px: np.ndarray
    dim: int
    seed: int

    def features(self, kp2d: np.ndarray | None = None) -> np.ndarray:
        """The features [N, D] of `kp2d` (default: the unoccluded observations)."""
        kp2d = self.kp2d if kp2d is None else kp2d
        return featurize.featurize(kp2d, self.cue, dim=self.dim, seed=self.seed)

    def occluded_kp2d(self, kind: str, degree: int, joint: str, seed: int = 0) -> np.ndarray:
        """The observations with the occluder of (`kind`, `degree`) on `joint` applied."""
        centre = self.true_px[:, OCCLUDED_JOINTS[joint]]
        draws = occluder_draws(self.vid_name, joint, seed)
        hidden = covered(kind, degree, centre, to_pixels(self.kp2d[..., :2]), draws)
        return occlude(self.kp2d, hidden)


def check_occludable(builder_cls, name: str) -> None:
    """Raises ValueError (one sentence) unless dataset `name`'s builder can regenerate videos."""
    if not hasattr(builder_cls, "regenerate_video"):
        raise ValueError(f"dataset '{name}' stores precomputed image features (no images, no "
                         "featurizer of 2D keypoints), so they cannot be occluded; occlusion "
                         "evaluation needs a synthetic_motion dataset.")  # fmt: skip


def regenerate(
    builder_cls, name: str, video: dict, body: smpl.SMPLModel, dim: int, seed: int
) -> Observations:
    """The observations of a stored synthetic video, its facing cue regenerated from its seeds.

    Args:
      builder_cls: the dataset's builder class (`Builder.regenerate_video`).
      name: the dataset's name with its config ('synthetic_motion/standard').
      video: the stored video (`kp2d`, `features`, `vid_name` '<dataset>/<config>/<split>/<i>').
      body: the body model the dataset was built with.
      dim, seed: the dataset's feature size and featurizer seed (its metadata).

    Raises:
      ValueError: the regenerated video is not the stored one (another body model or code).
    """
    check_occludable(builder_cls, name)
    vid_name = str(video["vid_name"])
    *_, config_name, split, index = vid_name.split("/")
    fresh = builder_cls.regenerate_video(config_name, split, int(index), body)
    obs = Observations(vid_name, np.asarray(video["kp2d"], np.float32), fresh["facing_cue"],
                       to_pixels(geometry.weak_perspective_project(fresh["kp3d"], fresh["cam"])),
                       dim, seed)  # fmt: skip
    if not np.array_equal(fresh["kp2d"], obs.kp2d) or not np.array_equal(
        obs.features(), np.asarray(video["features"])
    ):
        raise ValueError(f"video '{vid_name}' regenerated from its seeds is not the stored one "
                         "(another body model or generator version?), so its features cannot "
                         "be re-computed faithfully for occlusion.")  # fmt: skip
    return obs


def observed_videos(spec) -> Iterator[tuple[dict, Observations]]:
    """The whole videos of a dataset split (`pipeline.eval_videos`), each with its regenerated
    observations, lazily (a video is regenerated when it is reached).

    Args:
      spec: a `pipeline.DatasetSpec` of a synthetic_motion split, inputs 'features'.

    Raises:
      ValueError: frames inputs, or a dataset that cannot be occluded (one sentence).
      schema.DatasetError: the dataset is not built.
    """
    from lmr_jax.data import build, pipeline

    if spec.inputs != "features":
        raise ValueError(f"occlusion evaluation of '{spec.inputs}' inputs is not implemented: "
                         "only the features path (data.inputs='features') occludes keypoints "
                         "before the featurizer.")  # fmt: skip
    builder_cls = build.builder_class(spec.name)
    check_occludable(builder_cls, spec.name)
    meta = pipeline.open_dataset(spec).metadata
    recorded = meta.get("body", "procedural")
    body = smpl.procedural(0) if recorded == "procedural" else smpl.load(recorded)
    dim, seed = int(meta["feature_dim"]), int(meta["featurizer_seed"])
    name = spec.name.split(":")[0]
    for video in pipeline.eval_videos(spec):
        yield video, regenerate(builder_cls, name, video, body, dim, seed)
