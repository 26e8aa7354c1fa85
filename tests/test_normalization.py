"""BatchNorm and LayerNorm: hand backward vs jax.vjp of their own forward (float64), forward and
running statistics vs PyTorch, float32 statistics in low precision, planted bugs, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from fnnet.layers.base import TYPES
from fnnet.layers.normalization import BatchNorm, LayerNorm, _BatchStats
from oracles import rel_error, tree_rel_error


def _random(seed, shape, scale=1.0, offset=0.0, dtype=jnp.float64):
    """Normal data from numpy (test inputs of many shapes cost no XLA compiles)."""
    return jnp.asarray((offset + scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype))


def _bn_setup(seed, shape):
    """Random γ, β (not the ones and zeros of init), running statistics, x and dy."""
    c = shape[-1]
    params = {"gamma": _random(seed + 1, (c,), offset=1.0), "beta": _random(seed + 2, (c,))}
    state = {"mean": _random(seed + 3, (c,)), "var": jnp.exp(_random(seed + 4, (c,)))}
    return params, state, _random(seed, shape, scale=2.0, offset=0.5), _random(seed + 5, shape)


@functools.partial(jax.jit, static_argnames=("layer", "modes"))  # one compile, not one per op
def _bn_grads(layer, modes, params, state, x, dy):
    """For each `train` in `modes`: the hand backward, jax.vjp of y(params, x) (the state an
    input held fixed), and the cache."""
    out = []
    for train in modes:
        _, cache, _ = layer.forward(params, state, x, key=None, train=train)
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, state, x, key=None, train=train)[0], params, x)
        out.append((layer.backward(params, cache, dy), vjp(dy), cache))
    return out


def _bn_vjp_error(layer, params, state, x, dy, train):
    """Relative error of the hand backward against jax.vjp."""
    return tree_rel_error(*_bn_grads(layer, (train,), params, state, x, dy)[0][:2])


@functools.partial(jax.jit, static_argnames="layer")
def _ln_grads(layer, params, x, dy):
    """LayerNorm's y, hand backward, jax.vjp of its forward, and cache."""
    y, cache = layer.forward(params, x)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
    return y, layer.backward(params, cache, dy), vjp(dy), cache


# ---------------------------------------------------------------------------------------------
# BatchNorm


BN_SHAPES = [(1, 3), (2, 2), (3, 1), (5, 2),                               # (batch, C)
             (1, 2, 3, 2), (2, 1, 1, 3), (3, 2, 2, 1), (4, 3, 1, 2), (2, 2, 3, 3)]  # (batch, H, W, C)


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from(BN_SHAPES), seed=st.integers(0, 2**16))  # few shapes: compiles are reused
def test_batchnorm_backward_equals_vjp(shape, seed):
    # Training at M = 1 is refused (test_batchnorm_one_value_per_channel_is_refused); at M = 2
    # x̂ = ±1 and dx is ~0, so a relative error means nothing (test_degenerate_normalisation_backward).
    modes = (True, False) if math.prod(shape[:-1]) >= 3 else (False,)
    params, state, x, dy = _bn_setup(seed, shape)
    for grads, ref_grads, _ in _bn_grads(BatchNorm(), modes, params, state, x, dy):
        assert tree_rel_error(grads, ref_grads) <= 1e-10


def test_batchnorm_one_value_per_channel_is_refused():
    layer = BatchNorm()
    params, state, _, _ = _bn_setup(0, (1, 3))
    for shape in [(1, 3), (1, 1, 1, 3)]:
        with pytest.raises(ValueError, match=r"BatchNorm\(momentum=0.1, eps=1e-05\): training needs more "
                                             r"than one value per channel .* got x of shape \(1, (1, 1, )?3\)"):
            layer.forward(params, state, jnp.ones(shape), key=None, train=True)
    y, _, new = layer.forward(params, state, jnp.ones((1, 3)), key=None, train=False)  # evaluation is fine
    assert y.shape == (1, 3) and new is state


class _NoMeanTerm(BatchNorm):
    """Planted bug: dx = (γ·rstd/M)·(M·dy − x̂·Σ(dy·x̂)), the − Σ dy term forgotten."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        if not isinstance(cache, _BatchStats):
            return grads, dx
        x, mean, rstd = cache
        m = math.prod(x.shape[:-1])
        axes, b = tuple(range(x.ndim - 1)), lambda v: v.reshape((1,) * (x.ndim - 1) + (-1,))
        xhat = (x - b(mean)) * b(rstd)
        dx = b(params["gamma"] * rstd / m) * (m * dy - xhat * b((dy * xhat).sum(axis=axes)))
        return grads, dx


def test_planted_batchnorm_bug_is_caught():
    params, state, x, dy = _bn_setup(7, (4, 2, 2, 3))
    assert _bn_vjp_error(BatchNorm(), params, state, x, dy, True) <= 1e-10
    assert _bn_vjp_error(_NoMeanTerm(), params, state, x, dy, True) > 1e-2
    assert _bn_vjp_error(_NoMeanTerm(), params, state, x, dy, False) <= 1e-10  # eval is unaffected


def _to_torch(x):  # NHWC → NCHW (a (batch, C) array is both), a writable copy
    return np.moveaxis(np.array(x), -1, 1)


@pytest.mark.parametrize("shape,momentum,eps", [
    ((5, 3, 4, 2), 0.1, 1e-5),   # BatchNorm2d, PyTorch's defaults
    ((2, 2, 3, 3), 0.3, 1e-3),   # BatchNorm2d
    ((1, 3, 2, 2), 0.1, 1e-5),   # BatchNorm2d, a batch of one image
    ((6, 4), 0.1, 1e-5),         # BatchNorm1d
    ((3, 2), 1.0, 1e-2),         # BatchNorm1d, the running statistics replaced each step
])
def test_batchnorm_matches_torch(shape, momentum, eps):
    torch = pytest.importorskip("torch")
    layer = BatchNorm(momentum, eps)
    cls = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
    ref = cls(shape[-1], eps=eps, momentum=momentum, dtype=torch.float64)
    params, _, _, _ = _bn_setup(3, shape)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(params["gamma"])))
        ref.bias.copy_(torch.from_numpy(np.array(params["beta"])))
    state = layer.init_state(shape[1:], jnp.float64)
    step = jax.jit(layer.forward, static_argnames="train")
    for i in range(3):
        x = _random(10 + i, shape, scale=1.0 + i, offset=i - 1.0)
        y, _, state = step(params, state, x, key=None, train=True)
        assert rel_error(_to_torch(y), ref(torch.from_numpy(_to_torch(x))).detach().numpy()) <= 1e-6
        assert rel_error(state["mean"], ref.running_mean.numpy()) <= 1e-6
        assert rel_error(state["var"], ref.running_var.numpy()) <= 1e-6
    ref.eval()
    x = _random(20, shape, scale=3.0)
    y, _, after = step(params, state, x, key=None, train=False)
    assert rel_error(_to_torch(y), ref(torch.from_numpy(_to_torch(x))).detach().numpy()) <= 1e-6
    assert tree_rel_error(after, state) == 0  # evaluation leaves the running statistics alone


def test_batchnorm_forward_is_the_formula():
    layer = BatchNorm(momentum=0.25)
    params, state, x, _ = _bn_setup(1, (3, 2, 2, 2))
    forward = jax.jit(layer.forward, static_argnames="train")
    y, cache, new = forward(params, state, x, key=jax.random.key(0), train=True)  # a key is ignored
    xs = np.asarray(x).reshape(-1, 2)
    mu, var = xs.mean(0), xs.var(0)
    want = np.asarray(params["gamma"]) * (xs - mu) / np.sqrt(var + 1e-5) + np.asarray(params["beta"])
    assert rel_error(np.asarray(y).reshape(-1, 2), want) <= 1e-13
    assert rel_error(new["mean"], 0.75 * np.asarray(state["mean"]) + 0.25 * mu) <= 1e-13
    assert rel_error(new["var"], 0.75 * np.asarray(state["var"]) + 0.25 * xs.var(0, ddof=1)) <= 1e-13
    y, cache, same = layer.forward(params, state, x, key=None, train=False)
    assert same is state  # eagerly: the very same state
    assert cache.x.shape == x.shape and cache.mean.shape == cache.rstd.shape == (2,)
    dy = _random(2, x.shape)
    grads, dx = jax.jit(layer.backward)(params, cache, dy)  # evaluation: the affine map's backward
    assert rel_error(dx, dy * (params["gamma"] / jnp.sqrt(state["var"] + 1e-5))[None, None, None]) <= 1e-14


def test_batchnorm_init_and_jit():
    layer = BatchNorm()
    params, out_shape = layer.init(jax.random.key(0), (4, 4, 3), jnp.float32)
    state = layer.init_state((4, 4, 3), jnp.float32)
    assert out_shape == (4, 4, 3)
    assert jax.tree.map(lambda a: (a.shape, a.dtype, float(a.mean())), (params, state)) == (
        {"gamma": ((3,), jnp.float32, 1.0), "beta": ((3,), jnp.float32, 0.0)},
        {"mean": ((3,), jnp.float32, 0.0), "var": ((3,), jnp.float32, 1.0)})
    x = _random(0, (2, 4, 4, 3), dtype=jnp.float32)
    step = jax.jit(layer.forward, static_argnames="train")
    y, cache, new = step(params, state, x, key=None, train=True)
    ey, ecache, enew = layer.forward(params, state, x, key=None, train=True)
    assert y.dtype == new["mean"].dtype == jnp.float32
    assert tree_rel_error((y, new), (ey, enew)) <= 1e-6
    dy = _random(1, x.shape, dtype=jnp.float32)
    assert tree_rel_error(jax.jit(layer.backward)(params, cache, dy), layer.backward(params, ecache, dy)) <= 1e-5
    assert BatchNorm() == BatchNorm(0.1, 1e-5) and hash(BatchNorm()) == hash(BatchNorm(0.1, 1e-5))
    assert TYPES["BatchNorm"] is BatchNorm and TYPES["LayerNorm"] is LayerNorm


# ---------------------------------------------------------------------------------------------
# LayerNorm


def _ln_reference(x, gamma, beta, axes, eps):
    """numpy, float64: x̂ over the x-axes `axes`, γ and β broadcast by shape."""
    x = np.asarray(x)
    mu = x.mean(axis=axes, keepdims=True)
    xhat = (x - mu) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    shape = [n if a in axes else 1 for a, n in enumerate(x.shape)]
    return np.asarray(gamma).reshape(shape) * xhat + np.asarray(beta).reshape(shape)


@st.composite
def _ln_configs(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    chosen = draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))
    # each axis written positive or negative: the two spellings must agree
    axes = tuple(a - len(shape) if draw(st.booleans()) else a for a in sorted(chosen))
    return shape, (axes[0] if len(axes) == 1 and draw(st.booleans()) else axes)


@settings(max_examples=20, deadline=None)
@given(config=_ln_configs(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(config=((5,), -1), batch=1, seed=0)
def test_layernorm_backward_equals_vjp(config, batch, seed):
    in_shape, axes = config
    layer = LayerNorm(axes)
    params, out_shape = layer.init(jax.random.key(0), in_shape, jnp.float64)
    resolved = sorted(a % len(in_shape) for a in layer.axes)
    assert out_shape == in_shape and params["gamma"].shape == tuple(in_shape[a] for a in resolved)
    if math.prod(params["gamma"].shape) < 3:
        return  # N ≤ 2: dx is ~0 (test_degenerate_normalisation_backward)
    params = {"gamma": _random(seed + 1, params["gamma"].shape, offset=1.0),
              "beta": _random(seed + 2, params["beta"].shape)}
    x = _random(seed, (batch, *in_shape), scale=2.0, offset=0.5)
    dy = _random(seed + 3, x.shape)
    y, grads, ref_grads, cache = _ln_grads(layer, params, x, dy)
    assert rel_error(y, _ln_reference(x, params["gamma"], params["beta"], tuple(a + 1 for a in resolved),
                                      1e-5)) <= 1e-12
    assert tree_rel_error(grads, ref_grads) <= 1e-10
    assert all(leaf.shape[0] == batch for leaf in cache)  # per-example, batch first


@pytest.mark.parametrize("shape,axes", [((4, 5), -1), ((2, 3, 4, 5), (-3, -2, -1)),
                                        ((2, 3, 4, 5), -1), ((2, 3, 4, 5), (1, 2))])
def test_layernorm_matches_torch(shape, axes):
    torch = pytest.importorskip("torch")
    layer = LayerNorm(axes, eps=1e-4)
    params, _ = layer.init(jax.random.key(0), shape[1:], jnp.float64)
    params = {"gamma": _random(1, params["gamma"].shape, offset=1.0), "beta": _random(2, params["beta"].shape)}
    x = _random(0, shape, scale=3.0, offset=1.0)
    y, _ = jax.jit(layer.forward)(params, x)
    want = torch.nn.functional.layer_norm(torch.from_numpy(np.array(x)), params["gamma"].shape,
                                          torch.from_numpy(np.array(params["gamma"])),
                                          torch.from_numpy(np.array(params["beta"])), eps=1e-4)
    assert rel_error(y, want.numpy()) <= 1e-6


def test_layernorm_axes_are_normalised():
    assert LayerNorm().axes == (-1,) and LayerNorm(axes=(2, 0)).axes == (0, 2)
    assert LayerNorm(axes=[-1, -2]) == LayerNorm(axes=(-2, -1))
    assert hash(LayerNorm(-1)) == hash(LayerNorm((-1,)))
    params, _ = LayerNorm((0, 2)).init(jax.random.key(0), (2, 3, 4), jnp.float32)
    assert params["gamma"].shape == params["beta"].shape == (2, 4) and params["gamma"].dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# Both


@pytest.mark.parametrize("case", ["batchnorm M=2", "layernorm N=2", "layernorm N=1"])
def test_degenerate_normalisation_backward(case):
    """At M or N = 2, x̂ = ±d/√(d² + 4ε) hardly depends on x, at 1 not at all: dx is ~0, so the
    hand backward is compared with vjp relative to the natural scale |dy|·|γ|·rstd."""
    if case.startswith("batchnorm"):
        layer = BatchNorm()
        params, state, x, dy = _bn_setup(0, (2, 3))
        [((dparams, dx), (ref_dparams, ref_dx), cache)] = _bn_grads(layer, (True,), params, state, x, dy)
    else:
        n = int(case[-1])
        layer = LayerNorm()
        params = {"gamma": _random(1, (n,), offset=1.0), "beta": _random(2, (n,))}
        x, dy = _random(0, (4, n), scale=0.01), _random(3, (4, n))
        _, (dparams, dx), (ref_dparams, ref_dx), cache = _ln_grads(layer, params, x, dy)
    assert tree_rel_error(dparams, ref_dparams) <= 1e-10
    scale = float(jnp.abs(dy).max() * jnp.abs(params["gamma"]).max() * cache[2].max())
    assert float(jnp.abs(dx - ref_dx).max()) <= 1e-10 * scale


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_low_precision_statistics_are_float32(kind, dtype):
    # Inputs with a large mean and a small spread: statistics taken in the input's precision
    # would be off by ~1% (bfloat16's spacing at 100 is 0.5); in float32 they are exact to ~1e-6.
    x = _random(0, (16, 4, 4, 3), offset=100.0, dtype=dtype)
    x64 = np.asarray(x.astype(jnp.float64))
    dy = _random(1, x.shape, dtype=dtype)
    if kind == "batchnorm":
        layer = BatchNorm()
        params, _ = layer.init(None, (4, 4, 3), dtype)
        state = layer.init_state((4, 4, 3), dtype)
        y, cache, new = jax.jit(layer.forward, static_argnames="train")(params, state, x, key=None, train=True)
        axes = (0, 1, 2)
        assert new["mean"].dtype == new["var"].dtype == dtype
        mu = x64.mean(axes)
        assert rel_error(new["mean"].astype(jnp.float64), (0.1 * mu).astype(dtype).astype(np.float64)) <= 2**-8
    else:
        layer = LayerNorm((-3, -2, -1))
        params, _ = layer.init(None, (4, 4, 3), dtype)
        y, cache = jax.jit(layer.forward)(params, x)
        axes = (1, 2, 3)
    mean, rstd = cache[1], cache[2]
    assert mean.dtype == rstd.dtype == jnp.float32
    want_rstd = 1 / np.sqrt(x64.var(axes) + 1e-5)
    assert rel_error(mean.squeeze(), x64.mean(axes)) <= 1e-6
    assert rel_error(rstd.squeeze(), want_rstd.squeeze()) <= 1e-5
    if dtype == jnp.bfloat16:  # the data tell the two apart: statistics in bfloat16 miss by far more
        naive_mean = jnp.mean(x, axes, keepdims=True)
        naive_rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x - naive_mean), axes) + 1e-5)
        assert rel_error(naive_rstd.astype(jnp.float64).squeeze(), want_rstd.squeeze()) > 1e-3
    assert y.dtype == dtype
    want_y = (x64 - x64.mean(axes, keepdims=True)) / np.sqrt(x64.var(axes, keepdims=True) + 1e-5)
    assert rel_error(y.astype(jnp.float64), want_y) <= 2**-7
    backward = jax.jit(layer.backward)
    grads, dx = backward(params, cache, dy)
    assert dx.dtype == dtype and grads["gamma"].dtype == dtype
    # the backward from float32 copies of the same cache, cast once at the end
    cache32 = jax.tree.map(lambda a: a.astype(jnp.float32), cache)
    grads32, dx32 = backward(jax.tree.map(lambda a: a.astype(jnp.float32), params), cache32,
                                   dy.astype(jnp.float32))
    assert tree_rel_error((grads, dx), jax.tree.map(lambda a: a.astype(dtype), (grads32, dx32))) <= 2**-7


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("make,match", [
    (lambda: BatchNorm(momentum=-0.1), r"BatchNorm\(momentum=-0.1, eps=1e-05\): momentum must be a number "
                                       r"in \[0, 1\].*got -0.1"),
    (lambda: BatchNorm(momentum=1.5), r"momentum must be a number in \[0, 1\].*got 1.5"),
    (lambda: BatchNorm(momentum=float("nan")), r"momentum must be a number in \[0, 1\].*got nan"),
    (lambda: BatchNorm(momentum="0.1"), r"momentum must be a number in \[0, 1\].*got '0.1'"),
    (lambda: BatchNorm(eps=0), r"BatchNorm\(momentum=0.1, eps=0\): eps must be a positive number.*got 0"),
    (lambda: BatchNorm(eps=-1e-5), r"eps must be a positive number.*got -1e-05"),
    (lambda: LayerNorm(eps=0.0), r"LayerNorm\(axes=-1, eps=0.0\): eps must be a positive number.*got 0.0"),
    (lambda: LayerNorm(axes=()), r"LayerNorm\(axes=\(\), .*axes must be an int or a non-empty tuple of ints"),
    (lambda: LayerNorm(axes=1.0), r"axes must be an int or a non-empty tuple of ints.*got 1.0"),
    (lambda: LayerNorm(axes=(-1, -1)), r"axes \(-1, -1\) repeat an axis"),
    (lambda: LayerNorm(axes=3).init(None, (4, 4, 3)),
     r"LayerNorm\(axes=\(3,\), eps=1e-05\): axis 3 is out of range for examples of shape \(4, 4, 3\) "
     r"\(rank 3\); axes count the per-example shape, without the batch axis, so each must be in \[-3, 3\)"),
    (lambda: LayerNorm(axes=(-4, -1)).init(None, (4, 4, 3)), r"axis -4 is out of range .* in \[-3, 3\)"),
    (lambda: LayerNorm(axes=(-1, 2)).init(None, (4, 4, 3)),
     r"axes \(-1, 2\) name the same axis twice for examples of shape \(4, 4, 3\)"),
    (lambda: LayerNorm().forward({"gamma": jnp.ones(3), "beta": jnp.zeros(3)}, jnp.ones((2, 4))),
     r"LayerNorm\(axes=\(-1,\), eps=1e-05\) expects x whose normalised axes have the shape of its params, "
     r"\(3,\), got x of shape \(2, 4\)"),
    (lambda: BatchNorm().init(None, ()), r"BatchNorm\(.*\) expects inputs with the channel axis last, \(C,\) "
                                         r"or \(H, W, C\) per example, got \(\)"),
    (lambda: BatchNorm().forward({"gamma": jnp.ones(3), "beta": jnp.zeros(3)},
                                 {"mean": jnp.zeros(3), "var": jnp.ones(3)}, jnp.ones((2, 4)), train=True),
     r"BatchNorm\(.*\) expects x of shape \(batch, \.\.\., 3\) \(channels last, as its params\), got \(2, 4\)"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
