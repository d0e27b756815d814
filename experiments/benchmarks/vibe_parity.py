"""Parity of load_vibe + models.vibe.VIBE with VIBE's generator run by torch.

    python experiments/benchmarks/vibe_parity.py --torch_python=/path/to/torch-venv/bin/python

VIBE's generator is rebuilt here in torch from VIBE's code as read (lib/models/vibe.py,
TemporalEncoder and VIBE; lib/models/spin.py, Regressor; lib/utils/geometry.py,
rot6d_to_rotmat): nn.GRU over time-major [T, N, 2048] features, ReLU + nn.Linear back to 2048
when add_linear or bidirectional, the residual when the output is 2048 wide, then SPIN's
regressor (fc1 on cat([x, pose, shape, cam]), dropout, fc2, dropout, residual heads, 3
iterations from the init_pose / init_shape / init_cam buffers), the last iteration's 6D pose
turned into rotation matrices by Gram-Schmidt on x.view(-1, 3, 2). It carries a stand-in of
VIBE's SMPL layer as `regressor.smpl` (buffers and parameters of the official shapes, random
values), which the loader must skip. The weights are random (torch's initialisation; the heads
keep nn.Linear's default instead of VIBE's xavier gain 0.01, so that the three iterations move
far from the mean and the comparison covers them), the buffers random, then one Adam step
fills the optimizer state.

Each configuration (`--configs`: 'released' is VIBE's configs/config.yaml, 2 layers of 1024,
add_linear, residual; 'bidirectional' is 1 bidirectional layer of 512) is saved as VIBE's
trainer saves it ({'epoch', 'gen_state_dict', 'performance', 'gen_optimizer',
'disc_motion_state_dict', 'disc_motion_optimizer'}, a small motion discriminator and its Adam
state included), by torch.save in both formats (zip; legacy with
_use_new_zipfile_serialization=False). Each file goes through `torch_weights.load_vibe` (body
model: the procedural body, which the compared outputs do not depend on), and on the same random
features [2, 16, 2048] the final rotation matrices, betas and cameras are compared with torch's
in eval mode: max |jax - torch| / max |torch| per output. Target below 1e-4 in float32.

Measured (torch 2.13.0+cpu, jax 0.10.2 CPU, both formats alike): released rotmats 1.14e-05,
betas 4.88e-07, cam 2.61e-07; bidirectional rotmats 1.44e-05, betas 5.31e-07, cam 4.36e-07. The
rotation matrices differ more than the betas because Gram-Schmidt amplifies float32 rounding of
the 6D numbers where their two columns are nearly parallel (random weights give such joints):
checked once on the released configuration, the encoder outputs agree to 1.0e-07 and the final
6D poses to 3.5e-07, and the matrices' first two columns computed in float64 from each side's 6D
still differ by 8.7e-06, at a joint whose two 6D columns are 6.5 degrees apart.

torch runs in a separate process (`--torch_python`, default this interpreter), so this process
never imports torch. JAX's matmuls run at 'highest' precision.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

TARGET = 1e-4
CONFIGS = {  # name: (layers, hidden size, bidirectional, add_linear, use_residual)
    "released": (2, 1024, False, True, True),
    "bidirectional": (1, 512, True, False, True),
}
OUTPUTS = ("rotmats", "betas", "cam")
_TORCH_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
import vibe_parity
vibe_parity.torch_phase(sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]),
                        int(sys.argv[6]))
"""


def _torch_generator(layers: int, hidden: int, bidirectional: bool, add_linear: bool,
                     use_residual: bool):  # fmt: skip
    """VIBE's generator (encoder + regressor) as a torch module, with random weights."""
    import torch
    from torch import nn
    from torch.nn import functional

    width, npose = 2048, 24 * 6

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(width, hidden, num_layers=layers, bidirectional=bidirectional)
            dirs = 2 if bidirectional else 1
            self.linear = nn.Linear(dirs * hidden, width) if add_linear or bidirectional else None

        def forward(self, x):
            n, t, f = x.shape
            x = x.permute(1, 0, 2)
            y, _ = self.gru(x)
            if self.linear is not None:
                y = self.linear(functional.relu(y).reshape(-1, y.shape[-1])).reshape(t, n, f)
            if use_residual and y.shape[-1] == width:
                y = y + x
            return y.permute(1, 0, 2)

    class SMPLStandIn(nn.Module):  # the arrays of VIBE's SMPL layer, for the loader to skip
        def __init__(self):
            super().__init__()
            shapes = {"v_template": (6890, 3), "shapedirs": (6890, 3, 10),
                      "J_regressor": (24, 6890), "posedirs": (207, 20670),
                      "lbs_weights": (6890, 24), "J_regressor_extra": (9, 6890)}  # fmt: skip
            for name, shape in shapes.items():
                self.register_buffer(name, torch.rand(shape))
            self.register_buffer("faces_tensor", torch.randint(0, 6890, (13776, 3)))
            self.register_buffer("parents", torch.arange(-1, 23))
            for name, size in (("betas", 10), ("global_orient", 3), ("body_pose", 69)):
                self.register_parameter(name, nn.Parameter(torch.zeros(1, size), False))

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(width + npose + 13, 1024)
            self.drop1 = nn.Dropout()
            self.fc2 = nn.Linear(1024, 1024)
            self.drop2 = nn.Dropout()
            self.decpose = nn.Linear(1024, npose)
            self.decshape = nn.Linear(1024, 10)
            self.deccam = nn.Linear(1024, 3)
            self.smpl = SMPLStandIn()
            self.register_buffer("init_pose", torch.randn(1, npose))
            self.register_buffer("init_shape", torch.randn(1, 10))
            self.register_buffer("init_cam", torch.tensor([[0.9, 0.0, 0.0]]) + torch.randn(1, 3))

        def forward(self, x):
            pose, shape, cam = (getattr(self, f"init_{k}").expand(x.shape[0], -1)
                                for k in ("pose", "shape", "cam"))  # fmt: skip
            for _ in range(3):
                xc = self.drop2(self.fc2(self.drop1(self.fc1(torch.cat([x, pose, shape, cam], 1)))))
                pose = self.decpose(xc) + pose
                shape = self.decshape(xc) + shape
                cam = self.deccam(xc) + cam
            a = pose.reshape(-1, 3, 2)
            b1 = functional.normalize(a[:, :, 0], dim=1, eps=1e-6)
            b2 = a[:, :, 1] - torch.sum(b1 * a[:, :, 1], dim=1, keepdim=True) * b1
            b2 = functional.normalize(b2, dim=1, eps=1e-6)
            rotmat = torch.stack([b1, b2, torch.linalg.cross(b1, b2, dim=1)], dim=-1)
            return rotmat, shape, cam

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.regressor = Regressor()

        def forward(self, features):
            n, t = features.shape[:2]
            encoded = self.encoder(features)
            rotmat, shape, cam = self.regressor(encoded.reshape(n * t, -1))
            return rotmat.reshape(n, t, 24, 3, 3), shape.reshape(n, t, 10), cam.reshape(n, t, 3)

    return Generator()


def torch_phase(out_dir: str, names: list[str], batch: int, frames: int, seed: int) -> None:
    """Writes each configuration's checkpoints, the features and torch's outputs (with torch)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    features = np.random.default_rng(seed).normal(size=(batch, frames, 2048)).astype(np.float32)
    for name in names:
        generator = _torch_generator(*CONFIGS[name])
        discriminator = torch.nn.ModuleDict(
            {"gru": torch.nn.GRU(69, 256, num_layers=2), "fc": torch.nn.Linear(256, 1)}
        )
        optimizers = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in (generator, discriminator)]
        generator.train()  # one training step, as VIBE's trainer, so Adam has a state
        rotmat, shape, cam = generator(torch.from_numpy(features))
        motion, _ = discriminator["gru"](torch.randn(frames, batch, 69))
        (
            rotmat.square().mean() + shape.square().mean() + discriminator["fc"](motion).mean()
        ).backward()
        for optimizer in optimizers:
            optimizer.step()
        generator.eval()
        checkpoint = {
            "epoch": 7,
            "gen_state_dict": generator.state_dict(),
            "performance": 81.25,
            "gen_optimizer": optimizers[0].state_dict(),
            "disc_motion_state_dict": discriminator.state_dict(),
            "disc_motion_optimizer": optimizers[1].state_dict(),
        }
        torch.save(checkpoint, os.path.join(out_dir, f"vibe_{name}_zip.pth.tar"))
        torch.save(checkpoint, os.path.join(out_dir, f"vibe_{name}_legacy.pth.tar"),
                   _use_new_zipfile_serialization=False)  # fmt: skip
        with torch.no_grad():
            outputs = [x.numpy() for x in generator(torch.from_numpy(features))]
        np.savez(
            os.path.join(out_dir, f"torch_{name}.npz"), **dict(zip(OUTPUTS, outputs, strict=True))
        )
    np.save(os.path.join(out_dir, "features.npy"), features)
    with open(os.path.join(out_dir, "versions.json"), "w") as f:
        json.dump({"torch": torch.__version__}, f)


def jax_phase(out_dir: str, names: list[str]) -> bool:
    """Loads every checkpoint with load_vibe, prints the differences; True if on target."""
    import jax
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "highest")
    from lmr_jax import smpl
    from lmr_jax.torch_weights import load_vibe

    features = np.load(os.path.join(out_dir, "features.npy"))
    with open(os.path.join(out_dir, "versions.json")) as f:
        versions = json.load(f)
    print(f"torch {versions['torch']}, jax {jax.__version__} ({jax.devices()[0].platform}); "
          f"VIBE's generator, random weights, eval mode; features {features.shape}")  # fmt: skip
    body, on_target = smpl.procedural(0), True
    for name in names:
        layers, hidden, bidirectional, add_linear, use_residual = CONFIGS[name]
        reference = np.load(os.path.join(out_dir, f"torch_{name}.npz"))
        print(f"{name}: {layers} GRU layer(s) of {hidden}, bidirectional={bidirectional}, "
              f"add_linear={add_linear}, use_residual={use_residual}")  # fmt: skip
        loaded = []
        for fmt in ("zip", "legacy"):
            path = os.path.join(out_dir, f"vibe_{name}_{fmt}.pth.tar")
            model, params = load_vibe(path, body, use_residual=use_residual)
            loaded.append(params)
            outputs = jax.jit(model.apply)({"params": params}, features)
            report = []
            for key in OUTPUTS:
                ours, theirs = np.asarray(outputs[key], np.float64), reference[key]
                relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
                on_target &= bool(relative < TARGET) and ours.shape == theirs.shape
                report.append(f"{key} {relative:.2e}")
            size = os.path.getsize(path) / 2**20
            print(f"  {fmt:6s} ({size:.0f} MiB): max |jax - torch| / max |torch|: "
                  + ", ".join(report))  # fmt: skip
        same = all(jax.tree.leaves(jax.tree.map(np.array_equal, *loaded)))
        on_target &= same
        print(f"  both formats load identical parameters: {same}")
    print(f"target max relative difference < {TARGET:g}: {'met' if on_target else 'NOT met'}")
    return on_target


def main(argv):
    del argv
    flag = flags.FLAGS
    names = flag.configs.split(",")
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise app.UsageError(f"--configs has '{unknown[0]}', expected names from {tuple(CONFIGS)}.")
    out_dir = flag.out_dir or tempfile.mkdtemp(prefix="vibe_parity_")
    os.makedirs(out_dir, exist_ok=True)
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        arguments = [here, out_dir, ",".join(names), flag.batch, flag.frames, flag.seed]
        command = [flag.torch_python, "-c", _TORCH_PROCESS, *map(str, arguments)]
        subprocess.run(command, check=True)
        ok = jax_phase(out_dir, names)
    finally:
        if not flag.out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("torch_python", sys.executable, "Interpreter with torch.")
    flags.DEFINE_string("configs", ",".join(CONFIGS), f"Comma-separated, from {tuple(CONFIGS)}.")
    flags.DEFINE_integer("batch", 2, "Sequences of random features.")
    flags.DEFINE_integer("frames", 16, "Frames per sequence (VIBE's SEQLEN).")
    flags.DEFINE_integer("seed", 0, "Seed of the weights and the features.")
    flags.DEFINE_string("out_dir", "", "Where the checkpoints go (default: a temporary folder).")
    app.run(main)
