"""Dense layers, and an activation as a layer of its own."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet import activations, initializers
from fnnet._checks import is_int
from fnnet.layers.base import register, set_fields as _set


SMALL_LAYER = 16
"""Weights (n_in · n_out) up to which Dense multiplies by broadcasting instead of a matmul."""


def _matmul(a, b, small):
    """a `(p, q)` times b `(q, r)`. For a small layer a broadcast multiply-and-sum, which XLA
    fuses with the elementwise work around it: on CPU each matmul call has a fixed cost that
    dwarfs a tiny layer's arithmetic (the textbook's 2-4-1 XOR net). Larger layers use the
    matmul."""
    return (a[:, :, None] * b[None, :, :]).sum(axis=1) if small else a @ b


def _rows(a):
    """`a` `(..., n)` as a matrix `(rows, n)`: every leading axis (batch, time, ...) a row."""
    return a.reshape(-1, a.shape[-1])


@register
@dataclass(frozen=True)
class Dense:
    """Affine map followed by an elementwise activation: a = f(x W + b).

    Args:
      n_out: number of units.
      activation: name or `fnnet.activations.Activation`; `"identity"` gives logits.
      W_init, b_init: names or `fnnet.initializers.Initializer`s.

    Params: `{"W": (n_in, n_out), "b": (n_out,)}`. Forward on `x` of shape
    `(batch, n_in)`: z = x W + b and a = f(z), both `(batch, n_out)`.
    Backward from da = ∂L/∂a, the classic step of the delta recursion:

        δ  = f′(z) ⊙ da           (batch, n_out)
        dW = xᵀ δ                 (n_in, n_out)
        db = Σ_batch δ            (n_out,)
        dx = δ Wᵀ                 (batch, n_in)   — the next δ's "δˡ⁺¹ Wˡ⁺¹ᵀ"

    On inputs of any rank, `(batch, T, n_in)` say, it acts on the last axis: every other
    axis counts as batch, in the sums of dW and db too. (An image's `(H, W, C)` is not
    flattened for it: put a `Flatten()` first for one output per image.)
    """

    n_out: int
    activation: activations.Activation = activations.identity
    W_init: initializers.Initializer = initializers.lecun_normal
    b_init: initializers.Initializer = initializers.zeros

    def __post_init__(self):
        if not is_int(self.n_out, 1):
            raise ValueError(f"Dense: n_out must be a positive int, got {self.n_out!r}")
        _set(
            self,
            activation=activations.get(self.activation),
            W_init=initializers.get(self.W_init),
            b_init=initializers.get(self.b_init),
        )

    def init(self, key, in_shape, dtype=jnp.float32):
        if len(in_shape) < 1:
            raise ValueError(f"{self!r} expects inputs with a feature axis, (batch, ..., n_in), got per-example "
                             f"shape {tuple(in_shape)}")
        kW, kb = jax.random.split(key)
        W = self.W_init(kW, (in_shape[-1], self.n_out), dtype)
        b = self.b_init(kb, (self.n_out,), dtype)
        return {"W": W, "b": b}, (*in_shape[:-1], self.n_out)

    def forward(self, params, x):
        W = params["W"]
        z = _matmul(_rows(x), W, W.size <= SMALL_LAYER) + params["b"][None, :]
        z = z.reshape(*x.shape[:-1], self.n_out)
        return self.activation(z), (x, z)

    def backward(self, params, cache, da):
        x, z = cache
        W = params["W"]
        small = W.size <= SMALL_LAYER
        delta = _rows(self.activation.backward(z, da))
        dW = _matmul(_rows(x).T, delta, small)
        db = delta.sum(axis=0)
        dx = _matmul(delta, W.T, small).reshape(x.shape)
        return {"W": dW, "b": db}, dx


@register
@dataclass(frozen=True)
class Activation:
    """An elementwise activation as a layer of its own: a = f(z), no params.

    Args:
      activation: name or `fnnet.activations.Activation`.

    Params: `{}`. Forward and backward keep any shape: da ↦ f′(z) ⊙ da.
    """

    activation: activations.Activation

    def __post_init__(self):
        _set(self, activation=activations.get(self.activation))

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        return {}, tuple(in_shape)

    def forward(self, params, z):
        del params
        return self.activation(z), z

    def backward(self, params, z, da):
        del params
        return {}, self.activation.backward(z, da)
