"""Dropout: hand backward vs jax.vjp of its own forward (float64), the drop frequency and the
inverted scaling, the mask from the key, evaluation as the identity, planted bugs, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from fnnet.layers.base import TYPES
from fnnet.layers.dropout import Dropout
from oracles import tree_rel_error


@functools.partial(jax.jit, static_argnames=("layer", "train"))  # one compile per shape, not per op
def _grads(layer, train, x, dy, key):
    """y, the cache, the hand dx and jax.vjp's dx of y(x) with the same key."""
    y, mask, _ = layer.forward({}, {}, x, key=key, train=train)
    _, vjp = jax.vjp(lambda x: layer.forward({}, {}, x, key=key, train=train)[0], x)
    return y, mask, layer.backward({}, mask, dy)[1], vjp(dy)[0]


def _data(seed, shape):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal(shape)), jnp.asarray(rng.standard_normal(shape))


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), batch=st.integers(1, 4),
       rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]) | st.floats(0, 0.99), train=st.booleans(),
       seed=st.integers(0, 2**16))
@example(shape=(3,), batch=1, rate=0.5, train=True, seed=0)
def test_dropout_backward_equals_vjp(shape, batch, rate, train, seed):
    layer = Dropout(rate)
    x, dy = _data(seed, (batch, *shape))
    y, mask, dx, ref_dx = _grads(layer, train, x, dy, jax.random.key(seed))
    assert tree_rel_error(dx, ref_dx) <= 1e-10
    if train and rate > 0:
        assert mask.dtype == jnp.bool_ and mask.shape == x.shape  # batch first, per example
        # to the last bit but one: XLA may divide by a constant as a multiply by its reciprocal
        np.testing.assert_allclose(y, np.where(mask, np.asarray(x) / (1 - rate), 0), rtol=1e-15, atol=0)
    else:
        assert mask is None and (y == x).all() and (dx == dy).all()


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_frequency_and_inverted_scaling(rate):
    n = 200_000
    x = jnp.full((100, n // 100), 3.0)
    y, mask, _ = jax.jit(Dropout(rate).forward, static_argnames="train")({}, {}, x, key=jax.random.key(1),
                                                                         train=True)
    y = np.asarray(y)
    dropped = (y == 0).mean()
    assert abs(dropped - rate) <= 5 * np.sqrt(rate * (1 - rate) / n)        # P(drop) = rate
    np.testing.assert_allclose(y[y != 0], 3.0 / (1 - rate), rtol=1e-15)   # the kept are scaled up
    assert abs(y.mean() - 3.0) <= 5 * 3.0 * np.sqrt(rate / (1 - rate) / n)  # E[y] = x
    np.testing.assert_array_equal(mask, y != 0)


def test_the_key_decides_the_mask():
    layer, x = Dropout(0.5), jnp.ones((8, 16))
    masks = [layer.forward({}, {}, x, key=k, train=True)[1]
             for k in (jax.random.key(0), jax.random.key(0), jax.random.key(1))]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert (masks[0] != masks[2]).any()
    raw = layer.forward({}, {}, x, key=jax.random.PRNGKey(0), train=True)[1]  # a raw uint32 key works too
    assert raw.shape == x.shape


def test_evaluation_and_rate_zero_are_the_identity():
    x = jnp.arange(6.0).reshape(2, 3)
    for layer, train in [(Dropout(0.5), False), (Dropout(0.0), True)]:
        y, cache, state = layer.forward({}, {}, x, key=None, train=train)  # no key needed
        assert y is x and cache is None and state == {}
        assert layer.backward({}, cache, x) == ({}, x)
    params, out_shape = Dropout(0.3).init(jax.random.key(0), (4, 4, 3), jnp.float32)
    assert params == {} and out_shape == (4, 4, 3) and Dropout(0.3).init_state((4, 4, 3), jnp.float32) == {}
    assert TYPES["Dropout"] is Dropout
    assert Dropout(1 / 2) == Dropout(0.5) and hash(Dropout(1 / 2)) == hash(Dropout(0.5)) and Dropout(0) == Dropout(0.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_scales_in_float32(dtype):
    x = jnp.full((4, 64), 1.5, dtype)
    y, mask, _ = Dropout(0.1).forward({}, {}, x, key=jax.random.key(0), train=True)
    assert y.dtype == dtype
    want = np.where(mask, np.float32(1.5) / np.float32(0.9), 0).astype(dtype)  # rounded once, at the end
    np.testing.assert_array_equal(np.asarray(y), want)
    _, dx = Dropout(0.1).backward({}, mask, x)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(np.asarray(dx), want)


class _NewMask(Dropout):
    """Planted bug: the backward draws a mask of its own instead of reusing the forward's."""

    def backward(self, params, mask, dy):
        fresh = jax.random.bernoulli(jax.random.key(12345), 1 - self.rate, dy.shape)
        return {}, jnp.where(fresh, dy / (1 - self.rate), 0)


class _NoMask(Dropout):
    """Planted bug: the backward only scales, forgetting the mask."""

    def backward(self, params, mask, dy):
        return {}, dy / (1 - self.rate)


@pytest.mark.parametrize("buggy", [_NewMask(0.5), _NoMask(0.5)], ids=lambda l: type(l).__name__)
def test_planted_dropout_bugs_are_caught(buggy):
    x, dy = _data(0, (6, 5))
    *_, dx, ref_dx = _grads(Dropout(0.5), True, x, dy, jax.random.key(3))
    assert tree_rel_error(dx, ref_dx) <= 1e-10
    *_, dx, ref_dx = _grads(buggy, True, x, dy, jax.random.key(3))
    assert tree_rel_error(dx, ref_dx) > 0.1


@pytest.mark.parametrize("make,error,match", [
    (lambda: Dropout(1.0), ValueError, r"Dropout\(rate=1.0\): rate must be a number in \[0, 1\), the "
                                       r"probability of dropping each element .*got 1.0"),
    (lambda: Dropout(-0.1), ValueError, r"rate must be a number in \[0, 1\).*got -0.1"),
    (lambda: Dropout(float("nan")), ValueError, r"rate must be a number in \[0, 1\).*got nan"),
    (lambda: Dropout(True), ValueError, r"rate must be a number in \[0, 1\).*got True"),
    (lambda: Dropout("0.5"), ValueError, r"rate must be a number in \[0, 1\).*got '0.5'"),
    (lambda: Dropout(0.5).forward({}, {}, jnp.ones((2, 3)), key=None, train=True), ValueError,
     r"Dropout\(rate=0.5\) needs a key in training \(train=True\), to draw its mask: pass "
     r"key=jax.random.key\(...\)"),
    (lambda: Dropout(0.5).forward({}, {}, jnp.ones((2, 3)), key=0, train=True), TypeError,
     r"Dropout\(rate=0.5\): expected a JAX random key such as jax.random.key\(0\), got int 0"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
