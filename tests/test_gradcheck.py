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


@pytest.mark.heavy
@settings(max_examples=4, deadline=None)
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
        # jax.grad traces the loss once, the finite differences twice (L at p; L at p ± εv,
        # p ± εv/10 as one batch) in one compiled map: never once per leaf, direction or step.
        assert counts == [3, 3]
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
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, p, X, y, modes="rev"), ValueError,
         r"modes must be a non-empty tuple of 'rev' \(jax.grad\) and 'fwd' \(jax.jacfwd\), e.g. modes=\('fwd', 'rev'\); got 'rev'"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, p, X, y, modes=("bwd",)), ValueError, r"modes must be .*; got \('bwd',\)"),
        (lambda p, X, y: fnnet.check_grads(user_value_and_grad(), user_loss, p, X, y, order=3), ValueError, r"order must be 1 or 2, got 3"),
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


# ---------------------------------------------------------------------------------------
# The check's own sensitivity. One element, w[1, 2], carries a planted error, and the loss
# depends on no other element of w, so along every direction the error is that element's alone:
# an error of k × the tolerance the check applies there must fail and name (1, 2) for k = 2, and
# pass for k = 0.5, for each opinion and dtype.

W_B = np.array([[0.3, -0.8, 0.5], [1.2, -0.4, 0.7]])
C_B = np.zeros((2, 3))
C_B[1, 2] = 1.5
B_B = np.array([0.2, -0.6])


def boundary_w(xp, w):
    """The loss's w term, Σ C ⊙ tanh(w)², and its gradient; xp is numpy or jax.numpy."""
    t = xp.tanh(w)
    return xp.sum(C_B.astype(w.dtype) * t**2), C_B.astype(w.dtype) * 2 * t * (1 - t**2)


def boundary_loss(xp):
    return lambda p: boundary_w(xp, p["w"])[0] + xp.sum(xp.sin(p["b"]))


def boundary_grad(xp, w, b):
    return {"w": boundary_w(xp, w)[1], "b": xp.cos(b)}


def planted_error(opinion, dtype, k):
    """k × the tolerance at w[1, 2], by the rule of each opinion; t is the true gradient there."""
    rtol, atol, fd_rtol, fd_atol = fnnet.gradcheck.TOLERANCES[dtype]
    t = boundary_grad(np, W_B, B_B)["w"][1, 2]
    s = np.sqrt(np.mean(W_B**2))  # finite differences measure a leaf in units of its RMS
    if opinion == "jax.grad":  # |δ| = k·(atol + rtol·(|t| + |t + δ|))
        return k * (atol + 2 * rtol * t) / (1 - k * rtol)
    if opinion == "custom rule":  # s·|δ| = k·(fd_atol + fd_rtol·s·max(|fd|, |t + δ|)), fd = t
        return k * (fd_atol / s + fd_rtol * t) / (1 - k * fd_rtol)
    return k * (fd_atol / s + fd_rtol * t)  # numpy: the central difference t is the reference


@pytest.mark.parametrize("k", [2.0, 0.5])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opinion", ["jax.grad", "custom rule", "numpy"])
def test_an_error_of_twice_the_tolerance_fails_and_half_passes(opinion, dtype, k):
    E = np.zeros((2, 3))
    E[1, 2] = planted_error(opinion, dtype, k)
    options = {}
    if opinion == "jax.grad":  # the candidate is off; finite differences are told to look away
        loss = boundary_loss(jnp)

        def candidate(p):
            grads = boundary_grad(jnp, p["w"], p["b"])
            return loss(p), grads | {"w": grads["w"] + E.astype(p["w"].dtype)}

        options = dict(fd_rtol=0.1, fd_atol=0.1)
    elif opinion == "custom rule":  # the loss's rule is off and the candidate is jax.grad of it:
        @jax.custom_vjp                # only the finite differences can tell
        def f(w):
            return boundary_w(jnp, w)[0]

        f.defvjp(lambda w: (f(w), w), lambda w, g: (g * (boundary_w(jnp, w)[1] + E.astype(w.dtype)),))

        def loss(p):
            return f(p["w"]) + jnp.sum(jnp.sin(p["b"]))

        candidate, options = jax.value_and_grad(loss), dict(elementwise=True)
    else:  # numpy code: no jax.grad; the central differences along each coordinate are the reference
        loss = boundary_loss(np)

        def candidate(p):
            grads = boundary_grad(np, p["w"], p["b"])
            return loss(p), grads | {"w": grads["w"] + E.astype(p["w"].dtype)}

    report = fnnet.check_grads(candidate, loss, {"w": W_B, "b": B_B}, dtype=dtype, **options)
    assert report.reference == ("finite differences" if opinion == "numpy" else "jax.grad")
    if k < 1:
        assert report.ok, str(report)
    else:
        assert not report.ok
        assert report.message.startswith("gradient mismatch at ['w'] index (1, 2): "), report.message


# ---------------------------------------------------------------------------------------
# Scale. The step along a unit direction is eps · RMS(leaf): the check reads the same at any
# scale of the parameters, with the exact gradient passing and a 0.1% wrong rule failing.

X_S = jax.random.normal(jax.random.key(1), (8, 3))
W_S = jnp.array([0.8, -1.1, 0.4])


@pytest.mark.parametrize("s", [1, 1e4, 1e8, 1e-4, 1e-8])
def test_parameters_far_from_unit_scale(s):
    def loss(p, X):
        return jnp.mean(jnp.tanh(X @ (p["w"] / s)) ** 2)

    params = {"w": W_S * s}
    report = fnnet.check_grads(jax.value_and_grad(loss), loss, params, X_S)
    assert report.ok and report.leaves[0].fd_ok and not report.warnings, str(report)
    step = 1e-6 * s * float(jnp.sqrt(jnp.mean(W_S**2)))
    assert report.leaves[0].step == pytest.approx(step) == report.to_dict()["leaves"][0]["step"]
    assert str(report).splitlines()[0].endswith(f"step eps·RMS(leaf) with eps=1e-06: {step:.1e})")

    # The same loss with its custom rule 0.1% off, the candidate jax.grad of it: only the
    # finite differences can tell, and must at every scale.
    @jax.custom_vjp
    def scaled(w):
        return w / s

    scaled.defvjp(lambda w: (w / s, None), lambda _, g: (1.001 * g / s,))

    def wrong(p, X):
        return jnp.mean(jnp.tanh(X @ scaled(p["w"])) ** 2)

    report = fnnet.check_grads(jax.value_and_grad(wrong), wrong, params, X_S)
    assert not report.ok and report.leaves[0].problem == "differs from finite differences", str(report)


def test_leaves_at_1e_minus_8_and_1e6_in_one_tree():
    def loss(p, X):
        return jnp.mean(jnp.tanh(X @ (p["small"] / 1e-8) + X @ (p["big"] / 1e6)) ** 2)

    params = {"big": 1e6 * W_S[::-1], "small": 1e-8 * W_S}
    report = fnnet.check_grads(jax.value_and_grad(loss), loss, params, X_S, elementwise=True)
    assert report.ok and all(leaf.fd_ok for leaf in report.leaves), str(report)
    big, small = (leaf.step for leaf in report.leaves)
    assert big / small == pytest.approx(1e14)
    assert f"eps=1e-06: {small:.1e} to {big:.1e})" in str(report).splitlines()[0]


# ---------------------------------------------------------------------------------------
# Kinks: where the candidate and jax.grad disagree only where the loss is not differentiable,
# and the candidate lies between the one-sided derivatives, it is another valid subgradient.

BCE = losses.get("bce")


def relu_at_0(slope):
    return activations.Activation(f"relu_at_0_is_{slope}", jax.nn.relu,
                                  lambda z: jnp.where(z == 0, slope, (z > 0).astype(z.dtype)))


def maximum_loss(p, X, y):
    """The 2-4-1 network with jnp.maximum(z, 0), which JAX differentiates as 0.5 at z = 0."""
    a = jnp.maximum(X @ p[0]["W"] + p[0]["b"][None], 0)
    return BCE(a @ p[1]["W"] + p[1]["b"][None], y).mean()


@pytest.mark.parametrize("slope,valid", [(0.0, True), (1.0, True), (2.0, False), (-1.0, False)])
def test_relu_at_exactly_0_any_slope_in_0_1_is_a_subgradient(slope, valid):
    # The textbook start: zero biases and the (0, 0) input put every hidden unit at exactly 0,
    # where fnnet's backprop takes relu′(0) = `slope` and jax.grad of jnp.maximum 0.5.
    net = fnnet.mlp([2, 4, 1], activation=relu_at_0(slope), W_init="textbook")
    params = net.init(jax.random.key(3))
    report = fnnet.check_grads(net, params, XOR_X, XOR_Y, "bce")  # the loss fnnet's relu differentiates
    assert report.ok == valid and report.leaves[1].subgradient == (slope == 1.0)

    def candidate(p, X, y):
        return fnnet.backprop(net, p, X, y, BCE)

    report = fnnet.check_grads(candidate, maximum_loss, params, XOR_X, XOR_Y)
    b1 = report.leaves[1]
    assert b1.max_abs_error > 1e-4 and report.ok == valid, str(report)
    if valid:
        assert b1.subgradient and str(report).splitlines()[3].endswith("ok (a subgradient at a kink)")
        assert any(w.startswith("[0]['b'] differs from jax.grad only where the loss has a kink")
                   for w in report.warnings)
        assert report.message.endswith("; 1 as a valid subgradient where the loss has a kink")
    else:
        assert report.message.startswith("gradient mismatch at [0]['b'] index"), report.message
        assert "the loss has a kink there, and the candidate is no subgradient" in report.message


# A 4 × 4 input whose 2 × 2 windows tie at their maximum, but for the top right one.
X_POOL = jnp.array([[1.0, 1.0, 0.25, -0.5], [0.5, -1.0, 2.0, 0.75],
                    [-0.25, 1.5, 0.0, 3.0], [1.5, 1.25, 3.0, -2.0]])
C_POOL = jnp.array([[0.7, -1.3], [2.1, 0.4]])


def windows(x):
    """(4, 4) -> (2, 2, 4): the 2 × 2 windows, flattened."""
    return x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)


def pool_loss(p):
    return jnp.sum(C_POOL * jnp.tanh(windows(p["x"]).max(-1)))  # jnp.max splits ties evenly


def pool_value_and_grad(bug=False):
    def value_and_grad(p):
        w = windows(p["x"])
        dpooled = C_POOL * (1 - jnp.tanh(w.max(-1)) ** 2)
        # The backward picks one maximum of each window; the bug sends the gradient to all.
        mask = (w == w.max(-1)[..., None]) if bug else jax.nn.one_hot(w.argmax(-1), 4, dtype=w.dtype)
        dx = (mask * dpooled[..., None]).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
        return pool_loss(p), {"x": dx}
    return value_and_grad


def test_tied_max_pool_one_maximum_is_a_subgradient_all_of_them_is_not():
    report = fnnet.check_grads(pool_value_and_grad(), pool_loss, {"x": X_POOL})
    assert report.ok and report.leaves[0].subgradient, str(report)
    assert report.leaves[0].max_abs_error > 0.1  # one maximum against jax.grad's even split
    report = fnnet.check_grads(pool_value_and_grad(bug=True), pool_loss, {"x": X_POOL})
    assert not report.ok
    assert report.leaves[0].problem == "differs from jax.grad at a kink of the loss, and is no subgradient there"


# ---------------------------------------------------------------------------------------
# Modes: forward (jax.jacfwd) and reverse (jax.grad) use different rules of some primitives.

A_SOLVE = jnp.array([[2.0, 1.0], [0.5, 3.0]])  # not symmetric: solving with Aᵀ is not solving with A


def solve_loss(transpose):
    """sin of A⁻¹x summed, by custom_linear_solve: forward mode uses `solve`, reverse mode
    `transpose_solve` (here with `transpose`, right when it is Aᵀ)."""
    def loss(p):
        y = jax.lax.custom_linear_solve(lambda x: A_SOLVE @ x, p["x"],
                                        solve=lambda _, b: jnp.linalg.solve(A_SOLVE, b),
                                        transpose_solve=lambda _, b: jnp.linalg.solve(transpose, b))
        return jnp.sum(jnp.sin(y))
    return loss


@pytest.mark.parametrize("modes,reference", [(("rev",), "jax.grad"), (("fwd",), "jax.jacfwd"),
                                             (("fwd", "rev"), "jax.grad")])
def test_each_mode_checks_the_rule_it_uses(modes, reference):
    def exact(p):  # the oracle: no custom rule
        return jnp.sum(jnp.sin(jnp.linalg.solve(A_SOLVE, p["x"])))

    params, candidate = {"x": jnp.array([0.3, -0.7])}, jax.value_and_grad(exact)
    report = fnnet.check_grads(candidate, solve_loss(A_SOLVE.T), params, modes=modes)
    assert report.ok and report.reference == reference and set(report.settings["modes"]) == set(modes)
    report = fnnet.check_grads(candidate, solve_loss(A_SOLVE), params, modes=modes)  # wrong transpose_solve
    assert report.ok == (modes == ("fwd",)), str(report)
    if "rev" in modes:
        assert report.message.startswith("gradient mismatch at ['x'] index")
        assert "jax.grad itself disagrees with finite differences at ['x']" in report.warnings[0]


def heron_loss(rule):
    """Σ y³ with y = |sin x| by 12 Heron steps in a lax.while_loop, which reverse mode cannot
    differentiate; sin has a custom_jvp rule, cos·t scaled by `rule` (right when 1)."""
    @jax.custom_jvp
    def sin(x):
        return jnp.sin(x)

    sin.defjvp(lambda primals, tangents: (jnp.sin(primals[0]), rule * jnp.cos(primals[0]) * tangents[0]))

    def loss(p):
        def step(carry):
            i, y = carry
            return i + 1, 0.5 * (y + sin(p["x"]) ** 2 / y)
        return jnp.sum(jax.lax.while_loop(lambda c: c[0] < 12, step, (0, jnp.ones_like(p["x"])))[1] ** 3)
    return loss


def test_forward_mode_checks_a_loss_reverse_mode_cannot_differentiate():
    def candidate(p):  # by hand: d/dx |sin x|³ = 3 |sin x| sin x cos x
        s = jnp.sin(p["x"])
        return jnp.sum(jnp.abs(s) ** 3), {"x": 3 * jnp.abs(s) * s * jnp.cos(p["x"])}

    params = {"x": jnp.array([0.4, 1.1, 2.0, -0.7])}
    # Reverse mode fails; the loss still runs, so finite differences alone check the candidate,
    # and the rule, which they never use, goes unseen.
    report = fnnet.check_grads(candidate, heron_loss(1.1), params)
    assert report.ok and report.reference == "finite differences"
    assert "Reverse-mode differentiation does not work for lax.while_loop" in report.warnings[0]
    assert fnnet.check_grads(candidate, heron_loss(1.0), params, modes=("fwd",)).ok
    report = fnnet.check_grads(candidate, heron_loss(1.1), params, modes=("fwd",))  # the rule 10% off
    assert not report.ok and report.message.startswith("gradient mismatch at ['x'] index")
    assert "jax.jacfwd itself disagrees with finite differences at ['x']" in report.warnings[0]
    loss = heron_loss(1.1)
    report = fnnet.check_grads(lambda p: (loss(p), jax.jacfwd(loss)(p)), loss, params, modes=("fwd",))
    assert not report.ok and report.leaves[0].problem == "differs from finite differences"
    assert "though it matches jax.jacfwd of the loss" in report.message


# ---------------------------------------------------------------------------------------
# Second order: Hessian-vector products against central differences of the gradient.


def cubic_loss(inner):
    """mean tanh((Xw + b)³) with a custom_jvp cube whose rule is 3·inner(x)²·t: right at first
    order for any `inner` that is the identity in value, and at second order only if it is."""
    @jax.custom_jvp
    def cube(x):
        return x**3

    cube.defjvp(lambda primals, tangents: (primals[0] ** 3, 3 * inner(primals[0]) ** 2 * tangents[0]))
    return lambda p, X: jnp.mean(jnp.tanh(cube(X @ p["w"] + p["b"])))


@pytest.mark.parametrize("modes", [("rev",), ("fwd",), ("fwd", "rev")])
def test_second_order_catches_a_rule_wrong_only_in_its_derivative(modes):
    params = {"b": jnp.array([0.2]), "w": jnp.array([0.5, -1.0, 0.3])}
    X = 0.5 * jax.random.normal(jax.random.key(0), (5, 3))
    right, wrong = cubic_loss(lambda x: x), cubic_loss(jax.lax.stop_gradient)
    assert fnnet.check_grads(jax.value_and_grad(wrong), wrong, params, X, modes=modes).ok  # first order can't tell
    report = fnnet.check_grads(jax.value_and_grad(right), right, params, X, modes=modes, order=2)
    assert report.ok and report.message.endswith("; Hessian-vector products agree too"), str(report)
    assert all(leaf.hvp_max_error < 1e-7 for leaf in report.leaves)
    assert str(report).splitlines()[1].split()[-4:] == ["hvp", "max", "err", "result"]
    report = fnnet.check_grads(jax.value_and_grad(wrong), wrong, params, X, modes=modes, order=2)
    mode = "jax.vjp of jax.grad" if "rev" in modes else "jax.jvp of jax.jacfwd"
    assert not report.ok and report.message.startswith(
        f"second-order mismatch at ['b']: Hessian-vector products ({mode}) differ from central "
        f"differences of jax."), report.message
