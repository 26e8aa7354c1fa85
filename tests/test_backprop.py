"""fnnet.backprop against two independent oracles: jax.grad and float64 finite differences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import activations, losses
from fnnet.gradcheck import random_batch
from oracles import XOR_X, XOR_Y, autodiff, tree_rel_error

TOL = {jnp.float64: 1e-10, jnp.float32: 1e-4}


def check_against_autodiff(net, loss, m, dtype, seed=0):
    """backprop vs jax.grad on a random batch; returns the largest relative error."""
    kp, kd = jax.random.split(jax.random.key(seed))
    params = net.init(kp, dtype)
    X, y = random_batch(kd, net, loss, m, dtype)
    # One compiled program for both sides keeps the table fast.
    (value, grads), (ref_value, ref) = jax.jit(
        lambda p: (fnnet.backprop(net, p, X, y, loss), autodiff(net, loss, p, X, y))
    )(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert jax.tree.map(lambda g: (g.shape, g.dtype), grads) == jax.tree.map(
        lambda p: (p.shape, p.dtype), params
    )
    assert value.dtype == dtype
    return tree_rel_error((value, grads), (ref_value, ref))


# Every activation × every loss in float64 on a 3-layer net; float32 along both margins.
FLOAT32_CASES = ([(act, losses.softmax_cross_entropy_with_integer_labels) for act in activations.ALL]
                 + [(activations.tanh, loss) for loss in losses.ALL])


@pytest.mark.parametrize(
    "act,loss,dtype",
    [(a, l, jnp.float64) for a in activations.ALL for l in losses.ALL]
    + [(a, l, jnp.float32) for a, l in FLOAT32_CASES],
    ids=lambda c: str(c) if not isinstance(c, type) else c.__name__,
)
def test_every_activation_and_loss(act, loss, dtype):
    net = fnnet.mlp([5, 8, 6, 3], activation=act, output_activation="identity")
    assert check_against_autodiff(net, loss, m=16, dtype=dtype) <= TOL[dtype]


# An activated output (e.g. sigmoid + MSE): the loss delta passes through f′(zᴸ).
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("out_act", activations.ALL, ids=str)
def test_activated_output(out_act, dtype):
    net = fnnet.mlp([4, 7, 2], activation="tanh", output_activation=out_act)
    assert check_against_autodiff(net, losses.mean_squared_error, m=9, dtype=dtype) <= TOL[dtype]


# Depth 1–6, widths 1–64, batch 1–128.
ARCHITECTURES = [
    ([3, 1], "relu", 1),
    ([1, 1], "tanh", 128),
    ([2, 1, 1], "sigmoid", 5),
    ([64, 64, 10], "relu", 128),
    ([8, 32, 32, 4], "gelu", 33),
    ([16, 1, 16, 2], "elu", 7),
    ([10, 64, 1, 64, 3], "silu", 64),
    ([6, 12, 12, 12, 12, 2], "leaky_relu", 2),
    ([7, 5, 9, 3, 8, 4, 6], "softplus", 100),
    ([32, 16, 8, 4, 2, 1, 1], "gelu_exact", 1),
]


# float64 for all; float32 (whose tolerance the activation × loss table already covers) where
# rounding has the most room to grow: the widest, the deepest and the largest batches.
@pytest.mark.parametrize("sizes,act,m,dtype",
                         [(*a, jnp.float64) for a in ARCHITECTURES]
                         + [(*a, jnp.float32) for a in ARCHITECTURES if max(a[0]) >= 64 or len(a[0]) >= 6 or a[2] >= 100],
                         ids=lambda c: c.__name__ if isinstance(c, type) else str(c))
def test_architectures(sizes, act, m, dtype):
    net = fnnet.mlp(sizes, activation=act)
    loss = losses.softmax_cross_entropy_with_integer_labels if sizes[-1] > 1 else losses.mean_squared_error
    assert check_against_autodiff(net, loss, m, dtype) <= TOL[dtype]


@pytest.mark.heavy
@settings(max_examples=6, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 24), min_size=2, max_size=7),
    acts=st.lists(st.sampled_from(activations.ALL), min_size=6, max_size=6),
    loss=st.sampled_from(losses.ALL),
    m=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_random_architectures(sizes, acts, loss, m, seed):
    net = fnnet.mlp(sizes, activation=acts[: len(sizes) - 2], output_activation=acts[-1])
    assert check_against_autodiff(net, loss, m, jnp.float64, seed) <= 1e-10


def test_xor_hits_relu_kink():
    # Zero biases and the (0, 0) input give zᴸ⁻¹ = 0 exactly: relu′(0) = 0, as in JAX.
    net = fnnet.mlp([2, 4, 1], activation="relu", W_init="textbook")
    params = net.init(jax.random.key(3), jnp.float64)
    X, y = jnp.asarray(XOR_X), jnp.asarray(XOR_Y)
    assert (net.forward(params, X)[1][0][1][0] == 0).all()
    value, grads = fnnet.backprop(net, params, X, y, "sigmoid_binary_cross_entropy")
    _, ref = autodiff(net, losses.sigmoid_binary_cross_entropy, params, X, y)
    assert tree_rel_error(grads, ref) <= 1e-12


def finite_differences(f, params, eps=1e-6):
    """Central differences of scalar `f` for every element of every leaf (float64)."""
    leaves, treedef = jax.tree.flatten(params)
    grads = []
    for i, leaf in enumerate(leaves):
        g = np.zeros(leaf.shape)
        for idx in np.ndindex(leaf.shape):
            def shifted(h):
                new = list(leaves)
                new[i] = leaf.at[idx].add(h)
                return float(f(jax.tree.unflatten(treedef, new)))
            g[idx] = (shifted(eps) - shifted(-eps)) / (2 * eps)
        grads.append(g)
    return jax.tree.unflatten(treedef, grads)


@pytest.mark.parametrize(
    "sizes,act,out_act,loss",
    [
        ([3, 4, 2], "tanh", "identity", losses.softmax_cross_entropy_with_integer_labels),
        ([2, 3, 3, 1], "gelu", "identity", losses.sigmoid_binary_cross_entropy),
        ([3, 5, 2], "softplus", "sigmoid", losses.mean_squared_error),
        ([4, 3, 3], "elu", "identity", losses.softmax_cross_entropy),
    ],
    ids=lambda c: str(c),
)
def test_finite_differences(sizes, act, out_act, loss):
    net = fnnet.mlp(sizes, activation=act, output_activation=out_act)
    kp, kd = jax.random.split(jax.random.key(7))
    params = net.init(kp, jnp.float64)
    X, y = random_batch(kd, net, loss, 6, jnp.float64)
    f = jax.jit(lambda p: loss(net.apply(p, X), y).mean())
    _, grads = fnnet.backprop(net, params, X, y, loss)
    assert tree_rel_error(grads, finite_differences(f, params)) <= 1e-7


# Known-wrong gradients must fail the same comparison: the tests can fail.
def _wrong_activation_derivative():
    # σ instead of σ′: the forward pass is right, the backward is not.
    bad = activations.Activation("sigmoid_wrong", jax.nn.sigmoid, jax.nn.sigmoid)
    net = fnnet.mlp([4, 4, 4, 2], activation=bad)
    return net, lambda grads: grads


def _missing_one_over_m():
    net = fnnet.mlp([4, 4, 4, 2], activation="tanh")
    return net, lambda grads: jax.tree.map(lambda g: g * 32, grads)


def _transposed_W():
    net = fnnet.mlp([4, 4, 4, 2], activation="tanh")
    return net, lambda grads: [grads[0], {"W": grads[1]["W"].T, "b": grads[1]["b"]}, grads[2]]


@pytest.mark.parametrize("make", [_wrong_activation_derivative, _missing_one_over_m, _transposed_W])
def test_known_wrong_gradients_are_rejected(make):
    net, corrupt = make()
    loss = losses.softmax_cross_entropy_with_integer_labels
    kp, kd = jax.random.split(jax.random.key(1))
    params = net.init(kp, jnp.float64)
    X, y = random_batch(kd, net, loss, 32, jnp.float64)
    _, grads = fnnet.backprop(net, params, X, y, loss)
    _, ref = autodiff(net, loss, params, X, y)
    assert tree_rel_error(corrupt(grads), ref) > 1e-2


def test_under_jit_and_vmap_over_parameter_sets():
    net = fnnet.mlp([3, 8, 2], activation="relu")
    loss = losses.softmax_cross_entropy_with_integer_labels
    keys = jax.random.split(jax.random.key(0), 5)
    stacked = jax.vmap(lambda k: net.init(k, jnp.float64))(keys)
    X, y = random_batch(jax.random.key(9), net, loss, 12, jnp.float64)
    values, grads = jax.jit(jax.vmap(lambda p: fnnet.backprop(net, p, X, y, loss)))(stacked)
    assert values.shape == (5,) and jax.tree.structure(grads) == jax.tree.structure(stacked)
    for i in range(5):
        params_i = jax.tree.map(lambda leaf: leaf[i], stacked)
        ref_value, ref = autodiff(net, loss, params_i, X, y)
        assert tree_rel_error(jax.tree.map(lambda leaf: leaf[i], grads), ref) <= 1e-10
        assert abs(values[i] - ref_value) <= 1e-12


def test_vmap_over_examples_gives_per_example_gradients():
    net = fnnet.mlp([3, 5, 1], activation="tanh")
    loss = losses.mean_squared_error
    params = net.init(jax.random.key(0), jnp.float64)
    X, y = random_batch(jax.random.key(1), net, loss, 10, jnp.float64)
    per_example = jax.vmap(lambda x, t: fnnet.backprop(net, params, x[None], t[None], loss)[1])(X, y)
    _, batch = fnnet.backprop(net, params, X, y, loss)
    assert tree_rel_error(jax.tree.map(lambda g: g.mean(0), per_example), batch) <= 1e-12


def test_no_recompile_for_same_shapes():
    net = fnnet.mlp([3, 4, 1])
    loss = losses.sigmoid_binary_cross_entropy
    step = jax.jit(lambda p, X, y: fnnet.backprop(net, p, X, y, loss))
    params = net.init(jax.random.key(0))
    for seed in range(3):
        X, y = random_batch(jax.random.key(seed), net, loss, 8, jnp.float32)
        step(params, X, y)
    assert step._cache_size() == 1


def test_accepts_loss_by_name():
    net = fnnet.mlp([2, 3, 1])
    params = net.init(jax.random.key(0))
    X, y = jnp.asarray(XOR_X, jnp.float32), jnp.asarray(XOR_Y, jnp.float32)
    by_name = fnnet.backprop(net, params, X, y, "sigmoid_binary_cross_entropy")
    by_object = fnnet.backprop(net, params, X, y, losses.sigmoid_binary_cross_entropy)
    assert tree_rel_error(by_name, by_object) == 0


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(X=jnp.ones((4, 3))), r"input x has shape \(4, 3\); the network expects \(batch, 2\)"),
        (dict(X=jnp.ones((2,))), r"input x has shape \(2,\)"),
        (dict(X=jnp.ones((0, 2)), y=jnp.ones((0, 1))), r"the batch is empty"),
        (dict(y=jnp.ones((4,))), r"y has shape \(4,\) but the output has shape \(4, 1\).*y\[:, None\]"),
        (dict(y=jnp.ones((4, 2))), r"y has shape \(4, 2\) but the output has shape \(4, 1\)"),
        (dict(loss="hinge"), r"unknown loss 'hinge'; expected one of: .*mean_squared_error"),
        (dict(params="drop_last"), r"params do not match the network: missing \[1\]\['W'\], \[1\]\['b'\]"),
        (dict(params="W_transposed"), r"params\[0\]\['W'\] has shape \(4, 2\), but layer 0 .*expects \(2, 4\)"),
        (dict(params="extra_key"), r"unexpected \[0\]\['gamma'\]"),
    ],
    ids=lambda c: str(c)[:30],
)
def test_bad_input_is_named_before_tracing(bad, match):
    net = fnnet.mlp([2, 4, 1])
    params = net.init(jax.random.key(0))
    args = dict(X=jnp.asarray(XOR_X, jnp.float32), y=jnp.asarray(XOR_Y, jnp.float32),
                loss="sigmoid_binary_cross_entropy", params=params)
    args.update(bad)
    if args["params"] == "drop_last":
        args["params"] = params[:1]
    elif args["params"] == "W_transposed":
        args["params"] = [{"W": params[0]["W"].T, "b": params[0]["b"]}, params[1]]
    elif args["params"] == "extra_key":
        args["params"] = [params[0] | {"gamma": jnp.ones(4)}, params[1]]
    with pytest.raises(ValueError, match=match):
        fnnet.backprop(net, args["params"], args["X"], args["y"], args["loss"])


def test_integer_labels_wrong_shape_and_dtype():
    net = fnnet.mlp([2, 4, 3])
    params = net.init(jax.random.key(0))
    X = jnp.ones((5, 2))
    loss = losses.softmax_cross_entropy_with_integer_labels
    with pytest.raises(ValueError, match=r"labels have shape \(5, 1\).*expected labels of shape \(5,\)"):
        fnnet.backprop(net, params, X, jnp.zeros((5, 1), jnp.int32), loss)
    with pytest.raises(TypeError, match=r"labels have dtype float32; expected an integer dtype"):
        fnnet.backprop(net, params, X, jnp.zeros((5,), jnp.float32), loss)


def test_all_table_cases_are_distinct():
    # Guards the table above against silently collapsing to fewer cases.
    assert len({(tuple(s), a) for s, a, _ in ARCHITECTURES}) == len(ARCHITECTURES)
    depths = {len(s) - 1 for s, _, _ in ARCHITECTURES}
    widths = set(itertools.chain.from_iterable(s for s, _, _ in ARCHITECTURES))
    batches = {m for _, _, m in ARCHITECTURES}
    assert depths == set(range(1, 7)) and {1, 64} <= widths and {1, 128} <= batches


def test_gradients_keep_the_parameters_dtype_like_jax_grad():
    # float64 data promotes the arithmetic; the gradient still comes back in float32, as jax.grad's.
    net = fnnet.mlp([2, 4, 1])
    params = net.init(jax.random.key(0), jnp.float32)
    X, y = jnp.asarray(XOR_X, jnp.float64), jnp.asarray(XOR_Y, jnp.float64)
    _, grads = fnnet.backprop(net, params, X, y, "bce")
    _, ref = autodiff(net, losses.sigmoid_binary_cross_entropy, params, X, y)
    assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda r: r.dtype, ref)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    assert tree_rel_error(grads, ref) <= 1e-6
