"""Losses, each carried with its output delta.

A `Loss` maps the network output `out` of shape `(batch, *out_shape)` and the
targets `y` to per-example values ℓᵢ of shape `(batch,)`; the batch loss is their
mean, L = (1/m) Σᵢ ℓᵢ, taken by the caller. `loss.delta(out, y)` is ∂ℓᵢ/∂outᵢ,
the gradient of each example's own loss, of the shape of `out`: backprop scales
it by 1/m to start the recursion at δᴸ = ∂L/∂zᴸ.

Losses on logits use the log-sigmoid / log-softmax forms, finite for logits of
±1e4. Every loss checks the shape and dtype of `y` against `out` in Python, so a
mistake fails before tracing with a message, not inside XLA.

| name | y | ℓᵢ | ∂ℓᵢ/∂zᵢ |
|---|---|---|---|
| `sigmoid_binary_cross_entropy` | `out`'s shape, in [0, 1] | mean over outputs of −[y log σ(z) + (1−y) log σ(−z)] | (σ(z) − y) / k |
| `softmax_cross_entropy` | `out`'s shape, one-hot or soft | −Σ_c y_c log softmax(z)_c | softmax(z) Σ_c y_c − y |
| `softmax_cross_entropy_with_integer_labels` | `out.shape[:-1]`, integer class | −log softmax(z)_y | softmax(z) − onehot(y) |
| `mean_squared_error` | `out`'s shape | mean over outputs of (z − y)² | 2(z − y) / k |

k is the number of outputs per example; outputs beyond the class axis of the
softmax losses are averaged in the same way.
"""

import math
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp

from fnnet._checks import host_values
from fnnet._registry import resolve


@dataclass(frozen=True)
class Loss:
    """A per-example loss and its output delta, with what it knows about its targets: a
    static, hashable value.

    Attributes:
      name: printed name.
      fn: `fn(out, y) -> (batch,)` per-example values.
      delta_fn: `delta_fn(out, y) -> ∂ℓᵢ/∂outᵢ`, shape of `out` (call `delta`,
        which checks `y` first).
      integer_labels: `y` holds class indices of shape `out.shape[:-1]`
        rather than targets of the shape of `out`.
      accuracy_fn: `accuracy_fn(out, y) -> (batch,)`, each example's fraction of
        correct outputs, for a classification loss; None for other losses (then
        training reports no accuracy).
      targets_fn: `targets_fn(key, out_shape, dtype) -> y`: random valid targets
        for outputs of `out_shape` (gradient checks, tests); N(0, 1) by default.
      from_labels_fn: `from_labels_fn(labels, n_classes) -> y`: targets from integer
        class labels `(n,)` (data sets, the CLI); one-hot floats by default.
      probabilities_fn: `probabilities_fn(out) -> p`, the output as probabilities
        (sigmoid, softmax), for `fnnet.predict`; None for a regression loss.
      predict_labels_fn: `predict_labels_fn(out) -> labels`: the predicted integer
        labels, `(batch,)` for one label per example; None for a regression loss.
      target_range: `(lo, hi)` that every target must lie in, checked where the
        values are known (not inside `jit`); None: any value.
    """

    name: str
    fn: Callable
    delta_fn: Callable
    integer_labels: bool = False
    accuracy_fn: "Callable | None" = None
    targets_fn: Callable = field(default=lambda key, shape, dtype: jax.random.normal(key, shape, dtype))
    from_labels_fn: Callable = field(default=lambda labels, n_classes: jax.nn.one_hot(labels, n_classes))
    probabilities_fn: "Callable | None" = None
    predict_labels_fn: "Callable | None" = None
    target_range: "tuple[float, float] | None" = None

    def accuracy(self, out, y, mask=None):
        """Each example's fraction of correct outputs, `(batch,)` (with a padding `mask`, over
        its real tokens); None if not a classifier."""
        if self.accuracy_fn is None:
            return None
        if not _per_token(out, mask):
            return self.accuracy_fn(out, y)
        self._check_mask(out, mask)
        return _token_mean(self.accuracy_fn(*_tokens(out, y, mask)), mask)

    def targets(self, key, out_shape, dtype=jnp.float32):
        """Random targets that fit this loss for outputs of shape `out_shape` (batch first)."""
        return self.targets_fn(key, tuple(out_shape), dtype)

    def from_labels(self, labels, n_classes: int):
        """Targets of this loss for integer class labels `(n,)` in `[0, n_classes)`."""
        return self.from_labels_fn(jnp.asarray(labels), n_classes)

    def __call__(self, out, y, mask=None):
        """Per-example losses ℓ of shape `(batch,)` for `out` `(batch, *out_shape)`; with a
        padding `mask` `(batch, T)` over sequence outputs `(batch, T, k)`, each example's mean
        over its real tokens (0 for an example without any)."""
        out, y = jnp.asarray(out), jnp.asarray(y)
        self.check(out, y)
        if not _per_token(out, mask):
            return self.fn(out, y)
        self._check_mask(out, mask)
        return _token_mean(self.fn(*_tokens(out, y, mask)), mask)

    def value_and_delta(self, out, y, mask=None):
        """The batch loss L and ∂L/∂out (the shape of `out`), where backprop's recursion starts.

        L = (1/m) Σᵢ ℓᵢ, and ∂L/∂out = (1/m) ∂ℓᵢ/∂outᵢ. With a padding `mask` `(batch, T)`
        (True at real tokens) and sequence outputs `(batch, T, k)`, L is the mean over the real
        tokens, as PyTorch's `ignore_index`: L = Σ_real ℓₜ / n_real; padded tokens count for
        nothing, their targets may hold anything, and their delta is exactly 0. A mask is
        ignored for outputs without a time axis (one output per sequence)."""
        out, y = jnp.asarray(out), jnp.asarray(y)
        self.check(out, y)
        if not _per_token(out, mask):
            return self.fn(out, y).mean(), self.delta_fn(out, y) / out.shape[0]
        self._check_mask(out, mask)
        out_t, y_t = _tokens(out, y, mask)
        keep, ell, delta = mask.reshape(-1), self.fn(out_t, y_t), self.delta_fn(out_t, y_t)
        n = jnp.maximum(keep.sum(), 1).astype(ell.dtype)
        value = jnp.where(keep, ell, 0).sum() / n
        delta = jnp.where(keep.reshape(-1, *(1,) * (delta.ndim - 1)), delta, 0) / n
        return value, delta.reshape(out.shape)

    def _check_mask(self, out, mask):
        if mask.shape != out.shape[:2]:
            raise ValueError(f"{self.name}: the padding mask has shape {mask.shape} but the output has "
                             f"shape {out.shape}; expected a mask of shape {out.shape[:2]}, (batch, T)")

    def delta(self, out, y):
        """∂ℓᵢ/∂outᵢ of shape `out.shape`: each example's gradient of its own loss."""
        out, y = jnp.asarray(out), jnp.asarray(y)
        self.check(out, y)
        return self.delta_fn(out, y)

    def check(self, out, y):
        """Raise ValueError/TypeError if `y` does not fit `out`.

        Checks shapes and dtypes, which are known while tracing too; integer labels
        are also checked against the number of classes when their values are known
        (not inside `jit`; there, an out-of-range label gives a NaN loss and delta).
        """
        out_shape, y_shape = jnp.shape(out), jnp.shape(y)
        if len(out_shape) < 2:
            raise ValueError(
                f"{self.name}: the output has shape {out_shape}; expected a leading batch "
                f"axis and at least one output, (batch, n_out)"
            )
        # One target per example for an output that kept axes between batch and outputs
        # (an image's H, W through a Dense): most likely a forgotten Flatten.
        flatten = (len(out_shape) > 2 and y_shape in (out_shape[:1], (out_shape[0], out_shape[-1]))
                   and f"; the output keeps the axes {out_shape[1:-1]} of each example: for one output per "
                       f"example put a fnnet.Flatten() before the Dense layers")
        if self.integer_labels:
            expected = out_shape[:-1]
            if y_shape != expected:
                raise ValueError(
                    f"{self.name}: labels have shape {y_shape} but the output has shape "
                    f"{out_shape}; expected labels of shape {expected}, one integer class "
                    f"index per " + (f"example and position{flatten}" if flatten else
                                     "example (for one-hot targets use softmax_cross_entropy)")
                )
            if not jnp.issubdtype(y.dtype, jnp.integer):
                raise TypeError(
                    f"{self.name}: labels have dtype {y.dtype}; expected an integer "
                    f"dtype of class indices (for one-hot or soft targets use softmax_cross_entropy)"
                )
            if not isinstance(y, jax.core.Tracer) and y.size:
                labels = host_values(y)  # concrete: read on the host, never staged into a trace
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi >= out_shape[-1]:
                    raise ValueError(
                        f"{self.name}: labels range over [{lo}, {hi}] but the output has "
                        f"{out_shape[-1]} classes; expected labels in [0, {out_shape[-1] - 1}]"
                    )
        elif y_shape == out_shape and self.target_range is not None and not isinstance(y, jax.core.Tracer) \
                and y.size:
            lo, hi = self.target_range
            targets = host_values(y)
            if targets.min() < lo or targets.max() > hi:
                raise ValueError(
                    f"{self.name}: targets range over [{targets.min():g}, {targets.max():g}]; expected "
                    f"targets in [{lo:g}, {hi:g}]"
                )
        elif y_shape != out_shape:
            hint = ""
            if flatten:
                hint = flatten
            elif y_shape == out_shape[:-1] and out_shape[-1] == 1:
                hint = "; add the output axis with y[:, None]"
            elif y_shape == out_shape[:-1]:
                hint = "; for integer class labels use softmax_cross_entropy_with_integer_labels"
            raise ValueError(
                f"{self.name}: y has shape {y_shape} but the output has shape {out_shape}; "
                f"expected y of the same shape as the output{hint}"
            )

    def __repr__(self):
        return self.name


def _per_token(out, mask) -> bool:
    """Whether a padding mask applies to `out`: sequence outputs `(batch, T, k...)`."""
    return mask is not None and out.ndim >= 3


def _tokens(out, y, mask):
    """`out` and `y` with every (example, step) an example of its own: `(batch·T, ...)`."""
    B, T = mask.shape
    return out.reshape(B * T, *out.shape[2:]), y.reshape(B * T, *y.shape[2:])


def _token_mean(v, mask):
    """Per-token values `(batch·T,)` as each example's mean over its real tokens, `(batch,)`
    (0 for an example with none)."""
    v = jnp.where(mask.reshape(-1), v, 0).reshape(mask.shape)
    return v.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1).astype(v.dtype)


def _n_per_example(x, skip_last=False):
    """How many values each example's loss averages over."""
    return math.prod(x.shape[1 : x.ndim - skip_last])


def _per_example_mean(v):
    return v.reshape(v.shape[0], -1).mean(axis=1)


def _sigmoid_bce(z, y):
    y = y.astype(z.dtype)
    return _per_example_mean(-(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z)))


def _sigmoid_bce_delta(z, y):
    # (1 − y)σ(z) − yσ(−z) equals σ(z) − y, but keeps its precision where σ(z) ≈ y.
    y = y.astype(z.dtype)
    return ((1 - y) * jax.nn.sigmoid(z) - y * jax.nn.sigmoid(-z)) / _n_per_example(z)


def _softmax_ce(z, y):
    y = y.astype(z.dtype)
    return _per_example_mean(-(y * jax.nn.log_softmax(z)).sum(axis=-1, keepdims=True))


def _softmax_ce_delta(z, y):
    y = y.astype(z.dtype)
    p = jax.nn.softmax(z)
    return (p * y.sum(axis=-1, keepdims=True) - y) / _n_per_example(z, skip_last=True)


def _valid(z, labels):
    """True where a label names one of the classes of `z`; shape `labels.shape + (1,)`."""
    return ((labels >= 0) & (labels < z.shape[-1]))[..., None]


def _softmax_ce_int(z, labels):
    one_hot = jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)
    nll = -(one_hot * jax.nn.log_softmax(z)).sum(axis=-1, keepdims=True)
    return _per_example_mean(jnp.where(_valid(z, labels), nll, jnp.nan))


def _softmax_ce_int_delta(z, labels):
    one_hot = jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)
    delta = (jax.nn.softmax(z) - one_hot) / _n_per_example(z, skip_last=True)
    return jnp.where(_valid(z, labels), delta, jnp.nan)


def _mse(out, y):
    return _per_example_mean((out - y.astype(out.dtype)) ** 2)


def _mse_delta(out, y):
    return 2 * (out - y.astype(out.dtype)) / _n_per_example(out)


def _binary_accuracy(z, y):
    return _per_example_mean((z > 0) == (y > 0.5))


def _one_hot_accuracy(z, y):
    return _per_example_mean(jnp.argmax(z, axis=-1) == jnp.argmax(y, axis=-1))


def _label_accuracy(z, labels):
    return _per_example_mean(jnp.argmax(z, axis=-1) == labels)


def _binary_predictions(z):
    """0/1 labels where the logit is positive; `(batch,)` for a single output."""
    labels = (z > 0).astype(jnp.int32)
    return labels[..., 0] if z.shape[-1] == 1 else labels


def _binary_labels(labels, n_classes):
    if n_classes != 2:
        raise ValueError(f"sigmoid_binary_cross_entropy needs 2 classes; this dataset has {n_classes}")
    return labels[:, None].astype(jnp.float32)


sigmoid_binary_cross_entropy = Loss(
    "sigmoid_binary_cross_entropy", _sigmoid_bce, _sigmoid_bce_delta, accuracy_fn=_binary_accuracy,
    targets_fn=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype), from_labels_fn=_binary_labels,
    probabilities_fn=jax.nn.sigmoid, predict_labels_fn=_binary_predictions, target_range=(0.0, 1.0),
)
softmax_cross_entropy = Loss(
    "softmax_cross_entropy", _softmax_ce, _softmax_ce_delta, accuracy_fn=_one_hot_accuracy,
    targets_fn=lambda key, shape, dtype: jax.nn.softmax(jax.random.normal(key, shape, dtype)),
    probabilities_fn=jax.nn.softmax, predict_labels_fn=lambda z: jnp.argmax(z, axis=-1),
)
softmax_cross_entropy_with_integer_labels = Loss(
    "softmax_cross_entropy_with_integer_labels", _softmax_ce_int, _softmax_ce_int_delta, True,
    accuracy_fn=_label_accuracy,
    targets_fn=lambda key, shape, dtype: jax.random.randint(key, shape[:-1], 0, shape[-1]),
    from_labels_fn=lambda labels, n_classes: labels,
    probabilities_fn=jax.nn.softmax, predict_labels_fn=lambda z: jnp.argmax(z, axis=-1),
)
mean_squared_error = Loss("mean_squared_error", _mse, _mse_delta)

ALL = (
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    mean_squared_error,
)
_BY_NAME = {loss.name: loss for loss in ALL} | {
    "bce": sigmoid_binary_cross_entropy,
    "mse": mean_squared_error,
}


def get(loss: "str | Loss") -> Loss:
    """The `Loss` named by `loss` (or `loss` itself); short names bce and mse."""
    return resolve(loss, _BY_NAME, "loss", Loss)
