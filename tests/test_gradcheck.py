"""fnnet.check_grads: it must catch every wrong gradient in the gallery, name the leaf,
and raise no false alarm on correct ones."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import activations, losses
from fnnet.gradcheck import random_batch
from oracles import XOR_X, XOR_Y

# A user's own two-layer network, z1 = X W1 + b1, a1 = tanh(z1), z2 = a1 W2 + b2,
# mean sigmoid BCE on logits, with its backward written by hand. W1 is square (4×4) and
# the batch has 4 examples, so a transposed dW1 or a bias summed over the wrong axis still
# has the right shape and must be caught by its values.


def user_loss(params, X, y):
    z2 = jnp.tanh(X @ params[0]["W"] + params[0]["b"][None]) @ params[1]["W"] + params[1]["b"][None]
    return (jax.nn.softplus(z2) - y * z2).mean()


def user_value_and_grad(bug=None):
    def value_and_grad(params, X, y):
        (W1, b1), (W2, b2) = [(p["W"], p["b"]) for p in params]
        m = X.shape[0]
        a1 = jnp.tanh(X @ W1 + b1[None])
        z2 = a1 @ W2 + b2[None]
        if bug == "bfloat16":  # the delta is right in float64, but computed in bfloat16
            z2 = z2.astype(jnp.bfloat16)
        delta2 = ((jax.nn.sigmoid(z2) - y) / (1 if bug == "missing_1/m" else m)).astype(X.dtype)
        dW2 = a1.T @ delta2
        if bug == "sign":
            dW2 = -dW2
        if bug == "off_by_1e-3":
            dW2 = dW2.at[2, 0].add(1e-3)
        db2 = delta2.sum(0)
        f_prime = a1 * (1 - a1) if bug == "activation_derivative" else 1 - a1**2
        delta1 = f_prime * (delta2 @ W2.T)
        dW1 = X.T @ delta1
        if bug == "transposed_W":
            dW1 = dW1.T
        db1 = delta1.sum(1) if bug == "bias_axis" else delta1.sum(0)
        grads = [{"W": dW1, "b": db1}, {"W": dW2, "b": db2}]
        if bug == "float32_grads":
            grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        value = (jax.nn.softplus(z2.astype(X.dtype)) - y * z2.astype(X.dtype)).mean()
        return value, grads

    return value_and_grad


def user_problem(seed=0, m=4):
    k1, k2, k3, k4, kx = jax.random.split(jax.random.key(seed), 5)
    params = [
        {"W": jax.random.normal(k1, (4, 4)), "b": 0.3 * jax.random.normal(k2, (4,))},
        {"W": jax.random.normal(k3, (4, 1)), "b": 0.3 * jax.random.normal(k4, (1,))},
    ]
    X = jax.random.normal(kx, (m, 4))
    y = (X[:, :1] > 0).astype(X.dtype)
    return params, X, y


GALLERY = [  # bug, the leaf the message must name
    ("activation_derivative", "[0]['W']"),
    ("missing_1/m", "[0]['W']"),
    ("transposed_W", "[0]['W']"),
    ("bias_axis", "[0]['b']"),
    ("sign", "[1]['W']"),
    ("off_by_1e-3", "[1]['W'] index (2, 0)"),
    ("float32_grads", "[0]['W']: dtype float32, expected float64"),
    ("bfloat16", "[0]['W']"),
]


def test_the_correct_user_gradient_passes():
    params, X, y = user_problem()
    report = fnnet.check_grads(user_value_and_grad(), user_loss, params, X, y, elementwise=True)
    assert report.ok, str(report)
    assert all(leaf.fd_ok for leaf in report.leaves)


@pytest.mark.parametrize("bug,named", GALLERY, ids=[b for b, _ in GALLERY])
def test_gallery_of_wrong_gradients_is_caught_and_named(bug, named):
    params, X, y = user_problem()
    report = fnnet.check_grads(user_value_and_grad(bug), user_loss, params, X, y)
    assert not report.ok
    assert report.message.startswith(f"gradient mismatch at {named}"), report.message
    with pytest.raises(AssertionError, match=re.escape(f"gradient mismatch at {named}")):
        fnnet.testing.assert_grads_close(user_value_and_grad(bug), user_loss, params, X, y)


def test_one_element_off_names_index_and_values():
    params, X, y = user_problem()
    report = fnnet.check_grads(user_value_and_grad("off_by_1e-3"), user_loss, params, X, y)
    leaf = report.leaves[2]
    assert (leaf.path, leaf.worst_index) == ("[1]['W']", (2, 0))
    assert abs((leaf.candidate - leaf.reference) - 1e-3) < 1e-12
    assert re.fullmatch(
        r"gradient mismatch at \[1\]\['W'\] index \(2, 0\): candidate -?\d\.\d+(e-\d+)?, "
        r"jax.grad -?\d\.\d+(e-\d+)?, rel. error \d\.\de-\d\d", report.message)
    assert [l.ok for l in report.leaves] == [True, True, False, True]


def test_bfloat16_delta_also_caught_in_float32_mode():
    params, X, y = user_problem()
    report = fnnet.check_grads(user_value_and_grad("bfloat16"), user_loss, params, X, y, dtype="float32")
    assert not report.ok and "float32" in report.warnings[0]


def test_wrong_custom_vjp_is_caught_by_finite_differences():
    # The candidate is jax.grad of a loss whose custom rule is wrong, so jax.grad agrees with
    # it: only the float64 finite differences can tell.
    @jax.custom_vjp
    def square(x):
        return x**2

    square.defvjp(lambda x: (x**2, x), lambda x, g: (3 * x * g,))

    def loss(params, X):
        return square(X @ params["w"]).mean()

    params, X = {"w": jnp.array([0.5, -1.0, 2.0])}, jax.random.normal(jax.random.key(0), (5, 3))
    report = fnnet.check_grads(jax.value_and_grad(loss), loss, params, X)
    assert not report.ok and report.leaves[0].problem == "differs from finite differences"
    assert "custom_jvp/custom_vjp" in report.message
    assert any("jax.grad itself disagrees" in w for w in report.warnings)


def test_relu_kinks_are_not_false_alarms():
    # The textbook start: zero biases and the (0, 0) input put hidden units at exactly 0.
    net = fnnet.mlp([2, 4, 1], activation="relu", W_init="textbook")
    params = net.init(jax.random.key(3))
    for elementwise in (False, True):
        report = fnnet.check_grads(net, params, XOR_X, XOR_Y, "bce", elementwise=elementwise)
        assert report.ok, str(report)
    assert any("cannot judge [0]['b']" in w for w in report.warnings)


# The whole activation × loss table is swept by `fnnet gradcheck --all` in test_cli.py.


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=5),
       act=st.sampled_from(activations.ALL), loss=st.sampled_from(losses.ALL),
       m=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_no_false_alarm_for_random_architectures(sizes, act, loss, m, seed):
    net = fnnet.mlp(sizes, activation=act)
    kp, kd = jax.random.split(jax.random.key(seed))
    X, y = random_batch(kd, net, loss, m)
    report = fnnet.check_grads(net, net.init(kp), X, y, loss)
    assert report.ok, str(report)


def test_float64_runs_in_a_scope_and_restores_the_global_setting():
    net = fnnet.mlp([2, 3, 1])
    with jax.enable_x64(False):
        params = net.init(jax.random.key(0))
        report = fnnet.check_grads(net, params, XOR_X.astype(np.float32), XOR_Y.astype(np.float32), "bce")
        assert not jax.config.jax_enable_x64
        assert params[0]["W"].dtype == jnp.float32
    assert report.ok and report.dtype == "float64"
    assert {leaf.dtype for leaf in report.leaves} == {"float64"}
    assert str(report).startswith("gradient check in float64")


def test_float32_mode_warns_and_widens():
    net = fnnet.mlp([2, 3, 1])
    with jax.enable_x64(False):
        report = fnnet.check_grads(net, net.init(jax.random.key(0)), XOR_X, XOR_Y, "bce", dtype="float32")
    assert report.ok and report.dtype == "float32"
    assert report.settings["rtol"] == 1e-3 and "widened" in report.warnings[0]
    assert {leaf.dtype for leaf in report.leaves} == {"float32"}


def test_candidates_under_transforms_and_no_recompiles():
    params, X, y = user_problem()
    traces = []

    def counted_loss(p, X, y):
        traces.append(1)
        return user_loss(p, X, y)

    jitted = jax.jit(user_value_and_grad())

    def vmapped(p, X, y):  # per-example gradients, averaged
        g = jax.vmap(lambda x, t: jax.grad(user_loss)(p, x[None], t[None]))(X, y)
        return user_loss(p, X, y), jax.tree.map(lambda a: a.mean(0), g)

    for candidate in (jitted, vmapped, jax.value_and_grad(user_loss)):
        counts = []
        for directions in (1, 8):
            traces.clear()
            report = fnnet.check_grads(candidate, counted_loss, params, X, y, directions=directions)
            assert report.ok, str(report)
            counts.append(len(traces))
        # jax.grad traces the loss once, the finite differences 5 times (L at p, p ± εv,
        # p ± εv/10) in one compiled map: never once per leaf or per direction.
        assert counts == [6, 6]
    assert jitted._cache_size() == 1


def test_tolerances_are_arguments():
    params, X, y = user_problem()
    bug = user_value_and_grad("off_by_1e-3")
    assert not fnnet.check_grads(bug, user_loss, params, X, y).ok
    loose = fnnet.check_grads(bug, user_loss, params, X, y, rtol=1e-1, atol=1e-2, fd_rtol=1e-1, fd_atol=1e-2)
    assert loose.ok and loose.settings["rtol"] == 1e-1


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda g: g[:1], r"gradient tree does not match the parameter tree: missing \[1\]\['W'\], \[1\]\['b'\]"),
        (lambda g: [g[0] | {"extra": jnp.zeros(2)}, g[1]], r"unexpected \[0\]\['extra'\]"),
        (lambda g: [g[0], {"W": g[1]["W"].T, "b": g[1]["b"]}],
         r"gradient at \[1\]\['W'\] has shape \(1, 4\), expected \(4, 1\)"),
    ],
)
def test_structure_errors_name_the_path(corrupt, match):
    params, X, y = user_problem()

    def candidate(p, X, y):
        value, grads = user_value_and_grad()(p, X, y)
        return value, corrupt(grads)

    with pytest.raises(ValueError, match=match):
        fnnet.check_grads(candidate, user_loss, params, X, y)


def test_non_finite_gradient_is_named():
    params, X, y = user_problem()

    def candidate(p, X, y):
        value, grads = user_value_and_grad()(p, X, y)
        grads[1]["b"] = grads[1]["b"].at[0].set(jnp.nan)
        return value, grads

    report = fnnet.check_grads(candidate, user_loss, params, X, y)
    assert report.message == "gradient mismatch at [1]['b']: non-finite value nan at index (0,)"


def test_wrong_loss_value_is_reported():
    params, X, y = user_problem()

    def candidate(p, X, y):
        value, grads = user_value_and_grad()(p, X, y)
        return value * 2, grads

    report = fnnet.check_grads(candidate, user_loss, params, X, y)
    assert not report.ok and not report.value_ok and report.message.startswith("loss value mismatch")


def test_report_table_and_json():
    params, X, y = user_problem()
    report = fnnet.check_grads(user_value_and_grad("sign"), user_loss, params, X, y)
    text = str(report).splitlines()
    assert text[1].split() == ["leaf", "shape", "dtype", "max", "abs", "err", "max", "rel", "err", "worst",
                               "index", "candidate", "jax.grad", "fd", "max", "err", "result"]
    assert [line.split()[0] for line in text[2:6]] == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"]
    assert "FAIL: differs from jax.grad" in text[4] and text[-1] == report.message
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["leaves"][2]["path"] == "[1]['W']"
    assert data["leaves"][2]["worst_index"] == list(report.leaves[2].worst_index)
    assert data["settings"]["directions"] == 4


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda p, X, y: fnnet.check_grads(fnnet.mlp([4, 4, 1]), p, X, y), TypeError, r"expected 4 arguments after the network, got 3"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, p, X, y, dtype="float16"), ValueError, r"dtype must be float64 or float32, got 'float16'"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, p, X, y, directions=0), ValueError, r"need directions ≥ 1 and eps > 0"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), "loss", p, X, y), TypeError, r"expected callables value_and_grad and loss first"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, [{"W": jnp.ones((4, 4), int), "b": p[0]["b"]}, p[1]], X, y),
         ValueError, r"params\[0\]\['W'\] has dtype int\d+; expected floating-point parameters"),
    ],
)
def test_bad_arguments(call, error, match):
    params, X, y = user_problem()
    with pytest.raises(error, match=match):
        call(params, X, y)


def test_assert_grads_close_returns_the_report_when_right():
    params, X, y = user_problem()
    report = fnnet.testing.assert_grads_close(user_value_and_grad(), user_loss, params, X, y)
    assert report.ok and len(report.leaves) == 4
