"""2-D convolution on NHWC images, with its backward written out by hand, in one of three
formulations (`Conv2D.formulation` says which one a layer uses for a shape). Measured in
float32 on a 2-core x86 CPU (benchmarks/conv_formulations.py: one layer's forward and
backward; benchmarks/run.py: the training steps of two CNNs):

- "conv": `lax.conv_general_dilated` forward, and dx and dW as two more convolutions. XLA's
  CPU convolution for dW (a kernel the size of the image, contracted over the batch) runs
  faster on slices of the batch, summed: alone, 0.5–0.6× the time of one convolution over
  batches of 64 images of 32×32×32 or 16×16×64 and 128 of 8×8×32, with 128–256 KB of δ per
  slice (`DW_SLICE_BYTES`, `DW_SLICE_EXAMPLES`), on one core as on two (a cache effect, not
  parallelism); a whole training step of the benchmark's CNNs W5 and W6 took 0.75–0.85×
  the time with one dW convolution per layer (4 runs, paired), though one layer's forward
  and backward on its own is not consistently faster (0.86–1.13×). The slices are unrolled,
  at most `DW_MAX_SLICES` of them: a convolution inside a `lax.scan` ran 30–50× slower.
- "im2col": the patches of x (a row of kh·kw·C/g values per output pixel, per group) times
  W as a matrix; dW = patchesᵀ δ, and dx = col2im(δ Wᵀ), which sends each tap's share back
  to the pixel it read. With few columns, the first layer of a network, XLA's convolution
  uses the CPU badly and this is 1.3–1.8× faster (3×3 kernels on 1 or 3 channels, dx
  included, which a network never asks of its first layer); about even at 4 channels; from
  8 channels the patch matrix outgrows the caches: 4–5× slower on 32×32 images, 1.2–1.6× on
  8×8.
- "taps" (depthwise, groups = C > 1): sums over the kernel's taps of shifted, strided views
  of the input: XLA's grouped convolutions are slow on CPU. Measured, the backward of a 3×3
  depthwise layer on 64 images of 32×32×32, jitted: 80 ms by lax's grouped convolutions
  (what autodiff of a grouped `lax.conv_general_dilated` runs), 12-18 ms by taps; with
  stride 2 and two outputs per channel, 2 s against 22 ms.

`impl="auto"` (the default) picks "im2col" for groups = 1 and kh·kw·C ≤ `IM2COL_MAX_COLUMNS`,
"taps" for depthwise layers and "conv" otherwise. `impl="conv"` or `impl="im2col"` forces
one; every formulation computes the same function from the same params and cache ("conv" is
"taps" for a depthwise layer).
"""

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

from fnnet import activations, initializers
from fnnet._checks import is_int
from fnnet.layers.base import register, set_fields as _set

_DIMS = ("NHWC", "HWIO", "NHWC")
# dW contracts over the batch: x's N plays the feature and its C the batch, δ is the kernel,
# and the result is written straight into HWIO (the output's batch is W's I axis).
_DIMS_DW = ("CHWN", "IHWO", "HWNC")
# dx reads the kernel with its in/out roles swapped (no transpose of W in memory).
_DIMS_DX = ("NHWC", "HWOI", "NHWC")

IMPLS = ("auto", "conv", "im2col")

IM2COL_MAX_COLUMNS = 32
"""`impl="auto"` uses im2col for groups = 1 up to this many patch columns kh·kw·C (a 3×3
kernel on up to 3 channels, 5×5 on 1)."""

DW_SLICE_BYTES = 2 ** 18
"""The "conv" formulation convolves for dW slices of the batch with about this many bytes of δ,"""

DW_SLICE_EXAMPLES = 8
"""at most this many examples each,"""

DW_MAX_SLICES = 32
"""and at most this many slices (each a convolution of its own in the compiled program)."""


def _pair(layer, name, value, minimum=1):
    """`value` (an int or a pair of ints, each ≥ `minimum`) as a pair."""
    pair = (value, value) if is_int(value) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(v, minimum) for v in pair)):
        raise ValueError(f"{layer!r}: {name} must be an int ≥ {minimum} or a pair of them "
                         f"(rows, columns), got {value!r}")
    return tuple(pair)


def _padding(layer, padding):
    """"SAME", "VALID" or ((top, bottom), (left, right)) of ints ≥ 0, as a hashable value."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(is_int(v, 0) for v in p)
                    for p in padding)):
        return tuple(tuple(p) for p in padding)
    raise ValueError(f"{layer!r}: padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) "
                     f"of ints ≥ 0, got {padding!r}")


def _check_images(layer, in_shape):
    if len(in_shape) != 3 or not all(is_int(n, 1) for n in in_shape):
        raise ValueError(f"{layer!r} expects images of shape (H, W, C) per example, got "
                         f"{tuple(in_shape)}; give the data as (batch, H, W, C)")


@register
@dataclass(frozen=True)
class Conv2D:
    """2-D convolution followed by an elementwise activation: a = f(conv(x, W) + b).

    Args:
      n_out: number of output channels O.
      kernel: window size k, an int or a pair (kh, kw).
      stride: s, an int or a pair.
      padding: "SAME" (output ⌈n / s⌉ per axis, the odd pixel of padding at the end: JAX's
        `lax.padtype_to_pads` on the dilated kernel), "VALID" (none) or explicit
        ((top, bottom), (left, right)).
      dilation: d, an int or a pair; the window spans k_eff = (k − 1)·d + 1 pixels.
      groups: g; input and output channels split into g groups convolved separately
        (g = C is depthwise).
      activation: name or `fnnet.activations.Activation`.
      W_init, b_init: names or `fnnet.initializers.Initializer`s (fan_in = kh·kw·C/g).
      impl: "auto" (the default), "conv" or "im2col": how the layer computes (see the module
        docstring and `formulation`); the function, the params and the cache are the same.

    Params: `{"W": (kh, kw, C/g, O), "b": (O,)}` (HWIO, as `lax.conv_general_dilated`
    and Flax). Forward on `x` of shape `(batch, H, W, C)`, per spatial axis with padding
    (lo, hi) and out = ⌊(n + lo + hi − k_eff)/s⌋ + 1:

        z[b, i, j, o] = Σ_{p, q, c} xpad[b, i·s + p·d, j·s + q·d, c] W[p, q, c, o] + b[o]
        a = f(z)                                              (batch, H', W', O)

    Backward from da = ∂L/∂a:

        δ  = f′(z) ⊙ da                                       (batch, H', W', O)
        db = Σ_{batch, H', W'} δ                              (O,)
        dW = conv(xᵀ, δ): x's batch contracted with δ's,       (kh, kw, C/g, O)
             window stride d, δ dilated by s (summed over slices of the batch)
        dx = conv(δ dilated by s, W flipped in space with       (batch, H, W, C)
             in/out channels swapped per group), dilation d

    Depthwise (groups = C, m = O/C outputs per channel), each conv above is a sum over the
    kh·kw taps (p, q) of the strided view x_pq[b, i, j] = xpad[b, i·s + p·d, j·s + q·d]:
    z[..., c·m + k] = Σ_pq x_pq[..., c] W[p, q, 0, c·m + k],
    dW[p, q, 0, c·m + k] = Σ_{b,i,j} x_pq[..., c] δ[..., c·m + k], and dx likewise from
    the views of δ dilated by s.

    im2col, with P[b, i, j, (p, q, c)] = xpad[b, i·s + p·d, j·s + q·d, c] (the patches, per group)
    and W as a (kh·kw·C/g, O/g) matrix per group: z = P W + b, dW = Pᵀ δ, and dx the sum over
    the taps (p, q) of (δ Wᵀ)[..., (p, q, :)] sent back to the pixels the tap read.

    Cache: `(x, z)`, both batch first (im2col cuts the patches again in backward).

    >>> import jax, jax.numpy as jnp
    >>> layer = Conv2D(8, 3, stride=2)
    >>> params, out_shape = layer.init(jax.random.key(0), (28, 28, 1))
    >>> params["W"].shape, out_shape
    ((3, 3, 1, 8), (14, 14, 8))
    >>> y, cache = layer.forward(params, jnp.ones((5, 28, 28, 1)))
    >>> dparams, dx = layer.backward(params, cache, jnp.ones_like(y))
    >>> y.shape, dx.shape
    ((5, 14, 14, 8), (5, 28, 28, 1))
    """

    n_out: int
    kernel: tuple
    stride: tuple = 1
    padding: object = "SAME"
    dilation: tuple = 1
    groups: int = 1
    activation: activations.Activation = activations.identity
    W_init: initializers.Initializer = initializers.lecun_normal
    b_init: initializers.Initializer = initializers.zeros
    impl: str = dataclasses.field(default="auto", repr=False)

    def __post_init__(self):
        if not is_int(self.n_out, 1):
            raise ValueError(f"{self!r}: n_out must be a positive int, got {self.n_out!r}")
        if self.impl not in IMPLS:
            raise ValueError(f"{self!r}: impl must be one of {IMPLS}, got {self.impl!r}")
        if not is_int(self.groups, 1):
            raise ValueError(f"{self!r}: groups must be a positive int, got {self.groups!r}")
        if self.n_out % self.groups:
            raise ValueError(f"{self!r}: n_out={self.n_out} is not divisible by groups={self.groups}; "
                             f"each group makes n_out / groups output channels")
        _set(
            self,
            kernel=_pair(self, "kernel", self.kernel, 1),
            stride=_pair(self, "stride", self.stride, 1),
            dilation=_pair(self, "dilation", self.dilation, 1),
            padding=_padding(self, self.padding),
            activation=activations.get(self.activation),
            W_init=initializers.get(self.W_init),
            b_init=initializers.get(self.b_init),
        )

    @property
    def _k_eff(self):
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation))

    def formulation(self, in_shape) -> str:
        """"conv", "im2col" or "taps": how the layer computes on images `in_shape = (H, W, C)`
        (the module docstring says why)."""
        C = in_shape[2]
        if self.impl == "im2col" or (self.impl == "auto" and self.groups == 1
                                     and self.kernel[0] * self.kernel[1] * C <= IM2COL_MAX_COLUMNS):
            return "im2col"
        return "taps" if self.groups == C > 1 else "conv"

    def _geometry(self, in_shape):
        """((top, bottom), (left, right)) and the output's (H', W') for images `in_shape =
        (H, W, C)`, after checking them."""
        _check_images(self, in_shape)
        H, W, C = in_shape
        if C % self.groups:
            raise ValueError(f"{self!r}: the input's {C} channels are not divisible by "
                             f"groups={self.groups}; each group convolves C / groups of them")
        if isinstance(self.padding, str):
            pads = tuple(map(tuple, lax.padtype_to_pads((H, W), self._k_eff, self.stride, self.padding)))
        else:
            pads = self.padding
        for axis, n, (lo, hi), k_eff in zip(("height", "width"), (H, W), pads, self._k_eff):
            if k_eff > n + lo + hi:
                raise ValueError(
                    f"{self!r}: the kernel spans {k_eff} pixels (dilated) along the {axis}, more than "
                    f"the input's {n} plus padding {lo} + {hi}; use a smaller kernel or dilation, "
                    f"more padding, or padding='SAME'")
        out = tuple((n + lo + hi - k) // s + 1
                    for n, (lo, hi), k, s in zip((H, W), pads, self._k_eff, self.stride))
        return pads, out

    def _patches(self, x, pads, out):
        """P `(batch, H', W', kh·kw, C)`: P[b, i, j, p·kw + q, c] = xpad[b, i·s + p·d, j·s + q·d, c]."""
        return jnp.stack(_windows(x, pads, self.kernel, self.stride, self.dilation, (1, 1), out), axis=3)

    def init(self, key, in_shape, dtype=jnp.float32):
        _, out = self._geometry(in_shape)
        kW, kb = jax.random.split(key)
        W = self.W_init(kW, (*self.kernel, in_shape[2] // self.groups, self.n_out), dtype)
        b = self.b_init(kb, (self.n_out,), dtype)
        return {"W": W, "b": b}, (*out, self.n_out)

    def forward(self, params, x):
        pads, out = self._geometry(x.shape[1:])
        x, W = _promote(x, params["W"])
        C = x.shape[3]
        impl = self.formulation(x.shape[1:])
        if impl == "im2col":
            z = _patch_product(self._patches(x, pads, out), W, self.groups)
        elif impl == "taps":
            # z[..., c·m + k] = Σ_taps x_tap[..., c] W[tap, c, k], m = O/C outputs per channel
            W_taps = W.reshape(-1, C, self.n_out // C)
            views = _windows(x, pads, self.kernel, self.stride, self.dilation, (1, 1), out)
            z = sum(v[..., None] * w[None, None, None] for v, w in zip(views, W_taps))
            z = z.reshape(*z.shape[:3], self.n_out)
        else:
            z = lax.conv_general_dilated(
                x, W, window_strides=self.stride, padding=pads, rhs_dilation=self.dilation,
                dimension_numbers=_DIMS, feature_group_count=self.groups)
        z = z + params["b"][None, None, None, :]
        return self.activation(z), (x, z)

    def backward(self, params, cache, da):
        x, z = cache
        delta = self.activation.backward(z, da)
        x, W, delta = _promote(x, params["W"], delta)
        g = self.groups
        N, H, W_in, C = x.shape
        kh, kw, c_g, O = W.shape
        pads, out = self._geometry(x.shape[1:])
        # dx's padding: a tap that read input row i·s + p·d − lo sends δ[i] back there.
        dx_pads = [(k - 1 - lo, n - 1 - (o - 1) * s + lo)
                   for n, (lo, _), k, o, s in zip((H, W_in), pads, self._k_eff, out, self.stride)]
        db = delta.sum(axis=(0, 1, 2))
        impl = self.formulation(x.shape[1:])
        if impl == "im2col":
            # dW = Pᵀ δ; dx: each tap's columns of δ Wᵀ go back to the pixels the tap read
            dW = _patch_grad(self._patches(x, pads, out), delta, W.shape, g)
            dP = _patch_delta(delta, W, g)
            dx = _scatter_taps([dP[..., t, :] for t in range(kh * kw)], (H, W_in), pads, self.kernel,
                               self.stride, self.dilation)
            return {"W": dW, "b": db}, dx
        if impl == "taps":
            m = O // C
            # One pass after another: XLA's CPU runtime runs independent ops side by side, and
            # the tap loop beside the other passes over δ ran 2.5× slower (30 ms against 12 ms).
            delta, db = lax.optimization_barrier((delta, db))
            delta = delta.reshape(N, *out, C, m)
            dW = _tap_sums(x, delta.swapaxes(3, 4), pads, self.kernel, self.stride, self.dilation, out)
            dW = dW.swapaxes(1, 2).reshape(kh, kw, 1, O)
            delta, dW = lax.optimization_barrier((delta, dW))
            # dx = Σ_k conv(δ_k dilated by s, W_k flipped), k the multiplier: a fused pass each
            W_flip = W[::-1, ::-1].reshape(-1, C, m)
            dx = sum(
                sum(v * w[None, None, None, :, k] for v, w in zip(
                    _windows(delta[..., k], dx_pads, self.kernel, (1, 1), self.dilation, self.stride, (H, W_in)),
                    W_flip))
                for k in range(m))
            return {"W": dW, "b": db}, dx
        # dW[p, q, c, o] = Σ_{b,i,j} xpad[b, i·s + p·d, j·s + q·d, c] δ[b, i, j, o]: a conv of x
        # by δ over the batch, δ's taps s apart, output taps d apart. The group axis moves
        # from x's channels to its batch, so groups are feature groups of that conv (XLA's
        # CPU batch-grouped convolution, autodiff's choice, is 7-15× slower). One conv per slice
        # of the batch, summed: faster on XLA's CPU backend (see DW_SLICE_BYTES).
        dW_pads = [(lo, k + (o - 1) * s - n - lo)
                   for n, (lo, _), k, o, s in zip((H, W_in), pads, self._k_eff, out, self.stride)]
        dW = 0
        for start, stop in _slices(N, delta[0].size * delta.dtype.itemsize):
            n = stop - start
            x_g = x[start:stop].reshape(n, H, W_in, g, c_g).transpose(3, 0, 1, 2, 4).reshape(g * n, H, W_in, c_g)
            dW = dW + _conv(
                x_g, delta[start:stop], _DIMS_DW, window_strides=self.dilation, padding=dW_pads,
                rhs_dilation=self.stride, feature_group_count=g)
        # dx: each output pixel sends δ back along its window: δ dilated by s, convolved with
        # the kernel flipped in space, its in/out channels swapped within each group: W's
        # group axis moves from the outputs (O = g · O/g) to the inputs (C = g · C/g).
        W_t = W[::-1, ::-1].reshape(kh, kw, c_g, g, O // g).transpose(0, 1, 3, 2, 4).reshape(kh, kw, C, O // g)
        dx = _conv(delta, W_t, _DIMS_DX, window_strides=(1, 1), padding=dx_pads, lhs_dilation=self.stride,
                   rhs_dilation=self.dilation, feature_group_count=g)
        return {"W": dW, "b": db}, dx


def _conv(lhs, rhs, dims, **kwargs):
    """`lax.conv_general_dilated` with dimension numbers `dims`, run as the NHWC/HWIO
    convolution it is after explicit transposes of its operands and result.

    Inside a loop (`lax.scan`: `fit`'s epoch, a `fori_loop`) XLA's CPU backend runs a
    convolution of other dimension numbers 30–60× slower than outside it; written in the
    default layout it runs at full speed in both (measured: a CNN's `fit` epoch 316 → 33 ms,
    see the module docstring). The transposes are cheap next to the convolution.
    """
    l, r, o = dims
    lhs = jnp.transpose(lhs, [l.index(a) for a in "NHWC"])
    rhs = jnp.transpose(rhs, [r.index(a) for a in "HWIO"])
    out = lax.conv_general_dilated(lhs, rhs, dimension_numbers=_DIMS, **kwargs)
    return jnp.transpose(out, ["NHWC".index(a) for a in o])


def _promote(*arrays):
    """`arrays` in their common dtype, as `x @ W` would promote them (lax's convolution does not)."""
    dtype = jnp.result_type(*arrays)
    return tuple(a.astype(dtype) for a in arrays)


def _windows(a, pads, kernel, stride, dilation, lhs_dilation, out):
    """The kh·kw strided views of `a` `(batch, H, W, ...)` that the kernel's taps read.

    `a` is dilated by `lhs_dilation` (zeros between its pixels), padded by `pads` (negative
    crops); tap (p, q) sees view[p·kw + q][b, i, j] = a[b, i·s + p·d, j·s + q·d] for the
    `out = (H', W')` output pixels. XLA fuses the pad, the slices and the arithmetic on them
    into one loop: the depthwise convolution reads its input once.
    """
    rest = a.ndim - 3
    a = lax.pad(a, jnp.zeros((), a.dtype),
                [(0, 0, 0), *((lo, hi, l - 1) for (lo, hi), l in zip(pads, lhs_dilation)), *[(0, 0, 0)] * rest])
    (sh, sw), (dh, dw), (Ho, Wo) = stride, dilation, out
    return [lax.slice(a, (0, p * dh, q * dw, *[0] * rest),
                      (a.shape[0], p * dh + (Ho - 1) * sh + 1, q * dw + (Wo - 1) * sw + 1, *a.shape[3:]),
                      (1, sh, sw, *[1] * rest))
            for p in range(kernel[0]) for q in range(kernel[1])]


def _tap_sums(x, delta, pads, kernel, stride, dilation, out):
    """Depthwise dW: Σ_{b,i,j} x_pq[b, i, j, c] δ[b, i, j, k, c] for each tap (p, q), where
    x_pq are `_windows(x, ...)`; `delta` `(batch, H', W', m, C)`, result `(kh·kw, m, C)`.

    One tap per step of a scan: the kh·kw reductions unrolled in one program run several
    times slower on XLA's CPU backend than one after another (measured: 45 ms against 9 ms
    for 3×3 taps of 64×32×32×32 images).
    """
    N, H, W, C = x.shape
    (sh, sw), (dh, dw), (Ho, Wo) = stride, dilation, out
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    offsets = jnp.array([(p * dh, q * dw) for p in range(kernel[0]) for q in range(kernel[1])])

    def tap(carry, offset):
        window = lax.dynamic_slice(x, (0, offset[0], offset[1], 0), (N, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1, C))
        view = window[:, ::sh, ::sw]
        return carry, (view[..., None, :] * delta).sum(axis=(0, 1, 2))

    return lax.scan(tap, None, offsets)[1]


def _slices(n, example_bytes):
    """`(start, stop)` of consecutive slices of a batch of `n` covering it: about DW_SLICE_BYTES
    of δ each (`example_bytes` per example) but at most DW_SLICE_EXAMPLES examples, and at most
    DW_MAX_SLICES slices. (Measured best: 2 images of 32×32×32, 2–4 of 16×16×64, 8 of 8×8×64.)"""
    size = max(1, min(DW_SLICE_BYTES // max(example_bytes, 1), DW_SLICE_EXAMPLES), -(-n // DW_MAX_SLICES))
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _patch_product(P, W, g):
    """z = P W per group: P `(batch, H', W', T, C)` patches, W `(kh, kw, C/g, O)` with T = kh·kw;
    z `(batch, H', W', O)`."""
    *lead, T, C = P.shape
    O = W.shape[3]
    if g == 1:
        return lax.dot_general(P, W.reshape(T, C, O), (((3, 4), (0, 1)), ((), ())))
    P = P.reshape(*lead, T, g, C // g)
    z = lax.dot_general(P, W.reshape(T, C // g, g, O // g), (((3, 5), (0, 1)), ((4,), (2,))))
    return jnp.moveaxis(z, 0, 3).reshape(*lead, O)  # (g, batch, H', W', O/g) -> (batch, H', W', O)


def _patch_grad(P, delta, shape, g):
    """dW = Pᵀ δ per group, summed over batch and pixels, in W's `shape` (kh, kw, C/g, O)."""
    kh, kw, c_g, O = shape
    if g == 1:
        return lax.dot_general(P, delta, (((0, 1, 2), (0, 1, 2)), ((), ()))).reshape(shape)
    P = P.reshape(*P.shape[:4], g, c_g)
    delta = delta.reshape(*delta.shape[:3], g, O // g)
    dW = lax.dot_general(P, delta, (((0, 1, 2), (0, 1, 2)), ((4,), (3,))))  # (g, T, C/g, O/g)
    return dW.transpose(1, 2, 0, 3).reshape(shape)


def _patch_delta(delta, W, g):
    """∂L/∂P = δ Wᵀ per group: `(batch, H', W', T, C)` from δ `(batch, H', W', O)`."""
    kh, kw, c_g, O = W.shape
    T = kh * kw
    if g == 1:
        return lax.dot_general(delta, W.reshape(T, c_g, O), (((3,), (2,)), ((), ())))
    delta = delta.reshape(*delta.shape[:3], g, O // g)
    dP = lax.dot_general(delta, W.reshape(T, c_g, g, O // g), (((4,), (3,)), ((3,), (2,))))  # (g, b, H', W', T, C/g)
    return jnp.moveaxis(dP, 0, 4).reshape(*dP.shape[1:5], g * c_g)


def _scatter_taps(gs, in_hw, pads, kernel, stride, dilation):
    """The transpose of `_windows` (no lhs dilation): dx `(batch, H, W, C)` where tap (p, q)'s
    array gs[p·kw + q] `(batch, H', W', C)` adds gs[b, i, j] at x pixel (i·s + p·d − top,
    j·s + q·d − left); what falls in the padding is dropped. Each is spread s apart and shifted
    by one `lax.pad` (negative padding crops), and XLA fuses the sum into one pass."""
    (sh, sw), (dh, dw), ((top, _), (left, _)) = stride, dilation, pads
    H_out, W_out = gs[0].shape[1:3]
    H, W = in_hw
    zero = jnp.zeros((), gs[0].dtype)
    dx = 0
    for (p, q), g in zip(((p, q) for p in range(kernel[0]) for q in range(kernel[1])), gs):
        lo_h, lo_w = p * dh - top, q * dw - left
        dx = dx + lax.pad(g, zero, [(0, 0, 0), (lo_h, H - lo_h - (H_out - 1) * sh - 1, sh - 1),
                                    (lo_w, W - lo_w - (W_out - 1) * sw - 1, sw - 1), (0, 0, 0)])
    return dx
