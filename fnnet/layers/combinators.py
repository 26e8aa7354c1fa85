"""Layers made of layers: `Sequential` (one after another) and `Residual` (y = f(x) + s(x)).

Both are layers themselves, so they nest. Their params, state and caches mirror their
children: a list, one entry per layer, for `Sequential`; `{"block": ..., "shortcut": ...}` for
`Residual`. Either is stateful (see `fnnet.layers.base`) exactly when a child is, and folds
the key it is given into one per child (`jax.random.fold_in(key, i)`), so a Dropout deep in a
tree draws its own mask.

An error raised by a child names it by its path: `[2]['block'][0] Conv2D(...): ...`.
"""

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet.layers import base
from fnnet.layers.base import register, set_fields


def _at(where, error: ValueError) -> ValueError:
    """`error` with `where` prepended to the path its message starts with."""
    message = str(error)
    return ValueError(f"{where}{message}" if message.startswith("[") else f"{where} {message}")


def _key(key, i):
    return None if key is None else jax.random.fold_in(key, i)


@functools.lru_cache(maxsize=None)
def _in_shapes(layers, in_shape):
    """The input shape of each layer of a chain, and the chain's output shape, without FLOPs."""
    shapes = [in_shape]

    def init(key):
        shape = in_shape
        for layer in layers:
            _, shape = layer.init(key, shape, jnp.float32)
            shapes.append(tuple(shape))

    jax.eval_shape(init, jax.random.key(0))
    return tuple(shapes)


@register
@dataclass(frozen=True, init=False)
class Sequential:
    """Layers applied in order: `Sequential(Dense(64, "relu"), Dense(10))`; nestable.

    Params `[p₀, p₁, ...]`, one entry per layer (`{}` for a layer without params), the
    same for state and caches. Backward runs the children's backward last to first, each
    dy the next one's dx: the delta recursion.
    """

    layers: tuple

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (tuple, list)):
            layers = layers[0]  # Sequential([a, b]) as Sequential(a, b)
        set_fields(self, layers=tuple(layers))

    @property
    def stateful(self) -> bool:
        return any(map(base.is_stateful, self.layers))

    @property
    def uses_key(self) -> bool:
        return any(map(base.uses_key, self.layers))

    @property
    def uses_mask(self) -> bool:
        return any(map(base.uses_mask, self.layers))

    def init(self, key, in_shape, dtype=jnp.float32):
        params, shape = [], tuple(in_shape)
        for i, (layer, k) in enumerate(zip(self.layers, jax.random.split(key, len(self.layers)))):
            try:
                p, shape = layer.init(k, shape, dtype)
            except ValueError as e:
                raise _at(f"[{i}]", e) from None
            params.append(p)
            shape = tuple(shape)
        return params, shape

    def init_state(self, in_shape, dtype=jnp.float32):
        shapes = _in_shapes(self.layers, tuple(in_shape))
        return [base.init_state(layer, shape, dtype) for layer, shape in zip(self.layers, shapes)]

    def forward(self, params, *args, key=None, train=False, mask=None):
        """`forward(params, x)` when stateless, `forward(params, state, x, key=, train=)` when not
        (`mask=` for the children that take a padding mask)."""
        if not self.stateful:
            y, caches, _ = self._run(params, [{}] * len(self.layers), *args, None, False, mask)
            return y, caches
        return self._run(params, *args, key, train, mask)

    def _run(self, params, state, x, key, train, mask=None):
        caches, states = [], []
        for i, (layer, p, s) in enumerate(zip(self.layers, params, state)):
            x, cache, s = base.forward(layer, p, s, x, _key(key, i), train, mask)
            caches.append(cache)
            states.append(s)
        return x, caches, states

    def backward(self, params, caches, dy):
        grads = []
        for layer, p, cache in zip(reversed(self.layers), reversed(params), reversed(caches)):
            dp, dy = layer.backward(p, cache, dy)
            grads.append(dp)
        return grads[::-1], dy

    def __repr__(self):
        return f"Sequential({', '.join(map(repr, self.layers))})"


class _Identity:
    """The identity shortcut: y = x, dx = dy."""

    stateful = False

    def init(self, key, in_shape, dtype):
        return {}, tuple(in_shape)

    def forward(self, params, x):
        return x, None

    def backward(self, params, cache, dy):
        return {}, dy


@register
@dataclass(frozen=True)
class Residual:
    """y = block(x) + shortcut(x): a skip connection.

    Args:
      block: a layer (often a `Sequential`).
      shortcut: None for the identity, or a layer that maps x to block(x)'s shape, such
        as a strided 1×1 `Conv2D` where the block changes the shape.

    Params `{"block": ..., "shortcut": ...}` (`{}` for the identity), state likewise.
    Backward: each path's backward from the same dy; dx is the sum of the two dx.
    """

    block: object
    shortcut: object = None

    @property
    def _paths(self):
        return (("block", self.block), ("shortcut", self.shortcut or _Identity()))

    @property
    def stateful(self) -> bool:
        return any(base.is_stateful(layer) for _, layer in self._paths)

    @property
    def uses_key(self) -> bool:
        return any(base.uses_key(layer) for _, layer in self._paths)

    @property
    def uses_mask(self) -> bool:
        return any(base.uses_mask(layer) for _, layer in self._paths)

    def init(self, key, in_shape, dtype=jnp.float32):
        params, shapes = {}, {}
        for (name, layer), k in zip(self._paths, jax.random.split(key)):
            try:
                params[name], shape = layer.init(k, tuple(in_shape), dtype)
            except ValueError as e:
                raise _at(f"[{name!r}]", e) from None
            shapes[name] = tuple(shape)
        if shapes["block"] != shapes["shortcut"]:
            raise ValueError(
                f"{self!r}: the block maps {tuple(in_shape)} to {shapes['block']} but the shortcut to "
                f"{shapes['shortcut']}; the two are added, so they must match"
                + (": give a shortcut that maps to the block's shape, e.g. a strided 1×1 Conv2D"
                   if self.shortcut is None else ""))
        return params, shapes["block"]

    def init_state(self, in_shape, dtype=jnp.float32):
        return {name: base.init_state(layer, tuple(in_shape), dtype) for name, layer in self._paths}

    def forward(self, params, *args, key=None, train=False, mask=None):
        """`forward(params, x)` when stateless, `forward(params, state, x, key=, train=)` when not
        (`mask=` for the children that take a padding mask)."""
        if not self.stateful:
            y, cache, _ = self._run(params, {"block": {}, "shortcut": {}}, *args, None, False, mask)
            return y, cache
        return self._run(params, *args, key, train, mask)

    def _run(self, params, state, x, key, train, mask=None):
        outs, caches, states = [], {}, {}
        for i, (name, layer) in enumerate(self._paths):
            y, caches[name], states[name] = base.forward(layer, params[name], state[name], x, _key(key, i), train,
                                                         mask)
            outs.append(y)
        return outs[0] + outs[1], caches, states

    def backward(self, params, caches, dy):
        grads, dx = {}, 0
        for name, layer in self._paths:
            grads[name], dx_path = layer.backward(params[name], caches[name], dy)
            dx = dx + dx_path
        return grads, dx
