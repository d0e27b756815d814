"""FromPixels (lmr_jax/models/pixels.py): backbone per frame then the inner model, by value."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import config as config_lib
from lmr_jax import models, smpl
from lmr_jax.models import pixels
from lmr_jax.models.resnet import resnet


class Inner(nn.Module):
    """A stand-in sequence model: a dense layer on features [B, T, D], mixed over time."""

    @nn.compact
    def __call__(self, features, train=False):
        cam = nn.Dense(3)(features)
        return {"cam": cam + jnp.cumsum(features[..., :3], axis=1)}


def _images(shape=(2, 3, 32, 32, 3), seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


@pytest.fixture(scope="module")
def setup():
    model = pixels.FromPixels(inner=Inner(), depth=18, width=4, mode="finetune")
    images = _images()
    initial = jax.jit(model.init)(jax.random.PRNGKey(1), images)["params"]
    # Non-trivial BatchNorm statistics, so that using them (or not) shows.
    params = dict(initial)
    params["backbone_stats"] = jax.tree.map(
        lambda x: x + 0.3 * jax.random.uniform(jax.random.PRNGKey(2), x.shape),
        params["backbone_stats"],
    )
    return model, images, params, initial


def test_from_pixels_is_the_backbone_per_frame_then_the_inner_model(setup):
    model, images, params, _ = setup
    out = jax.jit(model.apply)({"params": params}, images)
    # By hand: every frame alone through the ResNet (running statistics), then Inner.
    net = resnet(18, width=4, bn_mode="frozen")
    variables = {"params": params["backbone"], "batch_stats": params["backbone_stats"]}
    one = jax.jit(net.apply)
    per_frame = np.stack(
        [np.stack([one(variables, images[b, t][None])[0] for t in range(3)]) for b in range(2)]
    )
    assert per_frame.shape == (2, 3, 32)  # width 4: 4 * 8 features
    expected = Inner().apply({"params": params["inner"]}, jnp.asarray(per_frame))
    np.testing.assert_allclose(out["cam"], expected["cam"], rtol=1e-5, atol=1e-5)
    assert set(params) == {"backbone", "backbone_stats", "inner"}


def test_random_init_has_resnets_distribution(setup):
    params = setup[3]
    kernel = np.asarray(params["backbone"]["layer4_0"]["conv1"]["kernel"])  # [3, 3, 16, 32]
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (3 * 3 * 32)), rtol=0.05)
    assert abs(kernel.mean()) < 0.01
    stats = params["backbone_stats"]["bn1"]
    np.testing.assert_array_equal(stats["mean"], 0.0)
    np.testing.assert_array_equal(stats["var"], 1.0)
    np.testing.assert_array_equal(params["backbone"]["bn1"]["scale"], 1.0)
    others = [leaf for leaf in jax.tree.leaves(params["backbone"]) if leaf.ndim == 4]
    assert len({float(np.asarray(k).ravel()[0]) for k in others}) == len(others)  # not shared


def test_frozen_backbone_gets_no_gradient_and_statistics_never_do(setup, mode="frozen"):
    # (The fine-tuned backbone's weights do train: tests/test_lmr_frames.py's smoke run.)
    model, images, params, _ = setup
    model = model.clone(mode=mode)

    def loss(p):
        return jnp.sum(model.apply({"params": p}, images, train=True)["cam"] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    backbone = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["backbone"]))
    stats = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["backbone_stats"]))
    inner = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["inner"]))
    assert stats == 0.0 and inner > 0
    assert backbone == 0.0


def test_build_model_wraps_the_configured_model():
    config = config_lib.base_config("lmr").model
    config.hidden_size = 8
    config.backbone = pixels.default_backbone_config()
    config.backbone.update(depth=34, width=4, mode="frozen")
    model = models.build_model(config, smpl.procedural(0))
    assert isinstance(model, pixels.FromPixels) and isinstance(model.inner, models.LMR)
    assert (model.depth, model.width, model.mode, model.inner.hidden_size) == (34, 4, "frozen", 8)
    config.backbone.mode = "train"
    with pytest.raises(ValueError, match="model.backbone.mode is 'train'"):
        models.build_model(config, smpl.procedural(0))
    config.backbone.update(mode="frozen", weights="resnet.pth")
    with pytest.raises(ValueError, match="width is 4, but torch weights"):
        models.build_model(config, smpl.procedural(0))
