"""fnnet.check_layer and check_layers: any layer's backward against jax.vjp of its forward and
finite differences, and the broken layer of a network named by its path."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet.layercheck import check_layer, check_layers
from fnnet.layers import BatchNorm, Dense, Dropout, Residual, Sequential


@dataclasses.dataclass(frozen=True)
class Scale:
    """A user's own layer, not registered: y = x ⊙ s, params {"s": (d,)}."""

    def init(self, key, in_shape, dtype=jnp.float32):
        return {"s": 1 + jax.random.normal(key, in_shape[-1:], dtype)}, tuple(in_shape)

    def forward(self, params, x):
        return x * params["s"][None], x

    def backward(self, params, x, dy):
        return {"s": (dy * x).sum(0)}, dy * params["s"][None]


@dataclasses.dataclass(frozen=True)
class ScaleForgetsS(Scale):
    def backward(self, params, x, dy):
        return {"s": (dy * x).sum(0)}, dy  # dx without the factor s


@dataclasses.dataclass(frozen=True)
class ScaleSumsWrong(Scale):
    def backward(self, params, x, dy):
        return {"s": (dy * x).mean(0)}, dy * params["s"][None]  # ds averaged instead of summed


@dataclasses.dataclass(frozen=True)
class Lookup:
    """Integer inputs (token ids) → rows of a table: no dx."""

    vocab: int = 5

    def init(self, key, in_shape, dtype=jnp.float32):
        return {"W": jax.random.normal(key, (self.vocab, 3), dtype)}, (*in_shape, 3)

    def forward(self, params, ids):
        return params["W"][ids], ids

    def backward(self, params, ids, dy):
        return {"W": jnp.zeros_like(params["W"]).at[ids].add(dy)}, None


@dataclasses.dataclass(frozen=True)
class LookupLastWins(Lookup):
    def backward(self, params, ids, dy):  # .set: a repeated id keeps one gradient, not the sum
        return {"W": jnp.zeros_like(params["W"]).at[ids].set(dy)}, None


def test_a_users_own_layer_passes_and_its_bugs_are_named():
    assert check_layer(Scale(), (4,)).ok
    report = check_layer(ScaleForgetsS(), (4,))
    assert not report.ok and re.match(r"FAIL: ScaleForgetsS\(\): dx differs from jax.vjp of its forward in "
                                      r"training mode \(index \(\d, \d\): .*\); its s agree", report.message)
    report = check_layer(ScaleSumsWrong(), (4,))
    assert not report.ok and "s differs from jax.vjp" in report.message and "its dx agree" in report.message


def test_integer_inputs_and_repeated_ids_accumulate():
    assert check_layer(Lookup(), (6,), int_range=(0, 5), batch=4).ok  # 24 ids in 5 rows: repeats
    report = check_layer(LookupLastWins(vocab=6), (6,), int_range=(0, 5), batch=4)
    assert not report.ok and report.message.startswith("FAIL: LookupLastWins(vocab=6): W differs")


def test_float32_and_finite_differences_are_opinions_of_their_own():
    report = check_layer(Dense(3, "tanh"), (4,), dtype=jnp.float32)
    assert report.ok and all(o.fd_error is not None for o in report.results[0].outputs)
    assert check_layer(Dense(3, "tanh"), (4,), fd=False).results[0].outputs[0].fd_error is None


def test_stateful_layers_are_checked_in_both_modes():
    report = check_layer(BatchNorm(), (3,), batch=5)
    assert report.ok and [r.train for r in report.results] == [True, False]
    assert check_layer(Dropout(0.5), (7,), batch=4).ok


def test_a_network_names_the_innermost_broken_layer_by_its_path():
    jax.config.update("jax_enable_x64", True)
    net = fnnet.Network((4,), (Dense(5, "relu"), Residual(Sequential(ScaleForgetsS(), Dense(5))),
                               BatchNorm(), Dropout(0.2), Dense(2)))
    params, state = net.init(jax.random.key(0), jnp.float64), net.init_state(jnp.float64)
    X = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
    report = check_layers(net, params, X, state=state, key=jax.random.key(2))
    assert not report.ok and report.culprit.path == "[1]['block'][0]"
    assert report.message.startswith("FAIL: layer [1]['block'][0] ScaleForgetsS(): dx differs from jax.vjp")
    failing = {r.path for r in report.results if not r.ok}  # its ancestors fail too, but are not blamed
    assert failing == {"[1]['block'][0]", "[1]['block']", "[1]"}
    good = fnnet.Network((4,), (Dense(5, "relu"), Residual(Sequential(Scale(), Dense(5))), BatchNorm(),
                                Dropout(0.2), Dense(2)))
    report = check_layers(good, params, X, state=state, key=jax.random.key(2))
    assert report.ok and len(report.results) == 8, report  # 4 + the residual, its block and 2 inside
    assert "[1]['block'][0] Scale" in str(report)


def test_a_broken_combinator_is_blamed_when_its_children_agree():
    @dataclasses.dataclass(frozen=True)
    class HalfResidual(Residual):
        def backward(self, params, caches, dy):
            grads, dx = super().backward(params, caches, dy)
            return grads, 0.5 * dx

    net = fnnet.Network((4,), (HalfResidual(Dense(4, "tanh")), Dense(2)))
    params = net.init(jax.random.key(0), jnp.float64)
    report = check_layers(net, params, jax.random.normal(jax.random.key(1), (3, 4), jnp.float64))
    assert report.culprit.path == "[0]" and "HalfResidual" in report.message and "dx differs" in report.message


def test_check_grads_of_a_network_names_the_broken_layer():
    net = fnnet.Network((4,), (Dense(5, "relu"), Residual(Sequential(ScaleForgetsS(), Dense(5))), BatchNorm(),
                               Dropout(0.3), Dense(2)))
    X = jax.random.normal(jax.random.key(1), (6, 4))
    y = jax.random.randint(jax.random.key(2), (6,), 0, 2)
    report = fnnet.check_grads(net, net.init(jax.random.key(0)), X, y, "softmax_cross_entropy_with_integer_labels")
    # the leaves below the bug are wrong too; the message says which layer's backward is
    assert not report.ok and report.message.startswith("gradient mismatch at [0]['W']")
    assert "; the broken layer: layer [1]['block'][0] ScaleForgetsS(): dx differs from jax.vjp" in report.message
    assert "layer check: layer [1]['block'][0] ScaleForgetsS(): dx differs" in str(report)
    good = fnnet.Network((4,), (Dense(5, "relu"), Residual(Sequential(Scale(), Dense(5))), BatchNorm(),
                                Dropout(0.3), Dense(2)))
    report = fnnet.check_grads(good, good.init(jax.random.key(0)), X, y, "softmax_cross_entropy_with_integer_labels")
    assert report.ok and report.layers.ok and len(report.layers.results) == 8


# The planted-bug gallery: a classic mistake in each image layer's backward, planted in one
# layer of a small CNN, found by check_layers at the inputs that layer really saw and blamed on
# that layer and that output, not on the layers whose gradients it spoils.
from fnnet.layers import Activation, AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, LayerNorm, MaxPool2D  # noqa: E402
from fnnet.layers.normalization import _BatchStats, _channel_axes  # noqa: E402
from fnnet.layers.pooling import _tile_windows, _window_slices  # noqa: E402


class ConvPaddingOffset(Conv2D):
    """dx read with its padding one row off: dx shifted down by a pixel."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        return grads, jnp.pad(dx, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


class ConvStrideIgnoredInDW(Conv2D):
    """dW[p, q] = Σ xpad[b, i + p, j + q] δ[b, i, j]: the taps read x as if the stride were 1."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        x, z = cache
        delta = self.activation.backward(z, dy)
        pads, (Ho, Wo) = self._geometry(x.shape[1:])
        xpad = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        kh, kw = self.kernel
        dW = jnp.stack([jnp.einsum("bijc,bijo->co", xpad[:, p:p + Ho, q:q + Wo], delta)
                        for p in range(kh) for q in range(kw)]).reshape(grads["W"].shape)
        return {**grads, "W": dW}, dx


class ConvUnflippedKernel(Conv2D):
    """dx as a convolution of δ with the kernel as it is, not flipped in space."""

    def backward(self, params, cache, dy):
        (grads, dx) = super().backward({**params, "W": params["W"][::-1, ::-1]}, cache, dy)
        return grads, dx  # dW and db do not read W: only dx is wrong


class MaxPoolTiesToEvery(MaxPool2D):
    """A window's dy to every pixel equal to its max, not to the first of them."""

    def backward(self, params, cache, dy):
        x, y = cache
        pads, out = self._geometry(x.shape[1:])
        gs = [jnp.where(v == y, dy, 0) for v in _window_slices(x, -jnp.inf, self.window, self.stride, pads, out)]
        return {}, _tile_windows(gs, x.shape[1:3], self.window, self.stride, pads)


class BatchNormWithoutMeanTerm(BatchNorm):
    """dx = γ·rstd/M·(M·dy − x̂·Σ dy·x̂): the −Σ dy of the batch mean left out."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        if isinstance(cache, _BatchStats):
            x, _, rstd = cache
            _, b = _channel_axes(x)
            m = x.size // x.shape[-1]
            dx = dx + b(params["gamma"] * rstd / m) * b(grads["beta"])
        return grads, dx


class DropoutFreshMask(Dropout):
    """Backward draws a mask of its own instead of reusing the forward's."""

    def backward(self, params, mask, dy):
        if mask is None:
            return {}, dy
        return {}, self._apply_mask(dy, jax.random.bernoulli(jax.random.key(7), 1 - self.rate, dy.shape))


def _cnn(conv0=Conv2D, bn=BatchNorm, pool=MaxPool2D, block_conv=Conv2D, drop=Dropout):
    return fnnet.Network((8, 8, 2), (
        conv0(4, 3), bn(), Activation("relu"), pool(2),
        Residual(Sequential(block_conv(6, 3, stride=2), Activation("tanh")), shortcut=Conv2D(6, 1, stride=2)),
        drop(0.3), Flatten(), Dense(3)))


GALLERY = [  # (the network with the bug, the layer to blame, the output that differs, those that agree)
    (dict(conv0=ConvPaddingOffset), "[0]", "ConvPaddingOffset", "dx", "W and b"),
    (dict(block_conv=ConvStrideIgnoredInDW), "[4]['block'][0]", "ConvStrideIgnoredInDW", "W", "b and dx"),
    (dict(block_conv=ConvUnflippedKernel), "[4]['block'][0]", "ConvUnflippedKernel", "dx", "W and b"),
    (dict(pool=MaxPoolTiesToEvery), "[3]", "MaxPoolTiesToEvery", "dx", None),
    (dict(bn=BatchNormWithoutMeanTerm), "[1]", "BatchNormWithoutMeanTerm", "dx", "beta and gamma"),
    (dict(drop=DropoutFreshMask), "[5]", "DropoutFreshMask", "dx", None),
]


@pytest.fixture(scope="module")
def cnn_inputs():
    jax.config.update("jax_enable_x64", True)
    net = _cnn()
    X = jax.random.normal(jax.random.key(1), (4, 8, 8, 2), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (4,), 0, 3)
    return net.init(jax.random.key(0), jnp.float64), net.init_state(jnp.float64), X, y


def test_the_cnn_without_bugs_passes_every_layer_and_equals_jax_grad_and_finite_differences(cnn_inputs):
    params, _, X, y = cnn_inputs
    report = fnnet.check_grads(_cnn(), params, X, y, "softmax_cross_entropy_with_integer_labels")
    assert report.ok and report.layers.ok and len(report.layers.results) == 12, report
    assert len(report.leaves) == 10 and all(leaf.fd_ok for leaf in report.leaves)  # finite differences too


@pytest.mark.parametrize("bug,path,name,output,agree", GALLERY, ids=[g[2] for g in GALLERY])
def test_planted_bugs_are_caught_and_blamed_on_their_layer_and_output(cnn_inputs, bug, path, name, output, agree):
    params, state, X, _ = cnn_inputs
    report = check_layers(_cnn(**bug), params, X, state=state, key=jax.random.key(3))
    assert not report.ok and report.culprit.path == path, report
    assert re.match(rf"FAIL: layer {re.escape(path)} {name}\(.*\): {output} differs from jax.vjp of its forward "
                    r"in training mode \(index \(", report.message), report.message
    assert report.message.endswith(f"; its {agree} agree" if agree else ")"), report.message
    assert [r.path for r in report.results if not r.ok and not path.startswith(r.path)] == []  # nothing else


class AvgPoolCountsPadding(AvgPool2D):
    """Backward divides by the whole window, padding included, while forward counts real elements."""

    def backward(self, params, cache, dy):
        pads, out = self._geometry(cache.shape[1:-1])
        count = self._count(cache.shape[1:3], pads, out, dy.dtype)
        return super().backward(params, cache, dy * count / (self.window[0] * self.window[1]))


class GlobalAvgPoolOverH(GlobalAvgPool2D):
    """dx = dy / H: the width forgotten in the mean's 1/(H·W)."""

    def backward(self, params, cache, dy):
        W = cache.shape[2]
        grads, dx = super().backward(params, cache, dy)
        return grads, dx * W


class LayerNormWithoutMeanTerm(LayerNorm):
    """dx = γ·rstd/N·(N·dy − x̂·Σ dy·x̂): the −Σ dy of the mean left out."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        x, _, rstd = cache
        axes, _, b = self._layout(x, params["gamma"])
        n = x.size // x.shape[0]
        return grads, dx + (rstd / n) * (dy * b(params["gamma"])).sum(axis=axes, keepdims=True)


class FlattenColumnMajor(Flatten):
    """dx unflattened in column-major order: the right shape, the wrong pixels."""

    def backward(self, params, cache, dy):
        n, H, W, C = cache.shape[:-1]
        return {}, dy.reshape(n, C, W, H).transpose(0, 3, 2, 1)


def _pooled(pool=AvgPool2D, norm=LayerNorm, flatten=Flatten, gap=GlobalAvgPool2D):
    """Conv → avg-pool (SAME: a padded last window) → LayerNorm → flatten → dense, beside a
    global-average-pool shortcut."""
    return fnnet.Network((6, 6, 2), (
        Conv2D(3, 3), pool(3, 2, "SAME"), norm(),
        Residual(Sequential(flatten(), Dense(3)), shortcut=Sequential(gap(), Dense(3)))))


MORE_GALLERY = [
    (dict(pool=AvgPoolCountsPadding), "[1]", "AvgPoolCountsPadding", "dx", None),
    (dict(norm=LayerNormWithoutMeanTerm), "[2]", "LayerNormWithoutMeanTerm", "dx", "beta and gamma"),
    (dict(flatten=FlattenColumnMajor), "[3]['block'][0]", "FlattenColumnMajor", "dx", None),
    (dict(gap=GlobalAvgPoolOverH), "[3]['shortcut'][0]", "GlobalAvgPoolOverH", "dx", None),
]


@pytest.mark.parametrize("bug,path,name,output,agree", MORE_GALLERY, ids=[g[2] for g in MORE_GALLERY])
def test_planted_bugs_in_the_other_image_layers_are_blamed_on_their_layer_and_output(bug, path, name, output, agree):
    params = _pooled().init(jax.random.key(0), jnp.float64)
    X = jax.random.normal(jax.random.key(1), (3, 6, 6, 2), jnp.float64)
    assert check_layers(_pooled(), params, X).ok
    report = check_layers(_pooled(**bug), params, X)
    assert not report.ok and report.culprit.path == path, report
    assert re.match(rf"FAIL: layer {re.escape(path)} {name}\(.*\): {output} differs from jax.vjp of its forward "
                    r"in training mode \(index \(", report.message), report.message
    assert report.message.endswith(f"; its {agree} agree" if agree else ")"), report.message
    assert [r.path for r in report.results if not r.ok and not path.startswith(r.path)] == []  # nothing else


def test_check_grads_of_a_cnn_names_the_planted_layer(cnn_inputs):
    params, _, X, y = cnn_inputs
    report = fnnet.check_grads(_cnn(block_conv=ConvUnflippedKernel), params, X, y,
                               "softmax_cross_entropy_with_integer_labels")
    assert not report.ok and "; the broken layer: layer [4]['block'][0] ConvUnflippedKernel(" in report.message


class ConvBiasOff(Conv2D):
    """db off by 1e-3 of the layer's largest gradient: small, and still a bug."""

    def backward(self, params, cache, dy):
        grads, dx = super().backward(params, cache, dy)
        return {**grads, "b": grads["b"] + 1e-3 * jnp.abs(grads["W"]).max()}, dx


def _conv_bn_block(conv=Conv2D):
    return fnnet.Network((6, 6, 1), (Conv2D(4, 3, activation="relu"), MaxPool2D(2),
                                     Residual(Sequential(conv(4, 3), BatchNorm(), Activation("relu"))),
                                     Flatten(), Dense(3)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rounding_noise_and_kinks_raise_no_false_alarms(dtype):
    # A bias before a BatchNorm has gradient 0 in exact arithmetic: both sides are rounding
    # noise, measured against the layer's other outputs. A max-pool over ReLU zeros is a kink,
    # where finite differences have no opinion.
    with jax.enable_x64(dtype == jnp.float64):
        net = _conv_bn_block()
        params, state = net.init(jax.random.key(0), dtype), net.init_state(dtype)
        X = jax.random.normal(jax.random.key(1), (4, 6, 6, 1), dtype)
        report = check_layers(net, params, X, state=state, fd=dtype == jnp.float64)
        assert report.ok, report
        bad = check_layers(_conv_bn_block(ConvBiasOff), params, X, state=state)
        assert bad.culprit.path == "[2]['block'][0]" and bad.culprit.message.split(":")[1].startswith(" b differs")


# Recurrent layers: the report localises in time. Backprop through time runs from the last
# step back, so the last step where dx is wrong is where the backward first goes wrong.
from test_recurrent import NoRecurrentDh, SkipsFirstStep  # noqa: E402


@pytest.mark.parametrize("bug,from_step,steps", [(NoRecurrentDh, 4, "t = 0–4"), (SkipsFirstStep, 0, "t = 0")],
                         ids=["recurrent dh missing", "loop skips t = 0"])
def test_a_recurrent_network_names_the_layer_the_output_and_the_time_step(bug, from_step, steps):
    """Embedding → LSTM → Dense on tokens, per-token labels: check_grads against jax.grad and
    finite differences; with a planted BPTT bug the report names the LSTM, dx and the step."""
    T = 6
    X = jax.random.randint(jax.random.key(1), (3, T), 0, 5)
    y = jax.random.randint(jax.random.key(2), (3, T), 0, 5)
    loss = "softmax_cross_entropy_with_integer_labels"
    good = fnnet.Network((T,), (fnnet.Embedding(5, 3), fnnet.LSTM(4), Dense(5)))
    params = good.init(jax.random.key(0), jnp.float64)
    assert fnnet.check_grads(good, params, X, y, loss).ok
    report = fnnet.check_grads(fnnet.Network((T,), (fnnet.Embedding(5, 3), bug(4), Dense(5))), params, X, y, loss)
    assert not report.ok
    assert (f"the broken layer: layer [1] {bug.__name__}(4): dx differs from jax.vjp of its forward in training mode "
            f"from time step t = {from_step} back (wrong at {steps}; the later steps agree)") in report.message
