"""Feature extraction (lmr_jax/data/extract.py, lmr-extract-features, lmr-predict --video): the
crop against a naive per-pixel warp of VIBE's affine map, features against the backbone applied
directly to reference crops, frames without a box, the fps warning, the same meshes from a video
file as from its features file, and one-sentence errors.

The videos are written here with PyAV (8 frames of 96 x 64); the backbone is a ResNet-18 with
random weights saved by tests/torch_files.py, run on 32-pixel crops.
"""

import functools
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import av
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmr_jax import checkpoints, models, optim, predict, smpl, torch_weights, train
from lmr_jax.data import boxes, extract
from lmr_jax.models.resnet import ResNet18
from tests import torch_files
from tests.runs import smoke_config
from tests.test_export import read_glb
from tests.test_torch_weights import random_resnet_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CROP, BATCH, SCALE = 32, 4, 1.3  # the commands' crops: not the default scale (1.2)
FLAGS = ["--crop_size=32", "--batch_size=4", "--crop_scale=1.3"]
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet


# ---------------------------------------------------------------------------------------------
# References and files
# ---------------------------------------------------------------------------------------------


def vibe_affine(box, crop_scale, crop_size):
    """VIBE's gen_trans_from_patch_cv (rotation 0) as cv2.getAffineTransform solves it: the box
    centre, the point half the side below it and the point half the side right of it go to
    the crop's centre, bottom-centre and right-centre. VIBE squares the box first."""
    cx, cy, w, h = box
    half = max(w, h) * crop_scale / 2
    src = np.array([[cx, cy, 1.0], [cx, cy + half, 1.0], [cx + half, cy, 1.0]])
    c = crop_size / 2
    dst = np.array([[c, c], [c, crop_size], [crop_size, c]])
    return np.linalg.solve(src, dst).T  # [2, 3]: dst = M @ (x, y, 1)


def naive_crop(image, box, crop_scale=1.2, crop_size=CROP):
    """cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) one crop pixel at a time, in float64:
    pixel (row i, column j) is the point (j, i); outside pixels are 0."""
    inverse = np.linalg.inv(np.vstack([vibe_affine(box, crop_scale, crop_size), [0, 0, 1]]))
    height, width = image.shape[:2]
    out = np.zeros((crop_size, crop_size, image.shape[2]))
    for v in range(crop_size):
        for u in range(crop_size):
            x, y, _ = inverse @ (u, v, 1.0)
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            for row, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for col, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= row < height and 0 <= col < width:
                        out[v, u] += wy * wx * image[row, col]
    return out


@functools.cache
def _resnet18_apply():
    return jax.jit(ResNet18().apply)


def reference_features(weights, frames, bbox, crop_scale=1.2):
    """The backbone applied directly to naive crops of the square boxes, normalised by hand.

    In batches of 4 padded with zeros, as the command runs it: one program, which the test
    session's compilation cache (tests/conftest.py) shares with the commands' processes."""
    squares = boxes.square_boxes(bbox)
    crops = [naive_crop(f, box, crop_scale) for f, box in zip(frames, squares, strict=True)]
    images = ((np.stack(crops) / 255.0 - MEAN) / STD).astype(np.float32)
    images = np.concatenate(
        [images, np.zeros((-len(images) % BATCH, *images.shape[1:]), np.float32)]
    )
    variables = torch_weights.load_resnet(weights, 18)
    apply = _resnet18_apply()
    chunks = [apply(variables, images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    return np.concatenate(chunks)[: len(crops)]


def clip_frames(n=8, height=64, width=96):
    """Smooth frames (a gradient and a moving disc) that H.264 keeps close to what was given."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    frames = []
    for t in range(n):
        disc = ((xx - 20 - 6 * t) ** 2 + (yy - 30) ** 2 < 120).astype(np.float64)
        frame = np.stack([1.5 * xx + 8 * t, 2.5 * yy, 60 + 150 * disc], axis=-1)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def write_video(path, frames, fps):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def decode(path):
    """The test's own decoding of every frame, as RGB."""
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def run_script(entry, *args):
    """A console script's function (main.extract_cli, main.predict_cli) in a subprocess."""
    script = {"extract_cli": "lmr-extract-features", "predict_cli": "lmr-predict"}[entry]
    code = f"import sys; sys.argv[0] = {script!r}; from lmr_jax import main; main.{entry}()"
    # The test session's XLA flags and compilation cache: the programs compiled there (the
    # backbone, the model, the body) are compiled once for the session.
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 25 fps video, a track with boxes for frames 0-2, 4, 5, 7 and 9 (which the video does
    not have), and a ResNet-18 checkpoint."""
    folder = tmp_path_factory.mktemp("clip")
    frames = clip_frames()
    video = write_video(folder / "clip.mp4", frames, fps=25)
    frame_ids = np.array([0, 1, 2, 4, 5, 7, 9])
    rng = np.random.default_rng(0)
    bbox = np.stack([rng.uniform(30, 66, 7), rng.uniform(20, 44, 7), rng.uniform(20, 50, 7),
                     rng.uniform(20, 50, 7)], axis=-1)  # fmt: skip
    bbox[3] = [5.0, 60.0, 40.0, 30.0]  # a box reaching out of the frame: 0 there
    track = str(folder / "track.npz")
    np.savez(track, bbox=bbox, frame_ids=frame_ids)
    weights = torch_files.save(random_resnet_state(18), folder / "resnet18.pth")
    return SimpleNamespace(folder=folder, frames=frames, video=video, track=track,
                           frame_ids=frame_ids, bbox=bbox, weights=weights)  # fmt: skip


@pytest.fixture(scope="module")
def extracted(clip):
    out = str(clip.folder / "clip_features.npz")
    result = run_script("extract_cli", f"--video={clip.video}", f"--bboxes={clip.track}",
                        f"--weights={clip.weights}", f"--out={out}", *FLAGS)  # fmt: skip
    return SimpleNamespace(out=out, result=result)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run for 512-d features (ResNet-18's) in the training's checkpoint layout: the smoke
    LMR (window 8) with seeded random parameters (not trained: no dataset has 512-d features,
    and a compiled init or training step would cost most of this file's time), saved at step
    0 as train.train saves its checkpoints."""
    config = smoke_config("unused")
    workdir = str(tmp_path_factory.mktemp("run"))
    model = models.build_model(config.model, smpl.procedural(0))
    features = jax.ShapeDtypeStruct((1, config.data.window, 512), np.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.05 * rng.normal(size=s.shape)).astype(s.dtype), abstract)
    optimizer = optim.make_optimizer(config.optim, config.train.num_steps)
    state = train.TrainState(step=np.int32(0), params=params,
                             opt_state=jax.device_get(optimizer.init(params)))  # fmt: skip
    mngr = checkpoints.checkpoint_manager(workdir, max_to_keep=1)
    meta = {"compat": checkpoints.compat_view(config), "step": 0}
    mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)))  # fmt: skip
    mngr.wait_until_finished()
    return workdir


# ---------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box,crop_scale,crop_size",
    [((15.3, 10.7, 12.0, 20.0), 1.2, 32),  # tall box, fractional centre: upsampling
     ((2.0, 3.0, 10.0, 8.0), 1.0, 17),  # reaching out of the top-left corner; odd crop size
     ((20.0, 14.0, 80.0, 60.0), 1.3, 16),  # larger than the frame: downsampling, 0 around
     ((29.9, 22.1, 3.0, 2.0), 1.2, 24)],  # at the bottom-right edge
)  # fmt: skip
def test_crop_matches_a_naive_warp_of_vibes_affine_map(box, crop_scale, crop_size):
    image = np.random.default_rng(1).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    want = vibe_affine(box, crop_scale, crop_size)
    np.testing.assert_allclose(extract.crop_transform(box, crop_scale, crop_size), want,
                               rtol=1e-12, atol=1e-9)  # fmt: skip
    got = extract.crop(image, box, crop_scale, crop_size)
    assert got.shape == (crop_size, crop_size, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, naive_crop(image, box, crop_scale, crop_size), atol=2e-3)


def test_crop_pixel_centres_are_integer_coordinates():
    image = np.zeros((12, 16, 3), np.uint8)
    image[5, 7] = 255
    image[5, 8] = (0, 100, 200)
    # A box of side 8 at (7, 5) cropped to 8 pixels: crop[v, u] = frame(7 + u - 4, 5 + v - 4).
    got = extract.crop(image, (7.0, 5.0, 8.0, 6.0), crop_scale=1.0, crop_size=8)
    np.testing.assert_array_equal(got, image[1:9, 3:11])
    assert (got[4, 4] == 255).all()  # the box centre is the crop's point (C/2, C/2)
    shifted = extract.crop(image, (7.5, 5.0, 8.0, 8.0), crop_scale=1.0, crop_size=8)
    np.testing.assert_allclose(shifted[4, 4], [127.5, 177.5, 227.5])  # half way to (5, 8)
    zoomed = extract.crop(image, (7.0, 5.0, 4.0, 4.0), crop_scale=1.0, crop_size=8)  # 2x
    np.testing.assert_array_equal(zoomed[4, 4], image[5, 7])  # still on the pixel centre
    np.testing.assert_allclose(zoomed[4, 5], (image[5, 7] + image[5, 8].astype(float)) / 2)


def test_normalize_is_torchvisions_imagenet_normalisation():
    pixels = np.array([[255, 0, 128], [10, 20, 30]], np.uint8)
    want = (pixels / 255.0 - MEAN) / STD
    np.testing.assert_allclose(extract.normalize(pixels), want, rtol=1e-6)


def _block_keys(stages, convs):
    """The conv keys of torchvision's blocks, plus the stem and a BatchNorm key per block."""
    keys = ["conv1.weight", "bn1.weight", "fc.weight"]
    for stage, count in enumerate(stages, start=1):
        for block in range(count):
            keys += [f"layer{stage}.{block}.conv{i}.weight" for i in range(1, convs + 1)]
            keys.append(f"layer{stage}.{block}.bn1.running_mean")
    return dict.fromkeys(keys)


def test_resnet_depth_is_read_off_the_keys():
    assert torch_weights.resnet_depth(random_resnet_state(18)) == 18
    assert torch_weights.resnet_depth(_block_keys((3, 4, 6, 3), 2)) == 34
    assert torch_weights.resnet_depth(_block_keys((3, 4, 6, 3), 3)) == 50
    assert torch_weights.resnet_depth(_block_keys((3, 4, 23, 3), 3)) == 101
    one_stage = _block_keys((1,), 2)
    with pytest.raises(torch_weights.CheckpointError, match=r"basic blocks with \(1,\) blocks "
                       "per stage, which is none of torchvision's depths"):  # fmt: skip
        torch_weights.resnet_depth(one_stage, "x.pth")


# ---------------------------------------------------------------------------------------------
# lmr-extract-features
# ---------------------------------------------------------------------------------------------


def test_extracted_features_are_the_backbone_on_reference_crops(clip, extracted):
    result = extracted.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # 25 fps: no warning, and no library logs
    lines = result.stdout.splitlines()
    assert "skipped 2 frames of 8 without a box: 3, 6" in lines
    assert f"ignored the boxes of 1 frame that {clip.video} does not have (8 frames): 9" in lines
    assert lines[-1] == f"wrote {extracted.out}"
    got = dict(np.load(extracted.out))
    assert set(got) == {"features", "bbox", "frame_ids", "crop_scale", "crop_size", "fps"}
    np.testing.assert_array_equal(got["frame_ids"], [0, 1, 2, 4, 5, 7])
    assert float(got["fps"]) == 25.0 and float(got["crop_scale"]) == SCALE
    assert int(got["crop_size"]) == CROP
    kept = np.arange(6)  # the track's rows of frames 0, 1, 2, 4, 5, 7
    np.testing.assert_allclose(got["bbox"], boxes.square_boxes(clip.bbox[kept]), rtol=1e-6)
    decoded = decode(clip.video)
    assert len(decoded) == 8
    for mine, given in zip(decoded, clip.frames, strict=True):  # RGB, in order, near the input
        assert np.abs(mine.astype(int) - given).mean() < 3
    frames = [decoded[i] for i in got["frame_ids"]]
    want = reference_features(clip.weights, frames, clip.bbox[kept], SCALE)
    assert got["features"].shape == (6, 512) and got["features"].dtype == np.float32
    np.testing.assert_allclose(got["features"], want, atol=1e-4 * np.abs(want).max())


def test_image_folder_and_keypoints_give_vibes_keypoint_boxes(clip, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip.frames[:4]):  # PNG: the frames exactly as given
        Image.fromarray(frame).save(folder / f"{i:06d}.png")
    (folder / "notes.txt").write_text("not a frame")
    rng = np.random.default_rng(3)
    person = np.concatenate([rng.uniform((30, 15), (70, 50), (17, 2)),
                             rng.uniform(0.5, 1.0, (17, 1))], axis=1)  # fmt: skip
    hidden = person * [1, 1, 0]
    per_frame = [person.tolist(), None, (person + [4, -3, 0]).tolist(), hidden.tolist()]
    keypoints = tmp_path / "keypoints.json"
    keypoints.write_text(json.dumps(per_frame))
    out = str(tmp_path / "features.npz")
    summary = extract.extract_features_file(out, weights=clip.weights, images=str(folder),
                                            keypoints=str(keypoints), crop_size=CROP,
                                            batch_size=BATCH)  # fmt: skip
    assert summary["frames"] == 2 and summary["fps"] is None and summary["depth"] == 18
    np.testing.assert_array_equal(summary["skipped"], [1, 3])  # nobody / nothing visible
    assert "skipped 2 frames of 4 without a box: 1, 3" in capsys.readouterr().out
    got = dict(np.load(out))
    assert "fps" not in got
    np.testing.assert_array_equal(got["frame_ids"], [0, 2])
    bbox = np.stack([boxes.keypoint_box(person), boxes.keypoint_box(person + [4, -3, 0])])
    np.testing.assert_allclose(got["bbox"], bbox, rtol=1e-6)
    want = reference_features(clip.weights, [clip.frames[0], clip.frames[2]], bbox)
    np.testing.assert_allclose(got["features"], want, atol=1e-4 * np.abs(want).max())


def test_a_frame_rate_far_from_25_30_fps_is_warned(clip, tmp_path, capsys):
    for fps in (None, 24.0, 25.0, 29.97, 30.0):
        assert extract.fps_warning(fps) is None, fps
    assert "60 fps, far from the 25-30 fps" in extract.fps_warning(60.0)
    video = write_video(tmp_path / "slow.mp4", clip.frames[:3], fps=10)
    np.savez(tmp_path / "track.npz", bbox=clip.bbox[:3])
    summary = extract.extract_features_file(str(tmp_path / "slow.npz"), weights=clip.weights,
                                            video=video, bboxes=str(tmp_path / "track.npz"),
                                            crop_size=CROP, batch_size=BATCH)  # fmt: skip
    assert summary["fps"] == 10.0 and summary["frames"] == 3
    assert float(np.load(tmp_path / "slow.npz")["fps"]) == 10.0
    err = capsys.readouterr().err
    assert err == ("lmr_jax: warning: the video runs at 10 fps, far from the 25-30 fps the "
                   "models were trained on (a person moves more per frame than in training); "
                   "resample it to 25-30 fps for the best results.\n")  # fmt: skip


def _not_a_resnet(tmp_path):
    return {"weights": torch_files.save({"fc.weight": np.zeros((2, 2), np.float32)},
                                        tmp_path / "fc.pth")}  # fmt: skip


def _boxes_file(tmp_path, **arrays):
    np.savez(tmp_path / "other.npz", **arrays)
    return {"bboxes": str(tmp_path / "other.npz")}


def _file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: {"video": str(p / "nope.mp4")}, r"video file .*nope.mp4 does not exist\."),
        (lambda p: {"video": _file(p, "text.mp4", "hello")},
         r"text.mp4 is not a video file FFmpeg \(PyAV\) can read"),
        (lambda p: {"images": str(p)}, "exactly one of --video=FILE and --images=DIR"),
        (lambda p: {"video": None, "images": str(p)}, "image folder .* holds no image files"),
        (lambda p: {"bboxes": None}, "exactly one of --bboxes=TRACK .* and --keypoints=PATH"),
        (lambda p: {"bboxes": _file(p, "track.npz", "hello")},
         "track.npz is not a readable .npz or .json file"),
        (lambda p: _boxes_file(p, bbox=np.ones((2, 4)) * [50, 30, 20, 20],
                               frame_ids=np.array([100, 101])),
         r"--bboxes=.*other.npz has boxes for frames 100-101 and .*clip.mp4 has 8 frames: no "
         r"frame has a box\."),
        (lambda p: _boxes_file(p, bbox=np.full((3, 4), np.nan)), "holds no usable box"),
        (lambda p: {"bboxes": None, "keypoints": _file(p, "kp.json", "[[[1, 2, 3]]]")},
         r"kp.json entry 0 holds keypoints of shape \[1, 3\], expected 17 \(COCO\) or 25"),
        (lambda p: {"weights": str(p / "nope.pth")}, r"weights file .*nope.pth does not exist"),
        (_not_a_resnet, "fc.pth' holds no torchvision ResNet state dict"),
        (lambda p: {"expected_width": 2048},
         "the ResNet-18 of .*resnet18.pth gives 512-d features, the model expects 2048-d ones"),
        (lambda p: {"crop_size": 0}, "crop_size 0 and batch_size 4 must be positive"),
    ],
    ids=["missing_video", "not_a_video", "video_and_images", "no_images", "no_boxes",
         "unreadable_boxes", "boxes_for_no_frame", "no_usable_box", "wrong_keypoint_json",
         "missing_weights", "not_a_resnet", "another_width", "bad_crop_size"],
)  # fmt: skip
def test_bad_inputs_are_refused_in_one_sentence(clip, tmp_path, change, message):
    arguments = dict(weights=clip.weights, video=clip.video, bboxes=clip.track, crop_size=CROP,
                     batch_size=BATCH)  # fmt: skip
    arguments.update(change(tmp_path))
    out = tmp_path / "features.npz"
    with pytest.raises(extract.ExtractError, match=message):
        extract.extract_features_file(str(out), **arguments)
    assert not out.exists()


def test_command_errors_are_one_line_with_exit_status_2(clip, tmp_path):
    out = tmp_path / "features.npz"
    result = run_script("extract_cli", f"--video={tmp_path}/nope.mp4", f"--bboxes={clip.track}",
                        f"--weights={clip.weights}", f"--out={out}")  # fmt: skip
    assert result.returncode == 2 and result.stdout == "" and not out.exists()
    assert result.stderr == f"lmr_jax: error: video file {tmp_path}/nope.mp4 does not exist.\n"


def test_predict_from_a_video_file_without_boxes_says_what_it_needs(clip, tmp_path):
    message = (f"--video={clip.video} is a file: predicting from it needs --bboxes=TRACK (or "
               "--keypoints=PATH) and --weights=CHECKPOINT to extract its features.")  # fmt: skip
    with pytest.raises(predict.PredictError, match=re.escape(message)):
        predict.run(str(tmp_path), video=clip.video)  # as main.py passes --video=FILE alone


# ---------------------------------------------------------------------------------------------
# lmr-predict --video
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value", [("crop_scale", -1.0), ("crop_scale", np.ones(2)),
                                       ("fps", np.nan), ("fps", "30")])  # fmt: skip
def test_bad_crop_scale_or_fps_in_a_features_file_is_refused(tmp_path, key, value):
    path = str(tmp_path / "features.npz")
    np.savez(path, features=np.zeros((3, 5), np.float32), **{key: value})
    with pytest.raises(predict.PredictError, match=f"features.npz: {key} is .*, expected a "
                       "positive number"):  # fmt: skip
        predict.read_features_file(path, 5)


def test_predict_from_a_video_gives_the_meshes_of_its_features_file(clip, extracted, run_dir,
                                                                    tmp_path):  # fmt: skip
    glb = tmp_path / "clip.glb"
    result = run_script("predict_cli", f"--video={clip.video}", f"--bboxes={clip.track}",
                        f"--weights={clip.weights}", f"--workdir={run_dir}", f"--glb={glb}",
                        *FLAGS)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    features, output = (f"{run_dir}/predict/clip{s}.npz" for s in ("_features", ""))
    assert result.stdout.splitlines()[-1] == f"wrote {features}, {output}, {glb}"
    assert "skipped 2 frames of 8 without a box: 3, 6" in result.stdout
    from_video, from_file = dict(np.load(features)), dict(np.load(extracted.out))
    assert set(from_video) == set(from_file)
    for key, value in from_file.items():
        np.testing.assert_allclose(from_video[key], value, rtol=1e-6, err_msg=key)
    # --mode=predict on the features file that lmr-extract-features wrote, in this process.
    reference = tmp_path / "reference.npz"
    predict.run(run_dir, input_path=extracted.out, output=str(reference))
    got, want = dict(np.load(output)), dict(np.load(reference))
    assert set(got) == set(want) and got["vertices"].shape == (6, 6890, 3)
    assert str(got.pop("model")) == str(want.pop("model")) == "lmr"
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(got["frame_ids"], [0, 1, 2, 4, 5, 7])
    cam_image = predict.crop_to_image(got["cam"], got["bbox"], SCALE)  # the file's scale
    np.testing.assert_allclose(got["cam_image"], cam_image, rtol=1e-5)
    document, binary = read_glb(glb)  # the animation runs at the video's 25 fps
    times = document["accessors"][document["animations"][0]["samplers"][0]["input"]]
    assert times["count"] == 6 and times["max"] == pytest.approx([5 / 25])
