"""Many training runs at once: `fit`'s fused epochs, vmapped over models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import losses as losses_lib
from fnnet._checks import as_array
from fnnet.network import Network
from fnnet.train.epochs import (BLOCK, Carry, as_history, cast_floating, check_schedule, epochs_fn,
                                locate_divergence, unused_key, warn_if_recompiled)
from fnnet.train.step import check_optimizer, metric_names


def fit_ensemble(net: Network, keys, data, loss, optimizer, *, epochs: int, batch_size=None,
                 key=None, grad="backprop", validation=None, learning_rates=None,
                 dtype=jnp.float32, metrics=None):
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
      or −1. A network with state: `(params, history, state)`, the state with the
      model axis too.
    """
    loss = losses_lib.get(loss)
    names = metric_names("fit_ensemble", loss, metrics)
    X, y = map(as_array, data)
    validation = None if validation is None else tuple(map(as_array, validation))
    net.check_data(X, y, loss)
    if validation is not None:
        net.check_data(*validation, loss)
    schedule = check_schedule("fit_ensemble", jnp.shape(X)[0], epochs, batch_size, key, net)
    if learning_rates is None:
        check_optimizer(optimizer)
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
    data = cast_floating((X, y), dtype)
    validation = cast_floating(validation, dtype)
    key = unused_key() if key is None else key
    run = _program(net, loss, opt, grad, names, schedule, epochs, jnp.dtype(dtype), rates is not None)
    carry, start, history = run(keys, rates, key, *data, validation)
    start, history = jax.device_get((start, history))
    history = as_history(history, names, validation)
    diverged_at = np.full(len(start), -1)
    for i in np.flatnonzero(start >= 0):  # rare: name the exact step, as fit does
        error = locate_divergence(net, loss, opt, grad, schedule, key, data, jax.tree.map(lambda a: a[i], carry),
                                  int(start[i]), min(int(start[i]) + BLOCK, epochs))
        diverged_at[i] = error.epoch * schedule.steps + error.step
        carry = jax.tree.map(lambda a, b: a.at[i].set(b), carry, Carry(error.params, error.opt_state, error.state))
    history |= {"diverged_at": diverged_at}
    return (carry.params, history, carry.state) if net.has_state else (carry.params, history)


@functools.lru_cache(maxsize=16)
def _injected(optimizer_factory):
    """`optimizer_factory` with its learning rate in the state, one object per factory."""
    return optax.inject_hyperparams(optimizer_factory)(learning_rate=0.0)


@functools.lru_cache(maxsize=64)
def _program(net, loss, opt, grad, names, schedule, epochs, dtype, sweep):
    """jit(vmap over models) of whole training runs, compiled once per setting."""
    warn_if_recompiled(("fit_ensemble", net, loss, grad, names, schedule, epochs, dtype, sweep), opt)
    run = epochs_fn(net, loss, opt, grad, names, schedule, epochs)

    def one(init_key, rate, key, X, y, validation):
        params = net.init(init_key, dtype)
        opt_state = opt.init(params)
        if sweep:
            opt_state.hyperparams["learning_rate"] = rate
        state = net.init_state(dtype) if net.has_state else None
        return run(Carry(params, opt_state, state), key, 0, X, y, validation)

    return jax.jit(jax.vmap(one, in_axes=(0, 0 if sweep else None, None, None, None, None)))
