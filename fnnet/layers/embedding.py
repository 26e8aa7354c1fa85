"""Embedding: integer tokens to learned vectors, a row of a table per token."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet import initializers
from fnnet._checks import host_values, is_int
from fnnet.layers.base import register, set_fields


@register
@dataclass(frozen=True)
class Embedding:
    """y = W[x]: each token id picks its row of the table W.

    Args:
      vocab: number of token ids, 0 to vocab − 1.
      dim: size of each vector.
      pad_id: a token id that marks padding, or None. A padding token's vector is 0 and its
        row gets no gradient (as PyTorch's `padding_idx`), and the network's padding mask is
        `x != pad_id` (`mask_of`), which the recurrent and attention layers and the losses
        follow.
      W_init: the table's initializer (default N(0, 1), as PyTorch's).

    Params `{"W": (vocab, dim)}`. Forward on integer `x` `(batch, ...)` (tokens `(batch, T)`):
    y = W[x], `(batch, ..., dim)`. Backward, a scatter-add of dy into the rows used:

        dW = 0 (vocab, dim);  dW[x[b, t]] += dy[b, t]   (a repeated token accumulates)

    and no gradient for the integer input (dx is None). An id outside [0, vocab) is an
    error where the values are known (`check_input`, called before tracing); inside `jit`,
    where JAX would silently read the last row instead, its vector is NaN, as an
    out-of-range label makes the loss NaN.
    """

    vocab: int
    dim: int
    pad_id: "int | None" = None
    W_init: initializers.Initializer = initializers.normal

    def __post_init__(self):
        for name in ("vocab", "dim"):
            if not is_int(getattr(self, name), 1):
                raise ValueError(f"Embedding: {name} must be a positive int, got {getattr(self, name)!r}")
        if self.pad_id is not None and not (is_int(self.pad_id, 0) and self.pad_id < self.vocab):
            raise ValueError(f"Embedding: pad_id must be None or a token id in [0, {self.vocab - 1}], got "
                             f"{self.pad_id!r}")
        set_fields(self, W_init=initializers.get(self.W_init))

    def init(self, key, in_shape, dtype=jnp.float32):
        W = self.W_init(key, (self.vocab, self.dim), dtype)
        if self.pad_id is not None:
            W = W.at[self.pad_id].set(0)
        return {"W": W}, (*in_shape, self.dim)

    def forward(self, params, x):
        self.check_input(x)
        W = params["W"]
        valid = (x >= 0) & (x < self.vocab)
        y = jnp.where(valid[..., None], W[jnp.clip(x, 0, self.vocab - 1)], jnp.nan)
        if self.pad_id is not None:  # a padding token reads zeros, whatever its row holds
            y = jnp.where((x == self.pad_id)[..., None], 0, y)
        return y, x

    def backward(self, params, x, dy):
        keep = (x >= 0) & (x < self.vocab)
        if self.pad_id is not None:
            keep &= x != self.pad_id
        dy = jnp.where(keep[..., None], dy, 0).reshape(-1, self.dim).astype(params["W"].dtype)
        dW = jnp.zeros_like(params["W"]).at[x.reshape(-1)].add(dy)
        return {"W": dW}, None

    def mask_of(self, x):
        """The padding mask of tokens `x` `(batch, T)`: True where x is not `pad_id`; None
        without a pad_id."""
        return None if self.pad_id is None else x != self.pad_id

    def check_input(self, x):
        """Raise a ValueError if `x` is not integer, or (where its values are known, outside
        `jit`) holds an id outside [0, vocab)."""
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{self!r} takes integer token ids; got dtype {jnp.result_type(x)}")
        if isinstance(x, jax.core.Tracer) or not jnp.size(x):
            return
        ids = host_values(x)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab:
            raise ValueError(f"{self!r}: token ids range over [{lo}, {hi}]; expected ids in "
                             f"[0, {self.vocab - 1}] (the vocabulary has {self.vocab})")
