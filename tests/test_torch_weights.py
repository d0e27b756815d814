"""Tests of lmr_jax.torch_weights: torch's two file formats read without torch, the allow-list,
damaged files, and the torchvision ResNet / SPIN regressor maps checked against numpy references
of the torch networks. The checkpoints are written by tests/torch_files.py (no torch)."""

import collections
import os
import pickle
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from lmr_jax import geometry, torch_weights
from lmr_jax.models.hmr import HMR, HMRRegressor
from lmr_jax.models.resnet import ResNet, ResNet18
from tests import torch_files
from tests.models.small_models import body_model

FORMATS = ("zip", "legacy")
NUM_PARAMS = 157  # SPIN's 144 pose + 10 shape + 3 camera inputs of fc1


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _checkpoint():
    """A SPIN-like nested checkpoint with every storage type, views and non-tensor values."""
    rng = np.random.default_rng(0)
    shared = torch_files.Storage(np.arange(20, dtype=np.float32))
    arrays = {
        "float64": rng.normal(size=(2, 3)),
        "float16": rng.normal(size=(4,)).astype(np.float16),
        "bfloat16": rng.normal(size=(3,)).astype(ml_dtypes.bfloat16),
        "int32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "uint8": np.arange(250, 256, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
    }
    model = torch_files.state_dict(
        [
            ("conv.weight", rng.normal(size=(2, 3, 3, 3)).astype(np.float32)),
            ("bn.num_batches_tracked", np.array(7, np.int64)),
            ("transposed", torch_files.Tensor(shared, 2, (3, 4), (1, 3))),  # a .t() view
            ("strided", torch_files.Tensor(shared, 5, (2,), (2,))),  # same storage, offset
            ("parameter", torch_files.Tensor(np.ones(2, np.float32), parameter=True)),
        ]
    )
    return {
        "model": model,
        "arrays": arrays,
        "optimizer": {
            "state": {0: {"step": 3, "exp_avg": np.full((2,), 0.5, np.float32)}},
            "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "params": [0, 1]}],
        },
        "epoch": 12,
        "dataset_perm": [2, 0, 1],
        "name": "spin",
        "raw": b"\x00\xffbytes",
        "groups": {1, 2},
        "performance": np.float64(52.25),
        "numpy_array": torch_files.Raw(np.arange(3.0)),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_values_dtypes_views_and_nesting(tmp_path, fmt):
    path = torch_files.save(_checkpoint(), tmp_path / f"c.{fmt}.pth.tar", fmt)
    loaded = torch_weights.read_checkpoint(path)
    expected = _checkpoint()
    assert isinstance(loaded["model"], collections.OrderedDict)
    assert loaded["model"]._metadata == {"": {"version": 1}}
    assert list(loaded["model"]) == list(expected["model"])
    np.testing.assert_array_equal(loaded["model"]["conv.weight"], expected["model"]["conv.weight"])
    assert loaded["model"]["conv.weight"].dtype == np.float32
    steps = loaded["model"]["bn.num_batches_tracked"]
    assert steps.shape == () and steps.dtype == np.int64 and steps == 7
    shared = np.arange(20, dtype=np.float32)
    transposed = [[shared[2 + i + 3 * j] for j in range(4)] for i in range(3)]
    np.testing.assert_array_equal(loaded["model"]["transposed"], transposed)
    np.testing.assert_array_equal(loaded["model"]["strided"], [5.0, 7.0])
    np.testing.assert_array_equal(loaded["model"]["parameter"], [1.0, 1.0])
    for name, array in expected["arrays"].items():
        got = loaded["arrays"][name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)
        assert got.flags.writeable and got.flags.c_contiguous
        assert got.dtype.byteorder in ("=", "|"), name  # native
    optimizer = loaded["optimizer"]
    np.testing.assert_array_equal(optimizer["state"][0]["exp_avg"], [0.5, 0.5])
    assert optimizer["state"][0]["step"] == 3
    assert optimizer["param_groups"] == [{"lr": 5e-5, "betas": (0.9, 0.999), "params": [0, 1]}]
    for key in ("epoch", "dataset_perm", "name", "raw", "groups"):
        assert loaded[key] == expected[key], key
    assert loaded["performance"] == 52.25 and loaded["performance"].dtype == np.float64
    np.testing.assert_array_equal(loaded["numpy_array"], [0.0, 1.0, 2.0])


def test_legacy_storage_views(tmp_path):
    root = torch_files.Storage(np.arange(10, dtype=np.int32))
    view = torch_files.Storage(np.arange(3, 7, dtype=np.int32), view_of=(root, 3, 4))
    checkpoint = {"view": torch_files.Tensor(view, 1, (2,), (1,)), "root": torch_files.Tensor(root)}
    loaded = torch_weights.read_checkpoint(
        torch_files.save(checkpoint, tmp_path / "v.pt", "legacy")
    )
    np.testing.assert_array_equal(loaded["view"], [4, 5])
    np.testing.assert_array_equal(loaded["root"], np.arange(10))


def test_big_endian_zip(tmp_path):
    array = np.arange(6, dtype=np.float64).reshape(2, 3) - 2.5
    path = torch_files.save({"x": array}, tmp_path / "big.pt", "zip", byteorder="big")
    loaded = torch_weights.read_checkpoint(path)["x"]
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.float64 and loaded.dtype.byteorder == "="


def _evil_pickle(module: str, name: str, argument: str) -> bytes:
    """By hand: PROTO 2, GLOBAL 'module name', the argument, TUPLE1, REDUCE, STOP."""
    text = argument.encode()
    return (pickle.PROTO + b"\x02" + pickle.GLOBAL + f"{module}\n{name}\n".encode()
            + pickle.BINUNICODE + struct.pack("<I", len(text)) + text
            + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)  # fmt: skip


@pytest.mark.parametrize("container", ("zip", "legacy", "bare"))
@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval")])
def test_refuses_globals_outside_the_allow_list(tmp_path, container, module, name):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}"
    payload = _evil_pickle(module, name, command)
    path = tmp_path / "evil.pth"
    if container == "zip":
        torch_files.write_zip(path, payload, {})
    elif container == "legacy":
        torch_files.write_legacy(path, payload, {})
    else:
        path.write_bytes(payload)
    with pytest.raises(torch_weights.UnsafeCheckpointError) as error:
        torch_weights.read_checkpoint(path)
    assert f"'{module}.{name}'" in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)
    assert not marker.exists()


def test_refuses_numpy_object_arrays(tmp_path):
    checkpoint = {"objects": torch_files.Raw(np.array([1, "text"], dtype=object))}
    path = torch_files.save(checkpoint, tmp_path / "objects.pt")
    with pytest.raises(torch_weights.UnsafeCheckpointError, match="object dtype"):
        torch_weights.read_checkpoint(path)


def _damaged_files(tmp_path):
    good_zip = torch_files.save({"w": np.ones((64, 64), np.float32)}, tmp_path / "good.pt")
    good_legacy = torch_files.save(
        {"w": np.ones((64, 64), np.float32)}, tmp_path / "good_legacy.pt", "legacy"
    )
    zip_bytes, legacy_bytes = open(good_zip, "rb").read(), open(good_legacy, "rb").read()
    files = {
        "garbage.pth": np.random.default_rng(0).bytes(300),
        "empty.pth": b"",
        "plain_pickle.pkl": pickle.dumps({"pose": [0.0] * 72}, protocol=2),
        "text.pth": b"not a checkpoint\n",
        "truncated_zip.pth": zip_bytes[: len(zip_bytes) // 2],
        "zip_without_end.pth": zip_bytes[:-30],
        "truncated_legacy.pth": legacy_bytes[:-100],
        "legacy_header_only.pth": legacy_bytes[:40],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in files] + [tmp_path / "missing.pth"]


def test_damaged_or_foreign_files_name_the_file(tmp_path):
    for path in _damaged_files(tmp_path):
        with pytest.raises(torch_weights.CheckpointError) as error:
            torch_weights.read_checkpoint(path)
        message = str(error.value)
        assert str(path) in message and "\n" not in message, message
        assert not isinstance(error.value, torch_weights.UnsafeCheckpointError), message


# ---------------------------------------------------------------------------------------------
# torchvision's ResNet, against a numpy ResNet-18
# ---------------------------------------------------------------------------------------------

TORCHVISION = {18: ((2, 2, 2, 2), "basic"), 34: ((3, 4, 6, 3), "basic"),
               50: ((3, 4, 6, 3), "bottleneck")}  # fmt: skip


def torchvision_resnet_shapes(depth: int | tuple) -> dict:
    """torchvision's resnet{depth}().state_dict() keys and shapes, without fc, written out
    from torchvision's models/resnet.py (_make_layer, BasicBlock, Bottleneck); `depth` may also
    be (stage sizes, block) for a smaller network of the same construction."""
    stages, block = TORCHVISION[depth] if isinstance(depth, int) else depth
    expansion = 1 if block == "basic" else 4
    shapes = {}

    def bn(name, width):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{leaf}"] = (width,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, blocks in enumerate(stages):
        planes = 64 * 2**stage
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            prefix = f"layer{stage + 1}.{index}."
            if block == "basic":
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            for i, (out, inp, k) in enumerate(convs, start=1):
                shapes[f"{prefix}conv{i}.weight"] = (out, inp, k, k)
                bn(f"{prefix}bn{i}", out)
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{prefix}downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{prefix}downsample.1", planes * expansion)
            inplanes = planes * expansion
    return shapes


def random_resnet_state(depth: int | tuple, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    state = torch_files.state_dict([])
    for key, shape in torchvision_resnet_shapes(depth).items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            value = np.array(100, np.int64)
        elif leaf == "weight" and len(shape) == 4:
            value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif leaf in ("weight", "running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(scale=0.1, size=shape)
        state[key] = np.asarray(value, np.float32 if value.dtype.kind == "f" else value.dtype)
    return state


def np_conv(x, weight, stride, pad):
    """torch's Conv2d(bias=False), NHWC input, OIHW weight: a sum over the kernel offsets."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    _, _, kh, kw = weight.shape
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out += np.einsum("nhwc,oc->nhwo", patch, weight[:, :, i, j])
    return out


def np_bn(x, state, name):
    """torch's BatchNorm2d in eval mode (running statistics, eps 1e-5)."""
    mean, var = state[f"{name}.running_mean"], state[f"{name}.running_var"]
    scale = state[f"{name}.weight"] / np.sqrt(var.astype(np.float64) + 1e-5)
    return (x - mean) * scale + state[f"{name}.bias"]


def np_max_pool(x):
    """torch's MaxPool2d(3, stride=2, padding=1): -inf padding."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    windows = [
        x[:, i : i + 2 * out_h : 2, j : j + 2 * out_w : 2] for i in range(3) for j in range(3)
    ]
    return np.max(windows, axis=0)


def np_resnet(state, images, depth=18):
    """torchvision's ResNet forward without fc, in float64: [N, H, W, 3] -> [N, F]; BasicBlock
    or Bottleneck (stride in its 3x3 conv2, torchvision v1.5)."""
    stages, block = TORCHVISION[depth] if isinstance(depth, int) else depth
    relu = lambda v: np.maximum(v, 0.0)
    x = relu(np_bn(np_conv(images, state["conv1.weight"], 2, 3), state, "bn1"))
    x = np_max_pool(x)
    for stage, blocks in enumerate(stages):
        for index in range(blocks):
            p = f"layer{stage + 1}.{index}."
            stride = 2 if stage > 0 and index == 0 else 1
            convs = [(1, 1, 0), (2, stride, 1), (3, 1, 0)] if block == "bottleneck" else [
                (1, stride, 1), (2, 1, 1)]  # fmt: skip
            out = x
            for i, conv_stride, pad in convs:
                out = np_conv(out, state[f"{p}conv{i}.weight"], conv_stride, pad)
                out = np_bn(out, state, f"{p}bn{i}")
                out = relu(out) if i < len(convs) else out
            if p + "downsample.0.weight" in state:
                x = np_bn(np_conv(x, state[p + "downsample.0.weight"], stride, 0), state,
                          p + "downsample.1")  # fmt: skip
            x = relu(out + x)
    return x.mean(axis=(1, 2))


def spin_regressor_state(dim: int, hidden: int, seed: int = 1) -> dict:
    """SPIN's regressor keys and buffers (models/hmr.py), at feature size `dim`."""
    rng = np.random.default_rng(seed)
    shapes = {"fc1": (hidden, dim + NUM_PARAMS), "fc2": (hidden, hidden), "decpose": (144, hidden),
              "decshape": (10, hidden), "deccam": (3, hidden)}  # fmt: skip
    state = {}
    for name, (out, inp) in shapes.items():
        bound = 1.0 / np.sqrt(inp)
        state[f"{name}.weight"] = rng.uniform(-bound, bound, (out, inp)).astype(np.float32)
        state[f"{name}.bias"] = rng.uniform(-bound, bound, (out,)).astype(np.float32)
    for name, size in (("pose", 144), ("shape", 10), ("cam", 3)):
        state[f"init_{name}"] = rng.normal(size=(1, size)).astype(np.float32)
    return state


def np_spin_regressor(state, features, n_iter=3):
    """SPIN's HMR.forward after the backbone: xc = cat([x, pose, shape, cam]), fc1, drop, fc2,
    drop, residual heads; returns every iteration's (pose [N, 144], shape, cam)."""
    linear = lambda name, v: (
        v @ state[f"{name}.weight"].T.astype(np.float64) + state[f"{name}.bias"]
    )
    n = features.shape[0]
    pose, shape, cam = (np.repeat(state[f"init_{k}"], n, 0) for k in ("pose", "shape", "cam"))
    history = []
    for _ in range(n_iter):
        xc = np.concatenate([features, pose, shape, cam], axis=1)
        xc = linear("fc2", linear("fc1", xc))  # dropout is identity in eval
        pose = linear("decpose", xc) + pose
        shape = linear("decshape", xc) + shape
        cam = linear("deccam", xc) + cam
        history.append((pose, shape, cam))
    return history


def np_spin_rot6d_to_rotmat(x):
    """SPIN's utils/geometry.rot6d_to_rotmat: x.view(-1, 3, 2), Gram-Schmidt on its columns."""
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = a1 / np.linalg.norm(a1, axis=1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


@pytest.fixture(scope="module")
def resnet18_state():
    return random_resnet_state(18)


@pytest.fixture(scope="module")
def spin_file(resnet18_state, tmp_path_factory):
    """SPIN's checkpoint layout (models/hmr.py, utils/saver.py) with a ResNet-18 backbone, in
    the legacy format of SPIN's 2019-2020 release."""
    model = torch_files.state_dict(
        [*resnet18_state.items(), *spin_regressor_state(512, 16).items()]
    )
    checkpoint = {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1, 2]}]},
        "epoch": 3, "batch_idx": 10, "batch_size": 64, "dataset_perm": [1, 0, 2],
        "total_step_count": 1000,
    }  # fmt: skip
    return torch_files.save(checkpoint, tmp_path_factory.mktemp("spin") / "model.pt", "legacy")


def test_spin_checkpoint_backbone_and_regressor_match_numpy(resnet18_state, spin_file):
    images = np.random.default_rng(2).normal(size=(2, 36, 44, 3)).astype(np.float32)
    variables = torch_weights.load_resnet(spin_file, depth=18)
    features = np.asarray(jax.jit(ResNet18().apply)(variables, images))
    reference = np_resnet(resnet18_state, images.astype(np.float64), 18)
    assert features.shape == (2, 512)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5 * scale)

    regressor, mean_params = torch_weights.load_spin_regressor(spin_file)
    model = HMRRegressor(mean_params=mean_params, hidden_size=16, num_iterations=3)
    pose6d, betas, cam = model.apply({"params": regressor}, features)
    spin = np_spin_regressor(torch_weights.read_checkpoint(spin_file)["model"], features)
    for v, (ref_pose, ref_shape, ref_cam) in enumerate(spin):
        np.testing.assert_allclose(pose6d[v].reshape(2, 144), ref_pose, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(betas[v], ref_shape, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cam[v], ref_cam, rtol=1e-4, atol=1e-5)
    rotmats = geometry.rot6d_to_matrix(pose6d[-1])
    np.testing.assert_allclose(rotmats.reshape(-1, 3, 3), np_spin_rot6d_to_rotmat(spin[-1][0]),
                               atol=1e-5)  # fmt: skip


def test_bottleneck_resnet_matches_numpy():
    """Bottlenecks (ResNet-50's block: stride in the 3x3 conv, a downsample on the first block
    of every stage) on a two-stage network of the same construction."""
    layout = ((2, 1), "bottleneck")
    state = random_resnet_state(layout, seed=3)
    model = ResNet(stage_sizes=layout[0], block=layout[1])
    variables = torch_weights.resnet_variables(state, model, "tiny.pth")
    images = np.random.default_rng(4).normal(size=(2, 20, 26, 3)).astype(np.float32)
    features = np.asarray(jax.jit(model.apply)(variables, images))
    reference = np_resnet(state, images.astype(np.float64), layout)
    assert features.shape == (2, 512)
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_spin_regressor_is_hmr_regressor_subtree(spin_file):
    regressor, mean_params = torch_weights.load_spin_regressor(spin_file)
    model = HMR(body_model(), mean_params=mean_params, regressor_hidden=16)
    features = jax.ShapeDtypeStruct((1, 2, 512), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    shapes = jax.tree.map(lambda leaf: leaf.shape, abstract)
    assert jax.tree.map(np.shape, {"regressor": regressor}) == shapes
    init = torch_weights.read_checkpoint(spin_file)["model"]["init_cam"]
    assert mean_params.cam == tuple(float(v) for v in init[0])


@pytest.mark.parametrize("layout", ("state_dict_module", "top_level"))
def test_resnet_layouts_load_the_same_variables(resnet18_state, spin_file, tmp_path, layout):
    if layout == "state_dict_module":  # DataParallel, zip format
        state = {f"module.{k}": v for k, v in resnet18_state.items()}
        path = torch_files.save({"state_dict": state, "epoch": 1}, tmp_path / "dp.pth")
    else:
        path = torch_files.save(dict(resnet18_state), tmp_path / "plain.pth")
    loaded = torch_weights.load_resnet(path, depth=18)
    expected = torch_weights.load_resnet(spin_file, depth=18)
    assert jax.tree.structure(loaded) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, loaded, expected)
    kernel = resnet18_state["layer2.0.conv1.weight"]  # OIHW -> HWIO
    np.testing.assert_array_equal(
        loaded["params"]["layer2_0"]["conv1"]["kernel"], kernel.transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["layer4_0"]["downsample_bn"]["var"],
        resnet18_state["layer4.0.downsample.1.running_var"],
    )


@pytest.mark.parametrize("depth", (18, 34, 50))
def test_resnet_keys_and_shapes_are_torchvisions(depth):
    expected = {k: s for k, s in torchvision_resnet_shapes(depth).items()
                if not k.endswith("num_batches_tracked")}  # fmt: skip
    mapped = {key: shape for key, (_, shape) in torch_weights.resnet_torch_shapes(depth).items()}
    assert list(mapped.items()) == list(expected.items())  # torchvision's order too
    params = sum(np.prod(s) for k, s in expected.items() if "running" not in k)
    assert params == {18: 11_176_512, 34: 21_284_672, 50: 23_508_032}[depth]


def test_resnet_key_errors_name_the_key(resnet18_state, tmp_path):
    state = dict(resnet18_state)
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(torch_weights.CheckpointError, match=r"'layer3\.1\.bn2\.running_var'"):
        torch_weights.resnet_variables(state, 18, "x.pth")
    state = dict(resnet18_state, **{"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1))})
    with pytest.raises(torch_weights.CheckpointError,
                       match=r"'layer1\.0\.conv2\.weight' has shape \(64, 64, 1, 1\), "
                             r"expected \(64, 64, 3, 3\)"):  # fmt: skip
        torch_weights.resnet_variables(state, 18, "x.pth")
    state = dict(resnet18_state, **{"layer1.2.conv1.weight": np.zeros((64, 64, 3, 3))})
    with pytest.raises(torch_weights.CheckpointError, match=r"'layer1\.2\.conv1\.weight'"):
        torch_weights.resnet_variables(state, 18, "x.pth")
    with pytest.raises(torch_weights.CheckpointError, match=r"'layer1\.0\.conv3\.weight'"):
        torch_weights.resnet_variables(resnet18_state, 50, "x.pth")  # a ResNet-18 as a 50
    # Through files: a missing key names the key and the file; no ResNet at all is said so.
    path = torch_files.save({"model": {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}},
                            tmp_path / "partial.pt")  # fmt: skip
    with pytest.raises(torch_weights.CheckpointError) as error:
        torch_weights.load_resnet(path)
    assert "'bn1.weight'" in str(error.value) and str(path) in str(error.value)
    path = torch_files.save({"gen_state_dict": {"w": np.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(torch_weights.CheckpointError, match="holds no torchvision ResNet"):
        torch_weights.load_resnet(path)


def test_spin_regressor_errors_name_the_key():
    state = spin_regressor_state(8, 16)
    broken = {k: v for k, v in state.items() if k != "deccam.bias"}
    with pytest.raises(torch_weights.CheckpointError, match=r"'deccam\.bias'"):
        torch_weights.spin_regressor_params(broken, "spin.pt")
    broken = dict(state, **{"fc2.weight": np.zeros((16, 8), np.float32)})
    with pytest.raises(torch_weights.CheckpointError, match=r"'fc2\.weight' has shape \(16, 8\)"):
        torch_weights.spin_regressor_params(broken, "spin.pt")
    params, mean_params = torch_weights.spin_regressor_params(
        {k: v for k, v in state.items() if not k.startswith("init_")}, "spin.pt"
    )
    assert mean_params is None
    np.testing.assert_array_equal(params["fc1"]["static_projection"]["kernel"],
                                  state["fc1.weight"][:, :8].T)  # fmt: skip
    np.testing.assert_array_equal(params["fc1"]["dynamic_projection"]["kernel"],
                                  state["fc1.weight"][:, 8:].T)  # fmt: skip


def test_paths_are_strings_or_pathlike(tmp_path):
    path = torch_files.save({"a": np.ones(2, np.float32)}, tmp_path / "p.pt")
    assert torch_weights.read_checkpoint(os.fspath(path))["a"].tolist() == [1.0, 1.0]
    assert torch_weights.read_checkpoint(tmp_path / "p.pt")["a"].tolist() == [1.0, 1.0]
