"""The pre-norm Transformer block, composed of fnnet's own layers."""

import functools
from dataclasses import dataclass

import jax.numpy as jnp

from fnnet._checks import is_int
from fnnet.layers.attention import MultiHeadAttention, check_sequences
from fnnet.layers.base import register
from fnnet.layers.combinators import Residual, Sequential
from fnnet.layers.dense import Dense
from fnnet.layers.dropout import Dropout
from fnnet.layers.normalization import LayerNorm


@register
@dataclass(frozen=True)
class TransformerBlock:
    """x + MHA(LN(x)), then x + MLP(LN(x)): the pre-norm block (GPT-2's, PyTorch's
    `TransformerEncoderLayer(norm_first=True)`).

    Args:
      n_heads: attention heads (the width d, the input's last axis, must split evenly).
      mlp_ratio: the MLP's hidden width is mlp_ratio·d.
      dropout: the rate of PyTorch's four dropouts: on the attention weights, after the
        attention, after the MLP's activation and after the MLP (none at 0).
      causal: attention looks only backwards (a language model).

    It is exactly `expand(in_shape)` for inputs of width d:

        Sequential(Residual(Sequential(LayerNorm(), MultiHeadAttention(n_heads, causal), [Dropout])),
                   Residual(Sequential(LayerNorm(), Dense(mlp_ratio·d, gelu), [Dropout], Dense(d), [Dropout])))

    with that composition's params (`[{"block": [ln, mha], "shortcut": {}}, {"block": [ln, dense,
    dense], "shortcut": {}}]`, with `{}` for each Dropout), forward and backward: its backward is
    theirs, each verified on its own. LayerNorm eps 1e-5 with learnable scale and bias; biases in
    every projection. Inputs `(batch, T, d)`; the padding mask reaches the attention.
    """

    n_heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    causal: bool = False
    uses_mask = True

    def __post_init__(self):
        if not is_int(self.mlp_ratio, 1):
            raise ValueError(f"TransformerBlock: mlp_ratio must be a positive int, got {self.mlp_ratio!r}")
        MultiHeadAttention(self.n_heads, dropout=self.dropout)  # its own checks of n_heads and dropout

    @functools.lru_cache(maxsize=None)
    def expand(self, in_shape) -> Sequential:
        """The block for inputs of `in_shape` `(T, d)` as fnnet's layers (see the class
        docstring); the gradient check walks into it."""
        d = in_shape[-1]
        drop = (Dropout(self.dropout),) if self.dropout > 0 else ()
        attention = Sequential(LayerNorm(), MultiHeadAttention(self.n_heads, self.causal, self.dropout), *drop)
        mlp = Sequential(LayerNorm(), Dense(self.mlp_ratio * d, "gelu"), *drop, Dense(d), *drop)
        return Sequential(Residual(attention), Residual(mlp))

    @property
    def stateful(self) -> bool:
        return self.dropout > 0

    @property
    def uses_key(self) -> bool:
        return self.dropout > 0

    def init(self, key, in_shape, dtype=jnp.float32):
        check_sequences(self, in_shape)
        return self.expand(tuple(in_shape)).init(key, in_shape, dtype)

    def init_state(self, in_shape, dtype=jnp.float32):
        return self.expand(tuple(in_shape)).init_state(in_shape, dtype)

    def forward(self, params, *args, key=None, train=False, mask=None):
        """As `Sequential.forward`: `(params, x)` without dropout, `(params, state, x, key=, train=)` with."""
        return self.expand(args[-1].shape[1:]).forward(params, *args, key=key, train=train, mask=mask)

    def backward(self, params, cache, dy):
        return self.expand(dy.shape[1:]).backward(params, cache, dy)
