"""An fnnet network as a plain JAX function whose VJP is fnnet's hand-written backward.

`as_jax_function(net)` gives `f(params, X) -> out` for any JAX code: `jax.grad` of a loss of
the user's own making, an optax loop, or a Flax or Equinox model that embeds the network as
one block. Its forward is the network's; its VJP (a `jax.custom_vjp`) runs the layers'
backward passes, the same code `fnnet.backprop` runs and `fnnet.check_grads` verifies, so the
larger model trains on fnnet's verified gradients, including the gradient with respect to X
for what lies below it.
"""

import jax

from fnnet.network import Network


def as_jax_function(net: Network, *, train: bool = False):
    """`net` as a JAX function with fnnet's backward as its VJP.

    Args:
      net: a `fnnet.Network`.
      train: the mode, a static bool (training: batch statistics, dropout).

    Returns:
      For a network without state or randomness, `f(params, X) -> out`, `out` of shape
      `(batch, *net.out_shape)`. For one with a BatchNorm or a Dropout, part 1's
      convention: `f(params, state, X, key) -> (out, new_state)` (state None and key None
      where the network has none). Differentiable in `params` and X (a float X; integer
      token ids get no gradient), under `jit` and `vmap` too.

    >>> import jax, jax.numpy as jnp, fnnet
    >>> net = fnnet.mlp([3, 4, 2])
    >>> f = fnnet.as_jax_function(net)
    >>> params = net.init(jax.random.key(0))
    >>> grads = jax.grad(lambda p, X: jnp.sin(f(p, X)).sum())(params, jnp.ones((5, 3)))
    >>> jax.tree.map(jnp.shape, grads)
    [{'W': (3, 4), 'b': (4,)}, {'W': (4, 2), 'b': (2,)}]
    """

    @jax.custom_vjp
    def f(params, state, X, key):
        out, _, new_state = net.run(params, state, X, key, train)
        return out, new_state

    def f_fwd(params, state, X, key):
        out, caches, new_state = net.run(params, state, X, key, train)
        return (out, new_state), (params, caches, X)

    def f_bwd(residuals, cotangents):
        params, caches, X = residuals
        d_out, _ = cotangents  # the new state is not differentiated: it is running statistics
        grads, dX = net.root.backward(params, caches, d_out)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        dX = None if dX is None or not jax.numpy.issubdtype(X.dtype, jax.numpy.inexact) else dX.astype(X.dtype)
        return grads, None, dX, None

    f.defvjp(f_fwd, f_bwd)

    if net.has_state or net.root.uses_key:
        def stateful(params, state, X, key=None):
            net.check(params, X, state=state)
            return f(params, state, X, key)
        return stateful

    def stateless(params, X):
        net.check(params, X)
        return f(params, None, X, None)[0]
    return stateless
