"""predict and evaluate against the whole-batch oracles net.apply and fnnet.train.metrics: every
output kind, batch sizes that do not divide the data, one compile per batch size, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet.gradcheck import random_batch

L = fnnet.losses


def problem(loss, n=23, sizes=(5, 8, 3)):
    net = fnnet.mlp(list(sizes), activation="tanh")
    X, y = random_batch(jax.random.key(1), net, loss, n, jnp.float64)
    return net, net.init(jax.random.key(0), jnp.float64), X, y


@pytest.mark.parametrize("batch_size", [1, 5, 23, 1024])
def test_predict_equals_apply_in_every_output_kind(batch_size):
    net, params, X, _ = problem(L.softmax_cross_entropy_with_integer_labels)
    z = np.asarray(net.apply(params, X))
    predict = lambda **kw: fnnet.predict(net, params, X, batch_size=batch_size, **kw)
    np.testing.assert_allclose(predict(), z, rtol=1e-12)
    p = predict(loss="softmax_cross_entropy_with_integer_labels", output="probabilities")
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-12)
    labels = predict(loss="softmax_cross_entropy", output="labels")
    assert labels.shape == (23,) and (labels == z.argmax(1)).all()
    binary, params1, X1, _ = problem(L.sigmoid_binary_cross_entropy, sizes=(5, 8, 1))
    z1 = np.asarray(binary.apply(params1, X1))[:, 0]
    labels1 = fnnet.predict(binary, params1, X1, loss="bce", output="labels", batch_size=batch_size)
    assert labels1.shape == (23,) and (labels1 == (z1 > 0)).all()
    probabilities1 = fnnet.predict(binary, params1, X1, loss="bce", output="probabilities", batch_size=batch_size)
    np.testing.assert_allclose(probabilities1[:, 0], 1 / (1 + np.exp(-z1)), rtol=1e-12)


@pytest.mark.parametrize("loss", L.ALL, ids=repr)
@pytest.mark.parametrize("batch_size", [4, 23, 100])
def test_evaluate_drops_no_example_and_equals_one_whole_batch(loss, batch_size):
    net, params, X, y = problem(loss, sizes=(5, 8, 1) if loss is L.sigmoid_binary_cross_entropy else (5, 8, 3))
    whole = {k: float(v) for k, v in fnnet.train.metrics(net, loss, params, X, y).items()}
    batched = fnnet.evaluate(net, params, (X, y), loss, batch_size=batch_size)
    assert batched.keys() == whole.keys()
    for k in whole:
        assert abs(batched[k] - whole[k]) <= 1e-12 * max(1.0, abs(whole[k])), (k, batched, whole)
    # a planted bug the comparison must catch: the last, padded batch counted whole
    if batch_size == 4:
        wrong = fnnet.evaluate(net, params, (X[:20], y[:20]), loss, batch_size=4)
        assert abs(wrong["loss"] - whole["loss"]) > 1e-9


def test_compiled_once_per_batch_size(compiles):
    net, params, X, y = problem(L.softmax_cross_entropy_with_integer_labels, n=30)
    CE = "softmax_cross_entropy_with_integer_labels"
    fnnet.evaluate(net, params, (X, y), CE, batch_size=8)
    fnnet.predict(net, params, X, batch_size=8)
    X27, y27, X13 = np.asarray(X[:27]), np.asarray(y[:27]), np.asarray(X[:13])
    with compiles() as n:
        fnnet.evaluate(net, params, (X27, y27), CE, batch_size=8)  # another n, the same batches
        fnnet.predict(net, params, X13, batch_size=8)
    assert n() == 0


@pytest.mark.parametrize("call, match", [
    (lambda net, p, X, y: fnnet.predict(net, p, X, loss="mse", output="probabilities"),
     r"predict: output='probabilities' needs a classification loss .* got loss=mean_squared_error"),
    (lambda net, p, X, y: fnnet.predict(net, p, X, output="labels"),
     r"predict: output='labels' needs a classification loss .* got loss=None"),
    (lambda net, p, X, y: fnnet.predict(net, p, X, output="probs"),
     r"predict: output must be one of \('logits', 'probabilities', 'labels'\), got 'probs'"),
    (lambda net, p, X, y: fnnet.predict(net, p, X[:, :4]), r"input x has shape \(23, 4\)"),
    (lambda net, p, X, y: fnnet.evaluate(net, p, (X, y), "mse", batch_size=0),
     r"evaluate: batch_size must be a positive int, got 0"),
    (lambda net, p, X, y: fnnet.evaluate(net, p, (X, y), "mse", metrics=("accuracy",)),
     r"evaluate: unknown metric 'accuracy'; mean_squared_error offers \['loss'\]"),
])
def test_bad_arguments_are_named(call, match):
    net, params, X, y = problem(L.mean_squared_error)
    with pytest.raises(ValueError, match=match):
        call(net, params, X, y)
