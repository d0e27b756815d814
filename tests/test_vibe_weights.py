"""Tests of torch_weights.load_vibe: VIBE's generator checkpoint (its trainer's layout) loads into
models.vibe.VIBE and computes what VIBE computes, checked against a numpy reference of VIBE's
forward (lib/models/vibe.py TemporalEncoder + lib/models/spin.py Regressor, torch's nn.GRU
equations step by step). The checkpoints are written by tests/torch_files.py (no torch)."""

import collections

import jax
import numpy as np
import pytest

from lmr_jax import torch_maps, torch_weights
from lmr_jax.models.hmr import HMRRegressor
from lmr_jax.models.vibe import TemporalEncoder
from tests import torch_files
from tests.models.small_models import body_model
from tests.test_torch_weights import (
    np_spin_regressor,
    np_spin_rot6d_to_rotmat,
    spin_regressor_state,
)

D, H, REGRESSOR_H = 12, 8, 16  # feature width (2048 in VIBE), GRU width (1024), fc1/fc2 (1024)
B, T = 2, 5


# ---------------------------------------------------------------------------------------------
# VIBE's checkpoint and a numpy VIBE
# ---------------------------------------------------------------------------------------------


def generator_state(layers=2, bidirectional=False, linear=True, hidden=H, seed=0) -> dict:
    """VIBE's gen_state_dict at test size: encoder.gru (torch's nn.GRU keys), encoder.linear,
    the SPIN regressor with its init_* buffers, and arrays of VIBE's SMPL layer."""
    rng = np.random.default_rng(seed)
    uniform = lambda bound, *shape: rng.uniform(-bound, bound, shape).astype(np.float32)
    state = {}
    dirs = 2 if bidirectional else 1
    for layer in range(layers):
        fan_in = D if layer == 0 else dirs * hidden
        for suffix in ("", "_reverse")[:dirs]:
            bound = 1.0 / np.sqrt(hidden)  # torch's init; larger weights would saturate
            state[f"encoder.gru.weight_ih_l{layer}{suffix}"] = uniform(bound, 3 * hidden, fan_in)
            state[f"encoder.gru.weight_hh_l{layer}{suffix}"] = uniform(bound, 3 * hidden, hidden)
            state[f"encoder.gru.bias_ih_l{layer}{suffix}"] = uniform(bound, 3 * hidden)
            state[f"encoder.gru.bias_hh_l{layer}{suffix}"] = uniform(bound, 3 * hidden)
    if linear or bidirectional:
        state["encoder.linear.weight"] = uniform(1.0 / np.sqrt(dirs * hidden), D, dirs * hidden)
        state["encoder.linear.bias"] = uniform(1.0 / np.sqrt(dirs * hidden), D)
    width = D if linear or bidirectional else dirs * hidden
    regressor = spin_regressor_state(width, REGRESSOR_H, seed=seed + 1)
    state.update({f"regressor.{k}": v for k, v in regressor.items()})
    state.update({  # VIBE's SMPL layer (smplx.SMPL + J_regressor_extra), tiny here
        "regressor.smpl.betas": np.zeros((1, 10), np.float32),
        "regressor.smpl.faces_tensor": np.zeros((4, 3), np.int64),
        "regressor.smpl.v_template": rng.normal(size=(7, 3)).astype(np.float32),
        "regressor.smpl.shapedirs": rng.normal(size=(7, 3, 10)).astype(np.float32),
        "regressor.smpl.J_regressor": rng.uniform(size=(24, 7)).astype(np.float32),
        "regressor.smpl.J_regressor_extra": rng.uniform(size=(9, 7)).astype(np.float32),
        "regressor.smpl.vertex_joint_selector.extra_joints_idxs": np.arange(5, dtype=np.int64),
    })  # fmt: skip
    return state


def vibe_checkpoint(state: dict) -> dict:
    """What VIBE's trainer saves (lib/core/trainer.py, save_model)."""
    rng = np.random.default_rng(9)
    discriminator = {"gru.weight_ih_l0": rng.normal(size=(6, 4)).astype(np.float32),
                     "fc.weight": rng.normal(size=(1, 2)).astype(np.float32)}  # fmt: skip
    adam = lambda n: {
        "state": {i: {"step": 5, "exp_avg": np.ones(3, np.float32),
                      "exp_avg_sq": np.ones(3, np.float32)} for i in range(n)},
        "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "params": list(range(n))}],
    }  # fmt: skip
    return {
        "epoch": 12,
        "gen_state_dict": torch_files.state_dict(state.items()),
        "performance": 82.5,
        "gen_optimizer": adam(3),
        "disc_motion_state_dict": torch_files.state_dict(discriminator.items()),
        "disc_motion_optimizer": adam(2),
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_torch_gru(x, state, layers, dirs):
    """torch.nn.GRU (h0 = 0) on time-major x [T, N, F], as torch documents it: per layer and
    direction r, z, n from the (r, z, n) row blocks of weight_ih / weight_hh, the backward
    direction on the reversed sequence, outputs concatenated forward first."""
    for layer in range(layers):
        outputs = []
        for direction, suffix in enumerate(("", "_reverse")[:dirs]):
            get = lambda name: state[f"encoder.gru.{name}_l{layer}{suffix}"].astype(np.float64)
            w_ir, w_iz, w_in = np.split(get("weight_ih"), 3)
            w_hr, w_hz, w_hn = np.split(get("weight_hh"), 3)
            b_ir, b_iz, b_in = np.split(get("bias_ih"), 3)
            b_hr, b_hz, b_hn = np.split(get("bias_hh"), 3)
            h = np.zeros((x.shape[1], w_hr.shape[1]))
            states = []
            for x_t in x[::-1] if direction else x:
                r = _sigmoid(x_t @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
                z = _sigmoid(x_t @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
                n = np.tanh(x_t @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
                h = (1 - z) * n + z * h
                states.append(h)
            outputs.append(np.stack(states[::-1] if direction else states))
        x = np.concatenate(outputs, axis=-1)
    return x


def np_vibe_encoder(state, features, layers, dirs, use_residual=True):
    """VIBE's TemporalEncoder.forward on [N, T, F]: permute to [T, N, F], GRU, ReLU + linear when
    there is one, the residual when the output is as wide as the input (VIBE: 2048)."""
    x = features.transpose(1, 0, 2).astype(np.float64)
    y = np_torch_gru(x, state, layers, dirs)
    if "encoder.linear.weight" in state:
        y = np.maximum(y, 0.0) @ state["encoder.linear.weight"].T + state["encoder.linear.bias"]
    if use_residual and y.shape[-1] == x.shape[-1]:
        y = y + x
    return y.transpose(1, 0, 2)


def np_vibe(state, features, layers=2, dirs=1, use_residual=True):
    """VIBE.forward: the encoder, then the regressor on every frame (3 iterations from the
    init_* buffers, rot6d_to_rotmat on the last); every iteration's (rotmats, betas, cam)."""
    encoded = np_vibe_encoder(state, features, layers, dirs, use_residual)
    n, t = features.shape[:2]
    regressor = {k[len("regressor."):]: v for k, v in state.items()
                 if k.startswith("regressor.") and not k.startswith("regressor.smpl.")}  # fmt: skip
    history = np_spin_regressor(regressor, encoded.reshape(n * t, -1))
    return [(np_spin_rot6d_to_rotmat(pose).reshape(n, t, 24, 3, 3), shape.reshape(n, t, 10),
             cam.reshape(n, t, 3)) for pose, shape, cam in history]  # fmt: skip


def _features(seed=3):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The released layout, through files and the whole model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vibe_files(tmp_path_factory):
    state = generator_state()
    folder = tmp_path_factory.mktemp("vibe")
    files = {fmt: torch_files.save(vibe_checkpoint(state), folder / f"vibe_{fmt}.pth.tar", fmt)
             for fmt in ("zip", "legacy")}  # fmt: skip
    return state, files


def test_vibe_checkpoint_computes_what_vibe_computes(vibe_files):
    state, files = vibe_files
    body = body_model()
    model, params = torch_weights.load_vibe(files["legacy"], body)
    zip_model, zip_params = torch_weights.load_vibe(files["zip"], body)
    fields = lambda m: (m.hidden_size, m.gru_layers, m.bidirectional, m.add_linear,
                        m.use_residual, m.regressor_hidden, m.mean_params)  # fmt: skip
    assert fields(zip_model) == fields(model)
    assert jax.tree.structure(zip_params) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, zip_params, params)

    # The architecture is the checkpoint's, the start its buffers, the body model the caller's.
    assert (model.hidden_size, model.gru_layers, model.bidirectional) == (H, 2, False)
    assert (model.add_linear, model.use_residual, model.regressor_hidden) == (True, True, 16)
    assert (model.num_iterations, model.dropout) == (3, 0.0)
    assert model.mean_params.pose6d == tuple(float(v) for v in state["regressor.init_pose"][0])
    assert model.mean_params.shape == tuple(float(v) for v in state["regressor.init_shape"][0])
    assert model.mean_params.cam == tuple(float(v) for v in state["regressor.init_cam"][0])
    assert model.body_model is body
    assert set(params) == {"encoder", "regressor"} and "smpl" not in params["regressor"]

    features = _features()
    compared = ("rotmats", "betas", "cam", "iterations")  # XLA then drops the skinning: quick

    @jax.jit
    def forward(params, features):
        outputs = model.apply({"params": params}, features)
        return {name: outputs[name] for name in compared}

    outputs = forward(params, features)
    reference = np_vibe(state, features)
    rotmats, betas, cam = reference[-1]  # VIBE's output: the last iteration
    np.testing.assert_allclose(outputs["rotmats"], rotmats, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(outputs["betas"], betas, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(outputs["cam"], cam, rtol=1e-4, atol=2e-5)
    for v, (rotmats, betas, cam) in enumerate(reference):
        np.testing.assert_allclose(outputs["iterations"]["rotmats"][v], rotmats, atol=2e-5)
        np.testing.assert_allclose(outputs["iterations"]["betas"][v], betas, atol=2e-5)
        np.testing.assert_allclose(outputs["iterations"]["cam"][v], cam, atol=2e-5)
    assert not np.allclose(reference[0][1], reference[-1][1])  # the iterations matter


# ---------------------------------------------------------------------------------------------
# VIBE's other encoder options, on the encoder and regressor (no body model)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers,bidirectional,linear,hidden,use_residual",
    [
        (2, True, True, H, True),  # both directions, 2H -> D linear, residual
        (1, False, False, D, True),  # no linear; GRU states as wide as the input: residual
        (2, False, False, H, True),  # no linear, H != D: no residual, the regressor takes H
        (1, False, True, H, False),  # linear, use_residual off
    ],
)
def test_vibe_encoder_options_match_numpy(layers, bidirectional, linear, hidden, use_residual):
    state = generator_state(layers, bidirectional, linear, hidden, seed=layers + 4 * linear)
    config, params, mean_params = torch_maps.vibe_params(state, "v.pth", use_residual)
    dirs = 2 if bidirectional else 1
    assert (config.hidden_size, config.gru_layers, config.bidirectional) == (
        hidden, layers, bidirectional)  # fmt: skip
    assert config.add_linear == (linear or bidirectional)
    encoder = TemporalEncoder(hidden, num_layers=layers, bidirectional=bidirectional,
                              add_linear=config.add_linear, use_residual=use_residual)  # fmt: skip
    regressor = HMRRegressor(mean_params=mean_params, hidden_size=REGRESSOR_H)

    def forward(params, features):
        encoded = encoder.apply({"params": params["encoder"]}, features)
        return encoded, regressor.apply({"params": params["regressor"]}, encoded)

    features = _features(seed=layers)
    encoded, (pose6d, betas, cam) = jax.jit(forward)(params, features)
    reference = np_vibe_encoder(state, features, layers, dirs, use_residual)
    np.testing.assert_allclose(encoded, reference, rtol=1e-4, atol=1e-5)
    n_state = {k[len("regressor."):]: v for k, v in state.items()
               if k.startswith("regressor.") and "smpl" not in k}  # fmt: skip
    pose, shape, camera = np_spin_regressor(n_state, reference.reshape(B * T, -1))[-1]
    np.testing.assert_allclose(pose6d[-1].reshape(B * T, 144), pose, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(betas[-1].reshape(B * T, 10), shape, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(cam[-1].reshape(B * T, 3), camera, rtol=1e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Errors name the key
# ---------------------------------------------------------------------------------------------


def _error(state, match, use_residual=True):
    with pytest.raises(torch_weights.CheckpointError, match=match):
        torch_maps.vibe_params(state, "vibe.pth.tar", use_residual)


def test_vibe_key_errors_name_the_key():
    state = generator_state()
    _error({k: v for k, v in state.items() if k != "encoder.gru.bias_hh_l1"},
           r"'vibe\.pth\.tar' has no 'encoder\.gru\.bias_hh_l1'")  # fmt: skip
    _error(dict(state, **{"encoder.linear.weight": np.zeros((D, 2 * H), np.float32)}),
           r"'encoder\.linear\.weight' has shape \(12, 16\), expected \(12, 8\)")  # fmt: skip
    _error(dict(state, **{"encoder.gru.weight_hh_l0": np.zeros((3 * H, H + 1), np.float32)}),
           r"'encoder\.gru\.weight_hh_l0' has shape \(24, 9\), expected \[3H, H\]")  # fmt: skip
    for key in ("encoder.gru.weight_hr_l0", "encoder.attention.weight", "regressor.fc3.weight",
                "encoder.gru.weight_ih_l0_reverse_extra", "hmr.conv1.weight"):  # fmt: skip
        _error(dict(state, **{key: np.zeros(3, np.float32)}), f"has '{key}', which is not a "
               "parameter of VIBE's generator")  # fmt: skip
    _error(dict(state, **{"encoder.gru.weight_ih_l2": np.zeros((24, 8), np.float32)}),
           r"has no 'encoder\.gru\.weight_hh_l2'")  # a third layer, incomplete  # fmt: skip
    _error(dict(state, **{"encoder.gru.bias_ih_l0_reverse": np.zeros(24, np.float32)}),
           r"has no 'encoder\.gru\.weight_ih_l0_reverse'")  # fmt: skip
    _error({k: v for k, v in state.items() if k != "encoder.gru.weight_hh_l0"},
           r"has no 'encoder\.gru\.weight_hh_l0'")  # fmt: skip
    _error({k: v for k, v in state.items() if k != "regressor.deccam.bias"},
           r"has no 'regressor\.deccam\.bias'")  # fmt: skip
    _error({k: v for k, v in state.items() if not k.startswith("regressor.init_")},
           r"has no 'regressor\.init_pose'")  # fmt: skip
    _error({k: v for k, v in state.items() if not k.startswith("encoder.gru.")},
           r"has no 'encoder\.gru\.weight_ih_l0'")  # fmt: skip
    # The regressor must take the encoder's output: here a D-wide fc1 after a linear-free GRU.
    _error({k: v for k, v in state.items() if not k.startswith("encoder.linear.")},
           r"'regressor\.fc1\.weight' has shape \(16, 169\), expected \(16, 165\) for the "
           r"encoder's 8-wide output")  # fmt: skip
    # Bidirectional: VIBE always has the linear layer.
    bidirectional = generator_state(1, bidirectional=True)
    del bidirectional["encoder.linear.bias"]
    _error(bidirectional, r"has no 'encoder\.linear\.bias'")
    # The SMPL arrays are skipped whatever they hold.
    config, params, _ = torch_maps.vibe_params(
        dict(state, **{"regressor.smpl.anything.else": np.zeros((1, 2, 3))}), "v.pth"
    )
    assert config.hidden_size == H and "smpl" not in str(jax.tree_util.tree_structure(params))


def test_vibe_files_without_a_generator_are_named(tmp_path):
    spin = torch_files.save({"model": spin_regressor_state(8, 16), "epoch": 1}, tmp_path / "s.pt")
    message = (r"'.*s\.pt' holds no VIBE's generator: no 'gen_state_dict' and no "
               r"'encoder\.gru\.\*' keys \(top-level keys: epoch, model\)")  # fmt: skip
    with pytest.raises(torch_weights.CheckpointError, match=message):
        torch_weights.load_vibe(spin, body_model())
    # A bare generator state dict (torch.save(generator.state_dict())) loads too.
    state = generator_state(1, linear=False, hidden=D)
    bare = torch_files.save(collections.OrderedDict(state), tmp_path / "bare.pth")
    model, params = torch_weights.load_vibe(bare, body_model(), use_residual=False)
    assert (model.gru_layers, model.add_linear, model.use_residual) == (1, False, False)
    np.testing.assert_array_equal(params["encoder"]["gru"]["recurrent_kernel_0"][0],
                                  state["encoder.gru.weight_hh_l0"].T)  # fmt: skip
