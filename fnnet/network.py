"""A network: a static sequence of layers over a fixed per-example input shape."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fnnet import activations
from fnnet._checks import as_array, check_key, is_int, tree_mismatch
from fnnet.layers import Dense, Layer, Residual, Sequential, base
from fnnet.layers.combinators import _in_shapes


@dataclass(frozen=True)
class Network:
    """A sequence of layers applied in order; a static, hashable description.

    Args:
      in_shape: shape of one example, without the batch axis, e.g. `(2,)`.
      layers: the layers, first to last.

    `init(key)` returns the parameters: a list with one entry per layer (a dict
    `{"W": (n_in, n_out), "b": (n_out,)}` for a Dense layer, `{}` for a layer
    without parameters, a nested list or dict for `Sequential` and `Residual`).
    `apply(params, x)` maps `x` of shape `(batch, *in_shape)` to `(batch, *out_shape)`.
    Both are pure; `fnnet.backprop` differentiates.

    State and randomness. A network with a `BatchNorm` has state, the running
    statistics: `net.init_state()` makes it, and `apply`, `forward` and `backprop`
    take `state=` and return the new state last (`apply` gives `(y, state)`); the
    optimizer never sees it. A network with a `Dropout` takes `key=` in training
    (`train=True`, a static bool). A network with neither (an MLP, a plain CNN) is
    used exactly as before: the same calls, the same returns.

    >>> net = Network((2,), (Dense(4, "relu"), Dense(1)))
    >>> params = net.init(jax.random.key(0))
    >>> net.apply(params, jnp.ones((3, 2))).shape
    (3, 1)
    """

    in_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self):
        in_shape = tuple(self.in_shape) if isinstance(self.in_shape, Sequence) else (self.in_shape,)
        if not in_shape or not all(is_int(n, 1) for n in in_shape):
            raise ValueError(f"Network: in_shape must be positive ints, e.g. (2,); got {self.in_shape!r}")
        object.__setattr__(self, "in_shape", in_shape)
        object.__setattr__(self, "layers", tuple(self.layers))
        try:
            self._shapes  # build now: a layer that rejects its input shape fails here, not later
        except ValueError as e:  # raised while JAX traced the shapes: without JAX's note on frames
            raise ValueError(str(e).split("\n--------------------\n")[0]) from None

    def init(self, key, dtype=jnp.float32) -> list:
        """Fresh parameters from `key` (a `jax.random.key`), leaves of `dtype`."""
        check_key("Network.init", key)
        if jnp.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
            raise ValueError(
                f"Network.init: dtype={jnp.dtype(dtype).name} needs JAX's 64-bit mode, which is off (JAX "
                f"would make float32 instead); turn it on first with jax.config.update('jax_enable_x64', "
                f"True), or work inside `with jax.enable_x64():`"
            )
        return self._init(key, dtype)

    def _init(self, key, dtype):
        try:
            return self.root.init(key, self.in_shape, dtype)[0]
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: layer {e}") from None

    @functools.cached_property
    def root(self) -> Sequential:
        """The network as one layer: `Sequential(*layers)`."""
        return Sequential(*self.layers)

    def init_state(self, dtype=jnp.float32) -> list:
        """The initial state (BatchNorm's running statistics), one entry per layer like params:
        a tree without leaves for a network without state."""
        return self.root.init_state(self.in_shape, dtype)

    @functools.cached_property
    def has_state(self) -> bool:
        """Whether the network keeps state (a BatchNorm): then its calls take and return it."""
        return bool(jax.tree.leaves(self._shapes[2]))

    @functools.cached_property
    def _shapes(self):
        """(abstract params, per-layer output shapes, abstract state), computed once without FLOPs."""
        params = jax.eval_shape(lambda key: self._init(key, jnp.float32), jax.random.key(0))
        state = jax.eval_shape(self.init_state)
        return params, _in_shapes(self.layers, self.in_shape)[1:], state

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one example's output, without the batch axis."""
        return self._shapes[1][-1] if self.layers else self.in_shape

    def forward(self, params, x, *, state=None, key=None, train=False):
        """Output `(batch, *out_shape)` and one cache per layer, for backward; and the new
        state last if the network has state."""
        x = as_array(x)
        self.check(params, x, state=state)
        y, caches, new_state = self.run(params, state, x, key, train)
        return (y, caches, new_state) if self.has_state else (y, caches)

    def apply(self, params, x, *, state=None, key=None, train=False):
        """Output of shape `(batch, *out_shape)` for `x` of shape `(batch, *in_shape)`; with
        state, `(y, new_state)` (in evaluation, `train=False`, the state comes back unchanged)."""
        out = self.forward(params, x, state=state, key=key, train=train)
        return (out[0], out[2]) if self.has_state else out[0]

    def run(self, params, state, x, key, train, mask=None):
        """`(y, caches, state)` without checks, whatever the network (pure; not jitted); a
        network without state hands back the `state` it was given (None) as it is. `mask`:
        the padding mask of `x`, by default `input_mask(x)`."""
        mask = self.input_mask(x) if mask is None else mask
        if self.has_state:
            return self.root._run(params, state, x, key, train, mask)
        y, caches, _ = self.root._run(params, self._shapes[2], x, key, train, mask)  # a tree without leaves
        return y, caches, state

    def input_mask(self, x):
        """The padding mask of inputs `x`, `(batch, T)` booleans (True at real tokens), or None.

        It comes from the first layer's `mask_of(x)`: an `Embedding(vocab, dim, pad_id=p)`
        marks the tokens equal to p as padding. The mask travels beside the activations to every
        layer that takes one (`uses_mask`: the recurrent and attention layers), which keep a
        sequence's state across its padding and give zeros there; the losses then average over
        the real tokens only (`fnnet.losses.Loss.value_and_delta`)."""
        mask_of = getattr(self.layers[0], "mask_of", None) if self.layers else None
        return None if mask_of is None else mask_of(x)

    def check(self, params, x, y=None, loss=None, *, state=None):
        """Raise a ValueError naming the mismatch if `params`, `x` (or `y` for `loss`), or
        `state` do not fit.

        Looks only at tree structure and shapes, so it runs (once) while tracing too.
        """
        self.check_params(params)
        self.check_state(state)
        self.check_data(x, y, loss)

    def check_state(self, state):
        """Raise a ValueError if `state` is not this network's (None is fine without state)."""
        if not self.has_state:
            if state is not None and jax.tree.leaves(state):
                raise ValueError(f"state= was given, but this network keeps no state (it has no BatchNorm); "
                                 f"drop state=")
            return
        if state is None:
            raise ValueError("this network keeps state (a BatchNorm's running statistics): pass "
                             "state=net.init_state() at first, then the state each call returns")
        mismatch = tree_mismatch(state, self._shapes[2])
        if mismatch is not None:
            where = "" if mismatch.path is None else f"state{jax.tree_util.keystr(mismatch.path)}: "
            raise ValueError(f"state does not fit this network (state from another network?): {where}"
                             f"{mismatch.detail}; expected the structure of net.init_state()")

    def check_data(self, x, y=None, loss=None):
        """Raise a ValueError if `x` does not fit the input, or `y` the output under `loss`."""
        x_shape = jnp.shape(x)
        if x_shape[1:] != self.in_shape or len(x_shape) != 1 + len(self.in_shape):
            raise ValueError(
                f"input x has shape {x_shape}; the network expects (batch, "
                f"{', '.join(map(str, self.in_shape))}): a leading batch axis, then "
                f"{self.in_shape} per example"
            )
        if x_shape[0] == 0:
            raise ValueError(f"input x has shape {x_shape}: the batch is empty")
        check_input = getattr(self.layers[0], "check_input", None) if self.layers else None
        if check_input is not None:  # what the first layer knows about its inputs (an Embedding's ids)
            try:
                check_input(x)
            except (TypeError, ValueError) as e:
                raise type(e)(f"layer [0] {e}") from None
        if loss is not None:
            loss.check(jax.ShapeDtypeStruct((x_shape[0], *self.out_shape), jnp.float32), y)

    def check_params(self, params):
        """Raise a ValueError naming the first leaf of `params` that does not fit."""
        expected = self._shapes[0]
        mismatch = tree_mismatch(params, expected)
        if mismatch is None:
            return
        if mismatch.path is None:
            raise ValueError(
                f"params do not match the network: {mismatch.detail}; expected the structure of "
                f"net.init(key): {jax.tree.structure(expected)}"
            )
        layer = mismatch.path[0].idx
        raise ValueError(
            f"params{jax.tree_util.keystr(mismatch.path)} has shape {mismatch.got}, but layer {layer} "
            f"({self.layers[layer]!r}) expects {mismatch.want}"
        )

    def __repr__(self):
        layers = "".join(f"\n  {layer!r}," for layer in self.layers)
        return f"Network(in_shape={self.in_shape}, layers=({layers}\n))"

    def __str__(self):
        """A model summary: each layer with its output shape and parameter count, the layers of
        a `Sequential` or `Residual` indented under it (`repr` is the short form that error
        messages use)."""
        params = self._shapes[0]
        rows = [("#", "layer", "output shape", "params"), ("", "input", str(self.in_shape), "")]
        for i, (layer, p, shape) in enumerate(zip(self.layers, params, _in_shapes(self.layers, self.in_shape))):
            rows += _summary(layer, p, shape, str(i), 0)
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}".rstrip()
                 for r in rows]
        return "\n".join(lines + [f"{_count(params):,} parameters"])


def _count(params) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def _summary(layer, params, in_shape, index, depth):
    """Summary rows `(index, layer, output shape, params)` of `layer` and, indented, its children."""
    indent = "  " * depth
    if isinstance(layer, Sequential):
        shapes = _in_shapes(layer.layers, in_shape)
        rows = [(index, f"{indent}Sequential", str(shapes[-1]), f"{_count(params):,}")]
        for i, (child, p, shape) in enumerate(zip(layer.layers, params, shapes)):
            rows += _summary(child, p, shape, f"{index}.{i}", depth + 1)
        return rows
    if isinstance(layer, Residual):
        out = _in_shapes((layer.block,), in_shape)[-1]
        rows = [(index, f"{indent}Residual (block + {'shortcut' if layer.shortcut else 'identity'})",
                 str(out), f"{_count(params):,}")]
        rows += _summary(layer.block, params["block"], in_shape, f"{index}.block", depth + 1)
        if layer.shortcut is not None:
            rows += _summary(layer.shortcut, params["shortcut"], in_shape, f"{index}.shortcut", depth + 1)
        return rows
    return [(index, f"{indent}{base.describe(layer)}", str(_in_shapes((layer,), in_shape)[-1]), f"{_count(params):,}")]



def mlp(sizes, activation="relu", output_activation="identity",
        W_init="lecun_normal", b_init="zeros") -> Network:
    """A multilayer perceptron: Dense layers of `sizes[1:]` units on `sizes[0]` inputs.

    Args:
      sizes: `[n_in, n_hidden..., n_out]`, at least two positive ints.
      activation: for the hidden layers; a name or `Activation`, or a sequence with
        one per hidden layer.
      output_activation: for the last layer; `"identity"` (the default) outputs
        logits for the losses in `fnnet.losses`.
      W_init, b_init: initializer names or `Initializer`s, or a sequence with one
        per layer.

    >>> mlp([2, 4, 1], activation="relu")   # the textbook's XOR architecture
    Network(in_shape=(2,), layers=(
      Dense(n_out=4, activation=relu, W_init=lecun_normal, b_init=zeros),
      Dense(n_out=1, activation=identity, W_init=lecun_normal, b_init=zeros),
    ))
    """
    sizes = list(sizes) if isinstance(sizes, Sequence) and not isinstance(sizes, str) else sizes
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(is_int(n, 1) for n in sizes):
        raise ValueError(
            f"mlp: sizes must list at least two positive ints, [n_in, ..., n_out], got {sizes!r}"
        )
    n_layers = len(sizes) - 1
    hidden = _per_layer(activation, n_layers - 1, "activation", "hidden layer")
    if not hidden and (isinstance(activation, str) or not isinstance(activation, Sequence)):
        activations.get(activation)  # a misspelt name is an error even with no hidden layer
    W_inits = _per_layer(W_init, n_layers, "W_init", "layer")
    b_inits = _per_layer(b_init, n_layers, "b_init", "layer")
    acts = hidden + [output_activation]
    return Network(
        (sizes[0],),
        tuple(Dense(n, a, w, b) for n, a, w, b in zip(sizes[1:], acts, W_inits, b_inits)),
    )


def _per_layer(value, n, name, what):
    """`value` repeated n times, or the sequence itself if it has one entry per `what`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"mlp: {name} lists {len(value)} entries; expected one per {what}, {n}")
    return list(value)
