""".venv/bin/python -m lmr_jax.main --config=experiments/lmr_frames.py:cpu --workdir=workdirs/frames

LMR trained end to end from pixels: a ResNet per frame (lmr_jax/models/pixels.py: FromPixels),
its features fed to LMR, on synthetic_motion/frames (small's 72 videos rendered to 128 x 128
JPEGs; build it first: `.venv/bin/python -m lmr_jax.data.build synthetic_motion/frames
--data_dir=data`: 154 s on a contended 2-core CPU, 102 MiB). The pipeline decodes the frames
and normalises them with ImageNet's mean and std (`data.inputs='frames'`).

The backbone's BatchNorm is frozen (running statistics; the train state carries no
batch_stats, see models/pixels.py); `model.backbone.mode` is 'finetune' (every backbone weight
trains: a randomly initialised backbone must) or 'frozen' (stop_gradient at its features: for
a pretrained backbone, e.g. `--config.model.backbone.weights=spin_model_checkpoint.pth.tar
--config.model.backbone.mode=frozen`, SPIN's ResNet-50 as in VIBE's features).

Variants (`--config=experiments/lmr_frames.py:<variant>`):
- default: ResNet-50 at 224 pixels (the 128-pixel frames resized bilinearly: build a 224-pixel
  config for a real run), paper-size LMR (hidden 512), VIBE's optimisation (Adam 5e-5, batch
  32, T = 16), 15k steps: a GPU run (512 images of 224 pixels per step). Not tuned.
- `cpu`: ResNet-18 at the frames' 128 pixels, LMR of hidden 128, batch 8 windows of T = 8 (64
  images per step), Adam 1e-3 with cosine decay, 400 steps. Not tuned either. Measured on a
  contended 2-core CPU (another job running): 7.4 s a step (median of 5, after a 48 s first
  step with the compile), so about 50 minutes for the 400 steps.
- `smoke`: a ResNet-18 of width 8 at 64 pixels on synthetic_motion/tiny_frames, LMR of hidden
  16 with one iteration, 2 steps; the test suite runs it (tests/test_lmr_frames.py).
"""

from lmr_jax import config as config_lib
from lmr_jax.models import pixels

DATASET = "synthetic_motion/frames"


def base(config):
    """ResNet-50 at 224 pixels fine-tuned, with LMR, on synthetic_motion/frames."""
    config.model.backbone = pixels.default_backbone_config()
    config.model.backbone.update(depth=50, mode="finetune")
    config.data.inputs = "frames"
    config.data.image_size = 224
    config.data.train.synthetic.name = DATASET
    config.data.validation.name = DATASET
    config.eval.name = DATASET
    return config


def cpu(config):
    """ResNet-18 at 128 pixels with a small LMR, sized for a 2-core CPU."""
    config = config_lib.cpu(base(config))
    config.data.train.synthetic.name = DATASET  # config_lib.cpu names synthetic_motion/small
    config.data.validation.name = DATASET
    config.eval.name = DATASET
    config.model.backbone.depth = 18
    config.data.image_size = 0  # the stored 128 pixels
    config.data.window = 8
    config.model.hidden_size = 128
    config.train.batch_size = 8
    return config


def smoke(config):
    """Tiny: a ResNet-18 of width 8 at 64 pixels, 2 steps on synthetic_motion/tiny_frames."""
    config = config_lib.smoke(base(config))
    for node in (config.data.train.synthetic, config.data.validation, config.eval):
        node.name = "synthetic_motion/tiny_frames"
    config.model.backbone.update(depth=18, width=8)
    config.data.image_size = 0  # the stored 64 pixels
    config.model.hidden_size = 16
    config.model.num_iterations = 1  # a smaller program: the suite compiles it
    return config


VARIANTS = {"": base, "cpu": cpu, "smoke": smoke}


def get_config(arg: str | None = None):
    return config_lib.apply_variant(config_lib.base_config("lmr"), arg, VARIANTS)
