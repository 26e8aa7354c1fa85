"""MaxPool2D, AvgPool2D, GlobalAvgPool2D: the hand backward against jax.vjp of the layer's own
forward (float64), ties routed exactly as jax.vjp routes them, forward against PyTorch,
planted bugs the comparison must catch, and the error messages."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from fnnet.layers.base import TYPES
from fnnet.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D, _scatter_windows, _window_slices
from oracles import rel_error

KEY = jax.random.key(0)
# Every configuration is a new program, so compiling dominates these tests: compile them with
# XLA's cheap settings (the same HLO programs; only their machine code is less tuned).
QUICK = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def quick_jit(f, *args):
    """f(*args), jitted and compiled with QUICK."""
    return jax.jit(f).lower(*args).compile(QUICK)(*args)


def hand_and_vjp(layer, x, dy):
    """(hand dx, jax.vjp dx) of `layer` at x, one program; checks the shapes and the empty dparams."""
    _, out_shape = layer.init(KEY, x.shape[1:], x.dtype)

    def both(x, dy):
        y, cache = layer.forward({}, x)
        assert y.shape == (x.shape[0], *out_shape)  # the shape init declares is the shape forward makes
        dparams, dx = layer.backward({}, cache, dy)
        assert dparams == {} and dx.shape == x.shape and dx.dtype == x.dtype
        _, vjp = jax.vjp(lambda x: layer.forward({}, x)[0], x)
        return dx, vjp(dy)[0]

    dx, ref = quick_jit(both, x, dy)
    return np.asarray(dx), np.asarray(ref)


def out_shape(layer, x):
    return (x.shape[0], *layer.init(KEY, x.shape[1:])[1])


# Data from numpy: a jax.random draw of each new shape would be one more program to compile.
def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def images(kind, shape, seed=0):
    """float64 images: "normal" (no ties), "integers" (many ties), "relu" (windows of zeros, ±0)."""
    x = normal(shape, seed)
    if kind == "integers":
        return np.round(2 * x)
    if kind == "relu":
        return np.where(x > 0.5, x, np.where(x > 0, 0.0, -0.0))  # signed zeros tie too
    return x


def integer_dy(layer, x, seed=1):
    """dy with small integer values: sums of them are exact in any order, so dx compares exactly."""
    return np.round(4 * normal(out_shape(layer, x), seed))


@st.composite
def pools(draw, cls):
    """A windowed pool and an input it accepts: batch 1-3, H, W ≤ 6, windows ≤ 3, strides ≤ 3
    (so overlapping, tiling and gapped windows), VALID, SAME or explicit padding."""
    batch, H, W, C = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, min(3, H + 1))), draw(st.integers(1, min(3, W + 1)))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.one_of(
        st.sampled_from(["VALID", "SAME"]),
        st.tuples(st.tuples(st.integers(0, kh - 1), st.integers(0, kh)),
                  st.tuples(st.integers(0, kw - 1), st.integers(0, kw)))))
    window = kh if kh == kw and draw(st.booleans()) else (kh, kw)
    stride = None if (sh, sw) == (kh, kw) and draw(st.booleans()) else (sh, sw)
    layer = cls(window, stride, padding)
    try:
        layer.init(KEY, (H, W, C))
    except ValueError:  # window larger than the padded input, or a window all padding
        assume(False)
    return layer, (batch, H, W, C)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pools(MaxPool2D), st.sampled_from(["normal", "integers", "relu"]))
def test_maxpool_backward_equals_vjp(case, kind):
    layer, shape = case
    x = images(kind, shape)
    dy = normal(out_shape(layer, x), 1)
    dx, ref = hand_and_vjp(layer, x, dy)
    assert rel_error(dx, ref) <= 1e-10


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pools(AvgPool2D))
def test_avgpool_backward_equals_vjp(case):
    layer, shape = case
    x = images("normal", shape)
    dy = normal(out_shape(layer, x), 1)
    dx, ref = hand_and_vjp(layer, x, dy)
    assert rel_error(dx, ref) <= 1e-10


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4))
def test_global_avgpool_backward_equals_vjp(batch, H, W, C):
    x = images("normal", (batch, H, W, C))
    layer = GlobalAvgPool2D()
    dx, ref = hand_and_vjp(layer, x, normal((batch, C), 1))
    assert rel_error(dx, ref) <= 1e-10


# Ties: the gradient of a window of equal maxima goes to its first one (row-major), as jax.vjp
# sends it; integer dy keeps the sums exact, so dx must equal jax.vjp's bit for bit.
TIE_POOLS = [
    MaxPool2D(2),                                   # side by side
    MaxPool2D(3, stride=1),                         # overlapping: a pixel in up to 9 windows
    MaxPool2D(3, stride=2, padding="SAME"),         # overlapping, padded
    MaxPool2D((2, 3), stride=(1, 2), padding=((1, 0), (2, 1))),
    MaxPool2D(2, stride=3),                         # gaps between windows
]


@pytest.mark.parametrize("layer", TIE_POOLS, ids=repr)
def test_maxpool_ties_go_where_vjp_sends_them(layer):
    # examples 0-1: windows of zeros after a ReLU (signed zeros among them), 2-3: integer
    # values, 4: an image of zeros (every window one big tie)
    shape = (2, 7, 8, 3)
    x = np.concatenate([images("relu", shape), images("integers", shape), np.zeros((1, *shape[1:]))])
    dx, ref = hand_and_vjp(layer, x, integer_dy(layer, x))
    np.testing.assert_array_equal(dx, ref)


def test_maxpool_tied_window_gives_all_to_its_first_pixel():
    # All four pixels tie: the window's dy lands on the top-left one only. With window 3,
    # stride 1 on zeros, every window's first pixel is its top-left: dx[h, w] = dy[h, w].
    x, dy = np.zeros((1, 4, 4, 1)), np.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    for pool, corners in [(MaxPool2D(2), np.s_[::2, ::2]), (MaxPool2D(3, stride=1), np.s_[:2, :2])]:
        expected = np.zeros((4, 4))
        expected[corners] = [[1, 2], [3, 4]]
        dx = quick_jit(lambda x, dy: pool.backward({}, pool.forward({}, x)[1], dy)[1], x, dy)
        np.testing.assert_array_equal(dx[0, :, :, 0], expected)


class MaxPoolSharesTies(MaxPool2D):
    """Planted bug: a window's dy to every pixel equal to its max, not only the first."""

    def backward(self, params, cache, dy):
        x, y = cache
        pads, out = self._geometry(x.shape[1:])
        gs = [jnp.where(v == y, dy, 0) for v in _window_slices(x, -np.inf, self.window, self.stride, pads, out)]
        return {}, _scatter_windows(gs, x.shape[1:3], self.window, self.stride, pads)


class AvgPoolCountsPadding(AvgPool2D):
    """Planted bug: dy divided by the full window size kh·kw, padding counted."""

    def backward(self, params, cache, dy):
        in_shape = cache.shape[1:-1]
        pads, _ = self._geometry(in_shape)
        k = self.window[0] * self.window[1]
        return {}, _scatter_windows([dy / k] * k, in_shape[:2], self.window, self.stride, pads)


class GlobalAvgPoolForgetsMean(GlobalAvgPool2D):
    """Planted bug: dy broadcast without the 1/(H·W)."""

    def backward(self, params, cache, dy):
        return {}, jnp.broadcast_to(dy[:, None, None, :], cache.shape[:-1])


def test_planted_bugs_are_caught():
    x = images("integers", (2, 6, 5, 2))
    bad = MaxPoolSharesTies(3, stride=2, padding="SAME")
    dx, ref = hand_and_vjp(bad, x, integer_dy(bad, x))
    assert rel_error(dx, ref) > 0.1
    dx, ref = hand_and_vjp(bad, images("normal", x.shape), integer_dy(bad, x))
    assert rel_error(dx, ref) == 0  # without ties the bug hides: the tie tests are what find it

    x = images("normal", (2, 6, 5, 2))
    bad = AvgPoolCountsPadding(3, stride=2, padding="SAME")
    dx, ref = hand_and_vjp(bad, x, np.ones(out_shape(bad, x)))
    assert rel_error(dx, ref) > 0.1
    bad = AvgPoolCountsPadding(2)  # without padding every window has kh·kw pixels: no bug to see
    assert rel_error(*hand_and_vjp(bad, x[:, :4, :4], np.ones((2, 2, 2, 2)))) <= 1e-15

    bad = GlobalAvgPoolForgetsMean()
    assert rel_error(*hand_and_vjp(bad, x, np.ones((2, 2)))) > 0.1


TORCH_CASES = [  # (window, stride, padding); torch pads symmetrically by at most half the window
    (2, None, "VALID"),
    (3, 2, ((1, 1), (1, 1))),
    ((3, 2), (2, 1), ((1, 1), (1, 1))),
    (3, 1, ((1, 1), (0, 0))),
    ((2, 3), (1, 2), ((0, 0), (1, 1))),
]


@pytest.mark.parametrize("window, stride, padding", TORCH_CASES)
def test_forward_matches_torch(window, stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = images("normal", (2, 7, 6, 3))
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    tp = dict(kernel_size=window, stride=stride or window, padding=(padding[0][0], padding[1][0])
              if padding != "VALID" else 0)
    for layer, want in [(MaxPool2D(window, stride, padding), F.max_pool2d(xt, **tp)),
                        (AvgPool2D(window, stride, padding), F.avg_pool2d(xt, **tp, count_include_pad=False))]:
        y = quick_jit(lambda x: layer.forward({}, x)[0], x)
        np.testing.assert_allclose(y, want.numpy().transpose(0, 2, 3, 1), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("window, stride", [(3, 2), (2, 1), ((3, 2), (2, 3))])
def test_same_padding_matches_torch(window, stride):
    # SAME pads asymmetrically (the odd pixel at the end): torch pads by hand, and averages over
    # the real pixels as the window sums of x over the window sums of a mask of ones.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = images("normal", (2, 7, 6, 3))
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    k = (window, window) if isinstance(window, int) else window
    s = (stride, stride) if isinstance(stride, int) else stride
    (top, bottom), (left, right) = jax.lax.padtype_to_pads((7, 6), k, s, "SAME")
    pad = (left, right, top, bottom)
    want_max = F.max_pool2d(F.pad(xt, pad, value=-np.inf), k, s)
    sums = F.avg_pool2d(F.pad(xt, pad), k, s, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(xt), pad), k, s, divisor_override=1)
    for layer, want in [(MaxPool2D(window, stride, "SAME"), want_max), (AvgPool2D(window, stride, "SAME"), sums / counts)]:
        y = quick_jit(lambda x: layer.forward({}, x)[0], x)
        np.testing.assert_allclose(y, want.numpy().transpose(0, 2, 3, 1), rtol=1e-13, atol=1e-13)


def test_global_avgpool_matches_torch():
    torch = pytest.importorskip("torch")
    x = images("normal", (2, 5, 4, 3))
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()), 1)
    y = quick_jit(lambda x: GlobalAvgPool2D().forward({}, x)[0], x)
    np.testing.assert_allclose(y, want.numpy()[:, :, 0, 0], rtol=1e-14)


@pytest.mark.parametrize("layer", [MaxPool2D(3, 2, "SAME"), AvgPool2D(3, 2, "SAME"), GlobalAvgPool2D()], ids=repr)
def test_caches_slice_per_example(layer):
    # Every cache is batch first: one example's slice of it gives that example's dx.
    x = images("integers", (3, 6, 5, 2))
    y, cache = quick_jit(lambda x: layer.forward({}, x), x)
    dy = normal(y.shape, 1)
    backward = jax.jit(lambda cache, dy: layer.backward({}, cache, dy)[1])
    dx = backward(cache, dy)
    for i in range(3):
        one = jax.tree.map(lambda a: a[i:i + 1], cache)
        np.testing.assert_array_equal(backward(one, dy[i:i + 1]), dx[i:i + 1])


def test_float32_in_float32_out():
    x = np.ones((2, 6, 6, 3), np.float32)
    for layer in [MaxPool2D(3, 2, "SAME"), AvgPool2D(3, 2, "SAME"), GlobalAvgPool2D()]:
        def fwd_bwd(x):
            y, cache = layer.forward({}, x)
            return y, layer.backward({}, cache, jnp.ones_like(y))[1]
        y, dx = jax.eval_shape(fwd_bwd, x)
        assert y.dtype == dx.dtype == jnp.float32


def test_static_hashable_registered_values():
    assert MaxPool2D(2) == MaxPool2D((2, 2), (2, 2), "valid") and hash(MaxPool2D(2)) == hash(MaxPool2D((2, 2)))
    assert MaxPool2D(2) != AvgPool2D(2)
    assert AvgPool2D(3, [1, 2], [[1, 1], [0, 0]]).padding == ((1, 1), (0, 0))
    assert repr(MaxPool2D(3, 2, "same")) == "MaxPool2D(window=(3, 3), stride=(2, 2), padding='SAME')"
    assert MaxPool2D(3, 2).init(KEY, (7, 7, 4)) == ({}, (3, 3, 4))
    assert all(TYPES[c.__name__] is c for c in (MaxPool2D, AvgPool2D, GlobalAvgPool2D))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("args, message", [
    ((0,), "window must be an int ≥ 1 or a pair of them (rows, columns), got 0"),
    (((2, 0),), "window must be an int ≥ 1 or a pair of them (rows, columns), got (2, 0)"),
    ((2.0,), "window must be an int ≥ 1 or a pair of them (rows, columns), got 2.0"),
    ((2, 0), "stride must be an int ≥ 1 or a pair of them (rows, columns), got 0"),
    ((2, (1, -1)), "stride must be an int ≥ 1 or a pair of them (rows, columns), got (1, -1)"),
    ((2, 1, "FULL"), "padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) of ints ≥ 0, got 'FULL'"),
    ((2, 1, ((1,), (1, 1))), "padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) of ints ≥ 0, got ((1,), (1, 1))"),
    ((2, 1, ((-1, 0), (0, 0))), "padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) of ints ≥ 0, got ((-1, 0), (0, 0))"),
])
def test_bad_arguments(cls, args, message):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\(.*\): " + re.escape(message)):
        cls(*args)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_bad_inputs(cls):
    with pytest.raises(ValueError, match=re.escape(f"{cls.__name__}(window=(2, 2), stride=(2, 2), padding='VALID') "
                                                   "expects images of shape (H, W, C) per example, got (8, 8)")):
        cls(2).init(KEY, (8, 8))
    with pytest.raises(ValueError, match=re.escape("per example, got (8, 3); give the data as (batch, H, W, C)")):
        cls(2).forward({}, jnp.ones((2, 8, 3)))
    with pytest.raises(ValueError, match=re.escape("the window spans 5 pixels along the height, more than the "
                                                   "input's 4 plus padding 0 + 0")):
        cls(5).init(KEY, (4, 9, 1))
    with pytest.raises(ValueError, match=re.escape("the window spans 3 pixels along the width, more than the "
                                                   "input's 1 plus padding 0 + 1")):
        cls((1, 3), padding=((0, 0), (0, 1))).init(KEY, (4, 1, 1))
    with pytest.raises(ValueError, match=re.escape("padding 2 + 0 along the height leaves a window entirely in the "
                                                   "padding, with none of the input's 4 pixels")):
        cls(2, 1, ((2, 0), (0, 0))).init(KEY, (4, 4, 1))
    with pytest.raises(ValueError, match=re.escape("padding 0 + 3 along the width leaves a window entirely in the "
                                                   "padding")):
        cls(2, 1, ((0, 0), (0, 3))).init(KEY, (4, 4, 1))
    assert cls(2, 3, ((0, 0), (0, 2))).init(KEY, (4, 4, 1))[1] == (1, 2, 1)  # hi ≥ window is fine if no window is all padding


def test_global_avgpool_bad_inputs():
    with pytest.raises(ValueError, match=re.escape("GlobalAvgPool2D() expects images of shape (H, W, C) per example, got (8,)")):
        GlobalAvgPool2D().init(KEY, (8,))
    with pytest.raises(ValueError, match=re.escape("GlobalAvgPool2D() expects images of shape (H, W, C) per example, got (4, 4, 2, 1)")):
        GlobalAvgPool2D().forward({}, jnp.ones((2, 4, 4, 2, 1)))
