"""Embedding: the scatter-add backward against jax.vjp and a numpy oracle, padding, and bad ids."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import Embedding
from oracles import rel_error, tree_rel_error


@settings(max_examples=5, deadline=None)
@given(vocab=st.integers(1, 9), dim=st.integers(1, 5), batch=st.integers(1, 3), T=st.integers(1, 6),
       pad=st.booleans(), seed=st.integers(0, 2**16))
def test_backward_equals_vjp_and_repeated_tokens_accumulate(vocab, dim, batch, T, pad, seed):
    layer = Embedding(vocab, dim, pad_id=vocab - 1 if pad else None)
    report = fnnet.check_layer(layer, (T,), int_range=(0, vocab), batch=batch, key=jax.random.key(seed))
    assert report.ok, str(report)
    # the oracle: numpy's unbuffered add at the ids (repeats add up), nothing for the padding row
    params, _ = layer.init(jax.random.key(seed), (T,), jnp.float64)
    x = np.random.default_rng(seed).integers(0, vocab, (batch, T))
    dy = np.random.default_rng(seed + 1).standard_normal((batch, T, dim))
    y, cache = layer.forward(params, jnp.asarray(x))
    assert jnp.array_equal(y, params["W"][x])
    dparams, dx = layer.backward(params, cache, jnp.asarray(dy))
    expected = np.zeros((vocab, dim))
    np.add.at(expected, x.ravel(), dy.reshape(-1, dim))
    if pad:
        expected[vocab - 1] = 0
    np.testing.assert_allclose(dparams["W"], expected, rtol=1e-13, atol=1e-13)
    assert dx is None  # integer inputs get no gradient


class EmbeddingOverwrites(Embedding):
    """The planted bug: the gradient of a repeated token overwritten, not accumulated."""

    def backward(self, params, x, dy):
        return {"W": jnp.zeros_like(params["W"]).at[x.reshape(-1)].set(dy.reshape(-1, self.dim))}, None


def test_an_overwritten_gradient_for_repeated_tokens_is_caught():
    report = fnnet.check_layer(EmbeddingOverwrites(3, 2), (8,), int_range=(0, 3))  # 8 tokens from 3 ids: repeats
    assert not report.ok and report.message.startswith("FAIL: EmbeddingOverwrites(3, 2): W differs from jax.vjp")


def test_padding_rows_start_at_zero_get_no_gradient_and_mask_the_sequence():
    layer = Embedding(5, 3, pad_id=0)
    params, out_shape = layer.init(jax.random.key(0), (4,), jnp.float32)
    assert out_shape == (4, 3) and not params["W"][0].any() and params["W"][1:].all()
    x = jnp.array([[3, 1, 0, 0], [0, 0, 0, 0]])
    assert jnp.array_equal(layer.mask_of(x), x != 0) and Embedding(5, 3).mask_of(x) is None
    dW = layer.backward(params, layer.forward(params, x)[1], jnp.ones((2, 4, 3)))[0]["W"]
    assert not dW[0].any() and dW[1].tolist() == dW[3].tolist() == [1, 1, 1]


def test_a_padded_token_network_trains_on_the_real_tokens_only():
    """Embedding(pad_id) → Dense per token → per-token labels: backprop equals jax.grad of the
    mean over the real tokens, whatever the padded positions' labels."""
    net = fnnet.Network((5,), (Embedding(6, 4, pad_id=0), fnnet.Dense(3, "tanh"), fnnet.Dense(6)))
    params = net.init(jax.random.key(0), jnp.float64)
    X = jnp.array([[2, 5, 1, 0, 0], [4, 4, 3, 2, 1], [3, 0, 0, 0, 0]])
    y = jnp.array([[5, 1, 2, 0, 0], [4, 3, 2, 1, 0], [1, 0, 0, 0, 0]])
    value, grads = fnnet.backprop(net, params, X, y, "softmax_cross_entropy_with_integer_labels")
    mask = X != 0
    loss = fnnet.losses.softmax_cross_entropy_with_integer_labels

    def reference(p):
        out = net.apply(p, X)
        ell = -jax.nn.log_softmax(out)[jnp.arange(3)[:, None], jnp.arange(5)[None], y]
        return jnp.where(mask, ell, 0).sum() / mask.sum()

    ref_value, ref = jax.value_and_grad(reference)(params)
    assert rel_error(value, ref_value) <= 1e-12 and tree_rel_error(grads, ref) <= 1e-12
    garbage = jnp.where(mask, y, 3)
    assert tree_rel_error(fnnet.backprop(net, params, X, garbage, loss)[1], grads) == 0
    assert fnnet.check_grads(net, params, X, y, loss).ok


def test_bad_ids_and_arguments():
    net = fnnet.Network((3,), (Embedding(4, 2), fnnet.Dense(2)))
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"layer \[0\] Embedding\(vocab=4.*token ids range over \[0, 4\]; expected ids "
                                         r"in \[0, 3\] \(the vocabulary has 4\)"):
        net.apply(params, jnp.array([[0, 1, 4]]))
    with pytest.raises(TypeError, match=r"layer \[0\] Embedding\(vocab=4.*takes integer token ids; got dtype float32"):
        net.apply(params, jnp.zeros((1, 3), jnp.float32))
    # inside jit the values are unknown: an out-of-range id gives NaN, never a silent last row
    out = jax.jit(lambda x: net.run(params, None, x, None, False)[0])(jnp.array([[0, -1, 7]]))
    assert jnp.isfinite(out[0, 0]).all() and jnp.isnan(out[0, 1:]).all()
    for make, match in [(lambda: Embedding(0, 2), r"Embedding: vocab must be a positive int, got 0"),
                        (lambda: Embedding(4, 2, pad_id=4), r"pad_id must be None or a token id in \[0, 3\], got 4")]:
        with pytest.raises(ValueError, match=match):
            make()


def test_metrics_skip_the_padding_in_evaluate_and_in_training():
    net = fnnet.Network((4,), (Embedding(5, 3, pad_id=0), fnnet.Dense(5)))
    params = net.init(jax.random.key(0))
    X = jnp.array([[1, 2, 0, 0], [3, 4, 1, 2]])
    y = jnp.array([[2, 3, 0, 0], [4, 1, 2, 3]])
    loss = fnnet.losses.softmax_cross_entropy_with_integer_labels
    out, mask = net.apply(params, X), X != 0
    nll = -jax.nn.log_softmax(out)[jnp.arange(2)[:, None], jnp.arange(4)[None], y]
    right = jnp.argmax(out, -1) == y
    per_example = lambda v: (jnp.where(mask, v, 0).sum(1) / mask.sum(1)).mean()  # noqa: E731
    for labels in (y, y.at[0, 2:].set(4)):  # what the padded labels hold does not count
        metrics = fnnet.evaluate(net, params, (X, labels), loss)
        assert abs(metrics["loss"] - per_example(nll)) <= 1e-6
        assert abs(metrics["accuracy"] - per_example(right.astype(float))) <= 1e-6
    _, history = fnnet.fit(net, params, (X, y), loss, optax.sgd(0.0), epochs=1, batch_size=2, key=jax.random.key(1))
    assert abs(history["loss"][0] - per_example(nll)) <= 1e-6


def test_per_example_gradients_of_padded_sequences_weigh_by_their_real_tokens():
    net = fnnet.Network((5,), (Embedding(6, 4, pad_id=0), fnnet.Dense(6)))
    params = net.init(jax.random.key(0), jnp.float64)
    X = jnp.array([[1, 2, 3, 0, 0], [4, 5, 1, 2, 3], [2, 0, 0, 0, 0]])
    y = jnp.array([[2, 3, 4, 0, 0], [5, 1, 2, 3, 4], [3, 0, 0, 0, 0]])
    loss = fnnet.losses.softmax_cross_entropy_with_integer_labels
    per = fnnet.per_example_grads(net, params, X, y, loss)
    for i in range(3):  # each: the gradient of the example's own mean over its real tokens
        own = jax.grad(lambda p: loss(net.apply(p, X[i:i + 1]), y[i:i + 1], X[i:i + 1] != 0)[0])(params)
        assert tree_rel_error(jax.tree.map(lambda g: g[i], per), own) <= 1e-12
    n = (X != 0).sum(1)
    weighted = jax.tree.map(lambda g: jnp.tensordot(n / n.sum(), g, axes=1), per)
    assert tree_rel_error(weighted, fnnet.backprop(net, params, X, y, loss)[1]) <= 1e-12
