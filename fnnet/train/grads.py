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
    `"backprop"` (fnnet's hand-written backward pass) or `"autodiff"` (`jax.grad`)."""
    f = value_output_and_grad(net, losses_lib.get(loss), grad)

    def vg(params, X, y):
        (value, _), grads = f(params, X, y)
        return value, grads

    return vg


def value_output_and_grad(net: Network, loss, grad: str) -> Callable:
    """`f(params, X, y) -> ((L, out), ∂L/∂params)`: also the network's output, so that
    metrics come from the forward pass the gradient already made. Checks params, X and y
    when traced (free per step under `jit`)."""
    if grad == "backprop":
        def f(params, X, y):
            net.check(params, X, y, loss)
            value, out, grads = loss_output_and_grads(net, loss, params, X, y)
            return (value, out), grads
        return f
    if grad == "autodiff":
        def batch_loss(params, X, y):
            out = net.apply(params, X)
            return loss(out, y).mean(), out
        return jax.value_and_grad(batch_loss, has_aux=True)
    raise ValueError(f"unknown grad mode {grad!r}; expected one of {GRAD_MODES}")


def per_example_grads(net: Network, params, X, y, loss, grad="backprop"):
    """∂ℓᵢ/∂params for every example i, by `jax.vmap` over the batch.

    Args:
      net, params: the network and its parameters.
      X: inputs `(m, *net.in_shape)`; y: targets that fit `loss`, `m` first.
      loss: a `Loss` or its name; grad: `"backprop"` or `"autodiff"`.

    Returns:
      A tree like `params` whose leaves have a leading axis of length `m`; their
      mean over that axis is the batch gradient. Compiled once per network, loss,
      grad mode and shapes: later calls only run it. The checks of params, X and y
      run when it is traced, as `train_step`'s do (so, as inside any `jit`, an
      out-of-range label gives NaN gradients for its example rather than an error).
    """
    return _per_example(net, losses_lib.get(loss), grad)(params, as_array(X), as_array(y))


@functools.lru_cache(maxsize=64)
def _per_example(net, loss, grad):
    vg = value_and_grad(net, loss, grad)

    def every_example(params, X, y):
        net.check(params, X, y, loss)  # when traced: once per shape, before anything compiles
        return jax.vmap(lambda x, t: vg(params, x[None], t[None])[1])(X, y)

    return jax.jit(every_example)
