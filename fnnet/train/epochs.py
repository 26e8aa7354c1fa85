"""Whole epochs fused into one compiled program: `fit`.

The program is a `lax.scan` over blocks of `BLOCK` epochs, each a `lax.scan` over
epochs, each a `lax.scan` over minibatch steps. The loop body is the training step
and nothing else; what a training run also wants is paid once per block, not once
per step: the divergence guard (are the params, the optimizer state and the losses
of the block all finite? if not, the block is undone) and the writes of the
per-epoch history. When a block fails its check, the host re-runs it step by step
from the block's start to name the exact epoch and step, and to hand back the
last finite parameters.
"""

import contextlib
import functools
import warnings
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import losses as losses_lib
from fnnet import parallel
from fnnet._checks import as_array, check_key, host_values, is_int
from fnnet.network import Network
from fnnet.train.step import batch_metrics, check_opt_state, check_optimizer, metric_names, update_fn

BLOCK = 16
"""Epochs between two divergence checks (and history writes) inside the fused loop."""


class Carry(NamedTuple):
    """What the training loop carries from one step to the next: `state` is the network's
    (BatchNorm's running statistics), None — no leaves — for a network without."""

    params: Any
    opt_state: Any
    state: Any = None


class RecompileWarning(UserWarning):
    """`fit` or `fit_ensemble` compiled its program again for a new optimizer object."""


class DivergenceError(FloatingPointError):
    """The loss or the parameters became non-finite during `fit`.

    Attributes:
      epoch, step: where (0-based; `step` counts minibatches within the epoch).
      params, opt_state, state: the last finite ones, from just before that step.
      history: the per-epoch history up to the last complete epoch.
    """

    def __init__(self, epoch, step, params, opt_state, state, history):
        dtype = jax.tree.leaves(params)[0].dtype
        hint = ("float16 underflows below 6e-8, so optimizer constants such as Adam's eps=1e-8 "
                "become 0: use bfloat16 (float32's range) or e.g. optax.adam(lr, eps=1e-4)"
                if dtype == jnp.float16 else "try a lower learning rate")
        super().__init__(
            f"fit: the loss or the parameters became non-finite at epoch {epoch}, step {step}; "
            f"the last finite parameters are in this error's .params ({hint})"
        )
        self.epoch, self.step = epoch, step
        self.params, self.opt_state, self.state, self.history = params, opt_state, state, history


class Schedule(NamedTuple):
    """The static shape of a run: `n` examples in steps of `batch_size`, shuffled or not."""

    n: int
    batch_size: int
    shuffle: bool

    @property
    def steps(self) -> int:
        return self.n // self.batch_size

    def batches(self, key, epoch, data):
        """The minibatches of epoch `epoch`: each array of `data` as `(steps, batch_size, ...)`,
        its rows in the order `jax.random.permutation(fold_in(key, epoch), n)` (if shuffled)."""
        if self.shuffle:
            order = jax.random.permutation(jax.random.fold_in(key, epoch), self.n)
            data = jax.tree.map(lambda a: a[order[: self.steps * self.batch_size]], data)
        return jax.tree.map(lambda a: a.reshape(self.steps, self.batch_size, *a.shape[1:]), data)

    def step_keys(self, key, epoch):
        """`(steps,)` keys for the Dropout of each step of epoch `epoch`: folded from the
        epoch's shuffle key, which they leave as it is, so shuffling is the same with or
        without Dropout."""
        return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(key, epoch),
                                                         1 + jnp.arange(self.steps))


def fit(net: Network, params, data, loss, optimizer, *, epochs: int, batch_size=None, key=None,
        grad="backprop", validation=None, opt_state=None, log_every=None, callback=None,
        initial_epoch=0, return_opt_state=False, mesh=None, metrics=None, state=None):
    """Train for `epochs` epochs, fused into one compiled `lax.scan` (or a few: see log_every).

    Each epoch draws a fresh permutation of the data from `key` on the device and
    takes `n // batch_size` SGD steps on minibatches of exactly `batch_size`
    examples; the `n mod batch_size` examples left over by that permutation are
    dropped for that epoch (a different few each epoch), so every step averages
    over the same number of examples. `batch_size=None` (or n) is full-batch
    training (no shuffling, no key needed). Epoch e shuffles with
    `jax.random.fold_in(key, e)`, so a run continued with `initial_epoch` and the
    saved `opt_state` is bit-identical to an uninterrupted one.

    Args:
      net, params: the network and its starting parameters (not modified).
      data: `(X, y)` with X `(n, *net.in_shape)` and y fitting `loss`.
      loss: a `Loss` or its name.
      optimizer: an optax `GradientTransformation`.
      epochs: number of epochs, ≥ 1.
      batch_size: examples per step (≤ n), or None for the whole data set.
      key: `jax.random` key for shuffling; required when batch_size < n.
      grad: `"backprop"` or `"autodiff"`.
      validation: optional `(X_val, y_val)`, evaluated after every epoch.
      opt_state: optimizer state to continue from (default `optimizer.init(params)`).
      log_every: run the epochs in compiled chunks of this many, calling
        `callback(epoch, history)` on the host after each (epoch = epochs done,
        counting from 0 even when `initial_epoch` > 0). Every chunk of the same
        length runs the same compiled program.
      callback: see `log_every`; e.g. a progress bar.
      initial_epoch: number of the first epoch (to resume a run).
      return_opt_state: also return the final optimizer state.
      mesh: any `jax.sharding.Mesh` with a "data" axis to train data-parallel (see
        `train_step`; without it, a mesh set with `jax.set_mesh` is used): every
        minibatch is split along "data" (batch_size must divide evenly), params and
        optimizer state replicated; the same run as without a mesh, to float
        rounding. Data in host or single-device memory is replicated to every
        device; global arrays (`fnnet.parallel.global_batch`, one share of rows
        per process) are used as they are.
      metrics: the history's metric names, from "loss" and (for classification)
        "accuracy"; default: both.
      state: for a network with state (BatchNorm), the state to start from
        (default `net.init_state()`); training updates it and returns it last.
        With Dropout, `key` is required; each step's masks come from
        `Schedule.step_keys`, folded from the epoch's shuffle key. Validation runs
        in evaluation mode (running statistics, no dropout).

    Returns:
      `(params, history)` (or `(params, opt_state, history)`): final params and a
      dict of numpy arrays of shape `(epochs,)`: the metrics, each the mean over
      the epoch's steps, and "val_loss", "val_accuracy" with `validation`. A network
      with state: the final state last, `(params, history, state)` (or `(params,
      opt_state, history, state)`).

    Raises:
      DivergenceError: the loss or params became non-finite; it names the epoch and
        step and carries the last finite params.

    The compiled program is cached per network, loss, optimizer object, grad mode,
    metrics and shapes: pass the same optimizer object to reuse it across calls
    (a new object for the same setting compiles again, and warns once).
    """
    loss = losses_lib.get(loss)
    check_optimizer(optimizer)
    names = metric_names("fit", loss, metrics)
    X, y = map(as_array, data)
    validation = None if validation is None else tuple(map(as_array, validation))
    if net.has_state and state is None:
        state = net.init_state(jax.tree.leaves(params)[0].dtype)
    net.check(params, X, y, loss, state=state)
    if validation is not None:
        net.check_data(*validation, loss)
    schedule = check_schedule("fit", jnp.shape(X)[0], epochs, batch_size, key, net)
    auto = parallel.resolve("fit", mesh)
    if auto is not None:
        parallel.check_batch("fit", auto, schedule.batch_size)
    log_every = epochs if log_every is None else log_every
    if not is_int(log_every, 1):
        raise ValueError(f"fit: log_every must be a positive int, got {log_every!r}")
    if not is_int(initial_epoch, 0):
        raise ValueError(f"fit: initial_epoch must be an int ≥ 0, got {initial_epoch!r}")
    check_finite("data", (X, y))
    check_finite("validation", validation)
    if opt_state is not None:
        check_opt_state(opt_state, optimizer, params)
    elif log_every < epochs:  # every chunk then passes a state, and runs the same program
        opt_state = _init(optimizer)(params)

    carry, key = Carry(params, opt_state, state), unused_key() if key is None else key
    if auto is not None:
        carry, key, X, y, validation = parallel.place((carry, key, X, y, validation), parallel.replicated(auto))
    chunks, done = [], 0
    while done < epochs:
        length, first = min(log_every, epochs - done), initial_epoch + done
        run = _program(net, loss, optimizer, grad, names, schedule, length, auto)
        with jax.set_mesh(auto) if auto is not None else contextlib.nullcontext():
            new, bad, history = run(carry, key, first, X, y, validation)
            bad, history = jax.device_get((bad, history))
            history = as_history(history, names, validation)
            if bad >= 0:
                error = locate_divergence(net, loss, optimizer, grad, schedule, key, (X, y), new, bad,
                                          min(bad + BLOCK, first + length))
                error.history = _concat([*chunks, {k: v[: error.epoch - first] for k, v in history.items()}])
                raise error
        carry, done = new, done + length
        chunks.append(history)
        if callback is not None:
            callback(done, _concat(chunks))
    history = _concat(chunks)
    out = (carry.params, carry.opt_state, history) if return_opt_state else (carry.params, history)
    return (*out, carry.state) if net.has_state else out


def columns(names, validation) -> tuple:
    """The names of the columns of `epochs_fn`'s history: the loss (the guard needs it) and the
    metrics asked for, then with `validation` the same metrics on it as `val_...`."""
    tracked = names if "loss" in names else ("loss", *names)
    return tracked + (tuple(f"val_{k}" for k in names) if validation is not None else ())


def epochs_fn(net, loss, optimizer, grad, names, schedule: Schedule, n_epochs, mesh=None):
    """Pure `run(carry, key, first_epoch, X, y, val) -> (carry, bad, history)` over `n_epochs`
    epochs numbered from `first_epoch` (see the module docstring).

    `carry.opt_state=None` starts from `optimizer.init(params)`; floating data is cast
    to the params' dtype. `bad` is the first epoch of the first block that became
    non-finite (−1 if none); that block and all after it are undone, so `carry` is
    the state at its start. `history` is `(n_epochs, len(columns(names, val)))`: each
    epoch's means of the metrics over its steps (and on `val`), one row per epoch, so
    that the loop writes one array per epoch. With a `mesh`, each minibatch is split
    along its "data" axis.
    """
    tracked = columns(names, None)
    update = update_fn(net, loss, optimizer, grad, tracked, vector=True)
    dropout = net.root.uses_key  # a layer draws from a key: one per step

    def run(carry, key, first_epoch, X, y, val):
        X, y, val = cast_floating((X, y, val), jax.tree.leaves(carry.params)[0].dtype)
        if carry.opt_state is None:
            carry = carry._replace(opt_state=optimizer.init(carry.params))

        def step(carry, batch):
            (Xb, yb), kb = batch
            if mesh is not None:
                Xb, yb = jax.lax.with_sharding_constraint((Xb, yb), parallel.batch_sharded(mesh))
            params, state, opt_state, means = update(carry.params, carry.state, carry.opt_state, Xb, yb, kb)
            return Carry(params, opt_state, state), means

        def epoch(carry, e):
            keys = schedule.step_keys(key, e) if dropout else None
            # one step per epoch (full batch): unrolled, no inner loop at all
            carry, means = jax.lax.scan(step, carry, (schedule.batches(key, e, (X, y)), keys),
                                        unroll=schedule.steps == 1)
            row = means.mean(axis=0)
            if val is not None:
                out = net.run(carry.params, carry.state, val[0], None, False)[0]  # evaluation mode
                row = jnp.concatenate([row, batch_metrics(loss, names, out, val[1], net.input_mask(val[0]))])
            return carry, row

        def block(state, es):
            """The epochs `es`, then one check: if anything became non-finite, undo the block."""
            carry, bad = state
            new, history = jax.lax.scan(epoch, carry, es)
            ok = _all_finite((new, history[:, tracked.index("loss")])) & (bad < 0)
            carry = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, carry)
            return (carry, jnp.where(ok | (bad >= 0), bad, es[0])), history

        es = first_epoch + jnp.arange(n_epochs)
        full = n_epochs // BLOCK * BLOCK
        state, parts = (carry, jnp.full((), -1, es.dtype)), []
        if full:
            state, history = jax.lax.scan(block, state, es[:full].reshape(-1, BLOCK))
            parts.append(history.reshape(full, -1))
        if full < n_epochs:
            state, history = block(state, es[full:])
            parts.append(history)
        return *state, jnp.concatenate(parts)

    return run


def as_history(matrix, names, validation) -> dict:
    """The history dict of `names` (and `val_` names) from `epochs_fn`'s history matrix
    `(..., epochs, columns)` on the host: numpy views, one per column."""
    return {k: matrix[..., i] for i, k in enumerate(columns(names, validation))
            if k in names or k.startswith("val_")}


def _all_finite(tree):
    return jnp.stack([jnp.isfinite(a).all() for a in jax.tree.leaves(tree)
                      if jnp.issubdtype(a.dtype, jnp.inexact)]).all()


_compiled_settings = {}  # setting without the optimizer -> the optimizer it was first compiled for


@functools.lru_cache(maxsize=64)
def _program(net, loss, optimizer, grad, names, schedule, n_epochs, mesh):
    """`epochs_fn`, jitted once per setting: a second `fit` with the same network, loss,
    optimizer object and shapes reuses the compiled program. Nothing is donated: the
    caller's params and opt_state stay valid, with no copy made to protect them."""
    warn_if_recompiled(("fit", net, loss, grad, names, schedule, n_epochs, mesh), optimizer)
    return jax.jit(epochs_fn(net, loss, optimizer, grad, names, schedule, n_epochs, mesh),
                   out_shardings=None if mesh is None else parallel.replicated(mesh))


def warn_if_recompiled(setting, optimizer):
    """Warn (once per setting) when a new optimizer object compiles a setting again: optax
    optimizers are closures without equality, so two `optax.sgd(0.1)` are two programs."""
    first = _compiled_settings.setdefault(setting, optimizer)
    if first is not optimizer and first is not None:
        _compiled_settings[setting] = None  # once
        warnings.warn(
            f"{setting[0]}: compiling again for a new optimizer object; optax "
            f"optimizers cannot be compared, so each new one compiles anew (about a second). "
            f"Create the optimizer once and pass the same object; for a learning-rate sweep use "
            f"fit_ensemble(..., learning_rates=...)", RecompileWarning, stacklevel=4)


@functools.lru_cache(maxsize=64)
def _init(optimizer):
    return jax.jit(optimizer.init)


@functools.lru_cache(maxsize=64)
def _step(net, loss, optimizer, grad):
    return jax.jit(update_fn(net, loss, optimizer, grad, ("loss",)))


def locate_divergence(net, loss, optimizer, grad, schedule, key, data, carry, start, stop) -> DivergenceError:
    """The `DivergenceError` of the epochs `[start, stop)`, a block that failed its check: re-run
    step by step from `carry`, its state at `start`, to the first non-finite step. (Its
    `history` is left for the caller to fill in.)"""
    step = _step(net, loss, optimizer, grad)
    data = cast_floating(data, jax.tree.leaves(carry.params)[0].dtype)
    if carry.opt_state is None:
        carry = carry._replace(opt_state=_init(optimizer)(carry.params))
    for epoch in range(start, stop):
        batches = schedule.batches(key, epoch, data)
        keys = schedule.step_keys(key, epoch) if net.root.uses_key else None
        for i in range(schedule.steps):
            Xb, yb = jax.tree.map(lambda a: a[i], batches)
            params, state, opt_state, m = step(carry.params, carry.state, carry.opt_state, Xb, yb,
                                               None if keys is None else keys[i])
            if not _all_finite((params, state, opt_state, m["loss"])):
                return DivergenceError(epoch, i, carry.params, carry.opt_state, carry.state, None)
            carry = Carry(params, opt_state, state)
    raise AssertionError("fit: a block failed its finiteness check, but not when re-run")


def check_schedule(where, n, epochs, batch_size, key, net=None) -> Schedule:
    """The validated `Schedule` for `n` examples; `batch_size=None` means full batch. A
    network with Dropout needs a key, whatever the batch."""
    if not is_int(epochs, 1):
        raise ValueError(f"{where}: epochs must be a positive int, got {epochs!r}")
    batch_size = n if batch_size is None else batch_size
    if not (is_int(batch_size, 1) and batch_size <= n):
        raise ValueError(f"{where}: batch_size must be an int in [1, {n}] (the number of examples), "
                         f"got {batch_size!r}")
    if key is not None:
        check_key(where, key)
    elif net is not None and net.root.uses_key:
        raise ValueError(f"{where}: the network has Dropout, which draws its masks from a key: pass "
                         f"key=jax.random.key(...)")
    shuffle = batch_size < n
    if shuffle and key is None:
        raise ValueError(f"{where}: batch_size={batch_size} < {n} examples: pass key=jax.random.key(...) "
                         f"for the on-device shuffling")
    return Schedule(n, batch_size, shuffle)


@functools.cache
def unused_key():
    """The key passed where no shuffling happens (created once, on first use)."""
    return jax.random.key(0)


_finite = weakref.WeakValueDictionary()  # id -> JAX array already found finite (they are immutable)


def check_finite(name, arrays):
    """ValueError naming the first non-finite row of concrete floating arrays (X, y). A JAX
    array cannot change, so one found finite is not read again while it lives (a loop of
    `fit` calls on the same data pays for the check once)."""
    if arrays is None:
        return
    for which, a in zip(("X", "y"), arrays):
        dtype = a.dtype if hasattr(a, "dtype") else np.result_type(a)
        if (isinstance(a, jax.core.Tracer) or not jnp.issubdtype(dtype, jnp.floating)
                or _finite.get(id(a)) is a):
            continue
        values = host_values(a)
        if not np.isfinite(values).all():
            row = int(np.argwhere(~np.isfinite(values))[0][0])
            raise ValueError(f"fit: {name} {which} has non-finite values (first in row {row}: "
                             f"{values[row].tolist()[:8]}); clean or impute them before training")
        if isinstance(a, jax.Array):
            _finite[id(a)] = a


def cast_floating(tree, dtype):
    """Floating arrays of `tree` as `dtype` (labels and other integers unchanged)."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


def _concat(chunks):
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
