"""Small building blocks shared by the models: initialisers, mixed-precision matmuls, dense layers.

Everything here supports a *stack* axis: `num_stack=P` gives every parameter a leading axis of P,
so P independent layers (the five child parts of LMR) run as one batched matmul instead of a
Python loop. Parameters are always float32; `dtype` is the compute dtype of the matmul inputs
(bfloat16 for mixed precision) and the results are float32 (accumulation in float32).

Layers whose input is the concatenation of a *static* part (the frame features phi, which never
change during a forward pass) and a *dynamic* part (the current pose/shape/camera estimate, which
changes at every refinement iteration) split their kernel in two: `project_static` computes
`phi @ W_phi + b` once per forward for all frames, `__call__` adds `x_dynamic @ W_dyn` at each
iteration. The result is the same as one layer over the concatenated input (DESIGN.md section 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jnp.ndarray]


def uniform_init(bound: float) -> Initializer:
    """Initializer drawing from U(-bound, bound), PyTorch's default for GRUs and Linear layers."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear_init(fan_in: int) -> Initializer:
    """PyTorch's default `nn.Linear` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform_init(1.0 / math.sqrt(fan_in))


def head_init(kind: str, stacked: bool = False) -> Initializer:
    """Initializer of the residual output heads.

    Args:
      kind: 'small' is Xavier-uniform with gain 0.01 (HMR/SPIN's `decpose` initialisation), so the
        first predictions are close to the mean parameters; 'zeros' makes every residual exactly
        zero at initialisation (used by tests: the output is then exactly the mean).
      stacked: the kernel has a leading stack axis that is not part of the fan computation.

    Returns:
      An initializer for a [(P,) fan_in, fan_out] kernel.
    """
    if kind == "zeros":
        return nn.initializers.zeros_init()
    if kind == "small":
        return nn.initializers.variance_scaling(
            0.01**2, "fan_avg", "uniform", batch_axis=(0,) if stacked else ()
        )
    raise ValueError(f"unknown head initialisation '{kind}', expected 'small' or 'zeros'.")


def matmul(spec: str, x: jnp.ndarray, kernel: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    """`jnp.einsum(spec, x, kernel)` with inputs cast to `dtype` and a float32 result."""
    return jnp.einsum(
        spec, x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32
    )


class StackedDense(nn.Module):
    """A dense layer, or P of them stacked on a leading axis (one batched matmul).

    Attributes:
      features: output width F.
      num_stack: None for a plain layer, else the number P of stacked layers.
      shared_input: with a stack, the input has no stack axis and is shared by the P layers;
        the kernel is then stored [D, P, F] and applied as one plain GEMM [N, D] x [D, P*F].
        (XLA:CPU runs an einsum whose kernel keeps two output axes, `...d,pdf->p...f`, on a slow
        path: 59 ms instead of 3 ms for one frame of LMR's five 2048 x 1536 child projections,
        189 ms instead of 112 ms for 512 frames.) Otherwise the input carries the stack axis
        first.
      use_bias: add a bias.
      kernel_init, bias_init: initializers of the [(P,) D, F] kernel ([D, P, F] with a shared
        input; the initializer must not depend on the fan, as the GRUs' uniform one) and the
        [(P,) F] bias.
      dtype: compute dtype of the matmul inputs.
    """

    features: int
    num_stack: int | None = None
    shared_input: bool = False
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Applies the layer.

        Args:
          x: [..., D] (plain or shared input) or [P, ..., D] (stacked input).

        Returns:
          [..., F] (plain) or [P, ..., F] (stacked), float32.
        """
        stack = () if self.num_stack is None else (self.num_stack,)
        if stack and self.shared_input:
            shape = (x.shape[-1], *stack, self.features)
        else:
            shape = (*stack, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        if not stack:
            y = matmul("...d,df->...f", x, kernel, self.dtype)
        elif self.shared_input:
            y = matmul("...d,df->...f", x, kernel.reshape(shape[0], -1), self.dtype)
            y = jnp.moveaxis(y.reshape(*y.shape[:-1], *stack, self.features), -2, 0)
        else:
            y = matmul("p...d,pdf->p...f", x, kernel, self.dtype)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (*stack, self.features))
            y = y + bias.reshape(*stack, *([1] * (y.ndim - len(stack) - 1)), self.features)
        return y


class FeedForward(nn.Module):
    """One hidden layer on [static, dynamic] inputs, with the static projection hoisted.

    `hidden = activation([static, dynamic] @ W + b)`, then dropout. LMR's shape module and dense
    camera use it with ReLU; HMR's first regressor layer uses it without activation.

    Attributes:
      features: hidden width.
      fan_in: width of the full concatenated input (static + dynamic), for the initialisation.
      activation: applied to the hidden layer, or None.
      dropout: dropout rate on the hidden layer (training only).
      dtype: compute dtype of the matmul inputs.
    """

    features: int
    fan_in: int
    activation: Callable[[jnp.ndarray], jnp.ndarray] | None = nn.relu
    dropout: float = 0.0
    dtype: Any = jnp.float32

    def setup(self):
        init = linear_init(self.fan_in)
        self.static_projection = StackedDense(
            self.features, kernel_init=init, bias_init=init, dtype=self.dtype
        )
        self.dynamic_projection = StackedDense(
            self.features, use_bias=False, kernel_init=init, dtype=self.dtype
        )
        self.dropout_layer = nn.Dropout(self.dropout)

    def project_static(self, static: jnp.ndarray) -> jnp.ndarray:
        """[..., Ds] -> [..., F]: the static part of the pre-activation, computed once."""
        return self.static_projection(static)

    def __call__(
        self, static_projection: jnp.ndarray, dynamic: jnp.ndarray, *, train: bool = False
    ) -> jnp.ndarray:
        """[..., F] static projection and [..., Dd] dynamic inputs -> [..., F] hidden features."""
        hidden = static_projection + self.dynamic_projection(dynamic)
        if self.activation is not None:
            hidden = self.activation(hidden)
        return self.dropout_layer(hidden, deterministic=not train)
