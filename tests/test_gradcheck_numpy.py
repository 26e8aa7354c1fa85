"""fnnet.check_grads on gradients written in numpy: a loss JAX cannot trace is checked by
float64 central differences alone, on the host, every coordinate the reference.

The oracle is those differences, independent of both the numpy code and JAX: the textbook's
own network (a copy that returns its gradients; the copy is first matched to the verbatim
`SimpleNN`) and CS231n-style layers written here, each correct and with plausible bugs the
check must name. At the textbook's start (zero biases, the (0, 0) input) hidden units sit at
exactly 0, a kink of ReLU: there the central difference averages the two sides, and any
gradient between them (mask z > 0 or z ≥ 0) is a valid subgradient and passes.
"""

import contextlib
import io
import pathlib
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from benchmarks.baselines import SimpleNN
from oracles import XOR_X, XOR_Y

NUMPY = "jax.grad not available: JAX cannot trace or differentiate the loss ("

# ---------------------------------------------------------------------------------------
# The textbook's network, as `value_and_grad(params, X, y)`: SimpleNN.forward and .backward
# line by line, with the gradients returned instead of applied, and the exact BCE (the loss
# its dz2 = y_pred − y is the gradient of; the article's printed loss adds 1e-8 inside the logs).


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -500, 500)))


def textbook_loss(p, X, y):
    pred = sigmoid(np.maximum(0, X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
    return -np.mean(y * np.log(pred) + (1 - y) * np.log(1 - pred))


def textbook_value_and_grad(bug=None):
    def value_and_grad(p, X, y):
        m = X.shape[0]
        z1 = X @ p["W1"] + p["b1"]
        a1 = np.maximum(0, z1)
        z2 = a1 @ p["W2"] + p["b2"]
        y_pred = sigmoid(z2)
        dz2 = y_pred - y
        dW2 = (a1.T @ dz2) / m
        db2 = np.sum(dz2, axis=0) / m
        if bug == "sign_dW2":
            dW2 = -dW2
        da1 = dz2 @ p["W2"].T
        dz1 = da1 * {"relu_derivative_1": 1, "relu_at_0_is_1": z1 >= 0}.get(bug, z1 > 0)
        dW1 = (X.T @ dz1) / (1 if bug == "missing_1/m" else m)
        db1 = np.sum(dz1, axis=1 if bug == "bias_axis" else 0) / m
        grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
        if bug == "float32_grads":
            grads = {k: g.astype(np.float32) for k, g in grads.items()}
        return -np.mean(y * np.log(y_pred) + (1 - y) * np.log(1 - y_pred)), grads

    return value_and_grad


def textbook_case(kind, seed):
    """(params, X, y): the article's start on XOR, or unit-scale weights on a random batch."""
    state = np.random.get_state()  # the article draws from the global RNG; leave it as it was
    try:
        np.random.seed(seed)
        model = SimpleNN(2, 4, 1) if kind == "xor" else SimpleNN(3, 5, 1)
    finally:
        np.random.set_state(state)
    params = {"W1": model.W1, "b1": model.b1, "W2": model.W2, "b2": model.b2}
    if kind == "xor":
        return params, XOR_X, XOR_Y
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(v.shape) * (1 if k[0] == "W" else 0.5) for k, v in params.items()}
    return params, rng.standard_normal((16, 3)), rng.integers(0, 2, (16, 1)).astype(np.float64)


CASES = [("xor", 0), ("xor", 1), ("random", 0)]


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_the_copy_is_the_textbook_network(case):
    # Its gradients are SimpleNN's own update, recovered as (W − W_after) / lr with lr = 1.
    params, X, y = textbook_case(*case)
    model = SimpleNN(*params["W1"].shape, 1)
    for k, v in params.items():
        setattr(model, k, v.copy())
    model.forward(X)
    model.backward(X, y, lr=1.0)
    _, grads = textbook_value_and_grad()(params, X, y)
    for k, g in grads.items():
        np.testing.assert_allclose(g, params[k] - getattr(model, k), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{s}" for k, s in CASES])
@pytest.mark.parametrize("bug", [None, "relu_at_0_is_1"])
def test_the_textbook_gradient_passes(case, bug):
    params, X, y = textbook_case(*case)
    report = fnnet.check_grads(textbook_value_and_grad(bug), textbook_loss, params, X, y)
    assert report.ok, str(report)
    assert report.reference == "finite differences" and report.settings["elementwise"]
    assert report.message.startswith("PASS: all 4 leaves agree with finite differences (float64)")
    assert any(NUMPY in w and "checked by float64 central differences alone" in w for w in report.warnings)
    assert all(leaf.fd_ok for leaf in report.leaves)
    if case[0] == "xor":  # hidden units at exactly 0: b1's subgradient differs from the average
        assert [leaf.subgradient for leaf in report.leaves] == [False, False, True, False]
        assert "valid subgradient" in report.message


GALLERY = [  # bug, the leaf (and problem) the message must name
    ("missing_1/m", "['W1'] index"),
    ("relu_derivative_1", "['W1'] index"),
    ("bias_axis", "['b1'] index"),
    ("sign_dW2", "['W2'] index"),
    ("float32_grads", "['W1']: dtype float32, expected float64 (the parameter's dtype); "
                      'to check float32 code, pass dtype="float32"'),
]


@pytest.mark.parametrize("bug,named", GALLERY, ids=[b for b, _ in GALLERY])
def test_textbook_bugs_are_caught_and_named(bug, named):
    params, X, y = textbook_case("xor", 0)
    report = fnnet.check_grads(textbook_value_and_grad(bug), textbook_loss, params, X, y)
    assert not report.ok
    assert report.message.startswith(f"gradient mismatch at {named}"), report.message
    if bug != "float32_grads":
        assert re.search(r"candidate \S+, finite differences \S+, rel. error", report.message)


def test_float32_numpy_code_checks_in_float32():
    params, X, y = textbook_case("random", 0)
    report = fnnet.check_grads(textbook_value_and_grad("float32_grads"), textbook_loss, params, X, y,
                               dtype="float32")
    assert report.ok, str(report)
    assert {leaf.dtype for leaf in report.leaves} == {"float32"}


def test_what_numpy_code_receives_and_the_limits():
    seen = []

    def loss(p, X):
        seen.append((type(p["w"]), p["w"].dtype, type(X)))
        return float(np.sum(np.tanh(X @ p["w"])))

    def value_and_grad(p, X):
        return loss(p, X), {"w": X.T @ (1 - np.tanh(X @ p["w"]) ** 2)}

    X = np.linspace(-1, 1, 6).reshape(3, 2)
    assert fnnet.check_grads(value_and_grad, loss, {"w": jax.numpy.ones(2)}, X).ok
    assert set(seen[1:]) == {(np.ndarray, np.dtype("float64"), np.ndarray)}  # after JAX's failed trace
    with pytest.raises(ValueError, match=r"JAX cannot trace or differentiate the loss \(TracerArray"
                                         r"ConversionError: .*\), so central differences along every "
                                         r"element are the reference; 20001 elements is over the limit"):
        fnnet.check_grads(value_and_grad, loss, {"w": np.ones(20_001)}, np.ones((1, 20_001)))
    with pytest.raises(ValueError, match=r"order=2 needs JAX to differentiate the loss twice, but JAX "
                                         r"cannot trace or differentiate it \(TracerArrayConversionError"):
        fnnet.check_grads(value_and_grad, loss, {"w": np.ones(2)}, X, order=2)


@settings(max_examples=5, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), m=st.integers(1, 8),
       seed=st.integers(0, 2**16))
def test_no_false_alarm_for_random_numpy_networks(sizes, m, seed):
    # tanh hidden layers, mean squared error, the backward as CS231n writes it.
    rng = np.random.default_rng(seed)
    params = [{"W": rng.standard_normal((a, b)) / np.sqrt(a), "b": 0.1 * rng.standard_normal(b)}
              for a, b in zip(sizes, sizes[1:])]
    X, y = rng.standard_normal((m, sizes[0])), rng.standard_normal((m, sizes[-1]))

    def forward(params, X):
        acts = [X]
        for i, p in enumerate(params):
            z = acts[-1] @ p["W"] + p["b"]
            acts.append(np.tanh(z) if i < len(params) - 1 else z)
        return acts

    def loss(params, X, y):
        return np.mean((forward(params, X)[-1] - y) ** 2)

    def value_and_grad(params, X, y):
        acts = forward(params, X)
        delta = 2 * (acts[-1] - y) / y.size
        grads = []
        for i in reversed(range(len(params))):
            grads.insert(0, {"W": acts[i].T @ delta, "b": delta.sum(0)})
            delta = (delta @ params[i]["W"].T) * (1 - acts[i] ** 2)
        return np.mean((acts[-1] - y) ** 2), grads

    report = fnnet.check_grads(value_and_grad, loss, params, X, y)
    assert report.ok, str(report)


# ---------------------------------------------------------------------------------------
# CS231n-style layers: `*_forward(x, ...) -> (out, cache)` and `*_backward(dout, cache)`,
# checked as CS231n does, through the loss sum(out · dout) for a fixed random dout, whose
# gradient the backward claims to be.


def affine_forward(x, w, b):
    """x (N, d1, ..., dk), w (D, M) with D = d1⋯dk, b (M,) -> out (N, M)."""
    return x.reshape(x.shape[0], -1) @ w + b, (x, w, b)


def affine_backward(dout, cache, bug=None):
    """dout (N, M) -> dx (N, d1, ..., dk), dw (D, M), db (M,)."""
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout / (x.shape[0] if bug == "dw_batch_mean" else 1)
    db = dout.sum(0) if bug != "db_missing" else np.zeros_like(b)
    return dx, dw, db


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, x, bug=None):
    return dout * {"no_mask": 1, "mask_x_ge_0": x >= 0}.get(bug, x > 0)


def conv_forward_naive(x, w, b, pad=1, stride=1):
    """x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W'), zero padding `pad`."""
    N, _, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.zeros((N, F, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, pad, stride)


def conv_backward_naive(dout, cache, bug=None):
    """dout (N, F, H', W') -> dx (N, C, H, W), dw (F, C, HH, WW), db (F,)."""
    x, w, b, pad, stride = cache
    _, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
            d = dout[:, :, i, j]
            contribution = np.tensordot(d, w, axes=(1, 0))
            if bug == "dx_overwritten":  # `=` for `+=`: overlapping windows lose their sum
                dxp[:, :, rows, cols] = contribution
            else:
                dxp[:, :, rows, cols] += contribution
            n = 1 if bug == "dw_first_example" else None  # the bug: the first example's share only
            dw += np.tensordot(d[:n], xp[:n, :, rows, cols], axes=(0, 0))
    return dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, size=2):
    """x (N, C, H, W) -> out (N, C, H/size, W/size): the max of each size × size window."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H // size, W // size))
    for i in range(H // size):
        for j in range(W // size):
            out[:, :, i, j] = x[:, :, i * size:(i + 1) * size, j * size:(j + 1) * size].max(axis=(2, 3))
    return out, (x, size)


def max_pool_backward_naive(dout, cache, bug=None):
    """dout (N, C, H', W') -> dx (N, C, H, W): each window's gradient to its maximum. Where a window
    ties, the correct backward picks one maximum (the first, as np.argmax); the bug, CS231n's
    well-known `mask = window == window.max()`, sends the whole gradient to every tied one."""
    x, size = cache
    N, C, H, W = x.shape
    windows = x.reshape(N, C, H // size, size, W // size, size).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(N, C, H // size, W // size, size * size)
    if bug == "mask_all_ties":
        mask = windows == windows.max(axis=-1, keepdims=True)
    else:
        mask = np.eye(size * size)[windows.argmax(axis=-1)]
    dx = (mask * dout[..., None]).reshape(N, C, H // size, W // size, size, size)
    return dx.transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)


def layer_check(forward, backward, params, bug=None, **options):
    """check_grads of `backward` against the loss sum(forward(**params) · dout)."""
    names = list(params)
    out, _ = forward(*params.values())
    dout = np.random.default_rng(7).standard_normal(out.shape)

    def loss(p, dout):
        return np.sum(forward(*(p[k] for k in names))[0] * dout)

    def value_and_grad(p, dout):
        out, cache = forward(*(p[k] for k in names))
        grads = backward(dout, cache, bug)
        return np.sum(out * dout), dict(zip(names, grads if isinstance(grads, tuple) else (grads,)))

    return fnnet.check_grads(value_and_grad, loss, params, dout, **options)


RNG = np.random.default_rng(0)
# Inputs on a grid of quarters, every two values ≥ 0.25 apart except where they are meant to be
# equal: exact zeros for ReLU, and a tie at the maximum of each 2 × 2 window for max-pooling.
RELU_X = RNG.integers(-4, 5, (3, 6)) / 4
RELU_X[0, :2] = 0.0
_windows = np.sort(RNG.permutation(np.arange(64) / 4 - 8).reshape(2, 2, 2, 2, 4), axis=-1)
_windows[..., 3] = _windows[..., 2]  # (N, C, H', W', 4): each window's maximum twice, shuffled
_windows = np.take_along_axis(_windows, RNG.permuted(np.tile(np.arange(4), (2, 2, 2, 2, 1)), axis=-1), -1)
POOL_X = _windows.reshape(2, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 4, 4)
LAYERS = {  # name: forward, backward, the inputs the check differentiates by
    "affine": (affine_forward, affine_backward,
               dict(x=RNG.standard_normal((4, 2, 3)), w=RNG.standard_normal((6, 5)), b=RNG.standard_normal(5))),
    "relu": (relu_forward, relu_backward, dict(x=RELU_X)),
    "conv": (conv_forward_naive, conv_backward_naive,
             dict(x=RNG.standard_normal((2, 2, 5, 5)), w=RNG.standard_normal((3, 2, 3, 3)), b=RNG.standard_normal(3))),
    "max_pool": (max_pool_forward_naive, max_pool_backward_naive, dict(x=POOL_X)),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_cs231n_layers_pass(layer):
    forward, backward, params = LAYERS[layer]
    report = layer_check(forward, backward, params)
    assert report.ok, str(report)
    assert report.reference == "finite differences"  # numpy code: checked on the host
    assert all(leaf.fd_ok for leaf in report.leaves)
    # ReLU at its exact zeros and max-pooling at its ties differ from the central difference
    # (the average of both sides) and are valid subgradients; the affine and conv maps are smooth.
    assert [leaf.subgradient for leaf in report.leaves] == [layer in ("relu", "max_pool")] * len(params)


LAYER_GALLERY = [  # layer, bug, the leaf the message must name, and how
    ("affine", "dw_batch_mean", "['w'] index", ""),
    ("affine", "db_missing", "['b'] index", ""),
    ("relu", "no_mask", "['x'] index", ""),
    ("conv", "dx_overwritten", "['x'] index", ""),
    ("conv", "dw_first_example", "['w'] index", ""),
    ("max_pool", "mask_all_ties", "['x'] index",
     "the loss has a kink there, and the candidate is no subgradient"),
]


@pytest.mark.parametrize("layer,bug,named,why", LAYER_GALLERY,
                         ids=[f"{layer}-{bug}" for layer, bug, _, _ in LAYER_GALLERY])
def test_cs231n_layer_bugs_are_caught(layer, bug, named, why):
    forward, backward, params = LAYERS[layer]
    report = layer_check(forward, backward, params, bug)
    assert not report.ok and report.reference == "finite differences"
    assert report.message.startswith(f"gradient mismatch at {named}"), report.message
    assert why in report.message


def test_relu_mask_at_zero_either_way_is_a_subgradient():
    # x ≥ 0 takes the right-hand slope at the exact zeros, x > 0 the left-hand one: both pass.
    assert (RELU_X == 0).any()
    report = layer_check(relu_forward, relu_backward, dict(x=RELU_X), "mask_x_ge_0")
    assert report.ok and report.leaves[0].subgradient, str(report)


def test_the_readme_numpy_example_prints_what_it_says():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"### Checking numpy gradients\n.*?```python\n(.*?)```", readme, re.S).group(1)
    out = io.StringIO()
    with jax.enable_x64(False), contextlib.redirect_stdout(out):  # as a user runs it
        exec(code, {})
    assert out.getvalue().strip() == re.search(r"print\(np_report.message\)  # (.*)", code).group(1)
