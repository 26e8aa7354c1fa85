"""The layer protocol, the registry that checkpoints rebuild layers from, and the generic calls
that let stateless and stateful layers be driven the same way.

A stateless layer is a frozen (hashable) dataclass with three methods:

    init(key, in_shape, dtype)   -> (params, out_shape)
    forward(params, x)           -> (y, cache)
    backward(params, cache, dy)  -> (dparams, dx)

A layer with state (BatchNorm's running statistics) or randomness (Dropout's mask) also has

    init_state(in_shape, dtype)                   -> state
    forward(params, state, x, *, key, train)      -> (y, cache, state)

and the same `backward`: whatever it needs (a mask, the batch statistics) is in its cache, so
backward takes no key. A layer for sequences that takes a padding mask (`(batch, T)`, True at
real steps) says so with `uses_mask = True` and takes it as the keyword `mask` of either
forward; the mask travels beside the activations (see `fnnet.Network.input_mask`). `train` is a static Python bool. A layer that draws random numbers in
training says so with a class attribute `uses_key = True`, so that a missing key is an error,
never a silent default. Caches hold arrays with the batch axis first (or nothing), so that
one example's backward can run on its slice of them.

Shapes exclude the batch axis: `in_shape=(n_in,)` for inputs `x` of shape `(batch, n_in)`.
`backward` receives dy = ∂L/∂y of the shape of `y` and returns ∂L/∂params (a tree like
`params`) and dx = ∂L/∂x.

`forward`, `init_state` and `is_stateful` below drive either kind, so a combinator or a
network never asks which kind a child is.
"""

import dataclasses
from typing import Protocol


class Layer(Protocol):
    """What a stateless layer provides; see the module docstring."""

    def init(self, key, in_shape, dtype): ...
    def forward(self, params, x): ...
    def backward(self, params, cache, dy): ...


TYPES: dict[str, type] = {}
"""Layer classes by the type name a checkpoint saves them under; add yours with `register`."""


def register(cls: type) -> type:
    """Class decorator: let checkpoints save and rebuild layers of `cls`, by its class name.

    `cls` must be a dataclass whose `__init__` fields hold ints, floats, strs, bools,
    None, tuples, fnnet's own activations and initializers, or other registered
    layers (nesting). A checkpoint stores initializers by name, so `__init__` must
    accept names for them, as `Dense` does with `initializers.get`.

        @fnnet.layers.register
        @dataclass(frozen=True)
        class Scale:
            factor: float
            def init(self, key, in_shape, dtype): ...
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"register: {cls!r} is not a dataclass; a checkpoint describes a layer by "
                        f"its dataclass fields (decorate it with @dataclass(frozen=True) first)")
    if TYPES.setdefault(cls.__name__, cls) is not cls:
        raise ValueError(f"register: a layer type named {cls.__name__!r} is registered already "
                         f"({TYPES[cls.__name__]!r}); give your class another name")
    return cls


def set_fields(obj, **fields):
    """Replace fields of a frozen dataclass from `__post_init__`."""
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


def is_stateful(layer) -> bool:
    """Whether `layer` speaks the stateful protocol (`init_state`, the 5-argument forward)."""
    stateful = getattr(layer, "stateful", None)
    return hasattr(layer, "init_state") if stateful is None else stateful


def uses_key(layer) -> bool:
    """Whether `layer` draws random numbers in training (Dropout: a class attribute
    `uses_key = True`), so that training must give it a key."""
    return bool(getattr(layer, "uses_key", False))


def uses_mask(layer) -> bool:
    """Whether `layer` takes a padding mask (a recurrent or attention layer: a class attribute
    `uses_mask = True`): then its forward has a keyword `mask`, `(batch, T)` booleans, True at
    the real steps of each sequence, or None."""
    return bool(getattr(layer, "uses_mask", False))


def init_state(layer, in_shape, dtype):
    """`layer.init_state(...)`, or `{}` (no leaves) for a stateless layer."""
    return layer.init_state(in_shape, dtype) if is_stateful(layer) else {}


def forward(layer, params, state, x, key, train, mask=None):
    """`(y, cache, state)` of any layer: a stateless one keeps `state` as it is; a layer that
    takes a padding mask is given `mask`, the others not."""
    kw = {"mask": mask} if uses_mask(layer) else {}
    if is_stateful(layer):
        return layer.forward(params, state, x, key=key, train=train, **kw)
    y, cache = layer.forward(params, x, **kw)
    return y, cache, state


def describe(layer) -> str:
    """`layer` as its call with the defaults left out: `Conv2D(8, (3, 3), activation=relu)`.

    The reference for each default is the layer built from the same required arguments, so
    values its constructor normalises (stride 1 → (1, 1)) compare equal; a layer that is not a
    dataclass, or cannot be rebuilt so, is shown by its repr."""
    try:
        fields = dataclasses.fields(layer)
        required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        reference = type(layer)(*(getattr(layer, f.name) for f in required))
    except (TypeError, ValueError):
        return repr(layer)
    def show(value):  # a layer inside a layer (Bidirectional's) described the same way
        return describe(value) if dataclasses.is_dataclass(value) and hasattr(value, "forward") else repr(value)

    args = [show(getattr(layer, f.name)) for f in required]
    args += [f"{f.name}={show(getattr(layer, f.name))}" for f in fields
             if f not in required and f.repr and getattr(layer, f.name) != getattr(reference, f.name)]
    return f"{type(layer).__name__}({', '.join(args)})"
