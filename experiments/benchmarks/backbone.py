"""Speed of the Flax ResNet-50 against torchvision's on this CPU, and of `lmr-extract-features`.

    python experiments/benchmarks/backbone.py --torch_python=/path/to/torch-venv/bin/python

Inference throughput (images/s, float32, 224x224, inference mode) at batch 1, 16 and 64:
`lmr_jax.models.resnet.ResNet50` jitted (the weights loaded by `torch_weights.load_resnet` from
the file torch wrote, so both run the same network) and torchvision's `resnet50` in eval mode
under `torch.inference_mode()`, side by side in one run. The two run one after the other, never
at once; each batch is warmed up first (JAX: the compile) and then timed over `--repeats` calls
(the median call). torch uses as many threads as the machine has cores, as JAX's CPU backend does.

Then the end-to-end extraction: a 640x360 video of `--frames` frames (written with PyAV,
mpeg4) with one box per frame, through `lmr_jax.data.extract.extract_features_file` (decode,
crop, normalise, the backbone in batches of 32): frames/s of the whole command including its
compile, and of a second run of the same backbone (the compile cached in this process).

torch lives in its own venv (`--torch_python`) and runs in a subprocess: this process runs JAX
and never imports torch. Target (issue 14): at least torch's throughput at batch 16 and 64.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BATCHES = (1, 16, 64)

_TORCH_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
import backbone
backbone.torch_phase(sys.argv[2], [int(b) for b in sys.argv[3].split(",")], int(sys.argv[4]))
"""


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_phase(out_dir: str, batches: list[int], repeats: int) -> None:
    """Saves a random torchvision ResNet-50 and times it (runs with torch, writes torch.json)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    model = torchvision.models.resnet50().eval()
    torch.save(model.state_dict(), os.path.join(out_dir, "resnet50.pth"))
    rates = {}
    with torch.inference_mode():
        for batch in batches:
            images = torch.randn(batch, 3, 224, 224)
            model(images)  # warm-up
            seconds = _median_seconds(lambda images=images: model(images), repeats)
            rates[batch] = batch / seconds
    with open(os.path.join(out_dir, "torch.json"), "w") as f:
        info = {"rates": rates, "version": torch.__version__, "threads": torch.get_num_threads()}
        json.dump(info, f)


def jax_rates(weights: str, batches, repeats: int) -> dict[int, float]:
    import jax
    import numpy as np

    from lmr_jax import torch_weights
    from lmr_jax.models.resnet import ResNet50

    variables = jax.device_put(torch_weights.load_resnet(weights))
    apply = jax.jit(ResNet50().apply)
    rates = {}
    for batch in batches:
        images = jax.device_put(np.random.default_rng(0).normal(size=(batch, 224, 224, 3)))
        images = images.astype(np.float32)
        apply(variables, images).block_until_ready()  # the compile
        seconds = _median_seconds(lambda i=images: apply(variables, i).block_until_ready(),
                                  repeats)  # fmt: skip
        rates[batch] = batch / seconds
    return rates


def write_video(path: str, frames: int, width: int = 640, height: int = 360) -> None:
    """A `frames`-frame mpeg4 video of moving coloured noise (PyAV)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height, width + frames, 3), dtype=np.uint8)
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.ascontiguousarray(base[:, t : t + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def extraction_rates(weights: str, folder: str, frames: int) -> tuple[float, float]:
    """frames/s of extract_features_file on a 640x360 video: first run, second run."""
    import contextlib
    import io

    import numpy as np

    from lmr_jax.data import extract

    video = os.path.join(folder, "clip.mp4")
    write_video(video, frames)
    track = os.path.join(folder, "track.npz")
    ids = np.arange(frames)
    boxes = np.stack([320 + ids, 180 + 0 * ids, 150 + 0 * ids, 300 + 0 * ids], -1)
    np.savez(track, bbox=boxes.astype(np.float32), frame_ids=ids)
    rates = []
    for run in range(2):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result = extract.extract_features_file(
                os.path.join(folder, f"features{run}.npz"), weights=weights, video=video,
                bboxes=track,
            )  # fmt: skip
        assert result["frames"] == frames, result
        rates.append(frames / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_python", default=sys.executable)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([args.torch_python, "-c", _TORCH_PROCESS, here, folder,
                        ",".join(map(str, BATCHES)), str(args.repeats)], check=True)  # fmt: skip
        torch_info = json.load(open(os.path.join(folder, "torch.json")))
        weights = os.path.join(folder, "resnet50.pth")
        ours = jax_rates(weights, BATCHES, args.repeats)
        first, second = extraction_rates(weights, folder, args.frames)
    import jax

    print(f"ResNet-50 inference, 224x224 float32, images/s (median of {args.repeats} calls); "
          f"{os.cpu_count()} cores; jax {jax.__version__}, torch {torch_info['version']} "
          f"({torch_info['threads']} threads)\n")  # fmt: skip
    print("| batch | lmr_jax (Flax) | torchvision | ratio |")
    print("|---:|---:|---:|---:|")
    for batch in BATCHES:
        theirs = torch_info["rates"][str(batch)]
        print(f"| {batch} | {ours[batch]:.1f} | {theirs:.1f} | {ours[batch] / theirs:.2f} |")
    print(f"\nlmr-extract-features, 640x360 video of {args.frames} frames (decode + crop + "
          f"ResNet-50, batch 32): {first:.1f} frames/s including the compile, {second:.1f} "
          "frames/s compiled")  # fmt: skip


if __name__ == "__main__":
    main()
