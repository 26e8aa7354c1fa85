"""Conv2D: the hand-written backward against jax.vjp of its own forward (float64), the forward
against PyTorch, planted bugs the comparison must catch, and the errors for bad arguments."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from fnnet import activations, initializers
from fnnet.layers import conv
from fnnet.layers.conv import Conv2D
from oracles import rel_error, tree_rel_error


def random_inputs(layer, in_shape, batch=2, seed=0):
    """Standard-normal float64 params (of the shapes `init` makes), x and dy, with no XLA
    work: op by op, every new shape compiles each primitive afresh, which is slow."""
    declared = {}

    def init(key):
        params, declared["out_shape"] = layer.init(key, in_shape, jnp.float64)
        return params

    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape), jax.eval_shape(init, jax.random.key(0)))
    return params, rng.standard_normal((batch, *in_shape)), rng.standard_normal((batch, *declared["out_shape"]))


def backward_error(layer, in_shape, batch=2, seed=0):
    """The hand backward's largest relative error against jax.vjp of `layer.forward`, both
    in one compiled program."""

    @jax.jit
    def both(params, x, dy):
        y, cache = layer.forward(params, x)
        assert y.shape == dy.shape  # the shape init declares is the shape forward makes
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
        return layer.backward(params, cache, dy), vjp(dy)

    return tree_rel_error(*both(*random_inputs(layer, in_shape, batch, seed)))


def same_pads(n, k_eff, s):
    """TensorFlow's "SAME": output ⌈n/s⌉, the odd pixel of padding at the end."""
    total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


@st.composite
def configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = groups > 1 and draw(st.booleans())
    C = groups if depthwise else groups * draw(st.integers(1, 2))
    n_out = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    H, W = draw(st.integers(k_eff[0], 7)), draw(st.integers(k_eff[1], 7))
    padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]),
                             st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * 2)))
    layer = Conv2D(n_out, kernel, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                   padding=padding, dilation=dilation, groups=groups,
                   activation=draw(st.sampled_from(["identity", "relu", "tanh", "elu"])))
    return layer, (H, W, C), draw(st.sampled_from([1, 2, 3]))


@settings(max_examples=30, deadline=None)
@given(configs())
def test_backward_equals_vjp(config):
    layer, in_shape, batch = config
    assert backward_error(layer, in_shape, batch) <= 1e-10


@pytest.mark.parametrize("layer,in_shape", [
    (Conv2D(4, 3), (6, 6, 2)),
    (Conv2D(6, (3, 2), stride=2, padding="SAME", dilation=(1, 2)), (7, 8, 3)),  # SAME pads 0 + 1
    (Conv2D(4, 3, stride=(2, 1), padding=((2, 0), (1, 3)), groups=2), (6, 5, 4)),
    (Conv2D(6, 3, padding="VALID", groups=3, activation="relu"), (5, 5, 3)),  # depthwise, m = 2
    (Conv2D(3, 2, stride=3, dilation=2, groups=3), (9, 9, 3)),  # depthwise, strided and dilated
], ids=repr)
def test_forward_matches_torch(layer, in_shape):
    torch = pytest.importorskip("torch")
    params, x, dy = random_inputs(layer, in_shape)
    y, _ = jax.jit(layer.forward)(params, x)
    if isinstance(layer.padding, str):
        pads = [same_pads(n, (k - 1) * d + 1, s) if layer.padding == "SAME" else (0, 0)
                for n, k, d, s in zip(in_shape, layer.kernel, layer.dilation, layer.stride)]
    else:
        pads = layer.padding
    (top, bottom), (left, right) = pads
    x_t = torch.nn.functional.pad(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2), (left, right, top, bottom))
    z_t = torch.nn.functional.conv2d(
        x_t, torch.tensor(np.asarray(params["W"])).permute(3, 2, 0, 1), torch.tensor(np.asarray(params["b"])),
        stride=layer.stride, dilation=layer.dilation, groups=layer.groups)
    expected = layer.activation(jnp.asarray(z_t.permute(0, 2, 3, 1).numpy()))
    assert y.shape == expected.shape == dy.shape
    assert rel_error(y, expected) <= 1e-12


# The formulas of BACKWARD.md written out once more with lax, with a knob for each bug.
def lax_backward(layer, params, cache, dy, *, dx_shift=0, dW_stride=None, flip=True):
    x, z = cache
    W = params["W"]
    kh, kw, c_g, O = W.shape
    g = layer.groups
    pads, out = layer._geometry(x.shape[1:])
    k_eff = [(k - 1) * d + 1 for k, d in zip(W.shape[:2], layer.dilation)]
    delta = layer.activation.backward(z, dy)
    dW_stride = layer.stride if dW_stride is None else dW_stride
    x_g = x.reshape(*x.shape[:3], g, c_g).transpose(3, 0, 1, 2, 4).reshape(-1, *x.shape[1:3], c_g)
    dW = lax.conv_general_dilated(
        x_g, delta, window_strides=layer.dilation,
        padding=[(lo, k + (o - 1) * s - n - lo)
                 for n, (lo, _), k, o, s in zip(x.shape[1:3], pads, k_eff, out, dW_stride)],
        rhs_dilation=dW_stride, dimension_numbers=("CHWN", "IHWO", "HWNC"), feature_group_count=g)
    W_t = (W[::-1, ::-1] if flip else W).reshape(kh, kw, c_g, g, O // g)
    W_t = W_t.transpose(0, 1, 3, 2, 4).reshape(kh, kw, g * c_g, O // g)  # read as HWOI
    dx = lax.conv_general_dilated(
        delta, W_t, window_strides=(1, 1),
        padding=[(k - 1 - lo + dx_shift, n - 1 - (o - 1) * s + lo - dx_shift)
                 for n, (lo, _), k, o, s in zip(x.shape[1:3], pads, k_eff, out, layer.stride)],
        lhs_dilation=layer.stride, rhs_dilation=layer.dilation,
        dimension_numbers=("NHWC", "HWOI", "NHWC"), feature_group_count=g)
    return {"W": dW[:kh, :kw], "b": delta.sum(axis=(0, 1, 2))}, dx


def planted(**bug):
    class Planted(Conv2D):
        def backward(self, params, cache, dy):
            return lax_backward(self, params, cache, dy, **bug)
    return Planted


BUG_CONFIGS = [
    (dict(n_out=4, kernel=3, stride=2, padding=((1, 2), (0, 1))), (7, 6, 2)),
    (dict(n_out=6, kernel=(3, 2), stride=2, groups=3, activation="tanh"), (7, 7, 3)),  # depthwise
]


@pytest.mark.parametrize("kwargs,in_shape", BUG_CONFIGS)
def test_lax_formulas_pass_and_planted_bugs_are_caught(kwargs, in_shape):
    # The bug-free lax version passes (a second, independent check of the depthwise taps too).
    assert backward_error(planted()(**kwargs), in_shape) <= 1e-10
    for bug in [dict(dx_shift=1), dict(dW_stride=(1, 1)), dict(flip=False)]:
        assert backward_error(planted(**bug)(**kwargs), in_shape) > 1e-2, bug


@pytest.mark.parametrize("layer", [Conv2D(4, 3, stride=2, activation="tanh", impl="conv"),
                                   Conv2D(4, 3, stride=2, activation="tanh", impl="im2col"),
                                   Conv2D(6, 3, padding="VALID", groups=3)], ids=lambda l: f"{l!r} {l.impl}")
def test_per_example_backward_from_cache_slices(layer):
    # The cache is batch first: the backward of each example's slice sums to the batch's.
    params, x, dy = random_inputs(layer, (6, 6, 3), batch=4)
    y, cache = jax.jit(layer.forward)(params, x)
    dparams, dx = jax.jit(layer.backward)(params, cache, dy)
    per = jax.jit(jax.vmap(lambda c, d: layer.backward(params, jax.tree.map(lambda a: a[None], c), d[None])))
    dparams_i, dx_i = per(cache, dy)
    assert tree_rel_error(jax.tree.map(lambda a: a.sum(0), dparams_i), dparams) <= 1e-12
    assert rel_error(dx_i[:, 0], dx) <= 1e-12


@pytest.mark.parametrize("groups", [1, 3])
def test_float32_stays_float32(groups):
    layer = Conv2D(6, 3, stride=2, groups=groups)
    params = jax.eval_shape(lambda k: layer.init(k, (5, 5, 3), jnp.float32)[0], jax.random.key(0))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == {
        "W": ((3, 3, 3 // groups, 6), jnp.float32), "b": ((6,), jnp.float32)}
    params = jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), params)

    @jax.jit
    def run(params, x):
        y, cache = layer.forward(params, x)
        return y, layer.backward(params, cache, jnp.ones_like(y))

    y, (dparams, dx) = run(params, jnp.ones((2, 5, 5, 3), jnp.float32))
    assert y.shape == (2, 3, 3, 6) and y.dtype == dx.dtype == dparams["W"].dtype == jnp.float32


def test_initializer_fan_in_is_kh_kw_c_over_groups():
    layer = Conv2D(256, 5, groups=2)  # fan_in = 5·5·16/2 = 200
    W = layer.init(jax.random.key(0), (8, 8, 16), jnp.float64)[0]["W"]
    assert W.shape == (5, 5, 8, 256)
    assert abs(float(W.std()) / math.sqrt(1 / 200) - 1) < 0.05


def test_same_padding_follows_lax():
    layer = Conv2D(2, 4, stride=3, dilation=2)  # k_eff = 7: SAME pads (2, 3) for 8, (2, 2) for 9
    assert layer._geometry((8, 9, 1)) == (((2, 3), (2, 2)), (3, 3))
    assert layer._geometry((8, 9, 1))[0] == tuple(map(tuple, lax.padtype_to_pads((8, 9), (7, 7), (3, 3), "SAME")))


def test_layers_are_hashable_static_values():
    assert Conv2D(8, 3) == Conv2D(8, (3, 3), 1, "same", (1, 1), 1, activations.identity, "lecun_normal")
    assert hash(Conv2D(8, 3, padding=[[1, 0], [0, 1]])) == hash(Conv2D(8, 3, padding=((1, 0), (0, 1))))
    assert Conv2D(8, 3) != Conv2D(8, 3, stride=2)
    layer = Conv2D(8, 3, stride=(2, 1), padding="VALID", groups=2, activation="relu", W_init=initializers.he_normal)
    assert repr(layer) == ("Conv2D(n_out=8, kernel=(3, 3), stride=(2, 1), padding='VALID', dilation=(1, 1), "
                           "groups=2, activation=relu, W_init=he_normal, b_init=zeros)")
    assert Conv2D(**{k: getattr(layer, k) for k in layer.__dataclass_fields__}) == layer


KEY = jax.random.key(0)


@pytest.mark.parametrize("make,match", [
    (lambda: Conv2D(0, 3), r"Conv2D\(n_out=0.*\): n_out must be a positive int, got 0"),
    (lambda: Conv2D(8, 3, groups=0), r"groups must be a positive int, got 0"),
    (lambda: Conv2D(9, 3, groups=2), r"n_out=9 is not divisible by groups=2"),
    (lambda: Conv2D(8, 0), r"kernel must be an int ≥ 1 or a pair of them \(rows, columns\), got 0"),
    (lambda: Conv2D(8, (3, 3, 3)), r"kernel must be .* got \(3, 3, 3\)"),
    (lambda: Conv2D(8, 2.5), r"kernel must be .* got 2.5"),
    (lambda: Conv2D(8, 3, stride=0), r"stride must be an int ≥ 1 .* got 0"),
    (lambda: Conv2D(8, 3, dilation=(1, -1)), r"dilation must be an int ≥ 1 .* got \(1, -1\)"),
    (lambda: Conv2D(8, 3, padding="FULL"), r"padding must be 'SAME', 'VALID' or \(\(top, bottom\), "
                                           r"\(left, right\)\) of ints ≥ 0, got 'FULL'"),
    (lambda: Conv2D(8, 3, padding=1), r"padding must be .* got 1"),
    (lambda: Conv2D(8, 3, padding=((1, 1),)), r"padding must be .* got \(\(1, 1\),\)"),
    (lambda: Conv2D(8, 3, padding=((1, -1), (0, 0))), r"padding must be .* got \(\(1, -1\), \(0, 0\)\)"),
    (lambda: Conv2D(8, 3).init(KEY, (28, 28)),
     r"Conv2D\(n_out=8.*\) expects images of shape \(H, W, C\) per example, got \(28, 28\); "
     r"give the data as \(batch, H, W, C\)"),
    (lambda: Conv2D(8, 3, groups=2).init(KEY, (8, 8, 3)),
     r"Conv2D\(n_out=8.*groups=2.*\): the input's 3 channels are not divisible by groups=2"),
    (lambda: Conv2D(8, 5, padding="VALID").init(KEY, (4, 6, 1)),
     r"the kernel spans 5 pixels \(dilated\) along the height, more than the input's 4 plus padding 0 \+ 0"),
    (lambda: Conv2D(8, 3, dilation=(1, 3), padding=((0, 0), (1, 0))).init(KEY, (4, 5, 1)),
     r"the kernel spans 7 pixels \(dilated\) along the width, more than the input's 5 plus padding 1 \+ 0"),
    (lambda: Conv2D(8, 3).forward({"W": np.ones((3, 3, 1, 8)), "b": np.zeros(8)}, np.ones((4, 4, 1))),
     r"expects images of shape \(H, W, C\) per example, got \(4, 1\)"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------- the formulations (Conv2D.formulation): each passes the check, and they agree ----------

def forward_and_backward(layer, params, x, dy):
    @jax.jit
    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        return y, layer.backward(params, cache, dy)
    return run(params, x, dy)


@settings(max_examples=10, deadline=None)
@given(configs())
def test_formulations_each_equal_vjp_and_agree_with_each_other(config):
    layer, in_shape, batch = config
    inputs = random_inputs(layer, in_shape, batch)
    results = {}
    for impl in ("conv", "im2col"):
        variant = dataclasses.replace(layer, impl=impl)
        assert backward_error(variant, in_shape, batch) <= 1e-10, impl
        results[impl] = forward_and_backward(variant, *inputs)
    assert tree_rel_error(results["im2col"], results["conv"]) <= 1e-12


@pytest.mark.parametrize("layer,in_shape,expected", [
    (Conv2D(32, 3), (32, 32, 3), "im2col"),  # a first layer: 27 patch columns
    (Conv2D(32, 5), (28, 28, 1), "im2col"),  # 25
    (Conv2D(32, 3), (32, 32, 4), "conv"),  # 36 > IM2COL_MAX_COLUMNS
    (Conv2D(64, 3), (8, 8, 32), "conv"),
    (Conv2D(4, 1, groups=2), (8, 8, 4), "conv"),  # grouped: lax's feature groups, however few columns
    (Conv2D(6, 3, groups=3), (8, 8, 3), "taps"),  # depthwise
    (Conv2D(64, 3, impl="im2col"), (8, 8, 32), "im2col"),
    (Conv2D(32, 3, impl="conv"), (32, 32, 3), "conv"),
    (Conv2D(6, 3, groups=3, impl="conv"), (8, 8, 3), "taps"),
    (Conv2D(6, 3, groups=3, impl="im2col"), (8, 8, 3), "im2col"),
], ids=repr)
def test_auto_picks_im2col_for_few_patch_columns(layer, in_shape, expected):
    assert conv.IM2COL_MAX_COLUMNS == 32
    assert layer.formulation(in_shape) == expected


def test_dW_slices_cover_the_batch():
    assert conv._slices(64, 2 ** 17) == [(i, i + 2) for i in range(0, 64, 2)]  # 256 KB of δ each
    assert conv._slices(128, 2 ** 14) == [(i, i + 8) for i in range(0, 128, 8)]  # but ≤ 8 examples
    assert conv._slices(3, 16) == [(0, 3)]  # small examples: one slice
    assert conv._slices(5, 2 ** 30) == [(i, i + 1) for i in range(5)]  # large ones: one example each,
    assert conv._slices(1000, 2 ** 30) == [(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]  # ≤ 32 slices


@pytest.mark.parametrize("layer,in_shape", [
    (Conv2D(4, 3, stride=2, padding=((1, 2), (0, 1)), impl="conv"), (7, 6, 2)),
    (Conv2D(4, 3, dilation=2, groups=2, impl="conv"), (6, 6, 4)),
], ids=repr)
def test_dW_summed_over_slices_of_the_batch(layer, in_shape, monkeypatch):
    inputs = random_inputs(layer, in_shape, batch=5)
    whole = forward_and_backward(layer, *inputs)
    monkeypatch.setattr(conv, "DW_SLICE_BYTES", 1)  # each example a slice of its own ...
    monkeypatch.setattr(conv, "DW_MAX_SLICES", 2)  # ... but two slices at most: 3 + 2 examples
    assert conv._slices(5, 1) == [(0, 3), (3, 5)]
    assert backward_error(layer, in_shape, batch=5) <= 1e-10
    assert tree_rel_error(forward_and_backward(layer, *inputs), whole) <= 1e-12


@pytest.mark.parametrize("impl,groups", [("conv", 1), ("im2col", 1), ("im2col", 3)])
def test_float32_stays_float32_in_each_formulation(impl, groups):
    layer = Conv2D(6, 3, stride=2, groups=groups, impl=impl)
    params = {"W": jnp.ones((3, 3, 3 // groups, 6), jnp.float32), "b": jnp.ones(6, jnp.float32)}
    y, (dparams, dx) = forward_and_backward(layer, params, jnp.ones((2, 5, 5, 3), jnp.float32),
                                            jnp.ones((2, 3, 3, 6), jnp.float32))
    assert y.dtype == dx.dtype == dparams["W"].dtype == dparams["b"].dtype == jnp.float32


def test_impl_is_checked_kept_out_of_the_repr_and_round_trips():
    with pytest.raises(ValueError, match=r"Conv2D\(n_out=8.*\): impl must be one of \('auto', 'conv', 'im2col'\), "
                                         r"got 'fft'"):
        Conv2D(8, 3, impl="fft")
    layer = Conv2D(8, 3, impl="im2col")
    assert layer != Conv2D(8, 3) and repr(layer) == repr(Conv2D(8, 3))
    assert Conv2D(**{k: getattr(layer, k) for k in layer.__dataclass_fields__}) == layer
