"""One training step: the gradient, the optimizer's update, and the metrics asked for."""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fnnet import losses as losses_lib
from fnnet import parallel
from fnnet._checks import tree_mismatch
from fnnet.network import Network
from fnnet.train.grads import value_output_and_grad


def train_step(net: Network, loss, optimizer: optax.GradientTransformation, grad="backprop",
               donate=True, mesh=None, metrics=None) -> Callable:
    """A jitted, pure training step `(params, opt_state, X, y) -> (params, opt_state, metrics)`.

    For a network with state (BatchNorm) the step is `step(params, opt_state, X, y,
    state=state)` and returns the new state last, `(params, opt_state, metrics, state)`;
    a network with Dropout takes `key=` (a new one each step). Training mode: batch
    statistics, dropout on.

    Args:
      net, loss: the network and the loss (a `Loss` or its name).
      optimizer: any optax `GradientTransformation`; `optax.sgd(α)` is the
        textbook update w ← w − α·∂L/∂w with L the batch mean.
      grad: `"backprop"` (hand-written) or `"autodiff"` (`jax.grad`).
      donate: donate `params` and `opt_state` to the step, so XLA updates them in
        place; the arrays passed in are invalid afterwards.
      mesh: any `jax.sharding.Mesh` with a "data" axis (`fnnet.parallel.data_mesh()`,
        `jax.make_mesh(...)` with Explicit or Auto axes, more axes than "data") to run
        data-parallel: X and y split along "data" (the batch must divide evenly),
        params, optimizer state and metrics replicated; the result equals the
        single-device step on the same global batch. Without `mesh`, a mesh set with
        `jax.set_mesh` around the call is used (see `fnnet.parallel.resolve`).
      metrics: names of the metrics to return, from "loss" and, for classification
        losses, "accuracy"; default: all of them. Both come from the forward pass the
        gradient makes anyway.

    Returns:
      `step(params, opt_state, X, y)`, compiled once per input shape (and mesh).
      `metrics` holds the batch values at the params before the update, as device
      scalars.

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
    check_optimizer(optimizer)
    names = metric_names("train_step", loss, metrics)
    update = update_fn(net, loss, optimizer, grad, names)
    donated = (0, 1, 2) if donate else ()  # params, state, opt_state
    plain = jax.jit(update, donate_argnums=donated)
    parallel.resolve("train_step", mesh)  # a bad mesh fails now, not at the first step
    sharded = {}

    def on_mesh(auto):
        """The step compiled for one (Auto) mesh: params replicated, the batch split on "data"."""
        if auto not in sharded:
            replicated, batch = parallel.replicated(auto), parallel.batch_sharded(auto)
            sharded[auto] = jax.jit(update, in_shardings=(replicated, replicated, replicated, batch, batch,
                                                          replicated),
                                    out_shardings=replicated, donate_argnums=donated)
        return sharded[auto]

    def step(params, opt_state, X, y, *, state=None, key=None):
        if mesh is None and jax.sharding.get_abstract_mesh().empty:  # no mesh anywhere: the fast path
            out = plain(params, state, opt_state, X, y, key)
        else:
            auto = parallel.resolve("train_step", mesh)
            if auto is None:
                out = plain(params, state, opt_state, X, y, key)
            else:
                net.check(params, X, y, loss, state=state)  # before any device_put: JAX's errors otherwise
                parallel.check_batch("train_step", auto, jnp.shape(X)[0])
                params, state, opt_state, key = parallel.place((params, state, opt_state, key),
                                                               parallel.replicated(auto))
                X, y = parallel.place((X, y), parallel.batch_sharded(auto))
                with jax.set_mesh(auto):
                    out = on_mesh(auto)(params, state, opt_state, X, y, key)
        params, state, opt_state, metrics = out
        return (params, opt_state, metrics, state) if net.has_state else (params, opt_state, metrics)

    def jitted(mesh=mesh):
        """The compiled step itself (for `.lower(...)`), for `mesh` or one device."""
        auto = parallel.resolve("train_step", mesh)
        return plain if auto is None else on_mesh(auto)

    step.jitted = jitted
    return step


def update_fn(net, loss, optimizer, grad, names, vector=False) -> Callable:
    """The pure step `(params, state, opt_state, X, y, key) -> (params, state, opt_state,
    metrics)`: `metrics` a dict of the named batch means, or with `vector` the
    `(len(names),)` array of them. `state` and `key` may be None (no BatchNorm, no Dropout)."""
    value_output_grad = value_output_and_grad(net, loss, grad)

    def update(params, state, opt_state, X, y, key):
        _, out, grads, state = value_output_grad(params, state, X, y, key)  # checks when traced
        check_opt_state(opt_state, optimizer, params, "train_step")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        means = batch_metrics(loss, names, out, y, net.input_mask(X))
        return (optax.apply_updates(params, updates), state, opt_state,
                means if vector else as_dict(names, means))

    return update


def metric_names(where, loss, metrics) -> tuple:
    """The metric names asked for (default: all that `loss` offers), validated."""
    offered = ("loss",) + (("accuracy",) if loss.accuracy_fn is not None else ())
    if metrics is None:
        return offered
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in names if m not in offered]
    if unknown:
        raise ValueError(f"{where}: unknown metric {unknown[0]!r}; {loss.name} offers {list(offered)}")
    return names


def per_example_metrics(loss, names, out, y, mask=None):
    """`(batch, len(names))`: each example's value of each named metric, in the output's dtype
    (with a padding `mask`, over each example's real tokens)."""
    values = {"loss": loss, "accuracy": loss.accuracy}
    if not names:
        return jnp.zeros((out.shape[0], 0), out.dtype)
    return jnp.stack([values[name](out, y, mask).astype(out.dtype) for name in names], axis=-1)


def batch_metrics(loss, names, out, y, mask=None):
    """`(len(names),)`: the batch means of the named per-example metrics of the output `out`,
    in one reduction over the batch (inside a fused loop, one kernel and one write per step,
    however many metrics)."""
    return per_example_metrics(loss, names, out, y, mask).mean(axis=0)


def as_dict(names, means) -> dict:
    return {name: means[i] for i, name in enumerate(names)}


def evaluate_metrics(net: Network, loss, params, X, y, names=None, *, state=None) -> dict:
    """`{"loss": L, "accuracy": a}` on a batch (accuracy only for classification losses), in
    evaluation mode (a BatchNorm's running statistics from `state`, no dropout)."""
    loss = losses_lib.get(loss)
    names = metric_names("metrics", loss, names)
    net.check(params, X, state=state)
    return as_dict(names, batch_metrics(loss, names, net.run(params, state, X, None, False)[0], y,
                                        net.input_mask(X)))


def check_optimizer(optimizer):
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"expected an optax GradientTransformation such as optax.sgd(0.1), got "
            f"{type(optimizer).__name__} {optimizer!r}"
        )


def check_opt_state(opt_state, optimizer, params, where="fit"):
    mismatch = tree_mismatch(opt_state, jax.eval_shape(optimizer.init, params))
    if mismatch is not None:
        raise ValueError(f"{where}: opt_state does not match this optimizer and params (from another "
                         f"optimizer?): {mismatch.detail}")
