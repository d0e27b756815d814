"""GRUs over time as one `lax.scan`, with hoisted input projections and optional part stacking.

Speed rules (DESIGN.md section 6) and how they are met here:

- The input projection `x_t @ W_ih + b_ih` is computed for all T frames in one matmul before the
  scan; the scan body only does `h @ W_hh` and the gate arithmetic.
- The input is split into a *static* part (frame features phi, the same at every refinement
  iteration) and a *dynamic* part (pose/shape/camera estimates). `GRU.project_static(phi)` runs
  once per forward; each iteration only projects its small dynamic input.
- `num_stack=P` stacks P independent GRUs (LMR's five child parts): every parameter gets a leading
  axis of P and the recurrence is one scan whose body is a batched [P, B, H] x [P, H, 3H] matmul.
  Parts with narrower inputs are zero-padded by the caller (zero columns contribute nothing).
- Both directions of a bidirectional GRU run in the same scan (the backward direction on the
  time-reversed gates), again as a batched matmul.
- The backward pass is a custom VJP: a reverse scan carries only the state gradient, and the
  recurrent kernel's gradient is one matmul over all T * B rows after the loop, instead of an
  [H, 3H] accumulator read and written at every step (1.5-2x faster training step on CPU).

Cell equations (PyTorch's `nn.GRU`, so VIBE's weights map one to one):
  r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
  z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
  n = tanh(x W_in + b_in + r * (h W_hn + b_hn))
  h' = (1 - z) * n + z * h
All weights are initialised from U(-1/sqrt(H), 1/sqrt(H)) like PyTorch's; the initial state is 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmr_jax.models.layers import StackedDense, matmul, uniform_init


def gru_scan(
    gates: jnp.ndarray,
    kernel: jnp.ndarray,
    bias: jnp.ndarray,
    dtype: Any = jnp.float32,
    unroll: int | bool = 1,
    initial_state: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Runs GRU cells over time, given the precomputed input gates.

    Differentiable in reverse mode (custom VJP, see `_gru_scan_bwd`); not in forward mode.

    Args:
      gates: [T, ..., B, 3H] time-major input gates x_t @ W_ih + b_ih, in (r, z, n) order.
      kernel: [..., H, 3H] recurrent kernel W_hh (the leading axes match those of `gates`
        between T and B: stacked parts and directions).
      bias: [..., 3H] recurrent bias b_hh.
      dtype: compute dtype of the recurrent matmul (the state is kept in float32).
      unroll: time steps per loop iteration of the scan (True: fully unrolled).
      initial_state: [..., B, H] state before the first step (None: zeros). Streaming passes
        the last state of the previous chunk.

    Returns:
      [T, ..., B, H] hidden states, float32.
    """
    if initial_state is None:
        initial_state = jnp.zeros((*gates.shape[1:-1], kernel.shape[-2]), jnp.float32)
    as_f32 = (x.astype(jnp.float32) for x in (gates, kernel, bias, initial_state))
    return _gru_scan(*as_f32, dtype, unroll)


def _gru_steps(gates, kernel, bias, h0, dtype, unroll):
    """The forward scan; returns the states and the per-step gate values (r, z, n, h W_hn)."""
    kernel = kernel.astype(dtype)  # cast once, outside the loop
    bias = bias[..., None, :]

    def step(h, gates_t):
        recurrent = matmul("...bh,...hg->...bg", h, kernel, dtype) + bias
        x_r, x_z, x_n = jnp.split(gates_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(recurrent, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = n + z * (h - n)
        return h, (h, r, z, n, h_n)

    _, (states, *cells) = jax.lax.scan(step, h0, gates, unroll=unroll)
    return states, cells


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _gru_scan(gates, kernel, bias, h0, dtype, unroll):
    return _gru_steps(gates, kernel, bias, h0, dtype, unroll)[0]


def _gru_scan_fwd(gates, kernel, bias, h0, dtype, unroll):
    states, cells = _gru_steps(gates, kernel, bias, h0, dtype, unroll)
    return states, (states, cells, kernel, h0)


def _gru_scan_bwd(dtype, unroll, residuals, d_states):
    """Backward pass: a reverse scan for the state gradient only, then dW_hh in one matmul.

    Autodiff of the scan would accumulate dW_hh += h_{t-1}^T dg_t inside the loop, a rank-B
    update that reads and writes the whole [H, 3H] (x parts) accumulator at every step; here the
    per-step gate gradients are scan outputs and dW_hh = sum_t h_{t-1}^T dg_t is one matmul
    contracting T * B rows after the loop.
    """
    states, (r, z, n, h_n), kernel, h0 = residuals
    h_prev = jnp.concatenate([h0[None], states[:-1]], axis=0)
    kernel_c = kernel.astype(dtype)

    def step(dh_next, inputs):
        d_out, h_p, r, z, n, h_n = inputs
        dh = d_out + dh_next
        da_n = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(a_n)
        da_r = da_n * h_n * r * (1.0 - r)  # a_n = x_n + r * h_n
        da_z = dh * (h_p - n) * z * (1.0 - z)
        d_recurrent = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        dh_prev = dh * z + matmul("...bg,...hg->...bh", d_recurrent, kernel_c, dtype)
        return dh_prev, (jnp.concatenate([da_r, da_z, da_n], axis=-1), d_recurrent)

    inputs = (d_states, h_prev, r, z, n, h_n)
    d_h0, (d_gates, d_recurrent) = jax.lax.scan(
        step, jnp.zeros_like(states[0]), inputs, reverse=True, unroll=unroll
    )
    d_kernel = matmul("t...bh,t...bg->...hg", h_prev, d_recurrent, dtype)
    d_bias = jnp.sum(d_recurrent, axis=(0, -2))
    return d_gates, d_kernel, d_bias, d_h0


_gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)


def _reverse_second_direction(x: jnp.ndarray) -> jnp.ndarray:
    """Flips direction 1 of a [T, ..., 2, B, C] array in time (direction 0 is kept)."""
    return jnp.concatenate([x[..., :1, :, :], jnp.flip(x[..., 1:, :, :], axis=0)], axis=-3)


class GRU(nn.Module):
    """Multi-layer, optionally bidirectional and stacked GRU over [B, T, .] sequences.

    Usage: `static = gru.project_static(phi)` once, then `gru(static, dynamic, train=...)` as
    often as needed (LMR: once per refinement iteration, weights shared). A call starts from a
    zero hidden state, or from the state an earlier call returned (streaming, unidirectional).

    Attributes:
      hidden_size: H.
      num_layers: stacked GRU layers; layers > 0 take the previous layer's output.
      bidirectional: run a second, time-reversed GRU per layer and concatenate (2H outputs).
      dropout: dropout on the outputs of every layer but the last (as PyTorch), training only.
      num_stack: None for one GRU, or P stacked GRUs with inputs/outputs [P, B, T, .].
      dtype: compute dtype of the matmuls (parameters and states stay float32).
      unroll: time steps per loop iteration of the scan (a speed knob; True: fully unrolled, which
        also lets XLA's cost analysis count every step).
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    num_stack: int | None = None
    dtype: Any = jnp.float32
    unroll: int | bool = 1

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def setup(self):
        init = uniform_init(1.0 / math.sqrt(self.hidden_size))
        width = self.num_directions * 3 * self.hidden_size
        dense = dict(num_stack=self.num_stack, kernel_init=init, dtype=self.dtype)
        self.static_projection = StackedDense(width, shared_input=True, bias_init=init, **dense)
        self.dynamic_projection = StackedDense(width, use_bias=False, **dense)
        self.layer_projections = [
            StackedDense(width, bias_init=init, **dense) for _ in range(self.num_layers - 1)
        ]
        stack = () if self.num_stack is None else (self.num_stack,)
        shape = (*stack, self.num_directions, self.hidden_size, 3 * self.hidden_size)
        self.recurrent_kernels = [
            self.param(f"recurrent_kernel_{i}", init, shape) for i in range(self.num_layers)
        ]
        self.recurrent_biases = [
            self.param(f"recurrent_bias_{i}", init, shape[:-2] + shape[-1:])
            for i in range(self.num_layers)
        ]
        self.dropout_layer = nn.Dropout(self.dropout)

    def project_static(self, static: jnp.ndarray) -> jnp.ndarray:
        """Input gates of the static inputs, for all frames in one matmul.

        Args:
          static: [B, T, Ds] inputs shared by all stacked GRUs (the frame features).

        Returns:
          [(P,) B, T, dirs * 3H] gates including the input bias.
        """
        return self.static_projection(static)

    def __call__(
        self,
        static_gates: jnp.ndarray,
        dynamic: jnp.ndarray | None = None,
        *,
        train: bool = False,
        initial_state: tuple[jnp.ndarray, ...] | None = None,
        return_state: bool = False,
    ):
        """Runs the GRU.

        Args:
          static_gates: [(P,) B, T, dirs * 3H] from `project_static`.
          dynamic: [(P,) B, T, Dd] further inputs of the first layer, or None.
          train: enables dropout between layers (needs a 'dropout' RNG).
          initial_state: the state returned by an earlier call with `return_state=True` (the
            recurrence goes on from there), or None to start from zeros.
          return_state: also return the state after the last frame (unidirectional only).

        Returns:
          [(P,) B, T, dirs * H] outputs of the last layer (forward then backward direction);
          with `return_state`, (outputs, state), state being one [(P,) 1, B, H] array per layer.
        """
        if self.bidirectional and (return_state or initial_state is not None):
            raise ValueError(
                "a bidirectional GRU cannot carry its state across calls (its backward direction "
                "needs the frames that come later); stream a unidirectional model."
            )
        gates = static_gates
        if dynamic is not None:
            gates = gates + self.dynamic_projection(dynamic)
        initial = initial_state or (None,) * self.num_layers
        outputs, last = self._layer(gates, 0, initial[0])
        final = [last]
        for i in range(1, self.num_layers):
            outputs = self.dropout_layer(outputs, deterministic=not train)
            outputs, last = self._layer(self.layer_projections[i - 1](outputs), i, initial[i])
            final.append(last)
        return (outputs, tuple(final)) if return_state else outputs

    def _layer(self, gates: jnp.ndarray, index: int, initial_state: jnp.ndarray | None):
        """[(P,) B, T, dirs*3H] gates -> ([(P,) B, T, dirs*H] states of layer `index`, the
        [(P,) dirs, B, H] state after the last frame)."""
        s = 0 if self.num_stack is None else 1
        dirs, hidden = self.num_directions, self.hidden_size
        gates = gates.reshape(*gates.shape[:-1], dirs, 3 * hidden)
        # [S.., B, T, dirs, G] -> time-major [T, S.., dirs, B, G]; the scan batches S, dirs, B.
        perm = (s + 1, *range(s), s + 2, s, s + 3)
        gates = jnp.transpose(gates, perm)
        if dirs == 2:
            gates = _reverse_second_direction(gates)
        kernel, bias = self.recurrent_kernels[index], self.recurrent_biases[index]
        states = gru_scan(gates, kernel, bias, self.dtype, self.unroll, initial_state)
        last = states[-1]
        if dirs == 2:
            states = _reverse_second_direction(states)
        states = jnp.transpose(states, tuple(np.argsort(perm)))
        return states.reshape(*states.shape[:-2], dirs * hidden), last


def run_gru(gru: GRU, static_gates, dynamic=None, *, train: bool, state=None, carry: bool):
    """`gru(...)` as (outputs, state): with `carry`, from `state` (None: zeros) returning the
    state after the last frame; without, from zeros returning state None."""
    if not carry:
        return gru(static_gates, dynamic, train=train), None
    return gru(static_gates, dynamic, train=train, initial_state=state, return_state=True)


def gru_like(module: nn.Module, **kwargs) -> GRU:
    """A GRU with the recurrence options of `module` (its hidden_size, num_layers,
    bidirectional, dropout, dtype and unroll attributes); `kwargs` add to or override them."""
    options = dict(
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=module.dropout,
        dtype=module.dtype,
        unroll=module.unroll,
    )
    return GRU(module.hidden_size, **{**options, **kwargs})
