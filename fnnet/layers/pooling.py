"""Pooling on NHWC images: `MaxPool2D` and `AvgPool2D` over windows, `GlobalAvgPool2D` over
the whole image. None has params.

A window is kh × kw pixels of one channel; windows start s = (sh, sw) pixels apart on the
padded image, so per spatial axis with padding (lo, hi) there are

    out = ⌊(n + lo + hi − k)/s⌋ + 1

of them. The backward of both windowed pools is the transpose of cutting the image into
windows: every window sends its share of dy back to its pixels, and where windows overlap
(s < k) a pixel adds up the shares of all windows that contain it.
"""

import itertools
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet.layers.base import register, set_fields as _set
from fnnet.layers.conv import _check_images, _padding, _pair
from fnnet.layers.shape import shape_cache


def _window_slices(x, fill, window, stride, pads, out):
    """The windows of `x` `(batch, H, W, C)` padded with `fill`, as kh·kw arrays of shape
    `(batch, H', W', C)` in row-major offset order: the one for offset (i, j) holds
    xpad[b, h·sh + i, w·sw + j, c] at [b, h, w, c]."""
    (kh, kw), (sh, sw), (H_out, W_out) = window, stride, out
    xp = lax.pad(x, jnp.array(fill, x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    n, c = x.shape[0], x.shape[3]
    return [lax.slice(xp, (0, i, j, 0), (n, i + (H_out - 1) * sh + 1, j + (W_out - 1) * sw + 1, c),
                      (1, sh, sw, 1))
            for i, j in itertools.product(range(kh), range(kw))]


def _scatter_windows(gs, in_hw, window, stride, pads):
    """The transpose of `_window_slices`: dx[b, h·sh + i − top, w·sw + j − left, c] is the sum of
    gs[(i, j)][b, h, w, c] over the windows (h, w) that contain the pixel; what falls in the
    padding is dropped. `gs`: kh·kw arrays `(batch, H', W', C)`, row-major; returns
    `(batch, H, W, C)`. Offset (i, j)'s array, spread sh, sw apart and shifted, adds to dx."""
    (kh, kw), (sh, sw), ((top, _), (left, _)) = window, stride, pads
    H_out, W_out = gs[0].shape[1:3]
    H, W = in_hw
    zero = jnp.zeros((), gs[0].dtype)
    dx = 0
    for (i, j), g in zip(itertools.product(range(kh), range(kw)), gs):
        dx = dx + lax.pad(g, zero, [(0, 0, 0), (i - top, H - (i - top) - (H_out - 1) * sh - 1, sh - 1),
                                    (j - left, W - (j - left) - (W_out - 1) * sw - 1, sw - 1), (0, 0, 0)])
    return dx


def _tile_windows(gs, in_hw, window, stride, pads):
    """`_scatter_windows` for windows that do not overlap (s ≥ k on both axes): they tile the
    padded image, so each window's kh × kw values are laid out in its sh × sw cell (zeros in
    the gap) by one interleaving, with nothing to add up."""
    (kh, kw), (sh, sw), ((top, _), (left, _)) = window, stride, pads
    n, H_out, W_out, c = gs[0].shape
    H, W = in_hw
    zero = jnp.zeros((), gs[0].dtype)
    g = jnp.stack(gs, axis=-1).reshape(n, H_out, W_out, c, kh, kw).transpose(0, 1, 4, 2, 5, 3)
    g = lax.pad(g, zero, [(0, 0, 0), (0, 0, 0), (0, sh - kh, 0), (0, 0, 0), (0, sw - kw, 0), (0, 0, 0)])
    g = g.reshape(n, H_out * sh, W_out * sw, c)
    return lax.pad(g, zero, [(0, 0, 0), (-top, H + top - H_out * sh, 0), (-left, W + left - W_out * sw, 0),
                             (0, 0, 0)])


@dataclass(frozen=True)
class _Pool2D:
    """What the windowed pools share: their arguments, checks and geometry."""

    window: tuple
    stride: tuple = None
    padding: object = "VALID"

    def __post_init__(self):
        window = _pair(self, "window", self.window)
        stride = window if self.stride is None else _pair(self, "stride", self.stride)
        _set(self, window=window, stride=stride, padding=_padding(self, self.padding))

    def _geometry(self, in_shape):
        """`(pads, out)` for images `in_shape = (H, W, C)`, after checking them: pads
        ((top, bottom), (left, right)) and out (H', W')."""
        _check_images(self, in_shape)
        if isinstance(self.padding, str):
            pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_shape[:2], self.window, self.stride,
                                                                self.padding))
        else:
            pads = self.padding
        out = []
        for axis, n, (lo, hi), k, s in zip(("height", "width"), in_shape, pads, self.window, self.stride):
            if k > n + lo + hi:
                raise ValueError(
                    f"{self!r}: the window spans {k} pixels along the {axis}, more than the input's {n} "
                    f"plus padding {lo} + {hi}; use a smaller window, more padding, or padding='SAME'")
            o = (n + lo + hi - k) // s + 1
            if lo >= k or (o - 1) * s - lo >= n:
                raise ValueError(
                    f"{self!r}: padding {lo} + {hi} along the {axis} leaves a window entirely in the "
                    f"padding, with none of the input's {n} pixels; every window must overlap the input "
                    f"(use padding smaller than the window)")
            out.append(o)
        return pads, tuple(out)

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        _, out = self._geometry(in_shape)
        return {}, (*out, in_shape[2])

    def _reduce(self, x, init, op, pads):
        return lax.reduce_window(x, np.array(init, x.dtype), op, (1, *self.window, 1),
                                 (1, *self.stride, 1), ((0, 0), *pads, (0, 0)))


@register
@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """The largest pixel of each window, per channel.

    Args:
      window: k, an int or a pair (kh, kw).
      stride: s, an int or a pair; None (the default) is the window: windows side by side.
      padding: "VALID" (none; the default), "SAME" (output ⌈n / s⌉ per axis, the odd pixel
        of padding at the end: JAX's `lax.padtype_to_pads`) or explicit
        ((top, bottom), (left, right)). Padding is −∞: it never wins a window.

    Params: `{}`. Forward on `x` of shape `(batch, H, W, C)`:

        y[b, h, w, c] = max_{i<kh, j<kw} xpad[b, h·sh + i, w·sw + j, c]     (batch, H', W', C)

    Cache: `(x, y)`. Backward: each window's dy goes to ONE pixel, the first maximum of the
    window in row-major order, (i*, j*): the pixel that JAX's own derivative of
    `lax.reduce_window` max (XLA's select-and-scatter with ≥) picks too. A window of ties
    (zeros after a ReLU, integer-valued images) gives its whole dy to its first tie, not a
    share to each; overlapping windows add up:

        dx[b, h·sh + i* − top, w·sw + j* − left, c] += dy[b, h, w, c]       (batch, H, W, C)

    (A window holding a NaN sends its dy nowhere; JAX's derivative sends it to some pixel.)

    >>> import jax, jax.numpy as jnp
    >>> pool = MaxPool2D(2)
    >>> pool.init(jax.random.key(0), (28, 28, 8))
    ({}, (14, 14, 8))
    >>> y, cache = pool.forward({}, jnp.zeros((1, 2, 2, 1)))      # one window of four ties
    >>> pool.backward({}, cache, jnp.ones_like(y))[1][0, :, :, 0].tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """

    def forward(self, params, x):
        del params
        pads, _ = self._geometry(x.shape[1:])
        y = self._reduce(x, -np.inf, lax.max, pads)
        return y, (x, y)

    def backward(self, params, cache, dy):
        del params
        x, y = cache
        pads, out = self._geometry(x.shape[1:])
        # The window's max is y: the first of its pixels equal to y takes dy, and `seen` keeps
        # every later tie from taking it again. XLA fuses the whole backward into one loop
        # that redoes this test for each window a pixel is in; against the cached y it is a
        # few compares, where a running argmax would be kh·kw compare-and-selects each time.
        gs, seen = [], jnp.zeros(y.shape, bool)
        for v in _window_slices(x, -np.inf, self.window, self.stride, pads, out):
            is_max = v == y
            gs.append(jnp.where(is_max & ~seen, dy, 0))
            seen = seen | is_max
        # Measured on CPU (2×2 windows, 64×32×32×32): tiling ~3× faster than the sum of shifts.
        overlap = any(s < k for s, k in zip(self.stride, self.window))
        scatter = _scatter_windows if overlap else _tile_windows
        return {}, scatter(gs, x.shape[1:3], self.window, self.stride, pads)


@register
@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """The mean of each window's input pixels, per channel.

    Args: as `MaxPool2D`. With padding, a window averages only the input pixels it covers
    (PyTorch's `count_include_pad=False`): padding neither adds to the sum nor to the count.

    Params: `{}`. Forward on `x` of shape `(batch, H, W, C)`, with count[h, w] the number of
    input pixels in window (h, w) (kh·kw without padding):

        y[b, h, w, c] = Σ_{i<kh, j<kw} xpad[b, h·sh + i, w·sw + j, c] / count[h, w]

    Cache: `shape_cache(x)` (x's shape, no data). Backward: each window's dy/count to every
    input pixel of it; overlapping windows add up:

        dx[b, h·sh + i − top, w·sw + j − left, c] += dy[b, h, w, c] / count[h, w]

    >>> import jax.numpy as jnp
    >>> pool = AvgPool2D(3, stride=1, padding="SAME")
    >>> y, cache = pool.forward({}, jnp.ones((1, 4, 4, 1)))
    >>> bool((y == 1).all())                                     # the padding is not counted
    True
    """

    def _count(self, in_hw, pads, out, dtype):
        """count[h, w] as a constant `(1, H', W', 1)`: per axis, the window [o·s − lo, o·s − lo + k)
        clipped to the input [0, n), the two axes multiplied."""
        per_axis = [np.minimum(np.arange(o) * s - lo + k, n) - np.maximum(np.arange(o) * s - lo, 0)
                    for n, (lo, _), k, s, o in zip(in_hw, pads, self.window, self.stride, out)]
        return jnp.asarray(np.outer(*per_axis)[None, :, :, None], dtype)

    def forward(self, params, x):
        del params
        pads, out = self._geometry(x.shape[1:])
        y = self._reduce(x, 0, lax.add, pads) / self._count(x.shape[1:3], pads, out, x.dtype)
        return y, shape_cache(x)

    def backward(self, params, cache, dy):
        del params
        in_shape = cache.shape[1:-1]
        pads, out = self._geometry(in_shape)
        g = dy / self._count(in_shape[:2], pads, out, dy.dtype)
        # The sum of shifts even where windows do not overlap: with the same g at every offset
        # it measured faster than tiling (unlike MaxPool2D's masked copies).
        gs = [g] * (self.window[0] * self.window[1])
        return {}, _scatter_windows(gs, in_shape[:2], self.window, self.stride, pads)


@register
@dataclass(frozen=True)
class GlobalAvgPool2D:
    """The mean of each channel over the whole image: `(batch, H, W, C)` → `(batch, C)`.

    Params: `{}`. Forward: y[b, c] = Σ_{h, w} x[b, h, w, c] / (H·W). Cache: `shape_cache(x)`
    (x's shape, no data). Backward: dx[b, h, w, c] = dy[b, c] / (H·W).

    >>> import jax
    >>> GlobalAvgPool2D().init(jax.random.key(0), (7, 7, 512))
    ({}, (512,))
    """

    def init(self, key, in_shape, dtype=jnp.float32):
        del key, dtype
        _check_images(self, in_shape)
        return {}, (in_shape[2],)

    def forward(self, params, x):
        del params
        _check_images(self, x.shape[1:])
        return x.mean(axis=(1, 2)), shape_cache(x)

    def backward(self, params, cache, dy):
        del params
        n, H, W, c = cache.shape[:-1]
        return {}, jnp.broadcast_to((dy / (H * W))[:, None, None, :], (n, H, W, c))
