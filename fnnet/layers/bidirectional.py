"""Bidirectional: a recurrent layer run over each sequence forwards and backwards."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet.layers import base
from fnnet.layers.base import register


def _reverse(a, mask):
    """Each sequence of `a` `(batch, T, ...)` reversed within its own length: the real steps
    0 … L−1 (L the number of True in its row of `mask`; all T without a mask) in the opposite
    order, the padding after them left in place. Its own inverse."""
    B, T = a.shape[:2]
    t = jnp.arange(T)[None, :]
    L = jnp.full((B, 1), T) if mask is None else mask.sum(axis=1, keepdims=True)
    index = jnp.where(t < L, L - 1 - t, t)  # (batch, T)
    return jnp.take_along_axis(a, index.reshape(B, T, *(1,) * (a.ndim - 2)), axis=1)


@register
@dataclass(frozen=True)
class Bidirectional:
    """[layer(x), reversed(layer′(reversed(x)))] joined on the last axis.

    Args:
      layer: a recurrent layer (`SimpleRNN`, `LSTM`, `GRU`); the backward direction is a
        second copy of it with params of its own.

    Params `{"forward": ..., "backward": ...}`, each the layer's. On x `(batch, T, n_in)`
    with an optional padding mask `(batch, T)` (the padding at the end of each row), the
    backward direction reads each sequence reversed within its own length, so that it starts
    at the sequence's last real step, not at the padding. With `return_sequences` the output
    is `(batch, T, 2·hidden)` (its second half put back in time order); without,
    `(batch, 2·hidden)`: the forward direction's last state, then the backward one's (which
    has read the sequence back to its first step). Backward: each direction's backward on its
    half of dy (reversed for the backward direction), dx the sum of the two dx (the second
    reversed back).
    """

    layer: object
    uses_mask = True
    time_axis = 1

    def init(self, key, in_shape, dtype=jnp.float32):
        kf, kb = jax.random.split(key)
        pf, shape = self.layer.init(kf, tuple(in_shape), dtype)
        pb, _ = self.layer.init(kb, tuple(in_shape), dtype)
        return {"forward": pf, "backward": pb}, (*shape[:-1], 2 * shape[-1])

    def forward(self, params, x, *, mask=None):
        kw = {"mask": mask} if base.uses_mask(self.layer) else {}
        yf, cf = self.layer.forward(params["forward"], x, **kw)
        yb, cb = self.layer.forward(params["backward"], _reverse(x, mask), **kw)
        sequences = yf.ndim == 3
        if sequences:
            yb = _reverse(yb, mask)
        return jnp.concatenate([yf, yb], axis=-1), (cf, cb, mask, sequences)

    def backward(self, params, cache, dy):
        cf, cb, mask, sequences = cache
        h = dy.shape[-1] // 2
        dyf, dyb = dy[..., :h], dy[..., h:]
        if sequences:
            dyb = _reverse(dyb, mask)
        gf, dxf = self.layer.backward(params["forward"], cf, dyf)
        gb, dxb = self.layer.backward(params["backward"], cb, dyb)
        return {"forward": gf, "backward": gb}, dxf + _reverse(dxb, mask)
