"""Each layer's hand-written backward against jax.vjp of its own forward (float64)."""

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import activations
from oracles import tree_rel_error

LAYERS = [
    fnnet.Dense(5),
    fnnet.Dense(3, "relu", W_init="he_normal"),
    fnnet.Dense(1, "sigmoid", b_init="textbook"),
    fnnet.Dense(6, activations.elu.replace(alpha=0.3)),
    fnnet.Activation("tanh"),
    fnnet.Activation("gelu_exact"),
]


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_backward_equals_vjp(layer):
    kp, kx, kd = jax.random.split(jax.random.key(0), 3)
    params, out_shape = layer.init(kp, (4,), jnp.float64)
    x = jax.random.normal(kx, (7, 4), jnp.float64)
    y, cache = layer.forward(params, x)
    assert y.shape == (7, *out_shape)  # the shape init declares is the shape forward makes
    dy = jax.random.normal(kd, y.shape, jnp.float64)
    dparams, dx = layer.backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
    ref_dparams, ref_dx = vjp(dy)
    assert tree_rel_error((dparams, dx), (ref_dparams, ref_dx)) <= 1e-12


def test_dense_backward_is_the_delta_step():
    # δ = f′(z) ⊙ da, dW = xᵀδ, db = Σδ, dx = δWᵀ, written out independently.
    layer = fnnet.Dense(3, "tanh")
    params, _ = layer.init(jax.random.key(1), (2,), jnp.float64)
    x = jnp.array([[1.0, -2.0], [0.5, 0.25]])
    da = jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    z = x @ params["W"] + params["b"][None]
    delta = (1 - jnp.tanh(z) ** 2) * da
    dparams, dx = layer.backward(params, layer.forward(params, x)[1], da)
    assert tree_rel_error(dparams, {"W": x.T @ delta, "b": delta.sum(0)}) <= 1e-15
    assert tree_rel_error(dx, delta @ params["W"].T) <= 1e-15


@pytest.mark.parametrize("in_shape", [(4,), (5, 4), (2, 3, 4)], ids=str)
def test_dense_acts_on_the_last_axis_of_any_rank(in_shape):
    """On (batch, T, n_in) and beyond: every position through the same map, as a Dense on the
    positions one by one; the backward sums dW and db over all of them (vs jax.vjp)."""
    layer = fnnet.Dense(3, "tanh")
    params, out_shape = layer.init(jax.random.key(0), in_shape, jnp.float64)
    assert params["W"].shape == (4, 3) and out_shape == (*in_shape[:-1], 3)
    x = jax.random.normal(jax.random.key(1), (2, *in_shape), jnp.float64)
    y, cache = layer.forward(params, x)
    rows = layer.forward(params, x.reshape(-1, 4))[0]  # every position as an example of its own
    assert jnp.array_equal(y, rows.reshape(*x.shape[:-1], 3))
    dy = jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
    assert tree_rel_error(layer.backward(params, cache, dy), vjp(dy)) <= 1e-12


def test_a_forgotten_flatten_is_named_by_the_loss():
    net = fnnet.Network((6, 6, 1), (fnnet.Conv2D(4, 3), fnnet.Dense(10)))  # no Flatten before the Dense
    params, X = net.init(jax.random.key(0)), jnp.ones((5, 6, 6, 1))
    for loss, y in (("softmax_cross_entropy_with_integer_labels", jnp.zeros(5, jnp.int32)), ("mse", jnp.zeros((5, 10)))):
        with pytest.raises(ValueError, match=r"output has shape \(5, 6, 6, 10\).*the output keeps the axes \(6, 6\) "
                                             r"of each example: for one output per example put a fnnet.Flatten\(\)"):
            fnnet.backprop(net, params, X, y, loss)


def test_dense_params_and_dtypes():
    params, out_shape = fnnet.Dense(4).init(jax.random.key(0), (3,), jnp.float32)
    assert out_shape == (4,)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == {
        "W": ((3, 4), jnp.float32), "b": ((4,), jnp.float32)}


def test_layers_are_hashable_static_values():
    assert fnnet.Dense(4, "relu") == fnnet.Dense(4, activations.relu)
    assert hash(fnnet.Dense(4, "relu")) == hash(fnnet.Dense(4, activations.relu))
    assert fnnet.Dense(4, "relu") != fnnet.Dense(4, "tanh")
    assert repr(fnnet.Dense(4, "relu")) == (
        "Dense(n_out=4, activation=relu, W_init=lecun_normal, b_init=zeros)")


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: fnnet.Dense(0), ValueError, r"n_out must be a positive int, got 0"),
        (lambda: fnnet.Dense(2.5), ValueError, r"n_out must be a positive int, got 2.5"),
        (lambda: fnnet.Dense(3, "rleu"), ValueError, r"unknown activation 'rleu'; expected one of: .*relu"),
        (lambda: fnnet.Dense(3, jnp.sin), TypeError, r"expected an activation name .*Activation\(\.\.\.\)"),
        (lambda: fnnet.Dense(3, W_init="kaiming"), ValueError, r"unknown initializer 'kaiming'"),
        (lambda: fnnet.Activation("softmax"), ValueError, r"unknown activation 'softmax'"),
        (lambda: fnnet.Dense(3).init(jax.random.key(0), ()), ValueError,
         r"Dense\(n_out=3.*expects inputs with a feature axis, \(batch, \.\.\., n_in\), got per-example shape \(\)"),
    ],
)
def test_bad_layer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
