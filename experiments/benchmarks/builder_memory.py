"""Peak memory of building a large VIBE-format file: does it grow with the split?

    python experiments/benchmarks/builder_memory.py                      # 20k and 200k frames
    python experiments/benchmarks/builder_memory.py --frames=200000 --compare_frames=

For each size it writes a Human3.6M-like `h36m_test_25fps_nosmpl_db.pt` (TCMR's layout: 2048-D
float32 features, 49-joint 2D and 3D keypoints, pose, shape, bbox; videos of --video_frames
frames) with joblib, then builds `human36m` from it in a fresh Python process that records its
own peak resident memory: VmHWM (everything resident, including file pages it mapped) and the
peak of RssAnon (its private memory, sampled every 20 ms). The `spill` writer is
lmr_jax.data.build's (a split is staged in a temporary file); `memory` (for --compare_frames)
is the writer lmr_jax used before, TFDS's shuffler with an unbounded in-memory buffer, for
comparison. The first row is a process that only imports what a build imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

_FRAMES = flags.DEFINE_list("frames", ["20000", "200000"], "frames of each file to build")
_COMPARE = flags.DEFINE_list("compare_frames", ["20000"], "sizes also built with the old writer")
_VIDEO_FRAMES = flags.DEFINE_integer("video_frames", 1000, "frames per video")
_WORKDIR = flags.DEFINE_string("workdir", None, "where files go (default: a temporary dir)")
_CHILD = flags.DEFINE_string("child", None, "internal: build this manual dir and report")
_WRITER = flags.DEFINE_enum("writer", "spill", ["spill", "memory", "none"], "internal")

FILE = "h36m_test_25fps_nosmpl_db.pt"
MIB = 1 << 20


def write_source(path: str, frames: int, video_frames: int, scratch: str) -> None:
    """A TCMR-layout Human3.6M test file, written without holding its features in memory."""
    import joblib

    rng = np.random.default_rng(0)
    features = np.lib.format.open_memmap(
        os.path.join(scratch, "features.npy"), "w+", np.float32, (frames, 2048)
    )
    for start in range(0, frames, 10000):
        stop = min(start + 10000, frames)
        features[start:stop] = rng.standard_normal((stop - start, 2048), np.float32)
    names = np.array([f"s_09_act_{i // video_frames:04d}" for i in range(frames)])
    bbox = np.tile([500.0, 500.0, 300.0, 300.0], (frames, 1))
    joints2d = np.zeros((frames, 49, 3), np.float32)
    joints2d[:, 25:40] = [500.0, 500.0, 1.0]
    joints3d = rng.normal(0, 0.3, (frames, 49, 3)).astype(np.float32)
    zeros = np.zeros((frames, 82), np.float32)
    arrays = dict(vid_name=names, frame_id=np.arange(frames) % video_frames, features=features,
                  bbox=bbox, joints2D=joints2d, joints3D=joints3d, pose=zeros[:, :72],
                  shape=zeros[:, 72:])  # fmt: skip
    joblib.dump(arrays, path)
    del features
    os.remove(os.path.join(scratch, "features.npy"))


def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        rows = (line.split() for line in f if line.startswith(("VmHWM", "RssAnon", "RssFile")))
        return {row[0].rstrip(":"): int(row[1]) * 1024 for row in rows}


def child(manual_dir: str, writer: str) -> None:
    """Builds human36m from `manual_dir` and prints peak memory as JSON (runs in a subprocess)."""
    peak = {"RssAnon": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak["RssAnon"] = max(peak["RssAnon"], _status()["RssAnon"])

    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import shuffle

    from lmr_jax.data import build

    tfds.disable_progress_bar()
    if writer == "memory":  # what lmr_jax.data.build did before: TFDS's shuffler, all in memory
        build._SpillingShuffler = shuffle.Shuffler
        shuffle.MAX_MEM_BUFFER_SIZE = 1 << 62
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    if writer == "none":
        build.builder_class("human36m")  # the imports of a build, nothing written
    else:
        build.build("human36m", os.path.join(manual_dir, "tfds"), manual_dir=manual_dir)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    status = _status()
    anon = max(peak["RssAnon"], status["RssAnon"])
    print(json.dumps(dict(seconds=seconds, hwm=status["VmHWM"], anon=anon)))


def measure(manual_dir: str, writer: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--child={manual_dir}",
               f"--writer={writer}"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CHILD.value:
        child(_CHILD.value, _WRITER.value)
        return 0
    root = _WORKDIR.value or tempfile.mkdtemp(prefix="builder_memory_")
    print(f"{'frames':>7} {'videos':>6} {'file GiB':>8} {'writer':>6} {'build s':>7} "
          f"{'peak RSS MiB':>12} {'peak anon MiB':>13}")  # fmt: skip
    base = measure(root, "none")
    print(f"{0:>7} {0:>6} {0:>8.2f} {'none':>6} {0:>7.1f} {base['hwm'] / MIB:>12.0f} "
          f"{base['anon'] / MIB:>13.0f}", flush=True)  # fmt: skip
    for frames in (int(f) for f in _FRAMES.value):
        manual_dir = os.path.join(root, f"h36m_{frames}")
        os.makedirs(manual_dir, exist_ok=True)
        path = os.path.join(manual_dir, FILE)
        write_source(path, frames, _VIDEO_FRAMES.value, manual_dir)
        size = os.path.getsize(path) / 2**30
        writers = ["spill"] + (["memory"] if str(frames) in _COMPARE.value else [])
        for writer in writers:
            shutil.rmtree(os.path.join(manual_dir, "tfds"), ignore_errors=True)
            r = measure(manual_dir, writer)
            videos = -(-frames // _VIDEO_FRAMES.value)
            print(f"{frames:>7} {videos:>6} {size:>8.2f} {writer:>6} {r['seconds']:>7.1f} "
                  f"{r['hwm'] / MIB:>12.0f} {r['anon'] / MIB:>13.0f}", flush=True)  # fmt: skip
        shutil.rmtree(manual_dir)
    if not _WORKDIR.value:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    app.run(main)
