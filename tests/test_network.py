"""Network and mlp: static descriptions, init/apply shapes, and named errors."""

import jax
import jax.numpy as jnp
import pytest

import fnnet
from oracles import XOR_X, tree_rel_error


def test_mlp_structure_and_shapes():
    net = fnnet.mlp([3, 5, 4, 2], activation=["relu", "tanh"], W_init="he_normal")
    assert [layer.activation.name for layer in net.layers] == ["relu", "tanh", "identity"]
    params = net.init(jax.random.key(0))
    assert jax.tree.map(jnp.shape, params) == [
        {"W": (3, 5), "b": (5,)}, {"W": (5, 4), "b": (4,)}, {"W": (4, 2), "b": (2,)}]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    assert net.out_shape == (2,)
    assert net.apply(params, jnp.ones((7, 3), jnp.float32)).shape == (7, 2)


def test_apply_is_the_textbook_forward():
    net = fnnet.mlp([2, 4, 1], activation="relu", output_activation="sigmoid")
    params = net.init(jax.random.key(2), jnp.float64)
    (W1, b1), (W2, b2) = [(p["W"], p["b"]) for p in params]
    X = jnp.asarray(XOR_X)
    expected = jax.nn.sigmoid(jnp.maximum(X @ W1 + b1[None], 0) @ W2 + b2[None])
    assert tree_rel_error(net.apply(params, X), expected) <= 1e-15


def test_init_is_a_pure_function_of_the_key():
    net = fnnet.mlp([4, 8, 3])
    a, b, c = net.init(jax.random.key(1)), net.init(jax.random.key(1)), net.init(jax.random.key(2))
    assert tree_rel_error(a, b) == 0 and tree_rel_error(a, c) > 0.1
    legacy = net.init(jax.random.PRNGKey(1))  # raw uint32 keys work too
    assert jax.tree.structure(legacy) == jax.tree.structure(a)


def test_init_under_vmap_and_float64():
    net = fnnet.mlp([2, 3, 1])
    stacked = jax.vmap(lambda k: net.init(k, jnp.float64))(jax.random.split(jax.random.key(0), 4))
    assert jax.tree.map(jnp.shape, stacked)[0] == {"W": (4, 2, 3), "b": (4, 3)}
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(stacked))


def test_network_is_static_hashable_and_printable():
    a, b = fnnet.mlp([2, 4, 1]), fnnet.mlp([2, 4, 1])
    assert a == b and hash(a) == hash(b) and a != fnnet.mlp([2, 5, 1])
    assert repr(a) == (
        "Network(in_shape=(2,), layers=(\n"
        "  Dense(n_out=4, activation=relu, W_init=lecun_normal, b_init=zeros),\n"
        "  Dense(n_out=1, activation=identity, W_init=lecun_normal, b_init=zeros),\n"
        "))"
    )
    # Usable as a jit static argument: same network, one compilation.
    f = jax.jit(lambda net, p, x: net.apply(p, x), static_argnums=0)
    params, x = a.init(jax.random.key(0)), jnp.ones((3, 2), jnp.float32)
    f(a, params, x), f(b, params, x)
    assert f._cache_size() == 1


def test_network_with_activation_layers():
    net = fnnet.Network((3,), (fnnet.Dense(4), fnnet.Activation("relu"), fnnet.Dense(2)))
    params = net.init(jax.random.key(0))
    assert params[1] == {} and net.out_shape == (2,)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: fnnet.mlp([2]), ValueError, r"sizes must list at least two positive ints.*got \[2\]"),
        (lambda: fnnet.mlp([]), ValueError, r"sizes must list at least two positive ints"),
        (lambda: fnnet.mlp([2, 0, 1]), ValueError, r"at least two positive ints, \[n_in, \.\.\., n_out\], got \[2, 0, 1\]"),
        (lambda: fnnet.mlp([2, -4, 1]), ValueError, r"got \[2, -4, 1\]"),
        (lambda: fnnet.mlp([2, 3.5, 1]), ValueError, r"got \[2, 3.5, 1\]"),
        (lambda: fnnet.mlp(5), ValueError, r"sizes must list .*got 5"),
        (lambda: fnnet.mlp([2, 4, 1], activation="rleu"), ValueError, r"unknown activation 'rleu'"),
        (lambda: fnnet.mlp([2, 4, 1], W_init="glorot"), ValueError, r"unknown initializer 'glorot'; expected one of: .*glorot_normal"),
        (lambda: fnnet.mlp([2, 4, 4, 1], activation=["relu"]), ValueError,
         r"activation lists 1 entries; expected one per hidden layer, 2"),
        (lambda: fnnet.mlp([2, 4, 1], W_init=["he_normal"]), ValueError, r"W_init lists 1 entries; expected one per layer, 2"),
        (lambda: fnnet.Network((0,), ()), ValueError, r"in_shape must be positive ints"),
        (lambda: fnnet.mlp([2, 4, 1]).init(0), TypeError, r"expected a JAX random key such as jax.random.key\(0\), got int"),
    ],
)
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_apply_names_bad_params_and_inputs():
    net = fnnet.mlp([2, 4, 1])
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"input x has shape \(4, 3\); the network expects \(batch, 2\)"):
        net.apply(params, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\] has shape \(2,\), but layer 1 .* expects \(1,\)"):
        net.apply([params[0], {"W": params[1]["W"], "b": jnp.zeros(2)}], jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"params do not match the network: the containers differ: got PyTreeDef\(\("):
        net.apply(tuple(params), jnp.ones((4, 2)))


def test_str_is_a_model_summary_with_shapes_and_parameter_counts():
    net = fnnet.Network((6,), (fnnet.Dense(5, "tanh"), fnnet.Activation("relu"), fnnet.Dense(3)))
    lines = str(net).splitlines()
    params = net.init(jax.random.key(0))
    total = sum(leaf.size for leaf in jax.tree.leaves(params))  # 6·5+5 + 5·3+3 = 53
    assert lines[0].split() == ["#", "layer", "output", "shape", "params"]
    assert lines[1].split() == ["input", "(6,)"]
    assert lines[2].split()[-2:] == ["(5,)", "35"] and lines[3].split()[-2:] == ["(5,)", "0"]
    assert lines[4].split()[-2:] == ["(3,)", "18"] and lines[-1] == f"{total} parameters" == "53 parameters"
    assert repr(net).startswith("Network(in_shape=(6,), layers=(")  # repr stays the short form
