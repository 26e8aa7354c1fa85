"""The gradient of the batch loss, by hand or by `jax.grad`, and per-example gradients."""

import functools
from typing import Callable

import jax

from fnnet import losses as losses_lib
from fnnet._checks import as_array
from fnnet.backprop import loss_output_and_grads
from fnnet.network import Network

GRAD_MODES = ("backprop", "autodiff")


def value_and_grad(net: Network, loss, grad: str = "backprop") -> Callable:
    """`f(params, X, y) -> (L, ∂L/∂params)` for the batch-mean loss L, by `grad` mode:
    `"backprop"` (fnnet's hand-written backward pass) or `"autodiff"` (`jax.grad`); for a
    network with state or dropout, `f(params, X, y, *, state=None, key=None)`, training mode."""
    f = value_output_and_grad(net, losses_lib.get(loss), grad)

    def vg(params, X, y, *, state=None, key=None):
        value, _, grads, _ = f(params, state, X, y, key)
        return value, grads

    return vg


def value_output_and_grad(net: Network, loss, grad: str) -> Callable:
    """`f(params, state, X, y, key) -> (L, out, ∂L/∂params, state)` in training mode: also
    the network's output, so that metrics come from the forward pass the gradient already
    made, and the new state. Checks params, state, X and y when traced (free per step
    under `jit`)."""
    if grad == "backprop":
        def f(params, state, X, y, key):
            net.check(params, X, y, loss, state=state)
            return loss_output_and_grads(net, loss, params, X, y, state, key)
        return f
    if grad == "autodiff":
        def batch_loss(params, state, X, y, key):
            mask = net.input_mask(X)
            out, _, state = net.run(params, state, X, key, True, mask)
            return loss.value_and_delta(out, y, mask)[0], (out, state)

        value_and_grads = jax.value_and_grad(batch_loss, has_aux=True)

        def f(params, state, X, y, key):
            net.check(params, X, y, loss, state=state)
            (value, (out, state)), grads = value_and_grads(params, state, X, y, key)
            return value, out, grads, state
        return f
    raise ValueError(f"unknown grad mode {grad!r}; expected one of {GRAD_MODES}")


def per_example_grads(net: Network, params, X, y, loss, grad="backprop", *, key=None):
    """∂ℓᵢ/∂params for every example i, by `jax.vmap` over the batch.

    Args:
      net, params: the network and its parameters.
      X: inputs `(m, *net.in_shape)`; y: targets that fit `loss`, `m` first.
      loss: a `Loss` or its name; grad: `"backprop"` or `"autodiff"`.
      key: for a network with Dropout: the batch's masks are drawn from it, and
        example i's gradient uses row i of them, so the mean of the per-example
        gradients is the batch gradient with the same key (`grad="backprop"` only:
        the hand-written backward runs on each example's slice of the batch's
        caches).

    Returns:
      A tree like `params` whose leaves have a leading axis of length `m`; their
      mean over that axis is the batch gradient. (With a padding mask, ℓᵢ is the mean
      over example i's nᵢ real tokens and the batch loss the mean over all real tokens:
      the batch gradient is their mean weighted by nᵢ / Σ n.) Compiled once per network, loss,
      grad mode and shapes: later calls only run it. The checks of params, X and y
      run when it is traced, as `train_step`'s do (so, as inside any `jit`, an
      out-of-range label gives NaN gradients for its example rather than an error).

    Raises:
      ValueError: a network with state (BatchNorm normalises over the batch, so one
        example's gradient is not defined by the batch's); Dropout with
        `grad="autodiff"` or without a key.
    """
    if net.has_state:
        raise ValueError(f"per_example_grads: {net!r} has a BatchNorm, which normalises each example "
                         f"with the statistics of the whole batch, so an example's own gradient is not "
                         f"defined; use LayerNorm, or the batch gradient")
    if net.root.uses_key:  # Dropout
        if grad != "backprop" or key is None:
            raise ValueError(f"per_example_grads: the network has Dropout: pass key= (the batch's masks are "
                             f"drawn from it) and grad='backprop' (it reuses each example's row of the "
                             f"batch's masks; autodiff cannot), got grad={grad!r}, key={key!r}")
        return _sliced(net, losses_lib.get(loss))(params, as_array(X), as_array(y), key)
    return _per_example(net, losses_lib.get(loss), grad)(params, as_array(X), as_array(y))


@functools.lru_cache(maxsize=64)
def _per_example(net, loss, grad):
    vg = value_and_grad(net, loss, grad)

    def every_example(params, X, y):
        net.check(params, X, y, loss)  # when traced: once per shape, before anything compiles
        return jax.vmap(lambda x, t: vg(params, x[None], t[None])[1])(X, y)

    return jax.jit(every_example)


@functools.lru_cache(maxsize=64)
def _sliced(net, loss):
    """Per-example gradients from one batch forward: each example's backward on its row of
    every cache (caches hold per-example arrays batch first)."""
    def every_example(params, X, y, key):
        net.check(params, X, y, loss)
        out, caches, _ = net.run(params, None, X, key, True)
        delta = loss.delta(out, y)  # each example's own ∂ℓᵢ/∂outᵢ (a batch of one: no 1/m)

        def one(cache, d):
            cache = jax.tree.map(lambda a: a[None], cache)
            return net.root.backward(params, cache, d[None])[0]

        grads = jax.vmap(one)(caches, delta)
        return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)

    return jax.jit(every_example)
