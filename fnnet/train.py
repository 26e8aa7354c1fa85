"""Compiled training: one jitted step, whole epochs fused in `lax.scan`, and vmapped runs.

    step = train_step(net, loss, optax.sgd(1.0))               # jitted, pure
    params, opt_state, metrics = step(params, opt_state, X, y)
    params, history = fit(net, params, (X, y), loss, optax.adam(1e-3),
                          epochs=200, batch_size=128, key=key)
    grads = per_example_grads(net, params, X, y, loss)          # leading axis = example
    params, history = fit_ensemble(net, keys, (X, y), loss, optax.sgd, learning_rates=lrs, ...)

`grad="backprop"` uses fnnet's hand-written backward pass, `grad="autodiff"`
uses `jax.grad` of the same loss; both give the same trajectory.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import losses as losses_lib
from fnnet import parallel
from fnnet._checks import host_values, is_int, shape_mismatches, structure_mismatch
from fnnet.backprop import backprop
from fnnet.network import Network

GRAD_MODES = ("backprop", "autodiff")


def value_and_grad(net: Network, loss, grad: str = "backprop") -> Callable:
    """`f(params, X, y) -> (L, ∂L/∂params)` for the batch-mean loss, by `grad` mode."""
    loss = losses_lib.get(loss)
    if grad == "backprop":
        return lambda params, X, y: backprop(net, params, X, y, loss)
    if grad == "autodiff":
        return jax.value_and_grad(lambda params, X, y: loss(net.apply(params, X), y).mean())
    raise ValueError(f"unknown grad mode {grad!r}; expected one of {GRAD_MODES}")


def metrics(net: Network, loss, params, X, y) -> dict:
    """`{"loss": L, "accuracy": a}` on a batch (accuracy only for classification losses)."""
    loss = losses_lib.get(loss)
    out = net.apply(params, X)
    result = {"loss": loss(out, y).mean()}
    accuracy = _accuracy(loss, out, y)
    if accuracy is not None:
        result["accuracy"] = accuracy
    return result


def _accuracy(loss, out, y):
    """Fraction correct for the classification losses on logits, else None."""
    if loss.integer_labels:
        return (jnp.argmax(out, axis=-1) == y).mean()
    if loss is losses_lib.softmax_cross_entropy:
        return (jnp.argmax(out, axis=-1) == jnp.argmax(y, axis=-1)).mean()
    if loss is losses_lib.sigmoid_binary_cross_entropy:
        return ((out > 0) == (y > 0.5)).mean()
    return None


def train_step(net: Network, loss, optimizer: optax.GradientTransformation, grad="backprop",
               donate=True, mesh=None) -> Callable:
    """A jitted, pure training step `(params, opt_state, X, y) -> (params, opt_state, metrics)`.

    Args:
      net, loss: the network and the loss (a `Loss` or its name).
      optimizer: any optax `GradientTransformation`; `optax.sgd(α)` is the
        textbook update w ← w − α·∂L/∂w with L the batch mean.
      grad: `"backprop"` (hand-written) or `"autodiff"` (`jax.grad`).
      donate: donate `params` and `opt_state` to the step, so XLA updates them in
        place; the arrays passed in are invalid afterwards.
      mesh: a `jax.sharding.Mesh` with a "data" axis (`fnnet.parallel.data_mesh()`)
        to run data-parallel: X and y split along it (the batch must divide
        evenly), params, optimizer state and metrics replicated; the result
        equals the single-device step on the same global batch.

    Returns:
      `step(params, opt_state, X, y)`, compiled once per input shape. `metrics`
      holds the batch loss (at the params before the update) and, for
      classification losses, the accuracy, as device scalars.

    >>> import optax, fnnet, jax, jax.numpy as jnp
    >>> net = fnnet.mlp([2, 4, 1])
    >>> optimizer = optax.sgd(1.0)
    >>> step = fnnet.train_step(net, "bce", optimizer)
    >>> params = net.init(jax.random.key(0))
    >>> params, opt_state, m = step(params, optimizer.init(params), jnp.ones((4, 2)), jnp.ones((4, 1)))
    >>> sorted(m)
    ['accuracy', 'loss']
    """
    loss = losses_lib.get(loss)
    _check_optimizer(optimizer)
    update, donated = _update_fn(net, loss, optimizer, grad), (0, 1) if donate else ()
    if mesh is None:
        return jax.jit(update, donate_argnums=donated)
    parallel.check_mesh("train_step", mesh)
    replicated, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step = jax.jit(update, in_shardings=(replicated, replicated, batch, batch), out_shardings=replicated,
                   donate_argnums=donated)

    def sharded_step(params, opt_state, X, y):
        net.check(params, X, y, loss)
        parallel.check_mesh("train_step", mesh, jnp.shape(X)[0])
        params, opt_state = jax.device_put((params, opt_state), replicated)
        return step(params, opt_state, *jax.device_put((X, y), batch))

    sharded_step.jitted = step  # the compiled step itself, e.g. for .lower(...) inspection
    return sharded_step


def _update_fn(net, loss, optimizer, grad):
    """The pure step `(params, opt_state, X, y) -> (params, opt_state, metrics)`."""
    vg = value_and_grad(net, loss, grad)

    def update(params, opt_state, X, y):
        value, grads = vg(params, X, y)  # checks params, X and y (at trace time: free per step)
        _check_opt_state(opt_state, optimizer, params, "train_step")
        batch_metrics = {"loss": value}
        accuracy = _accuracy(loss, net.apply(params, X), y)  # XLA shares backprop's forward
        if accuracy is not None:
            batch_metrics["accuracy"] = accuracy
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, batch_metrics

    return update


def _check_optimizer(optimizer):
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"expected an optax GradientTransformation such as optax.sgd(0.1), got "
            f"{type(optimizer).__name__} {optimizer!r}"
        )


class DivergenceError(FloatingPointError):
    """The loss or the parameters became non-finite during `fit`.

    Attributes:
      epoch, step: where (0-based; `step` counts minibatches within the epoch).
      params, opt_state: the last finite state, from just before that step.
      history: the per-epoch history up to the last complete epoch.
    """

    def __init__(self, epoch, step, params, opt_state, history):
        dtype = jax.tree.leaves(params)[0].dtype
        hint = ("float16 underflows below 6e-8, so optimizer constants such as Adam's eps=1e-8 "
                "become 0: use bfloat16 (float32's range) or e.g. optax.adam(lr, eps=1e-4)"
                if dtype == jnp.float16 else "try a lower learning rate")
        super().__init__(
            f"fit: the loss or the parameters became non-finite at epoch {epoch}, step {step}; "
            f"the last finite parameters are in this error's .params ({hint})"
        )
        self.epoch, self.step = epoch, step
        self.params, self.opt_state, self.history = params, opt_state, history


def _epochs_fn(net, loss, optimizer, grad, n, batch_size, shuffle, n_epochs, mesh=None):
    """Pure `run(params, opt_state, key, first_epoch, X, y, val) -> (params, opt_state, first_bad,
    history)` over `n_epochs` epochs, numbered from `first_epoch`.

    Epoch e shuffles with `fold_in(key, e)`. `opt_state=None` starts from
    `optimizer.init(params)`; floating data is cast to the params' dtype.
    `first_bad` is the global step at which the loss or params first became
    non-finite (−1 if never); from there on updates are skipped, so `params`
    stays the last finite value. With a `mesh`, each minibatch is split along
    its "data" axis.
    """
    update = _update_fn(net, loss, optimizer, grad)
    n_batches = n // batch_size

    def run(params, opt_state, key, first_epoch, X, y, val):
        X, y, val = _cast_floating((X, y, val), jax.tree.leaves(params)[0].dtype)
        opt_state = optimizer.init(params) if opt_state is None else opt_state

        def epoch(state, xs):
            key, e = xs
            if shuffle:
                order = jax.random.permutation(key, n)[: n_batches * batch_size]
                Xe, ye = X[order], y[order]
            else:
                Xe, ye = X, y
            batches = jax.tree.map(lambda a: a.reshape(n_batches, batch_size, *a.shape[1:]), (Xe, ye))

            def step(state, xs):
                (Xb, yb), i = xs
                if mesh is not None:
                    Xb, yb = jax.lax.with_sharding_constraint((Xb, yb), parallel.batch_sharded(mesh))
                params, opt_state, first_bad = state
                new_params, new_opt_state, m = update(params, opt_state, Xb, yb)
                finite = jnp.isfinite(m["loss"]) & jax.tree.reduce(
                    jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), new_params))
                ok = finite & (first_bad < 0)
                keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
                here = (e * n_batches + i).astype(first_bad.dtype)
                first_bad = jnp.where(finite | (first_bad >= 0), first_bad, here)
                return (keep(new_params, params), keep(new_opt_state, opt_state), first_bad), m

            # one minibatch per epoch (full batch): unrolled, no inner loop at all
            state, ms = jax.lax.scan(step, state, (batches, jnp.arange(n_batches)), unroll=n_batches == 1)
            history = jax.tree.map(jnp.mean, ms)
            if val is not None:
                history |= {f"val_{k}": v for k, v in metrics(net, loss, state[0], *val).items()}
            return state, history

        epoch_ids = first_epoch + jnp.arange(n_epochs)
        epoch_keys = (jax.vmap(lambda e: jax.random.fold_in(key, e))(epoch_ids) if shuffle
                      else jnp.broadcast_to(key, (n_epochs,)))  # unused: no shuffling
        state = (params, opt_state, jnp.array(-1, jnp.int32))
        (params, opt_state, first_bad), history = jax.lax.scan(epoch, state, (epoch_keys, epoch_ids))
        return params, opt_state, first_bad, history

    return run


@functools.lru_cache(maxsize=64)
def _compiled_epochs(net, loss, optimizer, grad, n, batch_size, shuffle, n_epochs, mesh=None):
    """`_epochs_fn`, jitted once per setting: a second `fit` with the same network, loss,
    optimizer object and shapes reuses the compiled program. Nothing is donated: the
    caller's params and opt_state stay valid, with no copy made to protect them."""
    return jax.jit(_epochs_fn(net, loss, optimizer, grad, n, batch_size, shuffle, n_epochs, mesh),
                   out_shardings=None if mesh is None else parallel.replicated(mesh))


@functools.cache
def _unused_key():
    """The key passed where no shuffling happens (created once, on first use)."""
    return jax.random.key(0)


def fit(net: Network, params, data, loss, optimizer, *, epochs: int, batch_size=None, key=None,
        grad="backprop", validation=None, opt_state=None, log_every=None, callback=None,
        initial_epoch=0, return_opt_state=False, mesh=None):
    """Train for `epochs` epochs, fused into one compiled `lax.scan` (or a few: see log_every).

    Each epoch draws a fresh permutation of the data from `key` on the device and
    takes `n // batch_size` SGD steps on minibatches of exactly `batch_size`
    examples; the `n mod batch_size` examples left over by that permutation are
    dropped for that epoch (a different few each epoch), so every step averages
    over the same number of examples. `batch_size=None` is full-batch training
    (no shuffling, no key needed). Epoch e shuffles with `jax.random.fold_in(key, e)`,
    so a run continued with `initial_epoch` and the saved `opt_state` is bit-identical
    to an uninterrupted one.

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
        counting from 0 even when `initial_epoch` > 0).
      callback: see `log_every`; e.g. a progress bar.
      initial_epoch: number of the first epoch (to resume a run).
      return_opt_state: also return the final optimizer state.
      mesh: a `jax.sharding.Mesh` with a "data" axis to train data-parallel: every
        minibatch is split along it (batch_size must divide evenly), params and
        optimizer state replicated; the same run as without a mesh, to float
        rounding. Data in host or single-device memory is replicated to every
        device; global arrays (`fnnet.parallel.global_batch`, one share of rows
        per process) are used as they are.

    Returns:
      `(params, history)` (or `(params, opt_state, history)`): final params and a dict of numpy arrays of shape
      `(epochs,)`: "loss" and (for classification) "accuracy", the means over the
      epoch's steps, and "val_loss", "val_accuracy" with `validation`.

    Raises:
      DivergenceError: the loss or params became non-finite; it names the epoch and
        step and carries the last finite params.

    The compiled program is cached per network, loss, optimizer object, grad mode
    and shapes: pass the same optimizer object to reuse it across calls.
    """
    loss = losses_lib.get(loss)
    _check_optimizer(optimizer)
    X, y = data
    n = jnp.shape(X)[0]
    net.check(params, X, y, loss)
    if validation is not None:
        net.check_data(*validation, loss)
    batch_size, shuffle = _check_schedule("fit", n, epochs, batch_size, key)
    if mesh is not None:
        parallel.check_mesh("fit", mesh, batch_size)
    log_every = epochs if log_every is None else log_every
    if not is_int(log_every, 1):
        raise ValueError(f"fit: log_every must be a positive int, got {log_every!r}")
    if not is_int(initial_epoch, 0):
        raise ValueError(f"fit: initial_epoch must be an int ≥ 0, got {initial_epoch!r}")
    for name, arrays in (("data", (X, y)), ("validation", validation)):
        _check_finite(name, arrays)
    if opt_state is not None:
        _check_opt_state(opt_state, optimizer, params)

    if mesh is not None:
        params, opt_state = jax.device_put((params, opt_state), parallel.replicated(mesh))
        X, y, validation = _replicate_local((X, y, validation), mesh)
    key = _unused_key() if key is None else key
    chunks = []
    for start in range(0, epochs, log_every):
        stop = min(start + log_every, epochs)
        run = _compiled_epochs(net, loss, optimizer, grad, n, batch_size, shuffle, stop - start, mesh)
        params, opt_state, first_bad, history = run(params, opt_state, key, initial_epoch + start,
                                                    X, y, validation)
        chunks.append(jax.tree.map(np.asarray, history))
        first_bad = int(first_bad)
        if first_bad >= 0:
            epoch, step = divmod(first_bad, n // batch_size)
            done = _concat(chunks)
            raise DivergenceError(epoch, step, params, opt_state,
                                  {k: v[: epoch - initial_epoch] for k, v in done.items()})
        if callback is not None:
            callback(stop, _concat(chunks))
    if return_opt_state:
        return params, opt_state, _concat(chunks)
    return params, _concat(chunks)


def _check_schedule(where, n, epochs, batch_size, key):
    """Validated `(batch_size, shuffle)` for `n` examples; None means full batch."""
    if not is_int(epochs, 1):
        raise ValueError(f"{where}: epochs must be a positive int, got {epochs!r}")
    batch_size = n if batch_size is None else batch_size
    if not (is_int(batch_size, 1) and batch_size <= n):
        raise ValueError(f"{where}: batch_size must be an int in [1, {n}] (the number of examples), "
                         f"got {batch_size!r}")
    shuffle = batch_size < n
    if shuffle and key is None:
        raise ValueError(f"{where}: batch_size={batch_size} < {n} examples: pass key=jax.random.key(...) "
                         f"for the on-device shuffling")
    return batch_size, shuffle


def _replicate_local(tree, mesh):
    """Arrays this process holds whole, replicated over `mesh`; global arrays as they are."""
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) and not a.is_fully_addressable
                        else jax.device_put(a, parallel.replicated(mesh)), tree)


def _check_finite(name, arrays):
    """ValueError naming the first non-finite row of concrete floating arrays (X, y)."""
    if arrays is None:
        return
    for which, a in zip(("X", "y"), arrays):
        if isinstance(a, jax.core.Tracer):
            continue
        a = host_values(a)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            row = int(np.argwhere(~np.isfinite(a))[0][0])
            raise ValueError(f"fit: {name} {which} has non-finite values (first in row {row}: "
                             f"{a[row].tolist()[:8]}); clean or impute them before training")


def _check_opt_state(opt_state, optimizer, params, where="fit"):
    expected = jax.eval_shape(optimizer.init, params)
    detail = structure_mismatch(opt_state, expected)
    for path, got, want in [] if detail else shape_mismatches(opt_state, expected)[:1]:
        detail = f"{jax.tree_util.keystr(path)} has shape {got}, expected {want}"
    if detail:
        raise ValueError(f"{where}: opt_state does not match this optimizer and params (from another "
                         f"optimizer?): {detail}")


def _cast_floating(tree, dtype):
    """Floating arrays of `tree` as `dtype` (labels and other integers unchanged)."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


def _concat(chunks):
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def per_example_grads(net: Network, params, X, y, loss, grad="backprop"):
    """∂ℓᵢ/∂params for every example i, by `jax.vmap` over the batch.

    Returns a tree like `params` whose leaves have a leading axis of length
    `X.shape[0]`; their mean over that axis is the batch gradient.
    """
    loss = losses_lib.get(loss)
    net.check(params, X)
    vg = value_and_grad(net, loss, grad)
    return jax.jit(jax.vmap(lambda x, t: vg(params, x[None], t[None])[1]))(X, y)


def fit_ensemble(net: Network, keys, data, loss, optimizer, *, epochs: int, batch_size=None,
                 key=None, grad="backprop", validation=None, learning_rates=None,
                 dtype=jnp.float32):
    """Train N models, initialised from N keys, in one compiled call (vmap over models).

    Model i equals `fit(net, net.init(keys[i]), data, loss, optimizer, ...)` with the
    same `key` (all models see the same minibatch order).

    Args:
      keys: `(N,)` `jax.random` keys, one per model's initialisation.
      optimizer: a `GradientTransformation`, or with `learning_rates`, a factory
        taking `learning_rate` (e.g. `optax.adam`): model i then uses
        `learning_rates[i]` (a sweep).
      learning_rates: optional `(N,)` learning rates.
      dtype: of the parameters (floating data is cast to it).
      Others as in `fit`.

    Returns:
      `(params, history)`: params with a leading model axis of length N, and
      history arrays of shape `(N, epochs)`, plus "diverged_at" `(N,)`: the global
      step at which model i became non-finite (its params are from just before),
      or −1.
    """
    loss = losses_lib.get(loss)
    X, y = data
    n = jnp.shape(X)[0]
    net.check_data(X, y, loss)
    if validation is not None:
        net.check_data(*validation, loss)
    batch_size, shuffle = _check_schedule("fit_ensemble", n, epochs, batch_size, key)
    if learning_rates is None:
        _check_optimizer(optimizer)
        opt, rates = optimizer, None
    else:
        if not callable(optimizer) or hasattr(optimizer, "update"):
            raise TypeError("fit_ensemble: with learning_rates, pass an optimizer factory such as "
                            "optax.sgd or optax.adam, not an optimizer")
        opt = _injected(optimizer)
        rates = jnp.asarray(learning_rates, dtype)
        if rates.shape != (len(keys),):
            raise ValueError(f"fit_ensemble: learning_rates has shape {rates.shape}; expected "
                             f"({len(keys)},), one per key")
    X, y = _cast_floating((X, y), dtype)
    validation = _cast_floating(validation, dtype)
    run = _compiled_ensemble(net, loss, opt, grad, n, batch_size, shuffle, epochs,
                             jnp.dtype(dtype), rates is not None)
    params, history = run(keys, rates, _unused_key() if key is None else key, X, y, validation)
    return params, jax.tree.map(np.asarray, history)


@functools.lru_cache(maxsize=16)
def _injected(optimizer_factory):
    """`optimizer_factory` with its learning rate in the state, one object per factory."""
    return optax.inject_hyperparams(optimizer_factory)(learning_rate=0.0)


@functools.lru_cache(maxsize=64)
def _compiled_ensemble(net, loss, opt, grad, n, batch_size, shuffle, epochs, dtype, sweep):
    """jit(vmap over models) of whole training runs, compiled once per setting."""
    run = _epochs_fn(net, loss, opt, grad, n, batch_size, shuffle, epochs)

    def one(init_key, rate, key, X, y, validation):
        params = net.init(init_key, dtype)
        opt_state = opt.init(params)
        if sweep:
            opt_state.hyperparams["learning_rate"] = rate
        params, _, first_bad, history = run(params, opt_state, key, 0, X, y, validation)
        return params, history | {"diverged_at": first_bad}

    return jax.jit(jax.vmap(one, in_axes=(0, 0 if sweep else None, None, None, None, None)))
