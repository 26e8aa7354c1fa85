"""as_jax_function: inside a loss and a model fnnet knows nothing about, its gradient is
jax.grad of the plain forward, and it is fnnet's hand-written backward that computes it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet.layers import Dense
from oracles import tree_rel_error


class DenseDoubledDx(Dense):
    """A wrong backward: dx twice too large. Autodiff of the forward would not notice."""

    def backward(self, params, cache, da):
        grads, dx = super().backward(params, cache, da)
        return grads, 2 * dx


def _users_model(block):
    """A user's model: its own input layer (a matrix A), the fnnet block, then a loss of its own."""
    def loss(theta, X, y):
        h = jnp.tanh(X @ theta["A"])  # below the block: needs the block's dX
        out = block(theta["net"], h)
        return jnp.mean(jnp.sin(out) ** 2 * y[:, None]) + 0.1 * jnp.sum(theta["A"] ** 2)
    return loss


def test_its_gradient_is_jax_grad_of_the_plain_forward_inside_a_users_loss():
    net = fnnet.Network((4,), (Dense(6, "gelu"), fnnet.LayerNorm(), Dense(3)))
    theta = {"A": jax.random.normal(jax.random.key(0), (5, 4), jnp.float64),
             "net": net.init(jax.random.key(1), jnp.float64)}
    X = jax.random.normal(jax.random.key(2), (7, 5), jnp.float64)
    y = jax.random.uniform(jax.random.key(3), (7,), jnp.float64)
    plain = jax.grad(_users_model(lambda p, h: net.apply(p, h)))(theta, X, y)
    f = fnnet.as_jax_function(net)
    ours = jax.jit(jax.grad(_users_model(f)))(theta, X, y)
    assert tree_rel_error(ours, plain) <= 1e-12  # dX reaches A below the block
    # vmap over examples (per-example gradients of the user's loss) agrees as well
    per = jax.vmap(jax.grad(_users_model(f)), in_axes=(None, 0, 0))(theta, X[:, None], y[:, None])
    ref = jax.vmap(jax.grad(_users_model(lambda p, h: net.apply(p, h))), in_axes=(None, 0, 0))(
        theta, X[:, None], y[:, None])
    assert tree_rel_error(per, ref) <= 1e-12
    # fnnet's backward is what runs: a layer whose dx is wrong makes A's gradient wrong
    broken = fnnet.Network((4,), (Dense(6, "gelu"), fnnet.LayerNorm(), DenseDoubledDx(3)))
    wrong = jax.grad(_users_model(fnnet.as_jax_function(broken)))(theta, X, y)
    assert tree_rel_error(wrong["net"][2], plain["net"][2]) <= 1e-12  # the broken layer's own W, b: right
    assert tree_rel_error(wrong["net"][0], plain["net"][0]) > 0.1 and tree_rel_error(wrong["A"], plain["A"]) > 0.1


def test_an_optax_loop_trains_a_token_model_and_the_ids_get_no_gradient():
    net = fnnet.Network((5,), (fnnet.Embedding(6, 8), Dense(8, "tanh"), Dense(6)))
    f = fnnet.as_jax_function(net)
    params = net.init(jax.random.key(0))
    X = jax.random.randint(jax.random.key(1), (16, 5), 0, 6)
    y = (X + 1) % 6  # each token's successor

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(f(p, X), y).mean()

    assert tree_rel_error(jax.grad(loss)(params),
                          jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                              net.apply(p, X), y).mean())(params)) <= 1e-5  # float32
    assert jax.grad(lambda p, X: f(p, X).sum(), allow_int=True)(params, X) is not None
    opt = optax.adam(0.05)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        updates, s = opt.update(g, s)
        return optax.apply_updates(p, updates), s, value

    first = None
    for _ in range(60):
        params, state, value = step(params, state)
        first = value if first is None else first
    assert value < 0.2 * first


def test_stateful_networks_take_and_return_state_and_a_key():
    net = fnnet.Network((3,), (Dense(4), fnnet.BatchNorm(), fnnet.Dropout(0.5), Dense(2)))
    params, state = net.init(jax.random.key(0), jnp.float64), net.init_state(jnp.float64)
    X = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
    key = jax.random.key(2)
    f = fnnet.as_jax_function(net, train=True)
    out, new_state = f(params, state, X, key)
    ref_out, ref_state = net.apply(params, X, state=state, key=key, train=True)
    assert jnp.array_equal(out, ref_out) and tree_rel_error(new_state, ref_state) == 0
    ours = jax.grad(lambda p: jnp.sum(f(p, state, X, key)[0] ** 3))(params)
    plain = jax.grad(lambda p: jnp.sum(net.apply(p, X, state=state, key=key, train=True)[0] ** 3))(params)
    # one scale for all leaves: the bias before the BatchNorm has a gradient of 0 up to rounding
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(plain))
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain))) \
        <= 1e-12 * scale
    with pytest.raises(ValueError, match=r"state does not fit this network"):
        f(params, [{}, {"mean": jnp.zeros(3), "var": jnp.ones(3)}, {}, {}], X, key)
