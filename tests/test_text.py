"""fnnet.text (the corpus and its windows) and fnnet.generate (sampling from a language model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import text


def test_python_docs_split_vocabulary_and_round_trip():
    corpus = text.python_docs(held_out=0.1)
    assert len(corpus.train) + len(corpus.held_out) == 464_970 and len(corpus.held_out) == 46_497
    assert corpus.vocab == len(corpus.chars) + 1 and list(corpus.chars) == sorted(set(corpus.chars))
    assert corpus.train.dtype == np.int32 and corpus.train.max() < corpus.vocab - 1  # no unknown in training
    sample = corpus.decode(corpus.held_out[:500])
    assert (corpus.encode(sample) == corpus.held_out[:500]).all()
    assert corpus.decode(corpus.encode("a\u2603b")) == "a�b"  # a snowman never appears: the unknown symbol
    with pytest.raises(ValueError, match=r"python_docs: held_out must be a fraction in \(0, 1\), got 1"):
        text.python_docs(held_out=1)


def test_windows_are_inputs_and_their_successors():
    ids = np.arange(23)
    X, y = text.windows(ids, 5)
    assert X.shape == y.shape == (4, 5) and (X.ravel() == ids[:20]).all() and (y == X + 1).all()
    with pytest.raises(ValueError, match=r"windows: 5 ids fill no window of 5 \(with the targets, 6 are needed\)"):
        text.windows(ids[:5], 5)


@pytest.fixture(scope="module")
def lm():
    net = fnnet.Network((5,), (fnnet.Embedding(7, 8), fnnet.MultiHeadAttention(2, causal=True), fnnet.Dense(7)))
    return net, net.init(jax.random.key(0))


def test_generate_draws_each_id_from_the_window_before_it(lm):
    """Against a Python loop over net.apply: position i drawn from the logits at i − 1 of the
    window of (up to) T ids before it, with key fold_in(key, i), past the first window too."""
    net, params = lm
    key, prompt = jax.random.key(3), np.array([1, 4], np.int32)
    out = fnnet.generate(net, params, prompt, 9, key=key, temperature=0.7)
    assert out.shape == (11,) and out.dtype == np.int32 and (out[:2] == prompt).all()
    ids = np.zeros(11, np.int32)
    ids[:2] = prompt
    for i in range(2, 11):
        first = max(i - 5, 0)  # ids not drawn yet are 0, and causal attention ignores them
        logits = net.apply(params, jnp.asarray(ids[first:first + 5])[None])[0, i - 1 - first]
        ids[i] = jax.random.categorical(jax.random.fold_in(key, i), logits / 0.7)
    assert (out == ids).all()
    assert not (fnnet.generate(net, params, prompt, 9, key=jax.random.key(4), temperature=0.7) == out).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=np.array([], np.int32)), r"generate: prompt must be a non-empty 1-D array of token ids, got shape \(0,\)"),
    (dict(prompt=np.array([0.5])), r"generate: prompt must be .* dtype float64"),
    (dict(length=-1), r"generate: length must be an int ≥ 0, got -1"),
    (dict(temperature=0.0), r"generate: temperature must be > 0, got 0.0"),
    (dict(key=0), r"generate: .*key"),
])
def test_generate_rejects_bad_arguments(lm, kwargs, match):
    net, params = lm
    args = dict(prompt=np.array([1], np.int32), length=3, key=jax.random.key(0), temperature=1.0) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        fnnet.generate(net, params, args.pop("prompt"), args.pop("length"), **args)
