"""Parity of the Flax ResNet-50 with torchvision's: the same weights, the same 2048-d features.

    python experiments/benchmarks/backbone_parity.py --torch_python=/path/to/torch-venv/bin/python

A torchvision ResNet-50 with random weights (torchvision's initialisation, then randomised
BatchNorm affine parameters and running statistics, so that no BatchNorm is an identity) is
saved in eval mode by torch.save in both of torch's formats (the zip format, and the legacy one
with `_use_new_zipfile_serialization=False`), its state dict whole (`fc.*` included, which the
loader ignores). Each file goes through `lmr_jax.torch_weights.load_resnet` into
`lmr_jax.models.resnet.ResNet50`, and the features of the same random images (2 at 224x224 by
default) are compared with torch's (model.fc replaced by an identity). The figure printed is
max |jax - torch| / max |torch| over all features, one per format; the target is below 1e-4
in float32.

torch runs in a separate process (`--torch_python`, default this interpreter), so this process,
which runs JAX, never imports torch, and torch can live in a venv of its own. JAX's matmuls and
convolutions run at 'highest' precision, so that the figure measures the weights' mapping, not
TF32 on a GPU. If torchvision's C extension does not load (a torchvision wheel built for another
torch), its operator registrations are skipped: the ResNet models need none of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

TARGET = 1e-4
# The torch process imports this file for torch_phase alone: absl, JAX and lmr_jax need not be
# installed beside torch.
_TORCH_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
import backbone_parity
backbone_parity.torch_phase(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
"""


def torch_phase(out_dir: str, batch: int, size: int, seed: int) -> None:
    """Writes the two checkpoints, the images and torch's features (runs with torch)."""
    import numpy as np
    import torch

    register_fake = torch.library.register_fake

    def tolerant_register_fake(op, func=None, /, **kwargs):
        def register(fn):
            try:
                return register_fake(op, fn, **kwargs)
            except RuntimeError:  # torchvision::nms etc. missing: its _C did not load
                return fn

        return register if func is None else register(func)

    torch.library.register_fake = tolerant_register_fake
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet50()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    torch.save(model.state_dict(), os.path.join(out_dir, "resnet50_zip.pth"))
    torch.save(
        model.state_dict(),
        os.path.join(out_dir, "resnet50_legacy.pth"),
        _use_new_zipfile_serialization=False,
    )
    images = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        features = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
    np.savez(os.path.join(out_dir, "torch_features.npz"), images=images, features=features)
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    with open(os.path.join(out_dir, "versions.json"), "w") as f:
        json.dump(versions, f)


def jax_phase(out_dir: str) -> bool:
    """Loads both checkpoints into ResNet50 and prints the differences; True if on target."""
    import jax
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "highest")
    from lmr_jax.models.resnet import ResNet50
    from lmr_jax.torch_weights import load_resnet

    data = np.load(os.path.join(out_dir, "torch_features.npz"))
    images, reference = data["images"], data["features"].astype(np.float64)
    with open(os.path.join(out_dir, "versions.json")) as f:
        versions = json.load(f)
    n, height, width, _ = images.shape
    print(f"torch {versions['torch']}, torchvision {versions['torchvision']}, jax "
          f"{jax.__version__} ({jax.devices()[0].platform}); ResNet-50, random weights, eval "
          f"mode, randomised BatchNorm statistics; {n} images {height}x{width}")  # fmt: skip
    forward = jax.jit(ResNet50().apply)
    on_target, loaded = True, []
    for name, label in (("zip", "zip format (torch >= 1.6)"), ("legacy", "legacy format")):
        variables = load_resnet(os.path.join(out_dir, f"resnet50_{name}.pth"), depth=50)
        loaded.append(variables)
        features = np.asarray(forward(variables, images), np.float64)
        scale = np.abs(reference).max()
        difference = np.abs(features - reference).max()
        relative = difference / scale
        on_target &= bool(relative < TARGET) and features.shape == reference.shape
        print(f"{label:27s} features {features.shape}: max |jax - torch| / max |torch| = "
              f"{relative:.2e} (max abs difference {difference:.2e}, max |torch| "
              f"{scale:.3g})")  # fmt: skip
    same = all(jax.tree.leaves(jax.tree.map(np.array_equal, *loaded)))
    print(f"both formats load identical variables: {same}")
    print(f"target max relative difference < {TARGET:g}: {'met' if on_target else 'NOT met'}")
    return on_target and same


def main(argv):
    del argv
    flag = flags.FLAGS
    out_dir = flag.out_dir or tempfile.mkdtemp(prefix="backbone_parity_")
    os.makedirs(out_dir, exist_ok=True)
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        arguments = [here, out_dir, flag.batch, flag.image_size, flag.seed]
        command = [flag.torch_python, "-c", _TORCH_PROCESS, *map(str, arguments)]
        subprocess.run(command, check=True)
        ok = jax_phase(out_dir)
    finally:
        if not flag.out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("torch_python", sys.executable, "Interpreter with torch and torchvision.")
    flags.DEFINE_integer("batch", 2, "Number of random images.")
    flags.DEFINE_integer("image_size", 224, "Height and width of the images.")
    flags.DEFINE_integer("seed", 0, "Seed of the weights and the images.")
    flags.DEFINE_string("out_dir", "", "Where the checkpoints go (default: a temporary folder).")
    app.run(main)
