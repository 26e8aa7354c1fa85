"""Tests for fnnet.initializers: shapes, dtypes, keys, and the statistics of each distribution.

Statistics are checked on a (512, 256) matrix, n = 131072 samples, fan_in ≠ fan_out so
Glorot, He and LeCun scales differ (by factors 1.5, 2 and 3). Tolerances, from the
sampling error of each statistic:
  - variance: relative standard error √((κ − 1)/n) ≤ √(2/n) ≈ 0.4 % (κ the kurtosis,
    3 for a normal, less for the others); we allow 3 % ≈ 7.7 standard errors.
  - mean: |mean| ≤ 6 σ/√n.
  - kurtosis: standard error ≤ √(24/n) ≈ 0.014; we allow 0.1. It tells uniform (1.8),
    normal truncated at 2σ (≈ 2.36) and normal (3) apart.
  - support: uniform samples within ±limit and reaching past 0.99·limit; truncated normals
    within ±2σ₀ (σ₀ the standard deviation before truncation) and reaching past 0.95 of it.
So the fixed keys are not special: any key passes, and a wrong scale or family cannot.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet.initializers as I
from fnnet.initializers import Initializer

N_IN, N_OUT = 512, 256
BIG = (N_IN, N_OUT)


def _truncated_normal_moments(a):
    """Variance and kurtosis of a standard normal truncated to [−a, a].

    ∫₋ₐᵃ xⁿφ = −2aⁿ⁻¹φ(a) + (n − 1)∫₋ₐᵃ xⁿ⁻²φ, by parts.
    """
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    i0 = math.erf(a / math.sqrt(2))
    i2 = -2 * a * phi + i0
    i4 = -2 * a**3 * phi + 3 * i2
    m2, m4 = i2 / i0, i4 / i0
    return m2, m4 / m2**2


TRUNC_VAR, TRUNC_KURTOSIS = _truncated_normal_moments(2.0)


# A spec: the variance as a function of (fan_in, fan_out) and the distribution family.
SPECS = {
    "textbook": (lambda fi, fo: 0.1**2, "normal"),
    "glorot_uniform": (lambda fi, fo: 2 / (fi + fo), "uniform"),
    "glorot_normal": (lambda fi, fo: 2 / (fi + fo), "truncated_normal"),
    "he_uniform": (lambda fi, fo: 2 / fi, "uniform"),
    "he_normal": (lambda fi, fo: 2 / fi, "truncated_normal"),
    "lecun_normal": (lambda fi, fo: 1 / fi, "truncated_normal"),
    "normal": (lambda fi, fo: 1.0, "normal"),
}
KURTOSIS = {"normal": 3.0, "uniform": 9 / 5, "truncated_normal": TRUNC_KURTOSIS}


def stat_failures(w, spec_name, fan_in=N_IN, fan_out=N_OUT):
    """Which statistics of the sample `w` disagree with SPECS[spec_name]; [] if none."""
    var_fn, family = SPECS[spec_name]
    var = var_fn(fan_in, fan_out)
    w = np.asarray(w, np.float64).ravel()
    n, std = w.size, math.sqrt(var)
    failures = []
    if abs(w.mean()) > 6 * std / math.sqrt(n):
        failures.append(f"mean {w.mean():.3g}")
    if abs(w.var() / var - 1) > 0.03:
        failures.append(f"variance {w.var():.4g}, expected {var:.4g}")
    kurtosis = ((w - w.mean()) ** 4).mean() / w.var() ** 2
    if abs(kurtosis - KURTOSIS[family]) > 0.1:
        failures.append(f"kurtosis {kurtosis:.3f}, expected {KURTOSIS[family]:.3f} ({family})")
    peak = np.abs(w).max()
    if family == "uniform":
        limit = math.sqrt(3 * var)  # U(±limit) has variance limit²/3, e.g. √(6/(fan_in+fan_out))
        if not 0.99 * limit < peak <= limit:
            failures.append(f"max |w| {peak:.4g}, expected just under the bound {limit:.4g}")
    elif family == "truncated_normal":
        limit = 2 * std / math.sqrt(TRUNC_VAR)
        if not 0.95 * limit < peak <= limit:
            failures.append(f"max |w| {peak:.4g}, expected just under 2σ₀ = {limit:.4g}")
    elif peak < 3.5 * std:  # untruncated: P(no |w| > 3.5σ in 131072 samples) ≈ e⁻⁶¹
        failures.append(f"max |w| {peak:.4g} < 3.5σ: looks truncated")
    return failures


STAT_INITS = [i for i in I.ALL if i.name in SPECS]
SAMPLE_SHAPES = [(3, 4), (1, 1), BIG]
BIG_T = (N_OUT, N_IN)  # to fake "He scaled by fan_out" by transposing
DTYPES = [jnp.float32, jnp.float64]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample(inits, shapes, dtypes, key):
    """Every (initializer, shape, dtype) from one key, in one compiled call."""
    return [init(key, shape, dtype) for init in inits for shape in shapes for dtype in dtypes]


@functools.cache
def samples():
    """{(init, shape, dtype): (w from key 0, w from key 0 in a second call, w from key 1)}."""
    shapes = tuple(SAMPLE_SHAPES + [BIG_T])
    combos = [(i, s, d) for i in I.ALL for s in shapes for d in DTYPES]
    runs = [_sample(I.ALL, shapes, tuple(DTYPES), jax.random.key(k)) for k in (0, 0, 1)]
    return {c: tuple(np.asarray(run[j]) for run in runs) for j, c in enumerate(combos)}


INIT_IDS = [i.name for i in I.ALL]


# ---------- shape, dtype, keys ----------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SAMPLE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("init", I.ALL, ids=INIT_IDS)
def test_shape_dtype_keys(init, shape, dtype):
    w, w_again, w_other = samples()[(init, shape, dtype)]
    for v in (w, w_again, w_other):
        assert v.shape == shape and v.dtype == dtype
        assert not np.any(np.isnan(v)) and np.all(np.isfinite(v))
    np.testing.assert_array_equal(w, w_again)  # deterministic for the same key
    if init is I.zeros:
        assert not np.any(w) and not np.any(w_other)
    else:
        assert not np.array_equal(w, w_other)  # a different key, different weights
        if w.size < 100:  # continuous distributions: no repeats (float32 has some at 131072)
            assert np.unique(w).size == w.size


@pytest.mark.parametrize("init", I.ALL, ids=INIT_IDS)
def test_default_dtype_is_float32(init):
    w = init(jax.random.key(0), (2, 3))
    assert w.shape == (2, 3) and w.dtype == jnp.float32


def test_legacy_uint32_keys_work_too():
    w = I.glorot_uniform(jax.random.PRNGKey(0), (3, 4))
    assert w.shape == (3, 4) and np.all(np.abs(np.asarray(w)) <= math.sqrt(6 / 7))


# ---------- statistics ----------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("init", STAT_INITS, ids=[i.name for i in STAT_INITS])
def test_statistics(init, dtype):
    w, _, w_other = samples()[(init, BIG, dtype)]
    assert stat_failures(w, init.name) == []
    assert stat_failures(w_other, init.name) == []


def test_zeros_are_zero():
    for dtype in DTYPES:
        np.testing.assert_array_equal(samples()[(I.zeros, BIG, dtype)][0], np.zeros(BIG, dtype))


def test_truncation_constant():
    """Our by-parts moments of the truncated normal against direct numerical integration."""
    x = np.linspace(-2, 2, 400001)
    p = np.exp(-x * x / 2)
    m2 = np.trapezoid(x**2 * p, x) / np.trapezoid(p, x)
    m4 = np.trapezoid(x**4 * p, x) / np.trapezoid(p, x)
    assert abs(m2 - TRUNC_VAR) < 1e-9 and abs(m4 / m2**2 - TRUNC_KURTOSIS) < 1e-9
    assert abs(math.sqrt(TRUNC_VAR) - 0.87962566103423978) < 1e-12  # jax's constant


WRONG = [
    # (id, sampled by, checked against, transpose the sample's shape?)
    ("he_normal-as-glorot_normal", I.he_normal, "glorot_normal", False),
    ("glorot_normal-as-he_normal", I.glorot_normal, "he_normal", False),
    ("lecun_normal-as-he_normal", I.lecun_normal, "he_normal", False),
    ("he_uniform-as-glorot_uniform", I.he_uniform, "glorot_uniform", False),
    ("glorot_normal-as-glorot_uniform", I.glorot_normal, "glorot_uniform", False),
    ("glorot_uniform-as-glorot_normal", I.glorot_uniform, "glorot_normal", False),
    ("textbook-as-he_normal", I.textbook, "he_normal", False),
    # He scaled by fan_out instead of fan_in: sample (256, 512) and read it as (512, 256)
    ("he_normal-with-fan_out", I.he_normal, "he_normal", True),
    ("he_uniform-with-fan_out", I.he_uniform, "he_uniform", True),
]


@pytest.mark.parametrize("sampled_by, spec, transposed", [w[1:] for w in WRONG], ids=[w[0] for w in WRONG])
def test_wrong_scale_or_family_rejected(sampled_by, spec, transposed):
    w = samples()[(sampled_by, BIG_T, jnp.float64)][0].T if transposed else samples()[(sampled_by, BIG, jnp.float64)][0]
    assert w.shape == BIG
    assert stat_failures(w, spec) != []


def test_wrong_scale_rejected_by_the_variance_alone():
    """The 3 % variance tolerance on its own separates Glorot from He at this shape."""
    w = samples()[(I.he_normal, BIG, jnp.float64)][0]
    assert any(f.startswith("variance") for f in stat_failures(w, "glorot_normal"))
    assert any(f.startswith("variance") for f in stat_failures(w * 1.06, "he_normal"))  # 12 % off


# ---------- names ----------


@pytest.mark.parametrize(
    "name, expected",
    [(i.name, i) for i in I.ALL]
    + [
        ("xavier_uniform", I.glorot_uniform),
        ("xavier_normal", I.glorot_normal),
        ("kaiming_uniform", I.he_uniform),
        ("kaiming_normal", I.he_normal),
    ],
    ids=INIT_IDS + ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"],
)
def test_get_by_name(name, expected):
    assert I.get(name) is expected
    assert I.get(expected) is expected


@pytest.mark.parametrize("bad", ["glorot", "he", "xavier", "uniform"], ids=["glorot", "he", "xavier", "uniform"])
def test_get_unknown_name(bad):
    with pytest.raises(ValueError, match=rf"unknown initializer {bad!r}; expected one of: .*\bglorot_uniform\b") as info:
        I.get(bad)
    for name in ("textbook", "he_normal", "lecun_normal", "zeros", "kaiming_uniform", "xavier_normal"):
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [jax.nn.initializers.zeros, jax.nn.initializers.he_normal(), 0.1],
                         ids=["jax.nn.initializers.zeros", "he_normal()", "float"])
def test_get_wrong_type_tells_how_to_wrap(bad):
    with pytest.raises(TypeError, match=r"name \(str\) or a fnnet Initializer.*wrap it as fnnet\.initializers\.Initializer\("):
        I.get(bad)


def test_hashable_and_printed_by_name():
    assert len({*I.ALL, I.get("xavier_uniform"), I.get("kaiming_normal")}) == len(I.ALL)
    assert Initializer("glorot_uniform", I.glorot_uniform.fn) == I.glorot_uniform
    for init in I.ALL:
        assert repr(init) == str(init) == init.name
        hash(init)
