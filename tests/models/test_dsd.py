"""DSD by value: the bilinear map and the whole regressor against naive numpy, the output dict
as HMR's, the ground-truth skeleton switch, soft-argmax's pixel centres, L_2DJ, the config."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import losses
from lmr_jax.models import dsd
from lmr_jax.models.params import MeanParams
from tests.models.small_models import OUTPUT_SHAPES, body_model, features, key, normal

SMALL = dict(skeleton_hidden=8, detail_width=6, bilinear_width=5)
B, T, D = 2, 3, 7


def naive_bilinear(x_s, x_d, kernel):
    out = np.zeros((*x_s.shape[:-1], kernel.shape[0]))
    for n in np.ndindex(x_s.shape[:-1]):
        for k in range(kernel.shape[0]):
            for i in range(kernel.shape[1]):
                for j in range(kernel.shape[2]):
                    out[n + (k,)] += x_s[n + (i,)] * kernel[k, i, j] * x_d[n + (j,)]
    return out


def test_bilinear_matches_a_triple_loop():
    x_s, x_d, kernel = normal(0, (2, 3, 28)), normal(1, (2, 3, 4)), normal(2, (5, 28, 4))
    got = dsd.bilinear(x_s, x_d.astype(jnp.bfloat16), kernel)  # float32 whatever the inputs
    assert got.dtype == jnp.float32
    # x_d went through bfloat16: compare with its rounded values.
    want = naive_bilinear(np.asarray(x_s, np.float64),
                             np.asarray(x_d.astype(jnp.bfloat16), np.float64),
                             np.asarray(kernel, np.float64))  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def regressor():
    model = dsd.DSDRegressor(**SMALL)
    x = normal(3, (B, T, D))
    params = jax.jit(model.init)(key(0), x)["params"]
    # Random head (its init is small): every output depends on every layer.
    params["head"]["kernel"] = normal(4, params["head"]["kernel"].shape, 0.1)
    return model, params, x


def test_regressor_matches_naive_numpy(regressor):
    model, params, x = regressor
    out = jax.jit(model.apply)({"params": params}, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    hidden = np.maximum(x @ p["skeleton_hidden"]["kernel"] + p["skeleton_hidden"]["bias"], 0)
    skeleton = np.tanh(hidden @ p["skeleton_out"]["kernel"] + p["skeleton_out"]["bias"])
    detail = x @ p["detail"]["kernel"] + p["detail"]["bias"]  # no activation
    y = naive_bilinear(skeleton, detail, p["bilinear"])
    head = y @ p["head"]["kernel"] + p["head"]["bias"]
    mean_pose = np.zeros((24, 3))
    mean_pose[0, 0] = np.pi  # MeanParams: the root turned 180 degrees about x
    np.testing.assert_allclose(out["skeleton2d"], skeleton.reshape(B, T, 14, 2), atol=1e-5)
    np.testing.assert_allclose(out["bilinear"], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["cam"], np.array([0.9, 0, 0]) + head[..., :3], atol=1e-5)
    np.testing.assert_allclose(out["pose"], mean_pose + head[..., 3:75].reshape(B, T, 24, 3),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(out["betas"], head[..., 75:], atol=1e-5)


def test_outputs_match_hmrs():
    model = dsd.build(_small_config(), body_model())
    outputs, _ = jax.eval_shape(model.init_with_output, key(0), features())
    assert set(outputs) == {*OUTPUT_SHAPES, "iterations", "skeleton2d", "bilinear"}
    for name, shape in OUTPUT_SHAPES.items():
        assert outputs[name].shape == shape, name
    b, t = OUTPUT_SHAPES["cam"][:2]
    assert outputs["skeleton2d"].shape == (b, t, 14, 2)
    assert outputs["bilinear"].shape == (b, t, 5)
    assert outputs["iterations"]["rotmats"].shape == (1, b, t, 24, 3, 3)  # one shot


def _small_config(**overrides):
    config = dsd.default_config()
    config.update(SMALL, **overrides)
    return config


class _Forward(nn.Module):
    """dsd_forward without the body model (DSD's __call__ minus smpl_outputs)."""

    use_gt_2d: bool = True
    mean_params: MeanParams = MeanParams()
    skeleton_hidden: int = 8
    detail_width: int = 6
    bilinear_width: int = 5
    head_init: str = "small"
    joint_layout: str = "vibe49"
    dtype: type = jnp.float32

    @nn.compact
    def __call__(self, x, *, train=False, kp2d=None):
        return dsd.dsd_forward(self, x, train=train, kp2d=kp2d)


def test_gt_2d_replaces_the_skeleton_at_the_bilinear_input_in_training_only(regressor):
    _, params, x = regressor
    kp2d = np.array(normal(5, (B, T, 49, 3)))
    kp2d[..., 2] = (np.arange(49) % 3 != 0).astype(np.float32)  # some joints unlabelled
    variables = {"params": {"dsd": params}}
    cases = ((_Forward(), True, True), (_Forward(), False, False),
             (_Forward(use_gt_2d=False), True, False))  # fmt: skip

    @jax.jit
    def forwards(labels):  # one program for the four forwards
        plain = _Forward().apply(variables, x)
        return plain, [m.apply(variables, x, train=t, kp2d=labels) for m, t, _ in cases]

    plain, outs = forwards(jnp.asarray(kp2d))
    for out, (_, _, replaced) in zip(outs, cases, strict=True):
        np.testing.assert_array_equal(out["skeleton2d"], plain["skeleton2d"])  # the prediction
        if not replaced:
            np.testing.assert_array_equal(out["bilinear"], plain["bilinear"])
            continue
        labels = kp2d[:, :, 25:39]  # the common-14 joints of vibe49
        x_s = np.where(labels[..., 2:] > 0, labels[..., :2], plain["skeleton2d"])
        detail = np.asarray(x) @ params["detail"]["kernel"] + params["detail"]["bias"]
        want = naive_bilinear(x_s.reshape(B, T, 28).astype(np.float64),
                              np.asarray(detail, np.float64),
                              np.asarray(params["bilinear"], np.float64))  # fmt: skip
        np.testing.assert_allclose(out["bilinear"], want, rtol=1e-4, atol=1e-5)
        assert not np.allclose(out["bilinear"], plain["bilinear"])


def test_soft_argmax_of_a_one_hot_heatmap_is_the_pixel_centre():
    h, w = 4, 8
    logits = np.full((2, h, w, 14), -1e4, np.float32)
    logits[0, 2, 5, 3] = 0.0  # joint 3 of image 0 at row 2, column 5
    logits[1, 0, 0, :] = 0.0  # every joint of image 1 at the top-left pixel
    coords = jax.jit(dsd.soft_argmax)(jnp.asarray(logits))
    # Pixel x (0-based) of a map W wide has its centre at (2x + 1) / W - 1.
    np.testing.assert_allclose(coords[0, 3], [(2 * 5 + 1) / w - 1, (2 * 2 + 1) / h - 1])
    np.testing.assert_allclose(coords[1], np.tile([1 / w - 1, 1 / h - 1], (14, 1)))
    uniform = jax.jit(dsd.soft_argmax)(jnp.zeros((1, h, w, 14)))
    np.testing.assert_allclose(uniform, 0.0, atol=1e-6)  # a flat map: the centre of the crop


def test_heatmap_skeleton_shapes():
    model = dsd.HeatmapSkeleton(channels=4)
    variables = jax.eval_shape(model.init, key(0), jnp.zeros((1, 2, 3, 8)))
    assert variables["params"]["deconv2"]["kernel"].shape == (4, 4, 4, 4)
    assert variables["params"]["heatmaps"]["kernel"].shape == (1, 1, 4, 14)
    assert "batch_stats" not in variables  # AffineNorm: no mutable statistics
    out = jax.eval_shape(model.apply, variables, jnp.zeros((1, 2, 3, 8)))
    assert out.shape == (1, 14, 2)


def test_extra_losses_is_the_weighted_confidence_l1_on_common14():
    rng = np.random.default_rng(0)
    skeleton = rng.uniform(-1, 1, (B, T, 14, 2)).astype(np.float32)
    kp2d = rng.uniform(-1, 1, (B, T, 49, 3)).astype(np.float32)
    kp2d[..., 2] = rng.uniform(0, 1, (B, T, 49)) * (rng.uniform(size=(B, T, 49)) > 0.3)
    valid = np.ones((B, T), np.float32)
    valid[1, 2] = 0.0  # padding of a short video
    config = _small_config(w_skeleton2d=3.0)
    got = dsd.extra_losses(config, {"skeleton2d": jnp.asarray(skeleton)},
                           {"kp2d": jnp.asarray(kp2d), "valid": jnp.asarray(valid)})  # fmt: skip
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T):
            if not valid[b, t]:
                continue
            for j in range(14):
                label = kp2d[b, t, 25 + j]
                total += label[2] * np.abs(skeleton[b, t, j] - label[:2]).mean()
                count += 1  # every joint counts, missing ones add 0 (eq. 4, VIBE)
    assert set(got) == {"skeleton2d"} and got["skeleton2d"].dtype == jnp.float32
    np.testing.assert_allclose(got["skeleton2d"], 3.0 * total / count, rtol=1e-5)


def test_config_checks_and_the_dsd_paper_preset():
    dsd.check_config(dsd.default_config())
    with pytest.raises(ValueError, match="num_iterations is 3.*one shot"):
        dsd.check_config(_small_config(num_iterations=3))
    with pytest.raises(ValueError, match="model.hidden_size is not a field of the 'dsd'"):
        dsd.check_config(_small_config(hidden_size=8))
    settings = losses.resolve(losses.default_loss_config("dsd_paper"))
    assert settings.weights == {"kp2d": 10.0, "kp3d": 60.0, "pose": 20.0, "shape": 0.02}
