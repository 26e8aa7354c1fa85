"""Layers that only rearrange an example: `Flatten` and `Reshape`. No params, no arithmetic;
backward reshapes dy back to the input's shape."""

import math
from dataclasses import dataclass

import jax.numpy as jnp

from fnnet._checks import is_int
from fnnet.layers.base import register, set_fields as _set


def shape_cache(x):
    """A cache that carries `x`'s shape to backward and holds no data: an empty array of shape
    `(batch, *x.shape[1:], 0)`, batch axis first like every per-example cache (a slice of
    it carries that slice's shape). Backward reads the shape as `cache.shape[:-1]`."""
    return jnp.zeros((*x.shape, 0), x.dtype)


@register
@dataclass(frozen=True)
class Flatten:
    """Each example as one flat vector: `(batch, *shape)` → `(batch, prod(shape))`, row-major
    (C order, as `jnp.reshape`), so an NHWC image flattens channels fastest.

    Params: `{}`. Cache: `shape_cache(x)` (x's shape, no data). Backward: dx = dy reshaped
    to `(batch, *shape)`.

    >>> import jax, jax.numpy as jnp
    >>> Flatten().init(jax.random.key(0), (4, 4, 8))
    ({}, (128,))
    >>> y, cache = Flatten().forward({}, jnp.ones((2, 4, 4, 8)))
    >>> y.shape, Flatten().backward({}, cache, y)[1].shape
    ((2, 128), (2, 4, 4, 8))
    """

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        return {}, (math.prod(in_shape),)

    def forward(self, params, x):
        del params
        return x.reshape(x.shape[0], math.prod(x.shape[1:])), shape_cache(x)

    def backward(self, params, cache, dy):
        del params
        return {}, dy.reshape(cache.shape[:-1])


@register
@dataclass(frozen=True)
class Reshape:
    """Each example reshaped to `shape`: `(batch, *in_shape)` → `(batch, *shape)`, row-major.

    Args:
      shape: a tuple of positive ints, at most one of them -1 (the size that makes the element
        counts match, resolved at init), e.g. `Reshape((7, 7, -1))`. The batch axis is not part
        of it.

    Params: `{}`. Cache: `shape_cache(x)` (x's shape, no data). Backward: dx = dy reshaped
    to `(batch, *in_shape)`.

    >>> import jax
    >>> Reshape((7, 7, -1)).init(jax.random.key(0), (98,))
    ({}, (7, 7, 2))
    """

    shape: tuple

    def __post_init__(self):
        shape = self.shape
        if not (isinstance(shape, (tuple, list)) and all(is_int(n, 1) or (is_int(n) and n == -1) for n in shape)
                and list(shape).count(-1) <= 1):
            raise ValueError(f"{self!r}: shape must be a tuple of positive ints with at most one -1 "
                             f"(inferred), per example without the batch axis, got {shape!r}")
        _set(self, shape=tuple(shape))

    def _resolve(self, in_shape) -> tuple:
        """`shape` with its -1 filled in for inputs of shape `in_shape` (per example)."""
        n_in, known = math.prod(in_shape), math.prod(n for n in self.shape if n != -1)
        if -1 in self.shape and n_in % known == 0 and n_in > 0:
            return tuple(n_in // known if n == -1 else n for n in self.shape)
        if -1 not in self.shape and n_in == known:
            return self.shape
        wanted = f"a multiple of {known}" if -1 in self.shape else f"{known}"
        raise ValueError(f"{self!r} cannot reshape examples of shape {tuple(in_shape)} ({n_in} elements) "
                         f"to {self.shape}, which needs {wanted} elements; the element counts must match")

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        return {}, self._resolve(in_shape)

    def forward(self, params, x):
        del params
        return x.reshape(x.shape[0], *self._resolve(x.shape[1:])), shape_cache(x)

    def backward(self, params, cache, dy):
        del params
        return {}, dy.reshape(cache.shape[:-1])
