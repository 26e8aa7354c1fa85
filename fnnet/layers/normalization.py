"""Normalisation layers: `BatchNorm` (per channel, over the batch) and `LayerNorm` (per example).

Both compute x̂ = (x − μ)·rstd with rstd = 1/√(σ² + ε) (σ² the biased variance) and
y = γ x̂ + β. They differ in what μ and σ² are taken over, and BatchNorm keeps running
statistics (the stateful protocol of `fnnet.layers.base`) for evaluation.

Low precision: in bfloat16/float16 the statistics, x̂ and the backward sums are computed in
float32 and the results cast back (y and dx to the input's dtype, the state to its own, the
gradients to the params'). Caches hold the input x itself plus μ and rstd, and the backward
recomputes x̂ from them, so a bfloat16 network caches bfloat16 activations and loses nothing.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fnnet._checks import is_int
from fnnet.layers.base import register, set_fields


def _compute_dtype(dtype):
    """float32 for bfloat16/float16 (and float32), float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_eps(layer):
    if not (_is_real(layer.eps) and layer.eps > 0 and math.isfinite(layer.eps)):
        raise ValueError(f"{layer!r}: eps must be a positive number (added to σ² before the square "
                         f"root, e.g. 1e-5), got {layer.eps!r}")


class _BatchStats(NamedTuple):
    """BatchNorm's cache in training: the input and the batch's μ and rstd, each `(C,)`."""

    x: jax.Array
    mean: jax.Array
    rstd: jax.Array


class _RunningStats(NamedTuple):
    """BatchNorm's cache in evaluation: the input and the running μ and rstd, each `(C,)`."""

    x: jax.Array
    mean: jax.Array
    rstd: jax.Array


@register
@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation of each channel (the last axis) over all other axes.

    Args:
      momentum: weight of the batch statistics in the running averages, in [0, 1].
      eps: ε > 0 added to the variance.

    The PyTorch `BatchNorm1d`/`BatchNorm2d` conventions exactly (same defaults). Inputs `x` of
    shape `(batch, C)` or `(batch, H, W, C)` (any `(batch, ..., C)`); M = the number of elements
    of each channel (batch·H·W).

    Params `{"gamma": (C,), "beta": (C,)}` (ones, zeros). State `{"mean": (C,), "var": (C,)}`
    (zeros, ones) from `init_state`; it is not differentiated.

    Training (`train=True`), with the batch statistics μ = mean x and σ² = mean (x − μ)²:

        x̂ = (x − μ)·rstd,  rstd = 1/√(σ² + ε),  y = γ x̂ + β
        mean ← (1 − momentum)·mean + momentum·μ
        var  ← (1 − momentum)·var  + momentum·σ²·M/(M − 1)    (the unbiased variance)

    and the backward, sums over the M elements of each channel:

        dβ = Σ dy,  dγ = Σ dy·x̂,  dx = (γ·rstd/M)·(M·dy − Σ dy − x̂·Σ(dy·x̂))

    Evaluation (`train=False`) normalises with the running statistics and returns the state
    unchanged; its backward is the affine map's: dx = dy·γ·rstd (dγ, dβ as above).

    A channel of one element (training on `(1, C)`, or `(1, 1, 1, C)`) has no batch statistics
    (σ² = 0, so y = β whatever x, and the unbiased variance divides by zero): a ValueError, as in
    PyTorch. Evaluation on a batch of one is fine.

    Under `jit` with the batch axis sharded over a data-parallel mesh, the means are over the
    global batch (XLA inserts the reductions), so every device normalises alike. The `key`
    argument is accepted and ignored.

    >>> bn = BatchNorm()
    >>> params, out_shape = bn.init(jax.random.key(0), (4, 4, 3), jnp.float32)
    >>> state = bn.init_state((4, 4, 3), jnp.float32)
    >>> y, cache, state = bn.forward(params, state, jnp.arange(96.0).reshape(2, 4, 4, 3), key=None, train=True)
    >>> y.shape, state["mean"].shape, out_shape
    ((2, 4, 4, 3), (3,), (4, 4, 3))
    """

    momentum: float = 0.1
    eps: float = 1e-5

    def __post_init__(self):
        if not (_is_real(self.momentum) and 0 <= self.momentum <= 1):
            raise ValueError(f"{self!r}: momentum must be a number in [0, 1] (the weight of the batch "
                             f"statistics in the running averages, PyTorch's default 0.1), got "
                             f"{self.momentum!r}")
        _check_eps(self)
        set_fields(self, momentum=float(self.momentum), eps=float(self.eps))

    def _check_shape(self, in_shape):
        if len(in_shape) < 1:
            raise ValueError(f"{self!r} expects inputs with the channel axis last, (C,) or (H, W, C) per "
                             f"example, got {tuple(in_shape)}; reshape the data to (batch, C)")

    def init(self, key, in_shape, dtype=jnp.float32):
        del key
        self._check_shape(in_shape)
        c = in_shape[-1]
        return {"gamma": jnp.ones((c,), dtype), "beta": jnp.zeros((c,), dtype)}, tuple(in_shape)

    def init_state(self, in_shape, dtype=jnp.float32):
        self._check_shape(in_shape)
        c = in_shape[-1]
        return {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def forward(self, params, state, x, *, key=None, train=False):
        del key
        gamma, beta = params["gamma"], params["beta"]
        if x.ndim < 2 or x.shape[-1] != gamma.shape[0]:
            raise ValueError(f"{self!r} expects x of shape (batch, ..., {gamma.shape[0]}) (channels last, "
                             f"as its params), got {x.shape}")
        axes, b = _channel_axes(x)
        ct = _compute_dtype(x.dtype)
        xc = x.astype(ct)
        if train:
            m = math.prod(x.shape[:-1])
            if m == 1:
                raise ValueError(f"{self!r}: training needs more than one value per channel to take batch "
                                 f"statistics, got x of shape {x.shape}; use a batch of 2 or more (or "
                                 f"train=False, which uses the running statistics)")
            mean = jnp.mean(xc, axis=axes)
            var = jnp.mean(jnp.square(xc - b(mean)), axis=axes)
            state = {"mean": self._running(state["mean"], mean),
                     "var": self._running(state["var"], var * (m / (m - 1)))}
            stats = _BatchStats
        else:
            mean, var = state["mean"].astype(ct), state["var"].astype(ct)
            stats = _RunningStats
        rstd = lax.rsqrt(var + self.eps)
        xhat = (xc - b(mean)) * b(rstd)
        y = b(gamma.astype(ct)) * xhat + b(beta.astype(ct))
        return y.astype(x.dtype), stats(x, mean, rstd), state

    def _running(self, running, batch):
        """(1 − momentum)·running + momentum·batch, in the batch statistic's precision."""
        return ((1 - self.momentum) * running.astype(batch.dtype) + self.momentum * batch).astype(running.dtype)

    def backward(self, params, cache, dy):
        x, mean, rstd = cache
        gamma = params["gamma"]
        axes, b = _channel_axes(x)
        ct = rstd.dtype
        xhat = (x.astype(ct) - b(mean)) * b(rstd)
        g = dy.astype(ct)
        dbeta = g.sum(axis=axes)
        dgamma = (g * xhat).sum(axis=axes)
        scale = gamma.astype(ct) * rstd
        if isinstance(cache, _BatchStats):
            m = math.prod(x.shape[:-1])
            dx = b(scale / m) * (m * g - b(dbeta) - xhat * b(dgamma))
        else:
            dx = g * b(scale)
        dparams = {"gamma": dgamma.astype(gamma.dtype), "beta": dbeta.astype(params["beta"].dtype)}
        return dparams, dx.astype(x.dtype)


def _channel_axes(x):
    """The axes BatchNorm reduces over (all but the last), and a function that broadcasts a
    `(C,)` vector against x (reshaped explicitly: rank promotion may be an error)."""
    shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
    return tuple(range(x.ndim - 1)), lambda v: v.reshape(shape)


@register
@dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation: each example normalised over its last axis (or the given axes).

    Args:
      axes: an int or a tuple of ints, the per-example axes to normalise over. They count the
        per-example shape (`in_shape`, without the batch axis, as every shape in the layer
        protocol): for `x` of shape `(batch, H, W, C)`, `-1` (or `2`) is C and `(0, 1, 2)` (or
        `(-3, -2, -1)`) is all of H, W, C. Stored sorted, as a tuple.
      eps: ε > 0 added to the variance.

    Params `{"gamma": S, "beta": S}` (ones, zeros) with S the shape of the normalised axes,
    in axis order (`(C,)` by default, `(H, W, C)` for all three). For each example (and each
    position of the axes not normalised), over its N normalised elements:

        x̂ = (x − μ)·rstd,  rstd = 1/√(σ² + ε),  y = γ x̂ + β

    Backward, with g = dy·γ and sums over the N normalised elements:

        dx = (rstd/N)·(N·g − Σ g − x̂·Σ(g·x̂))
        dγ = Σ dy·x̂,  dβ = Σ dy        (summed over the batch and the other axes)

    `torch.nn.functional.layer_norm(x, normalized_shape)` is `LayerNorm(axes=(-k, ..., -1))`
    with k = len(normalized_shape). The cache `(x, μ, rstd)` is per example, batch first.

    >>> ln = LayerNorm()
    >>> params, out_shape = ln.init(jax.random.key(0), (5,), jnp.float32)
    >>> y, cache = ln.forward(params, jnp.arange(10.0).reshape(2, 5))
    >>> y.shape, params["gamma"].shape
    ((2, 5), (5,))
    """

    axes: int | tuple = -1
    eps: float = 1e-5

    def __post_init__(self):
        axes = (self.axes,) if is_int(self.axes) else self.axes
        if not (isinstance(axes, (tuple, list)) and axes and all(is_int(a) for a in axes)):
            raise ValueError(f"{self!r}: axes must be an int or a non-empty tuple of ints (per-example "
                             f"axes, without the batch axis, e.g. -1 or (-3, -2, -1)), got {self.axes!r}")
        if len(set(axes)) != len(axes):
            raise ValueError(f"{self!r}: axes {tuple(axes)} repeat an axis; name each axis once")
        _check_eps(self)
        set_fields(self, axes=tuple(sorted(axes)), eps=float(self.eps))

    def _resolve(self, in_shape) -> tuple:
        """The normalised per-example axes as non-negative ints, ascending."""
        rank = len(in_shape)
        bad = [a for a in self.axes if not -rank <= a < rank]
        if bad:
            raise ValueError(f"{self!r}: axis {bad[0]} is out of range for examples of shape "
                             f"{tuple(in_shape)} (rank {rank}); axes count the per-example shape, "
                             f"without the batch axis, so each must be in [{-rank}, {rank})")
        resolved = sorted(a % rank for a in self.axes)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"{self!r}: axes {self.axes} name the same axis twice for examples of shape "
                             f"{tuple(in_shape)}; name each axis once")
        return tuple(resolved)

    def init(self, key, in_shape, dtype=jnp.float32):
        del key
        shape = tuple(in_shape[a] for a in self._resolve(in_shape))
        return {"gamma": jnp.ones(shape, dtype), "beta": jnp.zeros(shape, dtype)}, tuple(in_shape)

    def _layout(self, x, gamma):
        """The axes of x normalised, the others, and a function broadcasting a γ-shaped array to x."""
        axes = tuple(a + 1 for a in self._resolve(x.shape[1:]))
        if tuple(x.shape[a] for a in axes) != gamma.shape:
            raise ValueError(f"{self!r} expects x whose normalised axes have the shape of its params, "
                             f"{gamma.shape}, got x of shape {x.shape}")
        shape = tuple(n if a in axes else 1 for a, n in enumerate(x.shape))
        others = tuple(a for a in range(x.ndim) if a not in axes)
        return axes, others, lambda v: v.reshape(shape)

    def forward(self, params, x):
        gamma, beta = params["gamma"], params["beta"]
        axes, _, b = self._layout(x, gamma)
        ct = _compute_dtype(x.dtype)
        xc = x.astype(ct)
        mean = jnp.mean(xc, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(xc - mean), axis=axes, keepdims=True)
        rstd = lax.rsqrt(var + self.eps)
        xhat = (xc - mean) * rstd
        y = b(gamma.astype(ct)) * xhat + b(beta.astype(ct))
        return y.astype(x.dtype), (x, mean, rstd)

    def backward(self, params, cache, dy):
        x, mean, rstd = cache
        gamma = params["gamma"]
        axes, others, b = self._layout(x, gamma)
        ct = rstd.dtype
        n = math.prod(x.shape[a] for a in axes)
        xhat = (x.astype(ct) - mean) * rstd
        dyc = dy.astype(ct)
        g = dyc * b(gamma.astype(ct))
        dx = (rstd / n) * (n * g - g.sum(axis=axes, keepdims=True)
                           - xhat * (g * xhat).sum(axis=axes, keepdims=True))
        dparams = {"gamma": (dyc * xhat).sum(axis=others).astype(gamma.dtype),
                 "beta": dyc.sum(axis=others).astype(params["beta"].dtype)}
        return dparams, dx.astype(x.dtype)
