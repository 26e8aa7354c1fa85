"""Checking one layer's hand-written backward, and finding the broken layer of a network.

`check_layer(layer, in_shape)` runs any layer object — fnnet's or your own, anything with
the layer protocol (`fnnet.layers.base`) — on random inputs and puts its `backward` next to
two independent opinions: `jax.vjp` of the layer's own `forward`, and central finite
differences of ⟨forward(θ), dy⟩ in float64. Every output is compared: dx and each parameter
leaf.

`check_layers(net, params, X)` does the same for every layer of a network, at the inputs
the layer really sees in the network's forward pass (with its params, state and key), and
names the first layer whose backward disagrees: a wrong dx shows up as wrong gradients in
every layer below it, so the leaf-by-leaf check of the whole network's gradient cannot say
where the bug is; this can. Nested layers are named by their path, `[3]['block'][0]`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layers import Residual, Sequential
from fnnet.layers.combinators import _Identity
from fnnet.layers import base

TOLERANCES = {"float64": (1e-9, 1e-6), "float32": (1e-4, 1e-2)}  # dtype: (rtol vs jax.vjp, fd_rtol)
_TINY = 1e-300


@dataclasses.dataclass(frozen=True)
class OutputResult:
    """One output of a layer's backward (`dx` or a parameter leaf such as `W`).

    Attributes:
      name: "dx", or the parameter's key path inside the layer's params ("W", "['block'][0]['W']").
      max_rel_error: max |hand − vjp| / max(max |vjp|, tiny) (normwise).
      worst_index: where |hand − vjp| is largest; hand, vjp: the values there.
      fd_error: |fd − ⟨hand, v⟩| / scale along a random direction v (None: not checked, or
        the layer has a kink along v, where finite differences have no opinion).
      ok: within tolerance of jax.vjp (and of the finite differences, when checked).
      wrong_steps: for dx of a layer over time (a recurrent layer, `time_axis`), the time
        steps where it differs, in order; () when it agrees or has no time axis. Backprop
        through time runs from the last step to the first, so the last wrong step is where
        the backward first goes wrong.
    """

    name: str
    max_rel_error: float
    worst_index: tuple
    hand: float
    vjp: float
    fd_error: "float | None"
    ok: bool
    wrong_steps: tuple = ()


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """One layer's verdict: `path` in the network ("" for `check_layer`), the layer (as
    `fnnet.layers.base.describe` writes it: its call, defaults left out),
    `train` (mode), and one `OutputResult` per output."""

    path: str
    layer: str
    train: bool
    outputs: tuple

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def message(self) -> str:
        where = f"layer {self.path} {self.layer}" if self.path else self.layer
        # a recurrent layer's dx first: the time step where it goes wrong says most
        bad = sorted((o for o in self.outputs if not o.ok), key=lambda o: not o.wrong_steps)
        mode = "training" if self.train else "evaluation"
        if not bad:
            return f"{where}: backward agrees with jax.vjp of its forward ({mode} mode)"
        first = bad[0]
        good = [o.name for o in self.outputs if o.ok]
        steps = first.wrong_steps
        when = (f" from time step t = {steps[-1]} back (wrong at {_steps(steps)}; the later steps agree)"
                if steps else "")
        return (f"{where}: {first.name} differs from jax.vjp of its forward in {mode} mode{when} (index "
                f"{first.worst_index}: backward {first.hand:.6g}, jax.vjp {first.vjp:.6g}; rel. error "
                f"{first.max_rel_error:.1e})"
                + (f"; also {', '.join(o.name for o in bad[1:])}" if bad[1:] else "")
                + (f"; its {' and '.join(good)} agree" if good else ""))


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What `check_layer` and `check_layers` return: `.ok`, `.message`, `.results`, and
    `.culprit` — the first failing layer none of whose sub-layers fail (None if all pass)."""

    results: tuple

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def culprit(self) -> "LayerResult | None":
        failing = [r for r in self.results if not r.ok]
        for r in failing:  # a combinator fails too when a child does: blame the innermost
            if not any(o.path.startswith(r.path + "[") for o in failing):
                return r
        return None

    @property
    def message(self) -> str:
        if self.ok:
            return f"PASS: {len(self.results)} layer backward passes agree with jax.vjp of their forward"
        return "FAIL: " + self.culprit.message

    def __str__(self):
        rows = [("layer", "mode", "output", "max rel err", "fd err", "result")]
        for r in self.results:
            for o in r.outputs:
                rows.append((f"{r.path} {r.layer.split('(')[0]}".strip(), "train" if r.train else "eval", o.name,
                             f"{o.max_rel_error:.1e}", "-" if o.fd_error is None else f"{o.fd_error:.1e}",
                             "ok" if o.ok else "FAIL"))
        widths = [max(len(row[c]) for row in rows) for c in range(6)]
        lines = ["  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines + [self.message])


def check_layer(layer, in_shape, *, key=None, dtype=jnp.float64, batch=3, train=None, int_range=None,
                fd=True, mask=None) -> LayerReport:
    """Check `layer.backward` against `jax.vjp` of `layer.forward` and finite differences.

    Args:
      layer: any object with the layer protocol (see `fnnet.layers.base`).
      in_shape: one example's input shape, without the batch axis.
      key: `jax.random.key` for params, inputs, dy and the layer's own randomness
        (default `jax.random.key(0)`).
      dtype: float64 (the default; turned on for the check) or float32.
      batch: examples in the random input.
      train: the mode(s) to check; default both for a stateful layer, else training.
      int_range: `(lo, hi)` to draw integer inputs in [lo, hi) (an embedding's token
        ids); then no dx is checked.
      fd: also compare with central finite differences.
      mask: a padding mask `(batch, T)` for a layer that takes one (`uses_mask`).

    Returns:
      A `LayerReport`; `.ok`, and `.message` naming dx or the parameter that is wrong.
    """
    key = jax.random.key(0) if key is None else key
    modes = (True, False) if train is None and base.is_stateful(layer) else (True if train is None else train,)
    with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
        k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
        params, _ = layer.init(k_init, tuple(in_shape), dtype)
        state = base.init_state(layer, tuple(in_shape), dtype)
        if int_range is None:
            x = jax.random.normal(k_x, (batch, *in_shape), dtype)
        else:
            x = jax.random.randint(k_x, (batch, *in_shape), *int_range)
        mask = None if mask is None else jnp.asarray(mask, bool)
        return LayerReport(tuple(_check_at(layer, "", params, state, x, k_layer, mode, k_dy, fd, mask)[0]
                                 for mode in modes))


def check_layers(net, params, X, *, state=None, key=None, train=True, dy_key=None, fd=False) -> LayerReport:
    """Check every layer of `net` (combinators too) at the inputs it sees in `net`'s forward
    pass on `X`, with the keys the network gives it; see the module docstring."""
    dy_key = jax.random.key(1) if dy_key is None else dy_key
    if state is None:
        state = net.init_state()
    X = jnp.asarray(X)
    mask = net.input_mask(X)
    results = []

    def walk(layer, path, p, s, x, k):
        """Check `layer` and its sub-layers at input `x`; the layer's output."""
        inside = layer.expand(tuple(x.shape[1:])) if hasattr(layer, "expand") else layer  # TransformerBlock
        stateful = base.is_stateful(inside)
        if isinstance(inside, Sequential):
            a = x  # each child's input; the Sequential itself is checked at x
            for i, (child, pc, sc) in enumerate(zip(inside.layers, p, s if stateful else [{}] * len(p))):
                a = walk(child, f"{path}[{i}]", pc, sc, a, None if k is None else jax.random.fold_in(k, i))
        elif isinstance(inside, Residual):
            for i, (name, child) in enumerate(inside._paths):
                walk(child, f"{path}[{name!r}]", p[name], s[name] if stateful else {}, x,
                     None if k is None else jax.random.fold_in(k, i))
        if isinstance(layer, _Identity) or not path:  # the root Sequential is the network itself
            return x
        result, y = _check_at(layer, path, p, s, x, k, train, jax.random.fold_in(dy_key, len(results)), fd, mask)
        results.append(result)
        return y

    walk(net.root, "", params, state, X, key)
    return LayerReport(tuple(results))


def _check_at(layer, path, params, state, x, key, train, dy_key, fd, mask=None):
    """The `LayerResult` of `layer` at input `x` (its params, state, key and mode), and the
    layer's output there."""
    # dy and the directions from numpy's generator, seeded by dy_key: threefry inside the
    # compiled check would triple its compile time.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(dy_key)).ravel())
    y_type = jax.eval_shape(lambda: base.forward(layer, params, state, x, key, train, mask)[0])
    dy = rng.standard_normal(y_type.shape).astype(y_type.dtype)
    directions = None
    if fd:  # one per params leaf, then x
        leaves = jax.tree.leaves(params) + ([x] if jnp.issubdtype(x.dtype, jnp.inexact) else [])
        directions = [rng.standard_normal(leaf.shape).astype(leaf.dtype) for leaf in leaves]
    y, dparams, dx, ref_params, ref_dx, fds = _outputs(_Static.of(layer), train, params, state, x, key, mask, dy,
                                                       directions)
    dtype = jnp.dtype(y.dtype).name
    rtol, fd_rtol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    named = jax.tree_util.tree_flatten_with_path(ref_params)[0]
    hand_leaves = jax.tree.leaves(dparams)
    if len(hand_leaves) != len(named):
        raise ValueError(f"{path or layer!r}: backward returned {len(hand_leaves)} parameter gradients "
                         f"for {len(named)} parameter leaves; expected a tree like params")
    pairs = [(jax.tree_util.keystr(kp).strip("[]'") if len(kp) == 1 else jax.tree_util.keystr(kp), h, r)
             for (kp, r), h in zip(named, hand_leaves)]
    if ref_dx is not None:
        pairs.append(("dx", dx, ref_dx))
    pairs = [(name, np.asarray(h, np.float64), np.asarray(r, np.float64)) for name, h, r in pairs]
    # A gradient that is 0 in exact arithmetic (a bias before a BatchNorm) is rounding noise in
    # both: each output is measured against at least 1% of the layer's largest one.
    floor = 1e-2 * max((np.abs(r).max(initial=0.0) for _, _, r in pairs), default=0.0)
    opinions = [None] * len(pairs) if fds is None else [_fd_opinion(v, *f) for v, f in zip(directions, fds)]
    time_axis = getattr(layer, "time_axis", None)
    outputs = tuple(_compare(name, hand, ref, rtol, fd_rtol, floor, opinion, time_axis if name == "dx" else None)
                    for (name, hand, ref), opinion in zip(pairs, opinions))
    return LayerResult(path, base.describe(layer), train, outputs), y


class _Static:
    """A layer as a static argument of `jax.jit`: itself where it is hashable (so equal layers
    share one compiled check), else by identity (a user's unhashable layer)."""

    def __init__(self, layer):
        self.layer = layer

    @staticmethod
    def of(layer):
        try:
            hash(layer)
            return layer
        except TypeError:
            return _Static(layer)


def _unwrap(layer):
    return layer.layer if isinstance(layer, _Static) else layer


@functools.partial(jax.jit, static_argnums=(0, 1))
def _outputs(layer, train, params, state, x, key, mask, dy, directions):
    """One compiled program per layer (and shapes): the layer's output y, its backward's
    (dparams, dx) for `dy`, jax.vjp's (ref_params, ref_dx) (dx None for integer inputs),
    and, given `directions` (one per params leaf, then x), per output the direction and
    (ε, ⟨y, dy⟩ at +ε, 0, −ε along it) (see `_fd_opinion`)."""
    layer = _unwrap(layer)
    integer = not jnp.issubdtype(x.dtype, jnp.inexact)

    def y_of(p, x_):
        return base.forward(layer, p, state, x_, key, train, mask)[0]

    y, cache, _ = base.forward(layer, params, state, x, key, train, mask)
    dparams, dx = layer.backward(params, cache, dy)
    if integer:
        ref_params, ref_dx = jax.vjp(lambda p: y_of(p, x), params)[1](dy)[0], None
    else:
        ref_params, ref_dx = jax.vjp(y_of, params, x)[1](dy)
    if directions is None:
        return y, dparams, dx, ref_params, ref_dx, None
    leaves, treedef = jax.tree.flatten(params)
    here = jnp.sum(y * dy)  # ⟨y, dy⟩ at t = 0, the same for every direction
    fds = []
    for i, (leaf, v) in enumerate(zip([*leaves] + ([] if integer else [x]), directions)):
        def inner(t, i=i, leaf=leaf, v=v):
            moved = leaf + t * v
            if i == len(leaves):
                return jnp.sum(y_of(params, moved) * dy)
            return jnp.sum(y_of(treedef.unflatten([moved if j == i else l for j, l in enumerate(leaves)]), x) * dy)

        rms = jnp.sqrt(jnp.mean(leaf ** 2))
        eps = (1e-6 if leaf.dtype == jnp.float64 else 1e-2) * jnp.where(rms > 0, rms, 1.0)  # a leaf of zeros: 1
        up, down = jax.vmap(inner)(jnp.stack([eps, -eps]))  # one copy of the forward in the program, not two
        fds.append((eps, up, here, down))
    return y, dparams, dx, ref_params, ref_dx, fds


def _steps(steps) -> str:
    """Time steps as ranges: (0, 1, 2, 5) → "t = 0–2, 5"."""
    runs, start = [], steps[0]
    for a, b in zip(steps, (*steps[1:], None)):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}–{a}")
            start = b
    return "t = " + ", ".join(runs)


def _compare(name, hand, ref, rtol, fd_rtol, floor, fd, time_axis=None):
    hand, ref = np.asarray(hand, np.float64), np.asarray(ref, np.float64)
    if hand.shape != ref.shape:
        return OutputResult(name, np.inf, (), np.nan, np.nan, None, False)
    diff = np.abs(hand - ref)
    scale = max(np.abs(ref).max(initial=0.0), floor, _TINY)
    worst = np.unravel_index(np.argmax(diff), diff.shape) if diff.size else ()
    rel = float(diff.max(initial=0.0) / scale)
    fd_error = None
    ok = rel <= rtol
    if fd is not None and ok:
        direction, value = fd
        predicted = float((hand * direction).sum())
        # ⟨g, v⟩ for a g of size `scale`: the size an error is measured against
        fd_error = abs(value - predicted) / max(abs(value), abs(predicted), scale * np.linalg.norm(direction), _TINY)
        ok = fd_error <= fd_rtol
    index = tuple(int(i) for i in worst)
    steps = ()
    if time_axis is not None and rel > rtol and diff.ndim > time_axis:
        per_step = np.moveaxis(diff, time_axis, 0).reshape(diff.shape[time_axis], -1).max(axis=1) / scale
        steps = tuple(int(t) for t in np.flatnonzero(per_step > rtol))
    return OutputResult(name, rel, index, float(hand[worst]) if diff.size else 0.0,
                        float(ref[worst]) if diff.size else 0.0, fd_error, ok, steps)


def _fd_opinion(v, eps, up, here, down):
    """(direction v, central difference of ⟨y, dy⟩ along v) for one output, from ⟨y, dy⟩ at
    +ε, 0, −ε; None where the layer has a kink along v (the one-sided differences disagree by
    more than 1%, 20% in float32: a ReLU at 0, a max-pool window of ties), where finite
    differences have no opinion."""
    eps, up, here, down = (float(a) for a in (eps, up, here, down))
    right, left = (up - here) / eps, (here - down) / eps
    # apart by more than a smooth function's curvature over the step (larger in float32)
    if abs(right - left) > (1e-2 if v.dtype == jnp.float64 else 0.2) * max(abs(right), abs(left)):
        return None
    return np.asarray(v, np.float64), (up - down) / (2 * eps)
