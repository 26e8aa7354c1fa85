"""Tests for fnnet.losses: values against numpy closed forms, deltas against jax.grad.

The delta oracle is `jax.grad(lambda o: loss(o, y).sum())(out)`: summing the per-example
losses makes row i of the gradient ∂ℓᵢ/∂outᵢ, which is what `loss.delta` promises.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet.losses as L
from fnnet.losses import Loss
from oracles import rel_error

TOL = 1e-12

BCE = L.sigmoid_binary_cross_entropy
SCE = L.softmax_cross_entropy
ICE = L.softmax_cross_entropy_with_integer_labels
MSE = L.mean_squared_error


def make_targets(rng, loss, out_shape):
    """Targets that fit `loss` (as fnnet.gradcheck.random_batch makes them) for outputs of `out_shape`:
    integer classes, softmax-normalised soft targets, values in [0, 1], or normals."""
    if loss.integer_labels:
        return rng.integers(0, out_shape[-1], out_shape[:-1])
    if loss.name.startswith("softmax_cross_entropy"):
        e = np.exp(rng.standard_normal(out_shape))
        return e / e.sum(axis=-1, keepdims=True)
    if loss.name.startswith("sigmoid_binary_cross_entropy"):
        return rng.uniform(size=out_shape)
    return rng.standard_normal(out_shape)


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(losses, outs, ys):
    """ℓ, δ and the jax.grad oracle for every (loss, out, y), in one compiled call.

    The losses are jit static arguments, which also exercises their hashing.
    """
    return [
        {
            "loss": loss(out, y),
            "delta": loss.delta(out, y),
            "autodiff": jax.grad(lambda o: loss(o, y).sum())(out),
        }
        for loss, out, y in zip(losses, outs, ys)
    ]


@functools.cache
def evaluate_cases(cases, dtype=np.float64):
    """{(loss, out_shape): dict of out, y, loss, delta, autodiff as numpy arrays}."""
    # numpy data (eager jax.random per shape would compile dozens of tiny programs)
    rng = np.random.default_rng(0)
    outs = [rng.standard_normal(shape).astype(dtype) for _, shape in cases]
    ys = [make_targets(rng, loss, shape) for loss, shape in cases]
    ys = [y if loss.integer_labels else y.astype(dtype) for (loss, _), y in zip(cases, ys)]
    # integer-label cases are also run through softmax_cross_entropy on one-hot targets
    one_hot = [(i, np.eye(shape[-1], dtype=dtype)[ys[i]]) for i, (loss, shape) in enumerate(cases) if loss.integer_labels]
    losses = tuple(loss for loss, _ in cases) + (SCE,) * len(one_hot)
    results = _evaluate(losses, outs + [outs[i] for i, _ in one_hot], ys + [y for _, y in one_hot])
    by_case = {
        case: {"out": o, "y": y} | {k: np.asarray(v) for k, v in r.items()}
        for case, o, y, r in zip(cases, outs, ys, results)
    }
    for (i, _), r in zip(one_hot, results[len(cases):]):
        by_case[cases[i]]["one_hot"] = {k: np.asarray(v) for k, v in r.items()}
    return by_case


# ---------- numpy closed forms (float64), independent of fnnet ----------


def _np_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))


def _mean_per_example(v):
    return v.reshape(v.shape[0], -1).mean(axis=1)


def np_bce(z, y):
    log_p, log_1_minus_p = -np.logaddexp(0, -z), -np.logaddexp(0, z)  # log σ(z), log σ(−z)
    return _mean_per_example(-(y * log_p + (1 - y) * log_1_minus_p))


def np_softmax_ce(z, y):
    return _mean_per_example(-(y * _np_log_softmax(z)).sum(axis=-1))


def np_integer_ce(z, labels):
    return np_softmax_ce(z, np.eye(z.shape[-1])[labels])


def np_mse(z, y):
    return _mean_per_example((z - y) ** 2)


NUMPY = {BCE: np_bce, SCE: np_softmax_ce, ICE: np_integer_ce, MSE: np_mse}

BATCHES = (1, 7, 64)
N_OUTS = (1, 3, 10)
SHAPES = [(m, k) for m in BATCHES for k in N_OUTS] + [(5, 2, 3)]  # plus one with an extra axis
CASES = tuple((loss, shape) for loss in L.ALL for shape in SHAPES)
CASE_IDS = [f"{loss.name}-{'x'.join(map(str, shape))}" for loss, shape in CASES]


# ---------- known-wrong deltas: the same comparison must reject them ----------


def _bce_delta_without_k(z, y):
    return jax.nn.sigmoid(z) - y


def _bce_delta_sign_flipped(z, y):
    return (y - jax.nn.sigmoid(z)) / (z.size // z.shape[0])


def _mse_delta_without_2(out, y):
    return (out - y) / (out.size // out.shape[0])


def _sce_delta_assuming_normalised_targets(z, y):
    return (jax.nn.softmax(z) - y) / (z.size // (z.shape[0] * z.shape[-1]))


def _ice_delta_without_k(z, labels):
    return jax.nn.softmax(z) - jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)


BCE_NO_K = Loss("sigmoid_binary_cross_entropy_no_k", BCE.fn, _bce_delta_without_k)
BCE_FLIPPED = Loss("sigmoid_binary_cross_entropy_flipped", BCE.fn, _bce_delta_sign_flipped)
MSE_NO_2 = Loss("mean_squared_error_no_2", MSE.fn, _mse_delta_without_2)
SCE_NORMALISED = Loss("softmax_cross_entropy_normalised", SCE.fn, _sce_delta_assuming_normalised_targets)
ICE_NO_K = Loss("softmax_cross_entropy_with_integer_labels_no_k", ICE.fn, _ice_delta_without_k, True)

# (wrong loss, output shape, rejected?): a delta missing 1/k is right when k = 1, and
# a softmax delta assuming Σ_c y_c = 1 is right for softmax targets (see the next test).
WRONG = [
    (BCE_NO_K, (7, 3), True),
    (BCE_NO_K, (7, 10), True),
    (BCE_NO_K, (7, 1), False),
    (BCE_FLIPPED, (7, 1), True),
    (BCE_FLIPPED, (7, 3), True),
    (MSE_NO_2, (7, 1), True),
    (MSE_NO_2, (7, 3), True),
    (ICE_NO_K, (5, 2, 3), True),
    (ICE_NO_K, (7, 3), False),
]
WRONG_IDS = [f"{loss.name}-{'x'.join(map(str, shape))}" for loss, shape, _ in WRONG]


# ---------- shapes, deltas and values ----------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_shapes_and_dtypes(case):
    r = evaluate_cases(CASES)[case]
    batch = case[1][0]
    assert r["loss"].shape == (batch,)
    assert r["delta"].shape == r["out"].shape
    assert r["loss"].dtype == np.float64 and r["delta"].dtype == np.float64


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_delta_matches_jax_grad(case):
    r = evaluate_cases(CASES)[case]
    assert rel_error(r["delta"], r["autodiff"]) <= TOL


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_loss_matches_numpy_closed_form(case):
    loss, _ = case
    r = evaluate_cases(CASES)[case]
    assert rel_error(r["loss"], NUMPY[loss](r["out"], r["y"])) <= TOL


BCE_SUMMED = Loss("sigmoid_binary_cross_entropy_summed", lambda z, y: BCE.fn(z, y) * z.shape[1], BCE.delta_fn)
MSE_ABS = Loss("mean_squared_error_abs", lambda z, y: jnp.abs(z - y).mean(axis=1), MSE.delta_fn)
# (wrong loss, the closed form it claims to be, output shape, rejected?)
WRONG_VALUES = [
    (BCE_SUMMED, BCE, (7, 3), True),
    (BCE_SUMMED, BCE, (7, 1), False),  # sum = mean for one output
    (MSE_ABS, MSE, (7, 3), True),
]


@pytest.mark.parametrize("wrong, claimed, shape, rejected", WRONG_VALUES,
                         ids=[f"{w.name}-{s[0]}x{s[1]}" for w, _, s, _ in WRONG_VALUES])
def test_wrong_loss_value_rejected(wrong, claimed, shape, rejected):
    r = evaluate_cases(tuple((w, s) for w, _, s, _ in WRONG_VALUES))[(wrong, shape)]
    assert (rel_error(r["loss"], NUMPY[claimed](r["out"], r["y"])) > TOL) == rejected


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_integer_labels_equal_softmax_ce_on_one_hot(shape):
    r = evaluate_cases(CASES)[(ICE, shape)]
    assert rel_error(r["loss"], r["one_hot"]["loss"]) <= TOL
    assert rel_error(r["delta"], r["one_hot"]["delta"]) <= TOL


@pytest.mark.parametrize("wrong, shape, rejected", WRONG, ids=WRONG_IDS)
def test_wrong_delta_rejected(wrong, shape, rejected):
    cases = tuple((loss, shape) for loss, shape, _ in WRONG)
    r = evaluate_cases(cases)[(wrong, shape)]
    assert (rel_error(r["delta"], r["autodiff"]) > TOL) == rejected


def test_wrong_softmax_delta_rejected_for_unnormalised_targets():
    """softmax(z) − y is the delta only when Σ_c y_c = 1; label smoothing or scaled targets break it."""
    rng = np.random.default_rng(3)
    out = rng.standard_normal((7, 3))
    y = 0.5 * make_targets(rng, SCE, (7, 3))
    results = _evaluate((SCE, SCE_NORMALISED), [out, out], [y, y])
    for r, rejected in zip(results, (False, True)):
        assert (rel_error(r["delta"], r["autodiff"]) > TOL) == rejected


def test_extra_axes_are_averaged():
    """For out (m, 2, 3) each example's loss is the mean of the two rows' losses."""
    for loss in L.ALL:
        r = evaluate_cases(CASES)[(loss, (5, 2, 3))]
        flat_y = r["y"].reshape(10) if loss.integer_labels else r["y"].reshape(10, 3)
        rows = NUMPY[loss](r["out"].reshape(10, 3), flat_y).reshape(5, 2)
        assert rel_error(r["loss"], rows.mean(axis=1)) <= TOL, loss


# ---------- numerics: saturated logits, hard targets, float32 ----------


def _numeric_cases():
    """(id, loss, out, y, expected ℓ, expected δ, dtype): exact or numpy-closed-form answers."""
    cases = []
    for big in (1e4, 1e30):  # 1e30: far beyond where exp overflows, still finite in float32
        for dtype in (np.float32, np.float64):
            tag = f"{big:.0e}-{np.dtype(dtype).name}"
            # BCE: log σ(±big) must not be log(0); ℓ(+big, y=1) = 0, ℓ(+big, y=0) = big.
            cases.append((f"bce-{tag}", BCE, [[big], [big], [-big], [-big]], [[1.0], [0.0], [1.0], [0.0]],
                          [0.0, big, big, 0.0], [[0.0], [1.0], [-1.0], [0.0]], dtype))
            # softmax CE of logits (big, 0, −big) for each class: ℓ = 0, big, 2·big.
            out = [[big, 0.0, -big]] * 3
            want_delta = [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]
            cases.append((f"sce-{tag}", SCE, out, np.eye(3), [0.0, big, 2 * big], want_delta, dtype))
            cases.append((f"ice-{tag}", ICE, out, [0, 1, 2], [0.0, big, 2 * big], want_delta, dtype))
    for dtype in (np.float32, np.float64):
        tag = np.dtype(dtype).name
        # one huge logit with soft targets: lse(1e4, 1, 2) = 1e4 to double precision.
        out, y = np.array([[1e4, 1.0, 2.0]]), np.array([[0.2, 0.3, 0.5]])
        cases.append((f"sce-one-huge-logit-{tag}", SCE, out, y, [0.3 * 9999 + 0.5 * 9998],
                      [[0.8, -0.3, -0.5]], dtype))
        # targets of exactly 0 and 1
        out, y = np.array([[-2.0, 3.0, 0.0], [40.0, -40.0, 0.5]]), np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        cases.append((f"bce-hard-targets-{tag}", BCE, out, y, np_bce(out, y), (1 / (1 + np.exp(-out)) - y) / 3, dtype))
        # a one-hot target next to a very negative logit: 0 · log p must be 0, not nan
        out, y = np.array([[-1e4, 0.0, 1.0]]), np.array([[0.0, 1.0, 0.0]])
        cases.append((f"sce-zero-target-huge-negative-logit-{tag}", SCE, out, y, np_softmax_ce(out, y),
                      np.exp(_np_log_softmax(out)) - y, dtype))
    return cases


NUMERIC = _numeric_cases()


@functools.cache
def evaluate_numeric():
    """All NUMERIC cases in one compiled call, keyed by id."""
    outs = [np.asarray(out, dtype) for _, _, out, _, _, _, dtype in NUMERIC]
    ys = [np.asarray(y, np.int64 if loss.integer_labels else dtype) for _, loss, _, y, _, _, dtype in NUMERIC]
    results = _evaluate(tuple(case[1] for case in NUMERIC), outs, ys)
    return {case[0]: {k: np.asarray(v) for k, v in r.items()} for case, r in zip(NUMERIC, results)}


def numeric_failures(r, want_loss, want_delta, dtype):
    """What is wrong with evaluated case `r`; [] if nothing.

    ℓ element-wise; δ relative to its scale and against jax.grad; all finite, in `dtype`.
    δ is compared relative to its scale because at z = 40, y = 1 fnnet's δ = σ(z) − y
    rounds to 0 while the true value is −σ(−40)/3 ≈ −1.4e-18.
    """
    failures = [f"{k} has dtype {v.dtype}" for k, v in r.items() if v.dtype != dtype]
    failures += [f"{k} not finite: {v}" for k, v in r.items() if not np.all(np.isfinite(v))]
    tol = 1e-6 if dtype == np.float32 else 1e-12
    with np.errstate(invalid="ignore"):
        if not np.allclose(r["loss"], want_loss, rtol=tol, atol=0):
            failures.append(f"loss {r['loss']}, expected {want_loss}")
        if not rel_error(r["delta"], np.asarray(want_delta)) <= tol:
            failures.append(f"delta {r['delta']}, expected {want_delta}")
        if not rel_error(r["delta"], r["autodiff"]) <= tol:
            failures.append(f"delta {r['delta']}, jax.grad {r['autodiff']}")
    return failures


@pytest.mark.parametrize("id_, loss, out, y, want_loss, want_delta, dtype", NUMERIC, ids=[c[0] for c in NUMERIC])
def test_numerics(id_, loss, out, y, want_loss, want_delta, dtype):
    del loss, out, y
    assert numeric_failures(evaluate_numeric()[id_], want_loss, want_delta, dtype) == []


def _naive_bce(z, y):
    p = jax.nn.sigmoid(z)
    return (-(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))).mean(axis=1)


def _naive_softmax_ce(z, y):
    return -(y * jnp.log(jax.nn.softmax(z))).sum(axis=-1)


NAIVE = [
    ("bce-1e+04-float64", Loss("bce_naive", _naive_bce, BCE.delta_fn)),
    ("bce-1e+30-float32", Loss("bce_naive", _naive_bce, BCE.delta_fn)),
    ("sce-1e+04-float64", Loss("sce_naive", _naive_softmax_ce, SCE.delta_fn)),
    ("sce-1e+30-float32", Loss("sce_naive", _naive_softmax_ce, SCE.delta_fn)),
]


def test_naive_forms_rejected_by_numerics():
    """log σ(z) and log softmax(z) written naively give inf/nan at saturated logits: the same
    checks that pass fnnet's losses must fail them."""
    cases = {c[0]: c for c in NUMERIC}
    picked = [cases[id_] for id_, _ in NAIVE]
    outs = [np.asarray(c[2], c[6]) for c in picked]
    ys = [np.asarray(c[3], c[6]) for c in picked]
    results = _evaluate(tuple(naive for _, naive in NAIVE), outs, ys)
    for (id_, _), c, r in zip(NAIVE, picked, results):
        r = {k: np.asarray(v) for k, v in r.items()}
        assert numeric_failures(r, c[4], c[5], c[6]) != [], id_


def test_numeric_oracle_sanity():
    """The hand-written expectations above agree with the numpy closed forms."""
    np.testing.assert_allclose(np_softmax_ce(np.array([[1e4, 1.0, 2.0]]), np.array([[0.2, 0.3, 0.5]])),
                               [0.3 * 9999 + 0.5 * 9998], rtol=1e-15)
    big = np.array([[1e30], [1e30], [-1e30], [-1e30]])
    np.testing.assert_array_equal(np_bce(big, np.array([[1.0], [0.0], [1.0], [0.0]])), [0, 1e30, 1e30, 0])


@pytest.mark.parametrize("loss", L.ALL, ids=[loss.name for loss in L.ALL])
def test_float32_in_float32_out(loss):
    r = evaluate_cases(tuple((loss_, (7, 3)) for loss_ in L.ALL), np.float32)[(loss, (7, 3))]
    for key in ("loss", "delta", "autodiff"):
        assert r[key].dtype == np.float32, (key, r[key].dtype)
    assert rel_error(r["loss"], NUMPY[loss](r["out"].astype(np.float64), r["y"])) <= 1e-6
    assert rel_error(r["delta"], r["autodiff"]) <= 1e-6


# ---------- errors ----------

ERRORS = [
    # (id, loss, out shape, y, exception, match)
    ("bce-y-missing-output-axis", BCE, (4, 1), np.zeros(4), ValueError,
     r"sigmoid_binary_cross_entropy: y has shape \(4,\) but the output has shape \(4, 1\).*y\[:, None\]"),
    ("mse-y-missing-output-axis", MSE, (4, 1), np.zeros(4), ValueError,
     r"mean_squared_error: y has shape \(4,\) but the output has shape \(4, 1\); expected y of the same shape as the output; add the output axis with y\[:, None\]"),
    ("mse-y-wrong-n-out", MSE, (4, 3), np.zeros((4, 2)), ValueError,
     r"y has shape \(4, 2\) but the output has shape \(4, 3\); expected y of the same shape as the output(\n|$)"),
    ("bce-y-transposed", BCE, (4, 3), np.zeros((3, 4)), ValueError,
     r"y has shape \(3, 4\) but the output has shape \(4, 3\)"),
    ("sce-integer-labels", SCE, (4, 3), np.zeros(4, np.int64), ValueError,
     r"y has shape \(4,\) but the output has shape \(4, 3\).*use softmax_cross_entropy_with_integer_labels"),
    ("ice-labels-with-axis", ICE, (4, 3), np.zeros((4, 1), np.int64), ValueError,
     r"labels have shape \(4, 1\) but the output has shape \(4, 3\); expected labels of shape \(4,\)"),
    ("ice-one-hot", ICE, (4, 3), np.eye(3)[[0, 1, 2, 0]], ValueError,
     r"labels have shape \(4, 3\).*for one-hot targets use softmax_cross_entropy"),
    ("ice-float-labels", ICE, (4, 3), np.zeros(4), TypeError,
     r"labels have dtype float64; expected an integer dtype of class indices"),
] + [
    (f"{loss.name}-no-batch-axis", loss, (4,), np.zeros((), np.int64) if loss.integer_labels else np.zeros(4),
     ValueError, rf"{loss.name}: the output has shape \(4,\); expected a leading batch axis")
    for loss in L.ALL
]


@pytest.mark.parametrize("loss, out_shape, y, exc, match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_targets_raise(loss, out_shape, y, exc, match):
    out = np.zeros(out_shape)
    with pytest.raises(exc, match=match):
        loss(out, y)
    with pytest.raises(exc, match=match):
        loss.delta(out, y)
    with pytest.raises(exc, match=match):  # raised while tracing, before XLA sees anything
        jax.jit(Loss.__call__, static_argnums=0)(loss, out, y)


def test_matching_targets_do_not_raise():
    """The error checks reject only what they should: the fixed inputs pass."""
    out1, out3 = np.zeros((4, 1)), np.zeros((4, 3))
    BCE.check(out1, np.zeros(4)[:, None])
    MSE.check(out3, np.zeros((4, 3)))
    ICE.check(out3, np.zeros(4, np.int32))
    SCE.check(out3, np.eye(3)[[0, 1, 2, 0]])


# ---------- names ----------


@pytest.mark.parametrize(
    "name, expected",
    [(loss.name, loss) for loss in L.ALL] + [("bce", BCE), ("mse", MSE)],
    ids=[loss.name for loss in L.ALL] + ["bce", "mse"],
)
def test_get_by_name(name, expected):
    assert L.get(name) is expected
    assert L.get(expected) is expected


@pytest.mark.parametrize("bad", ["nope", "cross_entropy", "MSE"], ids=["nope", "cross_entropy", "MSE"])
def test_get_unknown_name(bad):
    with pytest.raises(ValueError, match=rf"unknown loss {bad!r}; expected one of: bce, mean_squared_error, mse, ") as info:
        L.get(bad)
    for loss in L.ALL:
        assert loss.name in str(info.value)


@pytest.mark.parametrize("bad", [np_mse, 3], ids=["function", "int"])
def test_get_wrong_type_tells_how_to_wrap(bad):
    with pytest.raises(TypeError, match=r"name \(str\) or a fnnet Loss.*wrap it as fnnet\.losses\.Loss\("):
        L.get(bad)


def test_hashable_and_printed_by_name():
    assert len({*L.ALL, L.get("bce"), L.get("mse")}) == len(L.ALL)
    same = Loss(BCE.name, BCE.fn, BCE.delta_fn, accuracy_fn=BCE.accuracy_fn, targets_fn=BCE.targets_fn,
                from_labels_fn=BCE.from_labels_fn, probabilities_fn=BCE.probabilities_fn,
                predict_labels_fn=BCE.predict_labels_fn, target_range=BCE.target_range)
    assert same == BCE and hash(same) == hash(BCE)
    assert Loss(BCE.name, BCE.fn, BCE.delta_fn) != BCE  # without its accuracy: another loss
    assert BCE_NO_K != BCE
    for loss in L.ALL:
        assert repr(loss) == str(loss) == loss.name
    assert repr(L.get("mse")) == "mean_squared_error"


def test_out_of_range_labels_rejected_when_known():
    z = jnp.zeros((3, 4))
    loss = L.softmax_cross_entropy_with_integer_labels
    for bad in ([0, 1, 4], [0, -1, 2]):
        with pytest.raises(ValueError, match=r"labels range over \[-?\d, \d\] but the output has 4 "
                                             r"classes; expected labels in \[0, 3\]"):
            loss(z, jnp.array(bad))
        with pytest.raises(ValueError, match=r"expected labels in \[0, 3\]"):
            loss.delta(z, jnp.array(bad))


def test_out_of_range_labels_under_jit_are_nan_in_loss_and_delta():
    # Inside jit the values are unknown: a wrong label must show, never pass silently.
    loss = L.softmax_cross_entropy_with_integer_labels
    z = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    labels = jnp.array([0, 3, -1])
    values = jax.jit(loss)(z, labels)
    deltas = jax.jit(loss.delta)(z, labels)
    assert jnp.isfinite(values[0]) and jnp.isnan(values[1:]).all()
    assert jnp.isfinite(deltas[0]).all() and jnp.isnan(deltas[1:]).all()


def test_python_lists_as_targets():
    z = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    for loss in (L.mean_squared_error, L.sigmoid_binary_cross_entropy, L.softmax_cross_entropy):
        y = [[1.0, 0.0], [0.0, 1.0]]
        np.testing.assert_array_equal(loss(z, y), loss(z, jnp.array(y)))
        np.testing.assert_array_equal(loss.delta(z, y), loss.delta(z, jnp.array(y)))
    labels = L.softmax_cross_entropy_with_integer_labels
    np.testing.assert_array_equal(labels(z, [1, 0]), labels(z, jnp.array([1, 0])))


def test_bce_delta_keeps_precision_where_sigmoid_is_close_to_y():
    # σ(40) − 1 rounds to 0; the true ∂ℓ/∂z = −σ(−40) ≈ −4.2e-18 (k = 1 output).
    delta = L.sigmoid_binary_cross_entropy.delta(jnp.array([[40.0], [-40.0]]), jnp.array([[1.0], [0.0]]))
    expected = np.array([[-1 / (1 + np.exp(40.0))], [1 / (1 + np.exp(40.0))]])
    np.testing.assert_allclose(delta, expected, rtol=1e-12)


@pytest.mark.parametrize("loss", L.ALL, ids=repr)
def test_a_loss_knows_its_targets_and_its_accuracy(loss):
    """What a loss knows about itself: random targets that pass its own check, targets from class
    labels, and (for the classifiers) an accuracy that counts argmax / sign agreements."""
    out_shape = (6, 1) if loss is L.sigmoid_binary_cross_entropy else (6, 3)
    y = loss.targets(jax.random.key(0), out_shape)
    loss.check(jnp.zeros(out_shape), y)
    labels = jnp.array([0, 1, 1, 0, 1, 0])
    t = loss.from_labels(labels, 2 if loss is L.sigmoid_binary_cross_entropy else 3)
    loss.check(jnp.zeros(out_shape), t)
    if loss is L.mean_squared_error:
        assert loss.accuracy(jnp.zeros(out_shape), t) is None
        return
    out = jnp.zeros(out_shape).at[jnp.arange(6), labels].set(5.0) if out_shape[1] == 3 else \
        jnp.where(labels[:, None] == 1, 5.0, -5.0)
    assert loss.accuracy(out, t).tolist() == [1.0] * 6
    assert loss.accuracy(-out, t).tolist() == [0.0] * 6 if out_shape[1] == 1 else True


def test_a_users_loss_gets_an_accuracy_only_if_it_gives_one():
    mae = Loss("mean_absolute_error", lambda z, y: jnp.abs(z - y).mean(axis=-1), lambda z, y: jnp.sign(z - y) / z.shape[-1])
    assert mae.accuracy(jnp.zeros((2, 1)), jnp.zeros((2, 1))) is None
    with pytest.raises(ValueError, match=r"sigmoid_binary_cross_entropy needs 2 classes; this dataset has 3"):
        BCE.from_labels(jnp.array([0, 1, 2]), 3)


# Sequence outputs with a padding mask: the batch loss is the mean over the real tokens.
@pytest.mark.parametrize("loss", L.ALL, ids=str)
def test_masked_batch_loss_is_the_mean_over_real_tokens_and_its_delta_is_jax_grad(loss):
    rng = np.random.default_rng(0)
    B, T, k = 3, 5, 4
    out = jnp.asarray(rng.standard_normal((B, T, k)))
    y = jnp.asarray(make_targets(rng, loss, (B, T, k)))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    value, delta = loss.value_and_delta(out, y, mask)
    tokens = [loss(out[b, t][None], y[b, t][None])[0] for b in range(B) for t in range(T) if mask[b, t]]
    assert rel_error(value, np.mean(tokens)) <= TOL  # each real token once, as PyTorch's ignore_index
    ref = jax.grad(lambda o: loss.value_and_delta(o, y, mask)[0])(out)
    assert rel_error(delta, ref) <= TOL and not delta[~mask].any()  # padded tokens: a delta of exactly 0
    # per example: the mean over its own real tokens; the fully padded example gives 0, not NaN
    per_example = loss(out, y, mask)
    assert rel_error(per_example[0], np.mean(tokens[:3])) <= TOL and per_example[2] == 0
    # without a mask, or with one of all True: the plain mean of the per-example losses and delta / m
    plain = loss.value_and_delta(out, y)
    assert plain[0] == loss(out, y).mean() and jnp.array_equal(plain[1], loss.delta(out, y) / B)
    full = loss.value_and_delta(out, y, jnp.ones((B, T), bool))
    assert max(rel_error(a, b) for a, b in zip(full, plain)) <= TOL


def test_masked_loss_ignores_what_padded_targets_hold_and_checks_the_mask_shape():
    out = jnp.zeros((2, 3, 4))
    mask = jnp.array([[1, 1, 0], [1, 0, 0]], bool)
    y = jnp.array([[1, 2, 3], [0, 1, 2]])
    garbage = y.at[0, 2].set(1).at[1, 1:].set(3)
    a, b = ICE.value_and_delta(out, y, mask), ICE.value_and_delta(out, garbage, mask)
    assert a[0] == b[0] and jnp.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match=r"the padding mask has shape \(2, 2\) but the output has shape \(2, 3, 4\); "
                                         r"expected a mask of shape \(2, 3\)"):
        ICE.value_and_delta(out, y, mask[:, :2])
    # one output per sequence (no time axis): the mask does not apply
    assert ICE.value_and_delta(out[:, 0], y[:, 0], mask)[0] == ICE(out[:, 0], y[:, 0]).mean()
