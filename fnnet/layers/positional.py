"""Positional information for sequences `(batch, T, d)`: learned or fixed sinusoidal."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet._checks import is_int
from fnnet.layers.attention import check_sequences
from fnnet.layers.base import register


def sinusoids(T, d, dtype=jnp.float32):
    """The fixed encoding of "Attention is all you need", `(T, d)`: PE[t, 2i] = sin(t/10000^(2i/d)),
    PE[t, 2i+1] = cos(t/10000^(2i/d))."""
    t = jnp.arange(T)[:, None]
    rate = 10000.0 ** (-(jnp.arange(d) // 2 * 2) / d)
    angle = t * rate[None, :]
    return jnp.where(jnp.arange(d) % 2 == 0, jnp.sin(angle), jnp.cos(angle)).astype(dtype)


@register
@dataclass(frozen=True)
class PositionalEmbedding:
    """y = x + P[:T]: each position t adds its own vector.

    Args:
      max_len: the longest sequence; shorter ones use the first T rows.
      sinusoidal: add the fixed sinusoids (`sinusoids`) instead of learned rows (no params).

    Params `{"P": (max_len, d)}` (N(0, 0.02²) at first; `{}` with `sinusoidal`). Forward on x
    `(batch, T, d)`, T ≤ max_len. Backward: dx = dy, and dP[:T] = Σ_batch dy (rows past T get 0).
    """

    max_len: int
    sinusoidal: bool = False

    def __post_init__(self):
        if not is_int(self.max_len, 1):
            raise ValueError(f"PositionalEmbedding: max_len must be a positive int, got {self.max_len!r}")

    def init(self, key, in_shape, dtype=jnp.float32):
        check_sequences(self, in_shape)
        if in_shape[0] > self.max_len:
            raise ValueError(f"{self!r}: sequences of length {in_shape[0]} are longer than max_len = "
                             f"{self.max_len}; raise max_len")
        if self.sinusoidal:
            return {}, tuple(in_shape)
        return {"P": 0.02 * jax.random.normal(key, (self.max_len, in_shape[1]), dtype)}, tuple(in_shape)

    def forward(self, params, x):
        T, d = x.shape[1:]
        P = sinusoids(T, d, x.dtype) if self.sinusoidal else params["P"][:T]
        return x + P[None], None

    def backward(self, params, cache, dy):
        del cache
        if self.sinusoidal:
            return {}, dy
        T = dy.shape[1]
        return {"P": jnp.zeros_like(params["P"]).at[:T].set(dy.sum(axis=0))}, dy
