"""Tests for fnnet.activations: f′ against jax.grad, finite differences and numpy closed forms.

Errors are measured with `oracles.rel_error`, relative to the largest |f′| on the grid.
Element-wise relative error would be the wrong yardstick for the jax.grad oracle:
at |z| = 30 JAX's own derivative cancels (σ(1 − σ) for the sigmoid, expm1′ = expm1 + 1
for elu) and is only good to ~1e-3 of a value of ~1e-13, while fnnet's is exact.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet.activations as A
from fnnet.activations import Activation
from oracles import rel_error

TOL_AUTODIFF = 1e-12
TOL_FD = 1e-7
TOL_NUMPY = 1e-12

# Exactly 0 (the kinks), tiny, moderate, saturating and huge values, and random normals.
SPECIAL = np.array([0.0, 1e-3, -1e-3, 1.0, -1.0, 3.0, -3.0, 30.0, -30.0, 200.0, -200.0, 1e4, -1e4])
RANDOM = np.asarray(jax.random.normal(jax.random.key(0), (64,), jnp.float64))
GRID = np.concatenate([SPECIAL, RANDOM])
# Central differences, step scaled with |z|: truncation ~h²f‴/6 and rounding ~ε|f|/h
# both stay well below TOL_FD relative to max|f′|.
STEP = 1e-5 * np.maximum(1.0, np.abs(GRID))
DA = np.asarray(jax.random.normal(jax.random.key(1), GRID.shape, jnp.float64))

LEAKY_02 = A.leaky_relu.replace(negative_slope=0.2)
ELU_05 = A.elu.replace(alpha=0.5)
ACTIVATIONS = A.ALL + (LEAKY_02, ELU_05)
IDS = [repr(a) for a in ACTIVATIONS]
KINKED = {"relu", "leaky_relu", "elu"}  # not differentiable (or not C²) at 0


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(acts, z, z_plus, z_minus, da):
    """Everything the tests read about each activation in `acts`, in one compiled call.

    `acts` is a jit static argument, which also exercises hashing.
    """
    out = []
    for act in acts:
        _, vjp = jax.vjp(act, z)
        out.append({
            "f": act(z),
            "grad": act.grad(z),
            "autodiff": jax.vmap(jax.grad(act))(z),
            "f_plus": act(z_plus),
            "f_minus": act(z_minus),
            "backward": act.backward(z, da),
            "vjp": vjp(da)[0],
        })
    return out


@functools.cache
def _evaluate_many(acts, dtype):
    z = jnp.asarray(GRID, dtype)
    out = _evaluate(acts, z, jnp.asarray(GRID + STEP, dtype), jnp.asarray(GRID - STEP, dtype), jnp.asarray(DA, dtype))
    return {act: {k: np.asarray(v) for k, v in r.items()} for act, r in zip(acts, out)}


def evaluate(act, dtype=jnp.float64):
    """`_evaluate` on GRID in `dtype` as numpy arrays (dtypes kept); the library's
    activations are compiled together, to keep the suite fast."""
    acts = ACTIVATIONS if act in ACTIVATIONS else (act,)
    return _evaluate_many(acts, dtype)[act]


def autodiff_error(act, mask=slice(None)):
    """rel_error of act.grad (under jit) against jax.vmap(jax.grad(act)) on GRID[mask]."""
    r = evaluate(act)
    return rel_error(r["grad"][mask], r["autodiff"][mask])


def fd_error(act, mask=slice(None)):
    """rel_error of act.grad against central differences of act on GRID[mask]."""
    r = evaluate(act)
    fd = (r["f_plus"] - r["f_minus"]) / ((GRID + STEP) - (GRID - STEP))
    return rel_error(r["grad"][mask], fd[mask])


AWAY_FROM_ZERO = GRID != 0


# ---------- numpy closed forms (float64), written independently of fnnet ----------

_erf = np.vectorize(math.erf)


def _np_sigmoid(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def _np_dsigmoid(z):
    with np.errstate(over="ignore"):
        return 0.25 / np.cosh(z / 2) ** 2


def _np_dtanh(z):
    with np.errstate(over="ignore"):
        return 1 / np.cosh(z) ** 2


def _np_gelu_tanh(z):
    u = np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
    return 0.5 * z * (1 + np.tanh(u))


def _np_dgelu_tanh(z):
    u = np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
    du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * z**2)
    with np.errstate(over="ignore"):
        sech2 = 1 / np.cosh(u) ** 2
    return 0.5 * (1 + np.tanh(u)) + 0.5 * z * sech2 * du


def _np_Phi(z):
    return 0.5 * (1 + _erf(z / np.sqrt(2)))


def _np_phi(z):
    return np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


def _np_elu(alpha):
    return (
        lambda z: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0))),
        lambda z: np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0))),
    )


def _np_leaky(s):
    return lambda z: np.where(z >= 0, z, s * z), lambda z: np.where(z >= 0, 1.0, s)


NUMPY = {
    "identity": (lambda z: z, np.ones_like),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(np.float64)),
    "leaky_relu(negative_slope=0.01)": _np_leaky(0.01),
    "leaky_relu(negative_slope=0.2)": _np_leaky(0.2),
    "elu(alpha=1.0)": _np_elu(1.0),
    "elu(alpha=0.5)": _np_elu(0.5),
    "sigmoid": (_np_sigmoid, _np_dsigmoid),
    "tanh": (np.tanh, _np_dtanh),
    "softplus": (lambda z: np.logaddexp(z, 0.0), _np_sigmoid),
    "silu": (lambda z: z * _np_sigmoid(z), lambda z: _np_sigmoid(z) + z * _np_dsigmoid(z)),
    "gelu": (_np_gelu_tanh, _np_dgelu_tanh),
    "gelu_exact": (lambda z: z * _np_Phi(z), lambda z: _np_Phi(z) + z * _np_phi(z)),
}


# ---------- known-wrong activations: the same comparisons must reject them ----------

WRONG = [
    # f′ = f: the classic slip of writing σ for σ′.
    pytest.param(Activation("sigmoid_wrong", jax.nn.sigmoid, jax.nn.sigmoid), id="sigmoid_wrong"),
    # relu′ = 1 everywhere.
    pytest.param(Activation("relu_ones", jax.nn.relu, jnp.ones_like), id="relu_ones"),
    # tanh′ written as 1 − tanh (missing the square).
    pytest.param(Activation("tanh_wrong", jnp.tanh, lambda z: 1 - jnp.tanh(z)), id="tanh_wrong"),
    # elu′ ignoring alpha on the negative side (right only for alpha = 1).
    pytest.param(
        Activation(
            "elu_no_alpha",
            lambda z, alpha: jax.nn.elu(z, alpha),
            lambda z, alpha: jnp.where(z > 0, 1.0, jnp.exp(jnp.minimum(z, 0))),
            (("alpha", 0.5),),
        ),
        id="elu_no_alpha",
    ),
]


# ---------- derivatives ----------


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_grad_matches_jax_grad_float64(act):
    assert autodiff_error(act) <= TOL_AUTODIFF


@pytest.mark.parametrize(
    "act, expected",
    [
        (A.relu, 0.0),
        (A.leaky_relu, 1.0),
        (LEAKY_02, 1.0),
        (A.elu, 1.0),
        (ELU_05, 0.5),
        (A.identity, 1.0),
        (A.sigmoid, 0.25),
        (A.tanh, 1.0),
        (A.softplus, 0.5),
        (A.silu, 0.5),
        (A.gelu, 0.5),
        (A.gelu_exact, 0.5),
    ],
    ids=lambda v: repr(v) if isinstance(v, Activation) else None,
)
def test_grad_at_zero_follows_jax_convention(act, expected):
    assert GRID[0] == 0
    r = evaluate(act)
    assert r["grad"][0] == expected
    assert r["autodiff"][0] == expected


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_grad_matches_central_differences_away_from_kinks(act):
    mask = AWAY_FROM_ZERO if act.name in KINKED else slice(None)
    assert fd_error(act, mask) <= TOL_FD


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_fn_and_grad_match_numpy_closed_form(act):
    f, df = NUMPY[repr(act)]
    r = evaluate(act)
    assert rel_error(r["f"], f(GRID)) <= TOL_NUMPY
    assert rel_error(r["grad"], df(GRID)) <= TOL_NUMPY


@pytest.mark.parametrize(
    "act, tail",
    [
        (A.sigmoid, [30.0, -30.0, 200.0, -200.0]),
        (A.elu, [-30.0, -200.0]),
        (ELU_05, [-30.0, -200.0]),
        (A.softplus, [-30.0, -200.0]),
    ],
    ids=["sigmoid", "elu", "elu_05", "softplus"],
)
def test_grad_tails_accurate_elementwise(act, tail):
    """In the saturating tails f′ is tiny (~1e-13 to ~1e-87); fnnet keeps full relative
    accuracy there (jax.grad does not, see the module docstring)."""
    mask = np.isin(GRID, tail)
    assert mask.sum() == len(tail)
    want = NUMPY[repr(act)][1](GRID[mask])
    assert np.all(want > 0)
    np.testing.assert_allclose(evaluate(act)["grad"][mask], want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("act", WRONG)
def test_wrong_derivative_rejected(act):
    assert autodiff_error(act) > TOL_AUTODIFF
    assert fd_error(act, AWAY_FROM_ZERO) > TOL_FD


def test_wrong_kink_convention_rejected():
    """relu′(0) = 1 (the `z >= 0` slip) differs from jax.grad only at exactly 0."""
    relu_ge = Activation("relu_ge", jax.nn.relu, lambda z: (z >= 0).astype(z.dtype))
    assert autodiff_error(relu_ge) > TOL_AUTODIFF
    assert autodiff_error(relu_ge, AWAY_FROM_ZERO) <= TOL_AUTODIFF


# ---------- dtypes and extremes ----------


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_float32_stays_float32_and_finite(act):
    r32, r64 = evaluate(act, jnp.float32), evaluate(act, jnp.float64)
    for key in ("f", "grad", "backward"):
        assert r32[key].dtype == np.float32, (key, r32[key].dtype)
        assert r64[key].dtype == np.float64, (key, r64[key].dtype)
        assert np.all(np.isfinite(r32[key])), key
    # float32 agrees with the float64 closed form, at the float32-rounded points,
    # to float32 precision relative to the scale
    z32 = GRID.astype(np.float32).astype(np.float64)
    f, df = NUMPY[repr(act)]
    assert rel_error(r32["f"], f(z32)) <= 1e-5
    assert rel_error(r32["grad"], df(z32)) <= 1e-5


@pytest.mark.parametrize("act", [A.sigmoid, A.tanh], ids=["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_saturating_grad_finite_nonnegative_at_1e4(act, dtype):
    g = evaluate(act, dtype)["grad"]
    assert np.all(np.isfinite(g)) and np.all(g >= 0)
    assert np.all(g[np.abs(GRID) == 1e4] == 0)  # the true values underflow every float type


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_backward_is_grad_times_da(act, dtype):
    r = evaluate(act, dtype)
    da = DA.astype(dtype)
    np.testing.assert_array_equal(r["backward"], r["grad"] * da)
    # and it is the vector-Jacobian product of f
    assert rel_error(r["backward"], r["vjp"]) <= (TOL_AUTODIFF if dtype == jnp.float64 else 1e-6)


def test_backward_rejects_wrong_derivative():
    r = evaluate(Activation("relu_ones", jax.nn.relu, jnp.ones_like))
    assert rel_error(r["backward"], r["vjp"]) > TOL_AUTODIFF


# ---------- names, hyper-parameters, hashing, printing ----------


@pytest.mark.parametrize(
    "name, expected",
    [(a.name, a) for a in A.ALL] + [("swish", A.silu), ("linear", A.identity)],
    ids=[a.name for a in A.ALL] + ["swish", "linear"],
)
def test_get_by_name(name, expected):
    assert A.get(name) is expected
    assert A.get(expected) is expected


def test_get_passes_custom_activation_through():
    custom = Activation("sigmoid_wrong", jax.nn.sigmoid, jax.nn.sigmoid)
    assert A.get(custom) is custom
    assert A.get(LEAKY_02) is LEAKY_02


@pytest.mark.parametrize("bad", ["rleu", "Relu", "", "gelu_tanh"], ids=["rleu", "Relu", "empty", "gelu_tanh"])
def test_get_unknown_name(bad):
    with pytest.raises(ValueError, match=rf"unknown activation {bad!r}; expected one of: .*\brelu\b") as info:
        A.get(bad)
    for a in A.ALL:
        assert a.name in str(info.value)
    assert "swish" in str(info.value) and "linear" in str(info.value)


@pytest.mark.parametrize(
    "jax_fn, expected",
    [(jax.nn.relu, A.relu), (jnp.tanh, A.tanh), (jax.nn.tanh, A.tanh), (jax.nn.sigmoid, A.sigmoid),
     (jax.nn.gelu, A.gelu), (jax.nn.swish, A.silu), (jax.nn.elu, A.elu), (jax.nn.leaky_relu, A.leaky_relu),
     (jax.nn.softplus, A.softplus), (jax.nn.identity, A.identity)],
    ids=lambda c: getattr(c, "__name__", repr(c)),
)
def test_jax_functions_stand_for_fnnet_activations(jax_fn, expected):
    assert A.get(jax_fn) is expected
    z = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(expected(z), jax_fn(z), rtol=1e-15)


@pytest.mark.parametrize("bad", [jnp.sin, lambda z: z, 3, None], ids=["jnp.sin", "lambda", "int", "None"])
def test_get_wrong_type_tells_how_to_wrap(bad):
    with pytest.raises(TypeError, match=r"name \(str\) or a fnnet Activation.*wrap it as fnnet\.activations\.Activation\("):
        A.get(bad)


@pytest.mark.parametrize(
    "act, params, match",
    [
        (A.leaky_relu, {"alpha": 0.1}, r"'leaky_relu' has no hyper-parameter \['alpha'\]; it takes \['negative_slope'\]"),
        (A.elu, {"negative_slope": 0.1}, r"'elu' has no hyper-parameter \['negative_slope'\]; it takes \['alpha'\]"),
        (A.relu, {"alpha": 1.0}, r"'relu' has no hyper-parameter \['alpha'\]; it takes \[\]"),
        (A.elu, {"alpha": 0.5, "beta": 1.0}, r"'elu' has no hyper-parameter \['beta'\]"),
    ],
    ids=["leaky_alpha", "elu_slope", "relu_alpha", "elu_beta"],
)
def test_replace_unknown_hyperparameter(act, params, match):
    with pytest.raises(TypeError, match=match):
        act.replace(**params)


def test_replace_leaves_the_original_untouched():
    assert A.leaky_relu.params == (("negative_slope", 0.01),)
    assert LEAKY_02.params == (("negative_slope", 0.2),)
    assert ELU_05.fn is A.elu.fn and ELU_05.derivative is A.elu.derivative


def test_equality_and_hashing():
    same = A.leaky_relu.replace(negative_slope=0.01)
    assert same == A.leaky_relu and hash(same) == hash(A.leaky_relu)
    assert LEAKY_02 != A.leaky_relu
    assert A.elu.replace(alpha=0.5) == ELU_05 and hash(A.elu.replace(alpha=0.5)) == hash(ELU_05)
    assert len({*ACTIVATIONS, same, A.get("swish")}) == len(ACTIVATIONS)
    # usable as a jit static argument: an equal value works the same
    f = jax.jit(Activation.__call__, static_argnums=0)
    z = jnp.array([-1.0, 1.0])
    np.testing.assert_array_equal(f(same, z), f(A.leaky_relu, z))


@pytest.mark.parametrize(
    "act, text",
    [
        (A.relu, "relu"),
        (A.identity, "identity"),
        (A.gelu_exact, "gelu_exact"),
        (A.leaky_relu, "leaky_relu(negative_slope=0.01)"),
        (LEAKY_02, "leaky_relu(negative_slope=0.2)"),
        (ELU_05, "elu(alpha=0.5)"),
        (A.get("swish"), "silu"),
    ],
    ids=["relu", "identity", "gelu_exact", "leaky_relu", "leaky_02", "elu_05", "swish"],
)
def test_repr_is_name(act, text):
    assert repr(act) == text
    assert str(act) == text


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_integer_and_scalar_inputs_are_promoted_to_float(act):
    # An int z must not turn the hyper-parameters or constants of f′ into ints.
    z_int = jnp.array([-2, -1, 0, 1, 2])
    z_float = z_int.astype(jnp.float64)
    assert jnp.issubdtype(act.grad(z_int).dtype, jnp.floating)
    np.testing.assert_array_equal(act.grad(z_int), act.grad(z_float))
    np.testing.assert_array_equal(act(z_int), act(z_float))
    np.testing.assert_array_equal(act.grad(0.5), act.grad(jnp.array(0.5)))
