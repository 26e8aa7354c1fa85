"""Dropout: zero each input with probability `rate` in training, scaling the rest by 1/(1 − rate)."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet._checks import check_key
from fnnet.layers.base import register, set_fields


@register
@dataclass(frozen=True)
class Dropout:
    """Inverted dropout; `rate` is the probability of DROPPING an element (not of keeping it).

    Args:
      rate: in [0, 1).

    No params, no state leaves (`init_state` gives `{}`: the stateful protocol only for the
    key and the mode). Training (`train=True`) on `x` of any shape `(batch, ...)`:

        m ~ Bernoulli(1 − rate), of x's shape, from `key`
        y = x ⊙ m/(1 − rate)           so E[y] = x
        dx = dy ⊙ m/(1 − rate)         the same m, kept in the cache (a bool array, batch first)

    so backward needs no key. Training without a key is a ValueError (with `rate > 0`).
    Evaluation (`train=False`), and `rate = 0`, are the identity: cache None, dx = dy.
    bfloat16/float16 inputs are scaled in float32 and cast back, so 1/(1 − rate) is not
    rounded first.

    >>> drop = Dropout(0.5)
    >>> x = jnp.ones((2, 4))
    >>> y, mask, _ = drop.forward({}, {}, x, key=jax.random.key(0), train=True)
    >>> bool(((y == 0) | (y == 2)).all())
    True
    >>> drop.forward({}, {}, x, key=None, train=False)[0] is x
    True
    """

    rate: float
    uses_key = True  # training draws from a key: fit and train_step must give one (not a field)

    def __post_init__(self):
        if not (isinstance(self.rate, (int, float)) and not isinstance(self.rate, bool)
                and 0 <= self.rate < 1):
            raise ValueError(f"{self!r}: rate must be a number in [0, 1), the probability of dropping "
                             f"each element (0.1 drops 10%), got {self.rate!r}")
        set_fields(self, rate=float(self.rate))

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        return {}, tuple(in_shape)

    def init_state(self, in_shape, dtype=jnp.float32):
        del in_shape, dtype
        return {}

    def forward(self, params, state, x, *, key=None, train=False):
        del params
        if not train or self.rate == 0:
            return x, None, state
        if key is None:
            raise ValueError(f"{self!r} needs a key in training (train=True), to draw its mask: pass "
                             f"key=jax.random.key(...) (a fresh one each step), or train=False")
        check_key(repr(self), key)
        mask = jax.random.bernoulli(key, 1 - self.rate, x.shape)
        return self._apply_mask(x, mask), mask, state

    def backward(self, params, mask, dy):
        del params
        return {}, dy if mask is None else self._apply_mask(dy, mask)

    def _apply_mask(self, v, mask):
        """v ⊙ m/(1 − rate): the forward's map and, being linear and diagonal, its transpose."""
        scaled = v.astype(jnp.promote_types(v.dtype, jnp.float32)) / (1 - self.rate)
        return jnp.where(mask, scaled, 0).astype(v.dtype)
