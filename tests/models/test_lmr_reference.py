"""LMR end to end against a naive reference: six separate GRUs run one after another.

The model runs the five child parts as one stacked, padded recurrence, hoists phi's input
projections out of the iterations and splits every input kernel into a static and a dynamic
half (DESIGN.md section 6). The reference here undoes all of that: it slices the stacked
parameters into six plain GRUs (dropping the padding), concatenates each input in the paper's
order (section 3.2.2) and runs the GRUs with Python loops over iterations and frames, in
float64 numpy (no JAX in the reference, so no shared code path can hide a bug). Every
iteration's 6D pose, rotation matrices, betas and camera are compared by value, for LMR, the
`no_root_dependency` ablation and a streamed hidden state.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmr_jax import geometry, smpl
from lmr_jax.models import build_model, default_model_config
from tests.models.small_models import body_model, key, normal

B, T, D, H, V = 2, 5, 6, 8, 3
ROOT, *CHILDREN = smpl.PARTS.values()  # the paper's six parts, root first
WIDEST = max(len(joints) for joints in CHILDREN)  # the model pads every child to this
# float32 model against a float64 reference: outputs up to ~6 after V residual updates,
# measured errors 5e-7 (rotmats 2e-6); a miswired input moves them by 0.1 or more.
TOLERANCE = dict(atol=1e-5, rtol=1e-5)
_pose72 = jax.jit(geometry.rotmats_to_pose72)  # one compilation, not one per eager op


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rot6d_to_matrix(x):
    """Gram-Schmidt on the columns of the row-major (3, 2) reading of the 6 numbers (SPIN)."""
    a = x.reshape(*x.shape[:-1], 3, 2)
    b1 = a[..., 0] / np.linalg.norm(a[..., 0], axis=-1, keepdims=True)
    a2 = a[..., 1] - np.sum(b1 * a[..., 1], axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


# ------------------------------------------------------------------------------------------
# The reference: plain GRUs and dense layers from the model's parameters.
# ------------------------------------------------------------------------------------------


def _gru(p, inputs, h0):
    """PyTorch's GRU cell over time with a Python loop: inputs [B, T, Din] -> ([B, T, H], h)."""
    h, outputs = h0, []
    for t in range(inputs.shape[1]):
        x_r, x_z, x_n = np.split(inputs[:, t] @ p["w_ih"] + p["b_ih"], 3, axis=-1)
        h_r, h_z, h_n = np.split(h @ p["w_hh"] + p["b_hh"], 3, axis=-1)
        r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def _plain_gru(p, part=None, rows=None):
    """One GRU's weights over its whole input [phi, dynamic]: slices part `part` out of a
    stack (the static kernel is stored [D, P, 3H], the rest [P, ...]) and keeps the dynamic
    kernel rows `rows` (drops the rows of the zero padding)."""
    w_static, b_ih = p["static_projection"]["kernel"], p["static_projection"]["bias"]
    w_dynamic = p["dynamic_projection"]["kernel"]
    w_hh, b_hh = p["recurrent_kernel_0"], p["recurrent_bias_0"]
    if part is not None:
        w_static, b_ih, w_dynamic = w_static[:, part], b_ih[part], w_dynamic[part]
        w_hh, b_hh = w_hh[part], b_hh[part]
    if rows is not None:
        w_dynamic = w_dynamic[rows]
    # Direction axis 0: the model is unidirectional.
    return dict(w_ih=np.concatenate([w_static, w_dynamic]), b_ih=b_ih, w_hh=w_hh[0], b_hh=b_hh[0])


def reference_networks(params, no_root_dependency):
    """The model's parameters as six part GRUs, the shape layer and the camera GRU (float64)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    pose = p["pose"]
    dynamic_rows = pose["child_rnn"]["dynamic_projection"]["kernel"].shape[1]
    children = []
    for part, joints in enumerate(CHILDREN):
        # Child input rows: own joints padded to WIDEST x 6D, then beta, then theta_root.
        rows = list(range(6 * len(joints))) + list(range(6 * WIDEST, dynamic_rows))
        head = pose["child_head"]
        children.append(
            dict(
                joints=list(joints),
                gru=_plain_gru(pose["child_rnn"], part, rows),
                head=(
                    head["kernel"][part][:, : 6 * len(joints)],
                    head["bias"][part][: 6 * len(joints)],
                ),
            )
        )
    shape = p["shape"]
    return dict(
        root=dict(
            gru=_plain_gru(pose["root_rnn"]),
            head=(pose["root_head"]["kernel"], pose["root_head"]["bias"]),
        ),
        children=children,
        shape=dict(
            w=np.concatenate(
                [shape["static_projection"]["kernel"], shape["dynamic_projection"]["kernel"]]
            ),
            b=shape["static_projection"]["bias"],
            head=(p["shape_head"]["kernel"], p["shape_head"]["bias"]),
        ),
        camera=dict(
            gru=_plain_gru(p["camera"]), head=(p["camera_head"]["kernel"], p["camera_head"]["bias"])
        ),
        no_root_dependency=no_root_dependency,
    )


def _dense(head, x):
    kernel, bias = head
    return x @ kernel + bias


def reference_lmr(nets, mean, phi, states=None):
    """LMR's V iterations, paper section 3.2.2, one network after the other.

    Each update is a residual on the previous estimate and iteration v + 1 starts from
    iteration v's pose, shape and camera (the paper spells out the residual for the pose only;
    for shape and camera it follows the code and DESIGN.md section 5, as HMR's feedback).

    Args:
      nets: from `reference_networks`.
      mean: (pose6d [24, 6], shape [10], cam [3]) starting point.
      phi: [B, T, D] features.
      states: per iteration {'root', 'children' (a list of 5), 'camera'} initial hidden states
        [B, H]; None: zeros at every iteration (each iteration is a fresh pass over the window).

    Returns:
      (per iteration (pose6d [B, T, 24, 6], betas [B, T, 10], cam [B, T, 3]), per iteration
      the final hidden states, as `states`).
    """
    pose = np.broadcast_to(mean[0], (B, T, 24, 6)).copy()
    beta = np.broadcast_to(mean[1], (B, T, 10)).copy()
    cam = np.broadcast_to(mean[2], (B, T, 3)).copy()
    if states is None:
        zeros = np.zeros((B, H))
        states = [dict(root=zeros, children=[zeros] * len(CHILDREN), camera=zeros)] * V
    history, finals = [], []
    for h0 in states:
        final = {}
        # 1. Root: [phi_t, theta_root, beta] -> residual for the root's joints.
        root_in = np.concatenate([phi, pose[:, :, ROOT].reshape(B, T, -1), beta], axis=-1)
        out, final["root"] = _gru(nets["root"]["gru"], root_in, h0["root"])
        pose[:, :, ROOT] += _dense(nets["root"]["head"], out).reshape(B, T, -1, 6)
        # 2. Children: [phi_t, theta_part, beta, theta_root (updated just now)].
        new_root = pose[:, :, ROOT].reshape(B, T, -1)
        deltas, final["children"] = [], []
        for child, h in zip(nets["children"], h0["children"], strict=True):
            parts = [phi, pose[:, :, child["joints"]].reshape(B, T, -1), beta]
            if not nets["no_root_dependency"]:
                parts.append(new_root)
            out, last = _gru(child["gru"], np.concatenate(parts, axis=-1), h)
            deltas.append(_dense(child["head"], out).reshape(B, T, -1, 6))
            final["children"].append(last)
        for child, delta in zip(nets["children"], deltas, strict=True):
            pose[:, :, child["joints"]] += delta
        # 3. Shape: one ReLU layer on [phi_t, theta (updated), beta], per frame.
        shape_in = np.concatenate([phi, pose.reshape(B, T, -1), beta], axis=-1)
        hidden = np.maximum(shape_in @ nets["shape"]["w"] + nets["shape"]["b"], 0.0)
        beta = beta + _dense(nets["shape"]["head"], hidden)
        # 4. Camera: [phi_t, theta, beta (updated), cam] over time.
        camera_in = np.concatenate([phi, pose.reshape(B, T, -1), beta, cam], axis=-1)
        out, final["camera"] = _gru(nets["camera"]["gru"], camera_in, h0["camera"])
        cam = cam + _dense(nets["camera"]["head"], out)
        history.append((pose.copy(), beta, cam))
        finals.append(final)
    return history, finals


# ------------------------------------------------------------------------------------------
# The model at test size, with every parameter perturbed.
# ------------------------------------------------------------------------------------------


def _perturbed(params):
    """Init values plus noise on every leaf, the padding included: the 'small' heads alone
    give residuals of 1e-3, under which a miswired input would hide. The noise on the padded
    rows and columns checks that the padding is zero on input and never read on output."""
    leaves, treedef = jax.tree.flatten(params)
    noisy = [
        a + normal(100 + i, a.shape, 0.6 / np.sqrt(a.shape[-2] if a.ndim >= 2 else H))
        for i, a in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _is_pose_call(module, method_name):
    return module.name == "pose" and method_name == "__call__"


class Compiled:
    """A small LMR, its perturbed parameters and a jitted forward returning only what the
    tests read (the body model is dead code there, which keeps compilation short)."""

    def __init__(self, no_root_dependency, params=None):
        config = default_model_config("lmr")
        config.update(hidden_size=H, num_iterations=V, no_root_dependency=no_root_dependency)
        self.model = build_model(config, body_model())
        if params is None:
            params = _perturbed(jax.jit(self.model.init)(key(0), features())["params"])
        shapes = jax.eval_shape(self.model.init, key(0), features())["params"]
        chex.assert_trees_all_equal_shapes(params, shapes)
        self.params = params
        mean = self.model.mean_params  # the start of iteration 1 (tested in test_lmr.py)
        self.mean = (np.reshape(mean.pose6d, (24, 6)), np.asarray(mean.shape), np.asarray(mean.cam))
        self.nets = reference_networks(self.params, no_root_dependency)
        self.forward = jax.jit(self._forward)

    def _forward(self, params, phi, state=None):
        # Without a state: the default path (training, evaluation), no state carried.
        streamed = state is not None
        result, captured = self.model.apply(
            {"params": params},
            phi,
            state=state,
            return_state=streamed,
            capture_intermediates=_is_pose_call,
            mutable=["intermediates"],
        )
        out, new_state = result if streamed else (result, None)
        # The pose module's V calls return (6D pose, states): the 6D pose before rot6d.
        pose6d = jnp.stack([call[0] for call in captured["intermediates"]["pose"]["__call__"]])
        keep = ("rotmats", "pose", "betas", "cam", "iterations")
        return {name: out[name] for name in keep}, pose6d, new_state


@pytest.fixture(scope="module")
def lmr():
    return Compiled(no_root_dependency=False)


def features():
    return normal(0, (B, T, D))


def _check_against_reference(out, pose6d, history):
    want_pose6d = np.stack([pose for pose, _, _ in history])
    want = {
        "rotmats": _rot6d_to_matrix(want_pose6d),
        "betas": np.stack([beta for _, beta, _ in history]),
        "cam": np.stack([cam for _, _, cam in history]),
    }
    # Every iteration moves the estimate by O(0.1-1): a wrong input cannot hide in the noise.
    assert np.abs(np.diff(want_pose6d, axis=0)).max() > 0.1
    assert np.abs(np.diff(want["betas"], axis=0)).max() > 0.1
    assert np.abs(np.diff(want["cam"], axis=0)).max() > 0.1
    chex.assert_trees_all_close(pose6d, want_pose6d.astype(np.float32), **TOLERANCE)
    chex.assert_trees_all_close(
        out["iterations"], jax.tree.map(lambda a: a.astype(np.float32), want), **TOLERANCE
    )
    final = {name: want[name][-1].astype(np.float32) for name in want}
    final["pose"] = _pose72(final["rotmats"])
    chex.assert_trees_all_close({k: out[k] for k in final}, final, **TOLERANCE)


def test_lmr_matches_six_separate_gru_reference(lmr):
    out, pose6d, _ = lmr.forward(lmr.params, features())
    history, _ = reference_lmr(lmr.nets, lmr.mean, np.asarray(features(), np.float64))
    _check_against_reference(out, pose6d, history)


def _without_root_rows(params):
    """LMR's parameters for the ablation: the child kernels lose their theta_root rows (the
    last ones), which saves a second init compilation."""
    child = params["pose"]["child_rnn"]
    kernel = child["dynamic_projection"]["kernel"][:, : 6 * WIDEST + 10]
    child = dict(child, dynamic_projection=dict(kernel=kernel))
    return dict(params, pose=dict(params["pose"], child_rnn=child))


def test_no_root_dependency_matches_reference_without_theta_root(lmr):
    compiled = Compiled(no_root_dependency=True, params=_without_root_rows(lmr.params))
    out, pose6d, _ = compiled.forward(compiled.params, features())
    history, _ = reference_lmr(compiled.nets, compiled.mean, np.asarray(features(), np.float64))
    _check_against_reference(out, pose6d, history)


def _model_state(states):
    """Reference states -> the model's: per iteration {'pose': ((root,), (children,)),
    'camera': (camera,)}, one [(P,) 1, B, H] array per GRU layer (1 = the direction)."""
    return tuple(
        {
            "pose": (
                (jnp.float32(s["root"])[None],),
                (jnp.float32(np.stack(s["children"]))[:, None],),
            ),
            "camera": (jnp.float32(s["camera"])[None],),
        }
        for s in states
    )


def test_streamed_hidden_states_match_reference(lmr):
    """Random initial states (a streamed chunk): each iteration's root, child and camera GRUs
    start from their own state, and the returned states are each GRU's state after frame T."""
    states = [
        dict(
            root=np.asarray(normal(200 + 10 * v, (B, H), 0.5), np.float64),
            children=[
                np.asarray(normal(201 + 10 * v + p, (B, H), 0.5), np.float64) for p in range(5)
            ],
            camera=np.asarray(normal(209 + 10 * v, (B, H), 0.5), np.float64),
        )
        for v in range(V)
    ]
    out, pose6d, new_state = lmr.forward(lmr.params, features(), _model_state(states))
    history, finals = reference_lmr(lmr.nets, lmr.mean, np.asarray(features(), np.float64), states)
    _check_against_reference(out, pose6d, history)
    chex.assert_trees_all_close(new_state, _model_state(finals), **TOLERANCE)
    # The states matter: from zeros the first iteration's pose differs.
    zero_start, _ = reference_lmr(lmr.nets, lmr.mean, np.asarray(features(), np.float64))
    assert np.abs(zero_start[0][0] - history[0][0]).max() > 0.05
