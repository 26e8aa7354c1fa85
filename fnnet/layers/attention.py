"""Multi-head self-attention over sequences `(batch, T, d)`, its backward written out."""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

from fnnet import initializers
from fnnet._checks import check_key, is_int
from fnnet.layers.base import register, set_fields

_PROJECTIONS = ("q", "k", "v", "o")


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _affine(x, W, b):
    """x W + b on the last axis of x `(batch, T, d)`."""
    return x @ W + b[None, None, :]


def check_sequences(layer, in_shape):
    """Raise a ValueError naming `layer` unless one example is a sequence `(T, d)`."""
    if len(in_shape) != 2:
        raise ValueError(f"{layer!r} expects sequences of shape (T, d) per example, got {tuple(in_shape)}; "
                         f"give the data as (batch, T, d)")


def _softmax(S, allowed):
    """Softmax over the last axis where `allowed` (None: everywhere); a row with nothing
    allowed (a fully padded sequence) gives zeros, not NaN."""
    if allowed is None:
        return jax.nn.softmax(S, axis=-1)
    S = jnp.where(allowed, S, -jnp.inf)
    m = lax.stop_gradient(S.max(axis=-1, keepdims=True))  # softmax is shift-invariant: m only for range
    e = jnp.where(allowed, jnp.exp(S - jnp.where(jnp.isfinite(m), m, 0)), 0)
    total = e.sum(axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1)


@register
@dataclass(frozen=True)
class MultiHeadAttention:
    """Self-attention with `n_heads` heads; its backward by hand.

    Args:
      n_heads: heads; d (the input's last axis) must split evenly, d_k = d / n_heads.
      causal: position i attends only to positions j ≤ i (a language model's mask).
      dropout: probability of dropping each attention weight in training (inverted, as
        `Dropout`; drawn from the key given to forward, kept in the cache).
      recompute: keep no attention weights in the cache (T×T per head and example) and
        recompute them in backward from the cached Q and K: a cache 0.14× as large at T = 1024
        where forward and backward run apart. Inside one compiled training step it changes
        nothing (XLA merges the recomputation with the forward's own softmax; the backward's
        dP and dS are T×T arrays anyway, so the step's peak stays; `benchmarks.run --sections
        memory` measures both).
      W_init: the four projections' initializer (default glorot_uniform, as PyTorch's
        `in_proj`); biases start at 0.

    Params `{"Wq", "Wk", "Wv", "Wo": (d, d), "bq", "bk", "bv", "bo": (d,)}`. Forward on x
    `(batch, T, d)`, with the padding `mask` `(batch, T)` (True at real tokens) or None:

        Q, K, V = x Wq + bq, x Wk + bk, x Wv + bv, split into heads  (batch, h, T, d_k)
        S = Q Kᵀ / √d_k, −∞ where a key is padding (or j > i, causal)  (batch, h, T, T)
        P = softmax(S) by rows;  O = P V, heads joined  (batch, T, d);  y = O Wo + bo

    and y = 0 at padded positions. Backward, per head (P ⊙ keep/(1 − rate) for P under
    dropout, with the same keep mask):

        dWo = Oᵀ dy,  dO = dy Woᵀ;  dV = Pᵀ dO;  dP = dO Vᵀ
        dS = P ⊙ (dP − Σⱼ dP ⊙ P)      (the softmax's Jacobian; 0 where masked, as P is)
        dQ = dS K / √d_k;  dK = dSᵀ Q / √d_k
        dWq = xᵀ dQ, ... ;  dx = dQ Wqᵀ + dK Wkᵀ + dV Wvᵀ

    In bfloat16/float16, S, the softmax and its backward are computed in float32.
    """

    n_heads: int
    causal: bool = False
    dropout: float = 0.0
    recompute: bool = False
    W_init: initializers.Initializer = initializers.glorot_uniform
    uses_mask = True

    def __post_init__(self):
        if not is_int(self.n_heads, 1):
            raise ValueError(f"MultiHeadAttention: n_heads must be a positive int, got {self.n_heads!r}")
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
                and 0 <= self.dropout < 1):
            raise ValueError(f"{self!r}: dropout must be a number in [0, 1), the probability of dropping "
                             f"each attention weight, got {self.dropout!r}")
        set_fields(self, dropout=float(self.dropout), W_init=initializers.get(self.W_init))

    @property
    def stateful(self) -> bool:  # the stateful protocol only for dropout's key and mode
        return self.dropout > 0

    @property
    def uses_key(self) -> bool:
        return self.dropout > 0

    def init(self, key, in_shape, dtype=jnp.float32):
        check_sequences(self, in_shape)
        d = in_shape[-1]
        if d % self.n_heads:
            raise ValueError(f"{self!r}: the model width d = {d} does not split into {self.n_heads} heads; "
                             f"use a width divisible by n_heads")
        keys = jax.random.split(key, 4)
        params = {}
        for name, k in zip(_PROJECTIONS, keys):
            params[f"W{name}"] = self.W_init(k, (d, d), dtype)
            params[f"b{name}"] = jnp.zeros((d,), dtype)
        return params, tuple(in_shape)

    def init_state(self, in_shape, dtype=jnp.float32):
        del in_shape, dtype
        return {}

    def forward(self, params, *args, key=None, train=False, mask=None):
        """`forward(params, x, mask=)` -> (y, cache); with dropout (the stateful protocol)
        `forward(params, state, x, key=, train=, mask=)` -> (y, cache, state)."""
        state, x = (None, *args) if not self.stateful else args
        keep = None
        if self.stateful and train:
            if key is None:
                raise ValueError(f"{self!r} needs a key in training (train=True), to draw its dropout mask: "
                                 f"pass key=jax.random.key(...), or train=False")
            check_key(repr(self), key)
            B, T, _ = x.shape
            keep = jax.random.bernoulli(key, 1 - self.dropout, (B, self.n_heads, T, T))
        q, k, v = (self._heads(_affine(x, params[f"W{n}"], params[f"b{n}"])) for n in "qkv")
        P = self._weights(q, k, mask)
        O = self._join(jnp.einsum("bhij,bhjd->bhid", self._dropped(P, keep).astype(v.dtype), v))
        y = _affine(O, params["Wo"], params["bo"])
        if mask is not None:
            y = jnp.where(mask[:, :, None], y, 0)
        cache = (x, q, k, v, None if self.recompute else P, keep, O, mask)
        return (y, cache) if not self.stateful else (y, cache, state)

    def backward(self, params, cache, dy):
        x, q, k, v, P, keep, O, mask = cache
        if mask is not None:
            dy = jnp.where(mask[:, :, None], dy, 0)
        if P is None:
            P = self._weights(q, k, mask)
        grads = {"Wo": _rows(O).T @ _rows(dy), "bo": _rows(dy).sum(axis=0)}
        dO = self._heads(dy @ params["Wo"].T)
        dv = jnp.einsum("bhij,bhid->bhjd", self._dropped(P, keep).astype(dO.dtype), dO)
        dP = self._dropped(jnp.einsum("bhid,bhjd->bhij", dO, v).astype(P.dtype), keep)
        dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
        scale = 1 / math.sqrt(q.shape[-1])
        dq = jnp.einsum("bhij,bhjd->bhid", dS, k.astype(dS.dtype)) * scale
        dk = jnp.einsum("bhij,bhid->bhjd", dS, q.astype(dS.dtype)) * scale
        dx = 0
        for name, d in zip("qkv", (dq, dk, dv)):
            d = self._join(d.astype(x.dtype))
            grads[f"W{name}"] = _rows(x).T @ _rows(d)
            grads[f"b{name}"] = _rows(d).sum(axis=0)
            dx = dx + d @ params[f"W{name}"].T
        return {n: grads[n] for n in params}, dx

    def _heads(self, a):
        """(batch, T, d) → (batch, heads, T, d_k)."""
        B, T, d = a.shape
        return a.reshape(B, T, self.n_heads, d // self.n_heads).transpose(0, 2, 1, 3)

    @staticmethod
    def _join(a):
        """(batch, heads, T, d_k) → (batch, T, d)."""
        B, H, T, dk = a.shape
        return a.transpose(0, 2, 1, 3).reshape(B, T, H * dk)

    def _weights(self, q, k, mask):
        """P = softmax(Q Kᵀ / √d_k) over the allowed keys, `(batch, heads, T, T)`, in float32
        at least."""
        c = jnp.promote_types(q.dtype, jnp.float32)
        S = jnp.einsum("bhid,bhjd->bhij", q.astype(c), k.astype(c)) / math.sqrt(q.shape[-1])
        T = q.shape[2]
        allowed = None
        if self.causal:
            allowed = jnp.tril(jnp.ones((T, T), bool))[None, None]
        if mask is not None:
            keys = mask[:, None, None, :]
            allowed = keys if allowed is None else allowed & keys
        return _softmax(S, allowed)

    def _dropped(self, P, keep):
        """P ⊙ keep/(1 − rate) (dropout's map, and its own transpose); P itself without."""
        return P if keep is None else jnp.where(keep, P / (1 - self.dropout), 0)
