"""Recurrent layers over sequences: `SimpleRNN`, `LSTM` and `GRU` (PyTorch's equations and gate
orders), with backprop through time written out by hand.

Inputs `x` of shape `(batch, T, n_in)` (per example `(T, n_in)`, time on axis 1: the class
attribute `time_axis`). Each layer computes all input projections `x Wx` in one matmul over the
`batch·T` rows, then runs the recurrence as a `lax.scan` over time. Its backward is a reversed
`lax.scan` of the step's backward that produces each step's pre-activation gradient dzₜ; the
weight gradients and dx are then one matmul each over the stacked rows, outside the scan:

    dWx = Σₜ xₜᵀ dzₜ,   dWh = Σₜ hₜ₋₁ᵀ dzₜ,   db = Σₜ Σ_batch dzₜ,   dxₜ = dzₜ Wxᵀ

Padding mask (`uses_mask = True`): `forward(params, x, mask=m)` with `m` of shape `(batch, T)`,
True at real steps. At a masked step the state is kept (hₜ = hₜ₋₁, cₜ = cₜ₋₁), the sequence
output there is 0, and nothing flows back through that step's input or weights (dxₜ = 0, dzₜ = 0;
dh and dc pass straight through to t − 1). A fully masked sequence gives zeros.

Initial state: `x` may be the pair `(x, h0)` (`SimpleRNN`, `GRU`) or `(x, (h0, c0))` (`LSTM`),
each state `(batch, hidden)`; zeros otherwise. Backward then returns dx of the same structure,
`(dx, dh0)` or `(dx, (dh0, dc0))`.

Params follow fnnet's `x W` convention, so `Wx` and `Wh` are PyTorch's `weight_ih_l0` and
`weight_hh_l0` transposed. Caches hold arrays batch first, like every fnnet cache.
"""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fnnet import activations, initializers
from fnnet._checks import as_array, is_int
from fnnet.layers.base import register, set_fields as _set


class _State(NamedTuple):
    """A recurrent state, or its gradient: h `(batch, hidden)`, and the LSTM's cell c
    `(batch, hidden)` (None for SimpleRNN and GRU)."""

    h: jax.Array
    c: "jax.Array | None" = None


class _Cache(NamedTuple):
    """What backward needs, batch first.

    x: the input `(batch, T, n_in)`; mask: `(batch, T)` bool or None; state0: the initial
    `_State` if one was given (else None, and backward returns dx alone); steps: the layer's
    per-step values, each `(batch, T, ·)`; or, with `checkpoint_every` = k, steps None and
    checkpoints: the state at the start of every k steps, `(batch, ⌈T/k⌉, hidden)` each."""

    x: jax.Array
    mask: "jax.Array | None"
    state0: "_State | None"
    steps: "NamedTuple | None"
    checkpoints: "_State | None" = None


class _RNNSteps(NamedTuple):
    """SimpleRNN's per-step values: h_prev = hₜ₋₁ `(…, hidden)`, z = its pre-activation zₜ."""

    h_prev: jax.Array
    z: jax.Array


class _LSTMSteps(NamedTuple):
    """LSTM's per-step values: hₜ₋₁, cₜ₋₁ `(…, hidden)`; gates = [i, f, g, o] activated
    `(…, 4·hidden)`; tanh_c = tanh(cₜ) `(…, hidden)`."""

    h_prev: jax.Array
    c_prev: jax.Array
    gates: jax.Array
    tanh_c: jax.Array


class _GRUSteps(NamedTuple):
    """GRU's per-step values: hₜ₋₁ `(…, hidden)`; gates = [r, z, n] activated `(…, 3·hidden)`;
    c_n = the n third of hₜ₋₁ Wh + bh `(…, hidden)`."""

    h_prev: jax.Array
    gates: jax.Array
    c_n: jax.Array


def _rows(a):
    """`a` `(..., n)` as a matrix `(rows, n)`: every leading axis (batch, time) a row."""
    return a.reshape(-1, a.shape[-1])


def _time_major(a):
    """`(batch, T, ...)` ↔ `(T, batch, ...)`."""
    return a.swapaxes(0, 1)


def _keep(m, new, old):
    """`new` where the step is real (`m` `(batch,)` True), else `old`; trees of `(batch, n)`."""
    return jax.tree.map(lambda n, o: jnp.where(m[:, None], n, o), new, old)


def _uniform(bound):
    """PyTorch's default for recurrent weights and biases: U(−bound, bound)."""
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


class _Recurrent:
    """The shared driver of the recurrent layers: init, the forward scan, the reversed scan
    of backprop through time and the weight gradients. A layer says what is its own with

        _gates                                  G, the number of gate blocks of hidden units
        _biases                                 its bias names, the input projection's first
        _step(params, state, a_t)               -> (state, steps_t): one step forward
        _step_backward(params, steps_t, d)      -> (dz_t, d_prev): one step backward
        _param_grads(params, cache, dz)         -> (dparams, dx), outside the scan

    (`_step_backward` and `_param_grads` are also where a test plants a bug.)"""

    uses_mask = True
    time_axis = 1
    _gates = 1
    _biases = ("b",)
    _has_cell = False

    def _check_fields(self):
        if not is_int(self.hidden, 1):
            raise ValueError(f"{self!r}: hidden must be a positive int (the size of the state h), "
                             f"got {self.hidden!r}")
        if not isinstance(self.return_sequences, bool):
            raise ValueError(f"{self!r}: return_sequences must be a bool (True: every step's h, "
                             f"(batch, T, hidden); False: the last state, (batch, hidden)), got "
                             f"{self.return_sequences!r}")
        k = self.checkpoint_every
        if k is not None and not is_int(k, 1):
            raise ValueError(f"{self!r}: checkpoint_every must be None (cache every step) or a positive int k "
                             f"(keep every k-th state, recompute the steps between in backward), got {k!r}")
        _set(self, **{name: None if getattr(self, name) is None else initializers.get(getattr(self, name))
                      for name in ("W_init", "Wh_init", "b_init")})

    # ---------- init ----------

    def init(self, key, in_shape, dtype=jnp.float32):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or not all(is_int(n, 1) for n in in_shape):
            raise ValueError(f"{self!r} expects sequences of shape (T, n_in) per example (positive ints), "
                             f"got {in_shape}; give the data as (batch, T, n_in)")
        T, n_in = in_shape
        h, gh = self.hidden, self._gates * self.hidden
        default = _uniform(1 / h ** 0.5)
        shapes = {"Wx": ((n_in, gh), self.W_init), "Wh": ((h, gh), self.Wh_init)}
        shapes |= {name: ((gh,), self.b_init) for name in self._biases}
        keys = jax.random.split(key, len(shapes))
        params = {name: (init or default)(k, shape, dtype) for (name, (shape, init)), k in zip(shapes.items(), keys)}
        return params, (T, h) if self.return_sequences else (h,)

    # ---------- forward ----------

    def _split(self, x):
        """x `(batch, T, n_in)` and the initial `_State` (None if not given) from the input."""
        if not isinstance(x, tuple):
            return x, None
        pair = len(x) == 2 and isinstance(x[1], tuple) and len(x[1]) == 2
        if len(x) == 2 and pair == self._has_cell:
            return x[0], _State(*x[1]) if pair else _State(x[1])
        got = f"a tuple of {len(x)} elements" if len(x) != 2 else (
            f"(x, a tuple of {len(x[1])})" if isinstance(x[1], tuple) else f"(x, {type(x[1]).__name__})")
        expected = "(x, (h0, c0))" if self._has_cell else "(x, h0)"
        raise ValueError(f"{self!r} expects x, or {expected} with an initial state, got {got}")

    def _check_inputs(self, params, x, mask, state0):
        n_in = params["Wx"].shape[0]
        if x.ndim != 3 or x.shape[2] != n_in:
            raise ValueError(f"{self!r} expects x of shape (batch, T, {n_in}) (n_in as its params), got "
                             f"{x.shape}")
        batch, T = x.shape[:2]
        if mask is not None and (mask.shape != (batch, T) or mask.dtype != jnp.bool_):
            raise ValueError(f"{self!r} expects a mask of shape (batch, T) = {(batch, T)} and dtype bool "
                             f"(True at real steps), got {mask.shape} {mask.dtype}; compare with a "
                             f"bool (mask > 0) to convert")
        if state0 is not None:
            for name, s in zip(("h0", "c0"), state0):
                if s is not None and s.shape != (batch, self.hidden):
                    raise ValueError(f"{self!r} expects an initial state {name} of shape (batch, hidden) = "
                                     f"{(batch, self.hidden)}, got {s.shape}")

    def forward(self, params, x, *, mask=None):
        """y and the cache, from x `(batch, T, n_in)` (or with an initial state, see the module
        docstring) and an optional mask `(batch, T)` bool.

        Returns y `(batch, T, hidden)` with `return_sequences`, else `(batch, hidden)` (the state
        after the last real step), in the params' dtype; and the cache for backward."""
        x, state0 = self._split(x)
        mask = None if mask is None else as_array(mask)
        self._check_inputs(params, x, mask, state0)
        dt = params["Wx"].dtype
        batch, T, n_in = x.shape
        a = self._projections(params, x)
        if state0 is None:
            zeros = jnp.zeros((batch, self.hidden), dt)
            state = _State(zeros, zeros if self._has_cell else None)
        else:
            state = jax.tree.map(lambda s: s.astype(dt), state0)
        if self.checkpoint_every:
            return self._forward_checkpointed(params, x, mask, state0, state, a)
        xs = (_time_major(a), None if mask is None else mask.T)
        last, (ys, steps) = lax.scan(lambda s, i: self._scan_step(params, s, i), state, xs)
        y = _time_major(ys) if self.return_sequences else last.h
        return y, _Cache(x, mask, state0, jax.tree.map(_time_major, steps))

    def _projections(self, params, x):
        """Every step's x Wx + b at once, `(batch, T, G·hidden)`: one matmul over the batch·T rows."""
        batch, T, _ = x.shape
        b = params[self._biases[0]]
        return (_rows(x.astype(params["Wx"].dtype)) @ params["Wx"] + b[None, :]).reshape(batch, T, -1)

    def _scan_step(self, params, state, inputs, keep_steps=True):
        """One step of the forward scan: (new state, (y_t or None, the step's values or None))."""
        a_t, m_t = inputs
        new, steps_t = self._step(params, state, a_t)
        if m_t is not None:
            new = _keep(m_t, new, state)
            y_t = jnp.where(m_t[:, None], new.h, 0)
        else:
            y_t = new.h
        return new, (y_t if self.return_sequences else None, steps_t if keep_steps else None)

    def _segments(self, x, mask, *arrays):
        """Time cut into ⌈T/k⌉ segments of k = `checkpoint_every` steps, the last padded with
        masked steps (which keep the state and pass no gradient): the mask `(n, k, batch)` and
        each of `arrays` `(batch, T, ·)` as `(n, k, batch, ·)`."""
        k = self.checkpoint_every
        batch, T = x.shape[:2]
        n = -(-T // k)
        mask = jnp.ones((batch, T), bool) if mask is None else mask
        cut = lambda v: _time_major(jnp.pad(v, ((0, 0), (0, n * k - T)) + ((0, 0),) * (v.ndim - 2))).reshape(  # noqa: E731
            n, k, *v.shape[:1], *v.shape[2:])
        return cut(mask), *(None if v is None else cut(v) for v in arrays)

    def _forward_checkpointed(self, params, x, mask, state0, state, a):
        """The forward scan as ⌈T/k⌉ segments of k steps, keeping only each segment's first state."""
        m, a = self._segments(x, mask, a)

        def segment(state, inputs):
            last, (ys, _) = lax.scan(lambda s, i: self._scan_step(params, s, i, keep_steps=False), state, inputs)
            return last, (ys, state)

        last, (ys, starts) = lax.scan(segment, state, (a, m))
        T = x.shape[1]
        y = _time_major(ys.reshape(-1, *ys.shape[2:])[:T]) if self.return_sequences else last.h
        return y, _Cache(x, mask, state0, None, jax.tree.map(_time_major, starts))

    # ---------- backward ----------

    def backward(self, params, cache, dy):
        """Backprop through time from dy = ∂L/∂y (the shape of y).

        Returns dparams (a tree like params) and dx `(batch, T, n_in)` (or `(dx, dh0)`,
        `(dx, (dh0, dc0))` when the forward was given an initial state)."""
        dt = params["Wx"].dtype
        dy = dy.astype(dt)
        batch = cache.x.shape[0]
        zeros = jnp.zeros((batch, self.hidden), dt)
        zero_c = zeros if self._has_cell else None
        # Without return_sequences only the last state is an output: its dy starts the carry.
        d_last = _State(zeros, zero_c) if self.return_sequences else _State(dy, zero_c)

        if cache.checkpoints is not None:
            dparams, dx, d0 = self._backward_checkpointed(params, cache, dy, d_last)
        else:
            xs = (_time_major(dy) if self.return_sequences else None,
                  None if cache.mask is None else cache.mask.T,
                  jax.tree.map(_time_major, cache.steps))
            d0, dz = lax.scan(lambda d, i: self._scan_step_back(params, d, i), d_last, xs, reverse=True)
            dparams, dx = self._param_grads(params, cache, _time_major(dz))
        dparams = {name: g.astype(params[name].dtype) for name, g in dparams.items()}
        dx = dx.astype(cache.x.dtype)
        if cache.state0 is None:
            return dparams, dx
        d0 = jax.tree.map(lambda g, s: g.astype(s.dtype), d0, cache.state0)
        return dparams, (dx, (d0.h, d0.c) if self._has_cell else d0.h)

    def _scan_step_back(self, params, d, inputs):
        """One step of the reversed scan: (the carried gradient for t − 1, dzₜ)."""
        dy_t, m_t, steps_t = inputs
        if dy_t is not None:  # the output at a masked step is the constant 0
            d = d._replace(h=d.h + (dy_t if m_t is None else jnp.where(m_t[:, None], dy_t, 0)))
        dz_t, d_prev = self._step_backward(params, steps_t, d)
        if m_t is not None:
            dz_t = jnp.where(m_t[:, None], dz_t, 0)
            d_prev = _keep(m_t, d_prev, d)
        return d_prev, dz_t

    def _backward_checkpointed(self, params, cache, dy, d_last):
        """Backprop through time segment by segment, last first: recompute the segment's k
        steps from its kept first state, run them backward, and add their weight gradients;
        only one segment's steps exist at a time. (dparams, dx, the carried gradient at t = 0)."""
        x = cache.x
        a = self._projections(params, x)
        m, a, dys, xs = self._segments(x, cache.mask, a, dy if self.return_sequences else None, x)
        starts = jax.tree.map(_time_major, cache.checkpoints)
        zeros = jax.tree.map(jnp.zeros_like, {n: p for n, p in params.items()})

        def segment(carry, inputs):
            d, grads = carry
            a_s, m_s, dy_s, x_s, start = inputs
            _, (_, steps) = lax.scan(lambda s, i: self._scan_step(params, s, i), start, (a_s, m_s))
            d, dz = lax.scan(lambda d, i: self._scan_step_back(params, d, i), d, (dy_s, m_s, steps), reverse=True)
            seg = _Cache(_time_major(x_s), None, None, jax.tree.map(_time_major, steps))
            dp, dx_s = self._param_grads(params, seg, _time_major(dz))
            return (d, jax.tree.map(jnp.add, grads, dp)), dx_s

        (d0, dparams), dxs = lax.scan(segment, (d_last, zeros), (a, m, dys, xs, starts), reverse=True)
        dx = dxs.transpose(1, 0, 2, 3).reshape(x.shape[0], -1, x.shape[2])[:, :x.shape[1]]
        return dparams, dx, d0

    def _param_grads(self, params, cache, dz):
        """dparams and dx from every step's dz `(batch, T, G·hidden)`, one matmul each over the
        `batch·T` rows: dWx = Σ xₜᵀ dzₜ, dWh = Σ hₜ₋₁ᵀ dzₜ, db = Σ dzₜ, dx = dz Wxᵀ."""
        rows = _rows(dz)
        x = cache.x.astype(dz.dtype)
        dparams = {"Wx": _rows(x).T @ rows, "Wh": _rows(cache.steps.h_prev).T @ rows, "b": rows.sum(axis=0)}
        return dparams, (rows @ params["Wx"].T).reshape(x.shape)


@register
@dataclass(frozen=True)
class SimpleRNN(_Recurrent):
    """Elman recurrent layer (PyTorch's `nn.RNN`): hₜ = f(xₜ Wx + hₜ₋₁ Wh + b), h₋₁ = h0 or 0.

    Args:
      hidden: the size of the state h.
      activation: name or `fnnet.activations.Activation` (f; PyTorch's `nn.RNN` has tanh or relu).
      return_sequences: True: y is every hₜ, `(batch, T, hidden)`; False: the last, `(batch, hidden)`.
      W_init, Wh_init, b_init: names or `fnnet.initializers.Initializer`s for Wx, Wh and b; None
        (the default) is PyTorch's U(±1/√hidden) for each.
      checkpoint_every: None caches every step for backward (T steps of values); k keeps only
        every k-th state and recomputes the k steps between them in backward (⌈T/k⌉ states
        cached, about one more forward pass of time).

    Params `{"Wx": (n_in, hidden), "Wh": (hidden, hidden), "b": (hidden,)}` (PyTorch's b_ih + b_hh).
    Forward, per step, on xₜ `(batch, n_in)`:

        zₜ = xₜ Wx + hₜ₋₁ Wh + b,   hₜ = f(zₜ)              (batch, hidden)

    Backward, t = T−1 … 0, from dh = dyₜ + the carried dhₜ:

        dzₜ = f′(zₜ) ⊙ dh,   dhₜ₋₁ = dzₜ Whᵀ

    and dWx, dWh, db, dx from the stacked dzₜ (see the module docstring).

    >>> rnn = SimpleRNN(4)
    >>> params, out_shape = rnn.init(jax.random.key(0), (5, 3), jnp.float32)
    >>> y, cache = rnn.forward(params, jnp.ones((2, 5, 3)))
    >>> y.shape, out_shape, rnn.backward(params, cache, jnp.ones_like(y))[1].shape
    ((2, 5, 4), (5, 4), (2, 5, 3))
    """

    hidden: int
    activation: activations.Activation = activations.tanh
    return_sequences: bool = True
    W_init: "initializers.Initializer | None" = None
    Wh_init: "initializers.Initializer | None" = None
    b_init: "initializers.Initializer | None" = None
    checkpoint_every: "int | None" = None

    def __post_init__(self):
        self._check_fields()
        _set(self, activation=activations.get(self.activation))

    def _step(self, params, state, a_t):
        z = a_t + state.h @ params["Wh"]
        return _State(self.activation(z)), _RNNSteps(state.h, z)

    def _step_backward(self, params, s, d):
        dz = self.activation.backward(s.z, d.h)
        return dz, _State(dz @ params["Wh"].T)


@register
@dataclass(frozen=True)
class LSTM(_Recurrent):
    """Long short-term memory (PyTorch's `nn.LSTM`), gates i, f, g, o in that order.

    Args:
      hidden: the size of the states h and c.
      return_sequences: True: y is every hₜ, `(batch, T, hidden)`; False: the last, `(batch, hidden)`.
      W_init, Wh_init, b_init: names or `fnnet.initializers.Initializer`s for Wx, Wh and b; None
        (the default) is PyTorch's U(±1/√hidden) for each.
      checkpoint_every: None caches every step for backward (T steps of values); k keeps only
        every k-th state and recomputes the k steps between them in backward (⌈T/k⌉ states
        cached, about one more forward pass of time).

    Params `{"Wx": (n_in, 4·hidden), "Wh": (hidden, 4·hidden), "b": (4·hidden,)}`, each 4·hidden
    axis the blocks [i, f, g, o]; b is PyTorch's b_ih + b_hh. Forward, per step:

        z = xₜ Wx + hₜ₋₁ Wh + b                                (batch, 4·hidden)
        i, f, o = σ(zᵢ), σ(z_f), σ(z_o);  g = tanh(z_g)         (batch, hidden) each
        cₜ = f ⊙ cₜ₋₁ + i ⊙ g,   hₜ = o ⊙ tanh(cₜ)

    Backward, t = T−1 … 0, from dh = dyₜ + the carried dhₜ and the carried dcₜ:

        do = dh ⊙ tanh(cₜ);  dc = dcₜ + dh ⊙ o ⊙ (1 − tanh² cₜ)
        di = dc ⊙ g;  dg = dc ⊙ i;  df = dc ⊙ cₜ₋₁;  dcₜ₋₁ = dc ⊙ f
        dzₜ = [di·i(1−i), df·f(1−f), dg·(1−g²), do·o(1−o)],   dhₜ₋₁ = dzₜ Whᵀ

    and dWx, dWh, db, dx from the stacked dzₜ (see the module docstring).

    >>> lstm = LSTM(4, return_sequences=False)
    >>> params, out_shape = lstm.init(jax.random.key(0), (5, 3), jnp.float32)
    >>> h0 = c0 = jnp.zeros((2, 4))
    >>> y, cache = lstm.forward(params, (jnp.ones((2, 5, 3)), (h0, c0)))
    >>> dparams, (dx, (dh0, dc0)) = lstm.backward(params, cache, jnp.ones_like(y))
    >>> y.shape, out_shape, dx.shape, dc0.shape
    ((2, 4), (4,), (2, 5, 3), (2, 4))
    """

    hidden: int
    return_sequences: bool = True
    W_init: "initializers.Initializer | None" = None
    Wh_init: "initializers.Initializer | None" = None
    b_init: "initializers.Initializer | None" = None
    checkpoint_every: "int | None" = None

    _gates = 4
    _has_cell = True

    def __post_init__(self):
        self._check_fields()

    def _step(self, params, state, a_t):
        h = self.hidden
        z = a_t + state.h @ params["Wh"]
        i, f, o = (jax.nn.sigmoid(z[:, k * h:(k + 1) * h]) for k in (0, 1, 3))
        g = jnp.tanh(z[:, 2 * h:3 * h])
        c = f * state.c + i * g
        tanh_c = jnp.tanh(c)
        steps = _LSTMSteps(state.h, state.c, jnp.concatenate([i, f, g, o], axis=1), tanh_c)
        return _State(o * tanh_c, c), steps

    def _step_backward(self, params, s, d):
        h = self.hidden
        i, f, g, o = (s.gates[:, k * h:(k + 1) * h] for k in range(4))
        do = d.h * s.tanh_c
        dc = d.c + d.h * o * (1 - s.tanh_c ** 2)
        di, dg, df = dc * g, dc * i, dc * s.c_prev
        dz = jnp.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        return dz, _State(dz @ params["Wh"].T, dc * f)


@register
@dataclass(frozen=True)
class GRU(_Recurrent):
    """Gated recurrent unit (PyTorch's `nn.GRU`), gates r, z, n in that order.

    Args:
      hidden: the size of the state h.
      return_sequences: True: y is every hₜ, `(batch, T, hidden)`; False: the last, `(batch, hidden)`.
      W_init, Wh_init, b_init: names or `fnnet.initializers.Initializer`s for Wx, Wh and both
        biases; None (the default) is PyTorch's U(±1/√hidden) for each.
      checkpoint_every: None caches every step for backward (T steps of values); k keeps only
        every k-th state and recomputes the k steps between them in backward (⌈T/k⌉ states
        cached, about one more forward pass of time).

    Params `{"Wx": (n_in, 3·hidden), "Wh": (hidden, 3·hidden), "bx": (3·hidden,), "bh": (3·hidden,)}`,
    each 3·hidden axis the blocks [r, z, n]; bx and bh are PyTorch's b_ih and b_hh (they differ
    in n's equation, so they stay two). Forward, per step:

        a = xₜ Wx + bx,  c = hₜ₋₁ Wh + bh                       (batch, 3·hidden), thirds r, z, n
        r = σ(a_r + c_r);  z = σ(a_z + c_z);  n = tanh(a_n + r ⊙ c_n)
        hₜ = (1 − z) ⊙ n + z ⊙ hₜ₋₁

    Backward, t = T−1 … 0, from dh = dyₜ + the carried dhₜ:

        dn = dh ⊙ (1 − z);  dâ_n = dn ⊙ (1 − n²);  dâ_r = dâ_n ⊙ c_n ⊙ r(1−r)
        dâ_z = dh ⊙ (hₜ₋₁ − n) ⊙ z(1−z)
        daₜ = [dâ_r, dâ_z, dâ_n],  dcₜ = [dâ_r, dâ_z, dâ_n ⊙ r],   dhₜ₋₁ = dh ⊙ z + dcₜ Whᵀ

    then over the stacked steps dWx = Σ xₜᵀ daₜ, dbx = Σ daₜ, dx = da Wxᵀ, dWh = Σ hₜ₋₁ᵀ dcₜ,
    dbh = Σ dcₜ (the scan's dzₜ is daₜ; dcₜ follows from it and the cached r).

    >>> gru = GRU(4)
    >>> params, out_shape = gru.init(jax.random.key(0), (5, 3), jnp.float32)
    >>> y, cache = gru.forward(params, jnp.ones((2, 5, 3)), mask=jnp.arange(5)[None, :] < jnp.array([[5], [2]]))
    >>> y.shape, bool((y[1, 2:] == 0).all())
    ((2, 5, 4), True)
    """

    hidden: int
    return_sequences: bool = True
    W_init: "initializers.Initializer | None" = None
    Wh_init: "initializers.Initializer | None" = None
    b_init: "initializers.Initializer | None" = None
    checkpoint_every: "int | None" = None

    _gates = 3
    _biases = ("bx", "bh")

    def __post_init__(self):
        self._check_fields()

    def _step(self, params, state, a_t):
        h = self.hidden
        c = state.h @ params["Wh"] + params["bh"][None, :]
        r = jax.nn.sigmoid(a_t[:, :h] + c[:, :h])
        z = jax.nn.sigmoid(a_t[:, h:2 * h] + c[:, h:2 * h])
        c_n = c[:, 2 * h:]
        n = jnp.tanh(a_t[:, 2 * h:] + r * c_n)
        steps = _GRUSteps(state.h, jnp.concatenate([r, z, n], axis=1), c_n)
        return _State((1 - z) * n + z * state.h), steps

    def _step_backward(self, params, s, d):
        h = self.hidden
        r, z, n = (s.gates[:, k * h:(k + 1) * h] for k in range(3))
        da_n = d.h * (1 - z) * (1 - n ** 2)
        da_r = da_n * s.c_n * r * (1 - r)
        da_z = d.h * (s.h_prev - n) * z * (1 - z)
        dc = jnp.concatenate([da_r, da_z, da_n * r], axis=1)
        return jnp.concatenate([da_r, da_z, da_n], axis=1), _State(d.h * z + dc @ params["Wh"].T)

    def _param_grads(self, params, cache, da):
        h = self.hidden
        r = cache.steps.gates[..., :h]
        dc = jnp.concatenate([da[..., :2 * h], da[..., 2 * h:] * r], axis=-1)
        rows_a, rows_c = _rows(da), _rows(dc)
        x = cache.x.astype(da.dtype)
        dparams = {"Wx": _rows(x).T @ rows_a, "Wh": _rows(cache.steps.h_prev).T @ rows_c,
                   "bx": rows_a.sum(axis=0), "bh": rows_c.sum(axis=0)}
        return dparams, (rows_a @ params["Wx"].T).reshape(x.shape)
