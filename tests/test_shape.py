"""Flatten and Reshape: forward against numpy's reshape, the hand backward against jax.vjp of the
layer's own forward (float64), planted bugs the comparison must catch, the error messages."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fnnet.layers.base import TYPES
from fnnet.layers.shape import Flatten, Reshape, shape_cache
from oracles import rel_error

KEY = jax.random.key(0)
QUICK = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def check(layer, x):
    """Forward against numpy's reshape to init's out_shape; hand dx against jax.vjp's, one program."""
    params, out_shape = layer.init(KEY, x.shape[1:], x.dtype)
    assert params == {}
    dy = np.random.default_rng(1).standard_normal((x.shape[0], *out_shape))

    def both(x, dy):
        y, cache = layer.forward({}, x)
        dparams, dx = layer.backward({}, cache, dy)
        _, vjp = jax.vjp(lambda x: layer.forward({}, x)[0], x)
        return y, dparams, dx, vjp(dy)[0]

    y, dparams, dx, ref = jax.jit(both).lower(x, dy).compile(QUICK)(x, dy)
    np.testing.assert_array_equal(y, x.reshape(x.shape[0], *out_shape))
    assert dparams == {} and dx.shape == x.shape
    return rel_error(dx, ref)


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), shapes)
def test_flatten(batch, shape):
    x = np.random.default_rng(0).standard_normal((batch, *shape))
    assert Flatten().init(KEY, shape) == ({}, (math.prod(shape),))
    assert check(Flatten(), x) == 0


@st.composite
def reshapes(draw):
    """An example shape and a target of the same element count, with or without a -1."""
    shape = draw(shapes)
    n = math.prod(shape)
    d = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    target = draw(st.sampled_from([(n,), (-1,), (d, n // d), (d, -1), (-1, d), (1, d, n // d), (d, 1, -1)]))
    return shape, target


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), reshapes())
def test_reshape(batch, case):
    shape, target = case
    x = np.random.default_rng(0).standard_normal((batch, *shape))
    _, out_shape = Reshape(target).init(KEY, shape)
    assert math.prod(out_shape) == math.prod(shape) and -1 not in out_shape
    assert all(t in (-1, o) for t, o in zip(target, out_shape))
    assert check(Reshape(target), x) == 0


def test_image_to_vector_and_back():
    x = np.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    assert Reshape((-1,)).init(KEY, (3, 4, 5)) == Flatten().init(KEY, (3, 4, 5)) == ({}, (60,))
    assert Reshape((4, -1)).init(KEY, (60,)) == ({}, (4, 15))
    assert check(Reshape((3, 20)), x) == 0 and check(Reshape((5, 4, 3)), x) == 0


def test_cache_is_the_shape_only_and_slices_per_example():
    x = np.ones((3, 4, 5, 2))
    y, cache = Flatten().forward({}, x)
    assert cache.shape == (3, 4, 5, 2, 0) and cache.size == 0
    assert Flatten().backward({}, cache[1:2], y[1:2])[1].shape == (1, 4, 5, 2)
    assert shape_cache(x).shape == (3, 4, 5, 2, 0)


class FlattenSwapsHW(Flatten):
    """Planted bug: dy reshaped with height and width exchanged."""

    def backward(self, params, cache, dy):
        n, H, W, C = cache.shape[:-1]
        return {}, dy.reshape(n, W, H, C).transpose(0, 2, 1, 3)


class ReshapeColumnMajor(Reshape):
    """Planted bug: dy put back in column-major (Fortran) order within each example."""

    def backward(self, params, cache, dy):
        shape = cache.shape[1:-1]
        return {}, jnp.stack([d.reshape(shape[::-1]).T for d in dy.reshape(dy.shape[0], -1)])


def test_planted_bugs_are_caught():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 2))
    assert check(FlattenSwapsHW(), x) > 0.1
    assert check(ReshapeColumnMajor((4, -1)), x[:, :, :, 0]) > 0.1


def test_static_hashable_registered_values():
    assert Reshape([7, 7, -1]) == Reshape((7, 7, -1)) and hash(Reshape([2])) == hash(Reshape((2,)))
    assert repr(Reshape((7, -1))) == "Reshape(shape=(7, -1))" and repr(Flatten()) == "Flatten()"
    assert TYPES["Flatten"] is Flatten and TYPES["Reshape"] is Reshape


@pytest.mark.parametrize("shape", [(2, -1, -1), (0, 3), (2, -2), 6, "6", (2.0, 3), (True, 3)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match=r"^Reshape\(shape=.*\): shape must be a tuple of positive ints with at "
                                         r"most one -1 \(inferred\), per example without the batch axis, got "):
        Reshape(shape)


def test_element_counts_must_match():
    with pytest.raises(ValueError, match=re.escape("Reshape(shape=(2, 3)) cannot reshape examples of shape (5,) "
                                                   "(5 elements) to (2, 3), which needs 6 elements; the element "
                                                   "counts must match")):
        Reshape((2, 3)).init(KEY, (5,))
    with pytest.raises(ValueError, match=re.escape("Reshape(shape=(4, -1)) cannot reshape examples of shape (2, 3) "
                                                   "(6 elements) to (4, -1), which needs a multiple of 4 elements")):
        Reshape((4, -1)).init(KEY, (2, 3))
    with pytest.raises(ValueError, match=re.escape("cannot reshape examples of shape (3, 4) (12 elements) to (5,)")):
        Reshape((5,)).forward({}, jnp.ones((2, 3, 4)))
