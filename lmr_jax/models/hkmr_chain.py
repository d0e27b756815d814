"""HKMR's kinematic chains (models/hkmr.py's module docstring describes the model): the static
tables of the root chain and the stacked, padded child chains, one forward or backward pass over
their joints (`JointPass`, eq. 1-2) and a chain's P inner iterations (`ChainRegressor`, Fig. 4).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lmr_jax.models.layers import StackedDense, head_init, linear_init, matmul

PartTable = tuple[tuple[str, tuple[int, ...]], ...]


@functools.lru_cache(maxsize=16)
def chain_tables(parts: PartTable) -> dict:
    """Static index tables of the root chain and the stacked, padded child chains.

    Returns:
      dict with root [R] joint ids (kinematic order), child_index [C, M] joint ids padded with
      0, child_mask [C, M] (1 for real joints) and child_lengths (K_c of every chain).
    """
    (_, root), *children = parts
    width = max(len(joints) for _, joints in children)
    child_index = np.zeros((len(children), width), np.int32)
    child_mask = np.zeros((len(children), width), np.float32)
    for c, (_, joints) in enumerate(children):
        child_index[c, : len(joints)] = joints
        child_mask[c, : len(joints)] = 1.0
    return dict(
        root=np.asarray(root, np.int32),
        child_index=child_index,
        child_mask=child_mask,
        child_lengths=tuple(len(joints) for _, joints in children),
    )


def backward_order(lengths: tuple[int, ...], width: int) -> np.ndarray:
    """[C, M] joint position of backward step s in chain c: K_c-1-s for the real steps, s for
    the padded ones (so the table is a permutation, and its own inverse, per chain)."""
    order = np.tile(np.arange(width, dtype=np.int32), (len(lengths), 1))
    for c, length in enumerate(lengths):
        order[c, :length] = np.arange(length - 1, -1, -1)
    return order


def _joint_kernel_init(kind: str):
    """head_init over a [C, M, fan_in, 3] kernel: the fans of one joint's layer."""
    if kind == "small":
        return nn.initializers.variance_scaling(0.01**2, "fan_avg", "uniform", batch_axis=(0, 1))
    return head_init(kind)


class JointPass(nn.Module):
    """One pass over the joints of C stacked chains: eq. 1 (forward) or eq. 2 (backward).

    The joints are visited in *step* order (the caller maps steps to joints); step s predicts
    its residual from [psi, d_{s-1}, ..., d_0], one dense layer per step and chain.

    Attributes:
      num_chains, width: C and the padded chain length M.
      hierarchy: False predicts every step from psi alone (no residual inputs).
      previous_only: step s sees only d_{s-1} (the paper's "no joint hierarchy" wording).
      head_init: 'small' or 'zeros'.
      dtype: compute dtype of the matmuls.
    """

    num_chains: int
    width: int
    hierarchy: bool = True
    previous_only: bool = False
    head_init: str = "small"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, psi: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        """Residuals of every step.

        Args:
          psi: [C, ..., d] chain embeddings.
          mask: [C, M] 1 for real steps, 0 for padding (their residual is zero).

        Returns:
          [C, ..., M, 3] residuals in step order.
        """
        chains, width, d = self.num_chains, self.width, psi.shape[-1]
        slots = 3 * (width - 1) if self.hierarchy else 0
        kernel = self.param(
            "kernel", _joint_kernel_init(self.head_init), (chains, width, d + slots, 3)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (chains, width, 3))
        # psi's part of all M layers in one matmul: [C, d, M * 3].
        psi_kernel = jnp.moveaxis(kernel[:, :, :d], 1, 2).reshape(chains, d, width * 3)
        base = matmul("c...d,cdf->c...f", psi, psi_kernel, self.dtype)
        base = base.reshape(*base.shape[:-1], width, 3)
        base = base + bias.reshape(chains, *([1] * (psi.ndim - 2)), width, 3)
        step_mask = jnp.asarray(mask).reshape(chains, *([1] * (psi.ndim - 2)), width, 1)
        if not self.hierarchy:
            return base * step_mask
        previous = jnp.zeros((*psi.shape[:-1], slots), jnp.float32)  # d_{s-1}, ..., d_0, 0...
        deltas = []
        for s in range(width):  # unrolled: M <= 5 small matmuls
            delta = base[..., s, :] + matmul("c...k,ckf->c...f", previous, kernel[:, s, d:],
                                             self.dtype)  # fmt: skip
            delta = delta * step_mask[..., s, :]
            deltas.append(delta)
            older = jnp.zeros_like(previous[..., :-3]) if self.previous_only else previous[..., :-3]
            previous = jnp.concatenate([delta, older], axis=-1)
        return jnp.stack(deltas, axis=-2)


class ChainRegressor(nn.Module):
    """C kinematic chains (stacked) and their P inner iterations (Fig. 4).

    Attributes:
      lengths: K_c of every chain (padded to M = max).
      embed_size: d, the width of psi.
      fan_in: width of E_c's whole input [phi, condition, theta_c] (initialisation).
      inner_iterations: P forward(-backward) cycles.
      hierarchy, previous_only: see JointPass.
      backward_pass: False: forward passes only.
      dropout: on psi (training only).
      head_init: 'small' or 'zeros'.
      dtype: compute dtype of the matmuls.
    """

    lengths: tuple[int, ...]
    embed_size: int
    fan_in: int
    inner_iterations: int = 4
    hierarchy: bool = True
    previous_only: bool = False
    backward_pass: bool = True
    dropout: float = 0.0
    head_init: str = "small"
    dtype: Any = jnp.float32

    def setup(self):
        chains, width = len(self.lengths), max(self.lengths)
        init = linear_init(self.fan_in)
        stacked = functools.partial(
            StackedDense, self.embed_size, num_stack=chains, kernel_init=init, dtype=self.dtype
        )
        self.embed_static = stacked(shared_input=True, bias_init=init)
        self.embed_dynamic = stacked(use_bias=False)
        passes = dict(num_chains=chains, width=width, hierarchy=self.hierarchy,
                      previous_only=self.previous_only, head_init=self.head_init,
                      dtype=self.dtype)  # fmt: skip
        self.forward_pass = JointPass(**passes)
        if self.backward_pass:
            self.backward_pass_layers = JointPass(**passes)
        self.embed_dropout = nn.Dropout(self.dropout)

    def project_static(self, features: jnp.ndarray) -> jnp.ndarray:
        """[..., D] -> [C, ..., d]: phi's part of every E_c, once per forward."""
        return self.embed_static(features)

    def _embed(self, static, theta, condition, train):
        """psi = ReLU(E_c([phi, condition, theta_c])): [C, ..., d], the condition being beta
        (root) or [beta, theta_root] (children), theta_c flattened with its zero padding."""
        flat = theta.reshape(*theta.shape[:-2], -1)
        hidden = static + self.embed_dynamic(jnp.concatenate([condition, flat], axis=-1))
        return self.embed_dropout(nn.relu(hidden), deterministic=not train)

    def __call__(self, static, theta, condition, *, train: bool = False) -> jnp.ndarray:
        """P inner iterations of every chain.

        Args:
          static: [C, ..., d] from `project_static`.
          theta: [C, ..., M, 3] chain poses (axis-angle, padding zero).
          condition: [C, ..., Dc] the rest of E_c's input: beta (and theta_root for children).
          train: enables dropout.

        Returns:
          [C, ..., M, 3] refined chain poses (padding still zero).
        """
        width = max(self.lengths)
        mask = np.asarray([[1.0] * k + [0.0] * (width - k) for k in self.lengths], np.float32)
        # [C, 1, ..., 1, M, 1] gather index: backward step s -> joint position (an involution).
        order = backward_order(self.lengths, width)
        order = jnp.asarray(order.reshape(len(self.lengths), *([1] * (theta.ndim - 3)), width, 1))

        def cycle(chain, theta, _):
            psi = chain._embed(static, theta, condition, train)
            theta = theta + chain.forward_pass(psi, mask)  # eq. 1
            if chain.backward_pass:
                psi = chain._embed(static, theta, condition, train)
                steps = chain.backward_pass_layers(psi, mask)  # eq. 2, in step order
                theta = theta + jnp.take_along_axis(steps, order, axis=-2)
            return theta, None

        # One compiled cycle for all P (weights shared; a fresh dropout mask per cycle).
        scan = nn.scan(cycle, variable_broadcast="params", split_rngs={"params": False,
                       "dropout": True}, length=self.inner_iterations)  # fmt: skip
        theta, _ = scan(self, theta, None)
        return theta
