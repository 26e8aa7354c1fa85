"""Backpropagation written out by hand: the delta recursion, no autodiff inside."""

import functools

import jax

from fnnet import losses as losses_lib
from fnnet._checks import as_array


def backprop(net, params, X, y, loss, *, state=None, key=None):
    """Batch loss L = (1/m) Σᵢ ℓ(outᵢ, yᵢ) and its gradient ∂L/∂params, by hand.

    For an MLP, layer l computes zˡ = aˡ⁻¹ Wˡ + bˡ and aˡ = f(zˡ), with a⁰ = X.
    Backward, from the loss's own output delta:

        δᴸ     = ∂L/∂zᴸ = f′(zᴸ) ⊙ (1/m) ∂ℓ/∂aᴸ     (= (1/m)(σ(zᴸ) − y) for BCE on logits)
        δˡ     = f′(zˡ) ⊙ (δˡ⁺¹ Wˡ⁺¹ᵀ)
        ∂L/∂Wˡ = aˡ⁻¹ᵀ δˡ,    ∂L/∂bˡ = Σᵢ δˡᵢ

    The 1/m of the batch mean enters once, in δᴸ, so every ∂L/∂Wˡ is the
    minibatch average (1/m) Σᵢ aˡ⁻¹ᵢ δˡᵢ of the textbook's SGD update. Each
    layer's `backward` does one step (see `fnnet.layers.Dense`); the network's
    `Sequential` runs them last to first, and a `Residual` adds its two paths' dx.

    Args:
      net: a `fnnet.Network`.
      params: its parameters, the tree `net.init(key)` returns.
      X: inputs, `(m, *net.in_shape)`.
      y: targets that fit `loss` (e.g. `(m, n_out)` floats, or `(m,)` int labels).
      loss: a `fnnet.losses.Loss` or its name.
      state: the network's state, if it has one (`net.init_state()`, then what the
        previous call returned).
      key: a `jax.random.key` for the network's Dropout layers (training mode).

    Returns:
      `(value, grads)`: the scalar L and a tree with the structure, shapes and
      dtypes of `params`; `(value, grads, state)` for a network with state, the
      state updated by this batch (BatchNorm's running statistics). Compiled with
      `jax.jit` (static `net` and `loss`); safe inside `jax.jit` and `jax.vmap`.

    >>> import jax, jax.numpy as jnp, fnnet
    >>> net = fnnet.mlp([2, 4, 1])
    >>> params = net.init(jax.random.key(0))
    >>> X, y = jnp.ones((8, 2)), jnp.zeros((8, 1))
    >>> value, grads = fnnet.backprop(net, params, X, y, "sigmoid_binary_cross_entropy")
    >>> jax.tree.map(jnp.shape, grads)
    [{'W': (2, 4), 'b': (4,)}, {'W': (4, 1), 'b': (1,)}]
    """
    loss = losses_lib.get(loss)
    X, y = as_array(X), as_array(y)
    net.check(params, X, y, loss, state=state)
    value, grads, state = _backprop(net, loss, params, X, y, state, key)
    return (value, grads, state) if net.has_state else (value, grads)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _backprop(net, loss, params, X, y, state, key):
    value, _, grads, state = loss_output_and_grads(net, loss, params, X, y, state, key)
    return value, grads, state


def loss_output_and_grads(net, loss, params, X, y, state=None, key=None):
    """`(L, out, ∂L/∂params, state)`: `backprop` without its checks, also returning the
    network's output `(m, *out_shape)`, so that metrics reuse the forward pass (pure; not
    jitted). Training mode: batch statistics, dropout drawn from `key`."""
    mask = net.input_mask(X)
    out, caches, state = net.run(params, state, X, key, True, mask)
    # ∂L/∂out: each example's ∂ℓᵢ/∂outᵢ, batch-averaged (with a padding mask: over real tokens)
    value, delta = loss.value_and_delta(out, y, mask)
    grads, _ = net.root.backward(params, caches, delta)
    # As jax.grad does: each gradient in its parameter's dtype, whatever the data's.
    return value, out, jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), state
