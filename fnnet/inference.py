"""Using a trained network: `predict` its outputs, `evaluate` the loss's metrics on a data set,
and `generate` a sequence from a language model.

Both work through the data in batches of `batch_size` examples, so a large data set
never needs one huge forward pass, and both compile once per batch size: the last,
shorter batch is padded to the same shape (and, in `evaluate`, masked, so no
example is dropped and none is counted twice).

    probabilities = fnnet.predict(net, params, X, loss="bce", output="probabilities")
    fnnet.evaluate(net, params, (X, y), "bce")      # {"loss": 0.08, "accuracy": 0.97}
    ids = fnnet.generate(lm, params, prompt_ids, 300, key=jax.random.key(0), temperature=0.8)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import losses as losses_lib
from fnnet._checks import check_key, host_values, is_int
from fnnet.network import Network
from fnnet.train.step import metric_names, per_example_metrics

OUTPUTS = ("logits", "probabilities", "labels")


def predict(net: Network, params, X, *, loss=None, output="logits", batch_size=1024, state=None) -> np.ndarray:
    """The network's predictions for every row of X, as a numpy array.

    Args:
      net, params: the network and its (trained) parameters.
      X: inputs `(n, *net.in_shape)`.
      loss: the loss it was trained with (a `Loss` or its name): it says what the
        outputs mean. Needed for `"probabilities"` and `"labels"`.
      output: `"logits"` — `net.apply` itself, `(n, *out_shape)`; `"probabilities"`
        — `loss.probabilities` of them (sigmoid for binary cross-entropy, softmax for
        the softmax losses), `(n, *out_shape)`; `"labels"` — the predicted integer
        class labels, `(n,)` (`(n, k)` for k independent binary outputs).
      batch_size: rows per compiled forward pass.
      state: the network's state, if it has one (BatchNorm's running statistics).

    Evaluation mode: running statistics, no dropout.
    """
    loss = None if loss is None else losses_lib.get(loss)
    if output not in OUTPUTS:
        raise ValueError(f"predict: output must be one of {OUTPUTS}, got {output!r}")
    transform = None  # logits as they are
    if output != "logits":
        transform = None if loss is None else (loss.probabilities_fn if output == "probabilities"
                                               else loss.predict_labels_fn)
        if transform is None:
            raise ValueError(
                f"predict: output={output!r} needs a classification loss that says what the outputs "
                f"mean (loss='bce' or a softmax loss); got loss={loss!r}: use output='logits'")
    net.check(params, X, state=state)
    run = _forward(net, transform)
    return np.concatenate([np.asarray(run(params, state, Xb))[:rows]
                           for Xb, _, rows in _batches(X, None, batch_size, "predict")])


def evaluate(net: Network, params, data, loss, *, batch_size=1024, metrics=None, state=None) -> dict:
    """The loss's metrics on a whole data set: `{"loss": L, "accuracy": a}` as Python floats.

    Each is the mean over all n examples of the per-example values, exactly as on one
    batch of all of them (`fnnet.train.metrics`), computed `batch_size` rows at a time.

    Args:
      net, params: the network and its parameters.
      data: `(X, y)` with X `(n, *net.in_shape)` and y fitting `loss`.
      loss: a `Loss` or its name.
      batch_size: rows per compiled forward pass.
      metrics: names, from "loss" and (for classification losses) "accuracy";
        default: all of them.
      state: the network's state, if it has one. Evaluation mode, as `predict`.
    """
    loss = losses_lib.get(loss)
    names = metric_names("evaluate", loss, metrics)
    X, y = data
    net.check(params, X, y, loss, state=state)
    run = _sums(net, loss, names)
    total = sum(np.asarray(run(params, state, Xb, yb, jnp.arange(len(Xb)) < rows), np.float64)
                for Xb, yb, rows in _batches(X, y, batch_size, "evaluate"))
    return {name: float(value) / len(X) for name, value in zip(names, total)}


def generate(net: Network, params, prompt, length: int, *, key, temperature: float = 1.0, state=None) -> np.ndarray:
    """`prompt` continued by `length` ids drawn one at a time from a language model: `(len(prompt)
    + length,)` int32, as a numpy array.

    Args:
      net, params: a network from token ids `(T,)` to logits `(T, vocab)` whose output at
        position t predicts the id after position t, seeing no later input (causal attention,
        recurrent layers): windows of T ids, the ones not drawn yet at its end then being zeros
        that no output used reads.
      prompt: the ids to continue, `(L,)` ints, L ≥ 1.
      length: ids to draw, an int ≥ 0.
      key: a `jax.random.key`; each draw uses a key folded from it with its position.
      temperature: > 0: the logits are divided by it (below 1 sharper, above 1 flatter).
      state: the network's state, if it has one. Evaluation mode, as `predict`.

    Each id is drawn from the network's full recomputation on the (up to) T ids before it, in one
    compiled loop: one compilation per network and total length.
    """
    check_key("generate", key)
    prompt = np.asarray(prompt)
    if len(net.in_shape) != 1:
        raise ValueError(f"generate: the network takes inputs of shape {net.in_shape} per example; expected "
                         f"a language model on windows of token ids (T,)")
    if prompt.ndim != 1 or len(prompt) < 1 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"generate: prompt must be a non-empty 1-D array of token ids, got shape {prompt.shape} "
                         f"and dtype {prompt.dtype}")
    if not is_int(length, 0):
        raise ValueError(f"generate: length must be an int ≥ 0, got {length!r}")
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature!r}")
    T = net.in_shape[0]
    n = len(prompt) + length
    ids = np.zeros(max(n, T), np.int32)
    ids[:len(prompt)] = prompt
    out = _generator(net)(params, state, jnp.asarray(ids), len(prompt), n, key, jnp.float32(temperature))
    return np.asarray(out)[:n]


@functools.lru_cache(maxsize=16)
def _generator(net):
    T = net.in_shape[0]

    @jax.jit
    def generate(params, state, ids, start, stop, key, temperature):
        def draw(i, ids):
            first = jnp.maximum(i - T, 0)
            window = jax.lax.dynamic_slice(ids, (first,), (T,))[None]
            logits = net.run(params, state, window, None, False)[0][0, i - 1 - first]
            drawn = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature)
            return ids.at[i].set(drawn.astype(ids.dtype))
        return jax.lax.fori_loop(start, stop, draw, ids)

    return generate


def _batches(X, y, batch_size, where):
    """`(X_batch, y_batch, rows)`, each batch of `min(batch_size, n)` rows, the last padded
    with copies of row 0 (valid inputs and targets); `rows` of it are real."""
    if not is_int(batch_size, 1):
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    X, y = host_values(X), None if y is None else host_values(y)  # sliced on the host: no compile per n
    n = len(X)
    size = min(batch_size, n)
    for start in range(0, n, size):
        rows = min(size, n - start)
        pick = np.concatenate([np.arange(start, start + rows), np.zeros(size - rows, int)])
        yield X[pick], None if y is None else y[pick], rows


@functools.lru_cache(maxsize=64)
def _forward(net, transform):
    """`jit` of `transform` of the outputs `(params, state, X) -> ...` in evaluation mode (the
    logits alone if `transform` is None)."""
    def forward(params, state, X):
        out = net.run(params, state, X, None, False)[0]
        return out if transform is None else transform(out)
    return jax.jit(forward)


@functools.lru_cache(maxsize=64)
def _sums(net, loss, names):
    """`(params, state, X, y, mask) -> (len(names),)` sums of the per-example metrics where `mask`."""
    def sums(params, state, X, y, mask):
        out = net.run(params, state, X, None, False)[0]
        return jnp.where(mask[:, None], per_example_metrics(loss, names, out, y, net.input_mask(X)), 0).sum(axis=0)
    return jax.jit(sums)
