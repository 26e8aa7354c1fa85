"""The benchmark workloads (float32): network, loss, batch and data, from a key."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

import fnnet


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    sizes: tuple
    activation: str
    loss: str
    batch: int
    lr: float

    def net(self):
        return fnnet.mlp(list(self.sizes), activation=self.activation, W_init="he_normal")

    def data(self, key, n=None):
        """X `(n, sizes[0])` and targets fitting the loss; n defaults to one batch."""
        n = self.batch if n is None else n
        kx, ky = jax.random.split(key)
        X = jax.random.normal(kx, (n, self.sizes[0]), jnp.float32)
        n_out = self.sizes[-1]
        if self.loss == "softmax_cross_entropy_with_integer_labels":
            y = jax.random.randint(ky, (n,), 0, n_out)
        elif self.loss == "sigmoid_binary_cross_entropy":
            y = jax.random.bernoulli(ky, 0.5, (n, n_out)).astype(jnp.float32)
        else:
            y = jax.random.normal(ky, (n, n_out), jnp.float32)
        return X, y

    def flops_per_step(self):
        """Multiply-adds of forward and backward, ×2: about 6 · batch · weights."""
        weights = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        return 6 * self.batch * weights


XOR_X = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
XOR_Y = jnp.array([[0], [1], [1], [0]], jnp.float32)

W1 = Workload("W1", "xor 2-4-1", (2, 4, 1), "relu", "sigmoid_binary_cross_entropy", 4, 1.0)
W2 = Workload("W2", "digits-sized 64-128-10", (64, 128, 10), "relu", "softmax_cross_entropy_with_integer_labels", 128, 0.1)
W3 = Workload("W3", "wide 784-1024-1024-10", (784, 1024, 1024, 10), "relu",
              "softmax_cross_entropy_with_integer_labels", 256, 0.01)
W4 = Workload("W4", "deep-narrow 32-(8×64)-1", (32, *[64] * 8, 1), "tanh", "mean_squared_error", 64, 0.01)
WORKLOADS = (W1, W2, W3, W4)


def max_rel_error(params, reference) -> float:
    """Largest max|a − b| / max|b| over the leaves: how far `params` landed from `reference`."""
    import numpy as np
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-30))
               for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))


def max_rel_update_error(params, reference, initial, floor=1e-3) -> float:
    """How far the steps that led from `initial` to `params` went from those to `reference`:
    the largest ‖Δa − Δb‖ / max(‖Δb‖, floor · U) over the leaves, with Δ the change from
    `initial`, ‖·‖ the 2-norm of a leaf and U the largest ‖Δb‖ of any leaf.

    For the CNNs, where comparing the params themselves cannot work: a few steps move a
    kernel by 1e-3 of its size, so even a wrong gradient would land "close"; the BatchNorm
    betas start at 0, so their relative error is their gradient's; and the bias of a conv
    before a BatchNorm has a gradient of 0 but for rounding (the floor compares it to the
    other updates). W6's float32 gradients are ill-conditioned: a pre-activation within
    rounding of 0 falls on either side of its ReLU depending on the order of a sum, and
    such a flip moves the gradients of the layers below it by up to 1e-2 of a leaf's largest
    entry (measured: XLA's convolutions against fnnet's im2col, and against float64), hence
    2-norms, which a flip in one channel moves less.
    """
    import numpy as np
    leaves = [[np.asarray(v, np.float64) for v in jax.tree.leaves(t)] for t in (params, reference, initial)]
    deltas = [(a - p0, b - p0) for a, b, p0 in zip(*leaves)]
    largest = max((np.linalg.norm(db) for _, db in deltas), default=0.0)
    return max((float(np.linalg.norm(da - db) / max(np.linalg.norm(db), floor * largest, 1e-30))
                for da, db in deltas), default=0.0)


def batch(workload, key):
    """One batch: XOR's four points for W1, random data otherwise."""
    if workload is W1:
        return XOR_X, XOR_Y
    return workload.data(key)


# ---------- CNN workloads: a layer list that fnnet, raw JAX and torch each build for themselves ----------

@dataclass(frozen=True)
class CNNWorkload:
    """A small CNN for 10 classes on random NHWC images, softmax cross-entropy on integer labels.

    `layers` is the architecture as plain tuples, one per fnnet layer (so the params and state
    trees line up, `{}` for a layer without either), read independently by `net()`, by
    `baselines.raw_cnn_step` and by `baselines.torch_cnn_step`:

        ("conv", n_out, k, activation)   k×k, stride 1, "SAME", activation "relu" or None
        ("bn",)  ("relu",)  ("maxpool", k)  ("flatten",)  ("gap",)  ("dense", n_out)

    `smoke_batch`: the batch of `--smoke`, to keep the test suite quick. `tol`: how close each
    implementation's 3-step updates must come to raw JAX's (`max_rel_update_error`).
    """
    name: str
    title: str
    in_shape: tuple
    layers: tuple
    batch: int
    lr: float
    smoke_batch: int
    tol: float
    loss: str = "softmax_cross_entropy_with_integer_labels"

    def net(self):
        def layer(spec):
            kind, *args = spec
            if kind == "conv":
                n_out, k, activation = args
                return fnnet.Conv2D(n_out, k, activation=activation or "identity", W_init="he_normal")
            return {"bn": fnnet.BatchNorm, "relu": lambda: fnnet.Activation("relu"), "maxpool": fnnet.MaxPool2D,
                    "flatten": fnnet.Flatten, "gap": fnnet.GlobalAvgPool2D, "dense": fnnet.Dense}[kind](*args)
        return fnnet.Network(self.in_shape, tuple(map(layer, self.layers)))

    def data(self, key, n=None):
        """X `(n, *in_shape)` standard normal and labels `(n,)` in [0, 10); n defaults to one batch."""
        n = self.batch if n is None else n
        kx, ky = jax.random.split(key)
        return jax.random.normal(kx, (n, *self.in_shape), jnp.float32), jax.random.randint(ky, (n,), 0, 10)

    def convs(self, batch=None):
        """Each convolution's shapes: `(N, H, W, C, k, O)`, stride 1 and "SAME", so H' = H."""
        shape, out = self.in_shape, []
        for kind, *args in self.layers:
            if kind == "conv":
                out.append((batch or self.batch, *shape, args[1], args[0]))
                shape = (*shape[:2], args[0])
            elif kind == "maxpool":
                shape = (shape[0] // args[0], shape[1] // args[0], shape[2])
        return out

    def conv_flops_per_step(self, batch=None):
        """Convolution FLOPs of one training step: 2·N·H'·W'·kh·kw·C·O for each conv's forward,
        the same again for its dW and for its dx, except the first conv's dx (of the data,
        which no one differentiates: every implementation here skips it). Dense layers,
        pooling, BN and the elementwise work are not counted."""
        per_conv = [2 * N * H * W * k * k * C * O for N, H, W, C, k, O in self.convs(batch)]
        return 3 * sum(per_conv) - per_conv[0]


def _conv_block(n):
    return (("conv", n, 3, None), ("bn",), ("relu",), ("conv", n, 3, None), ("bn",), ("relu",), ("maxpool", 2))


W5 = CNNWorkload("W5", "digits-sized CNN 8×8×1", (8, 8, 1),
                 (("conv", 32, 3, "relu"), ("conv", 64, 3, "relu"), ("maxpool", 2), ("flatten",), ("dense", 10)),
                 batch=128, lr=0.05, smoke_batch=32, tol=1e-4)
W6 = CNNWorkload("W6", "CIFAR-sized CNN+BN 32×32×3", (32, 32, 3),
                 _conv_block(32) + _conv_block(64) + (("gap",), ("dense", 10)),
                 batch=64, lr=0.05, smoke_batch=8, tol=2e-2)  # measured 4e-3, see above
CNN_WORKLOADS = (W5, W6)


# ---------- sequence workloads: an LSTM and a Transformer block, random data ----------

@dataclass(frozen=True)
class SequenceWorkload:
    """A sequence model for 10 classes on random `(batch, T, width)` inputs, softmax
    cross-entropy on integer labels, built independently by `net()`, `baselines.raw_lstm_step`
    / `raw_transformer_step` and `baselines.torch_lstm_step` / `torch_transformer_step`.

    kind "lstm": `Network((T, width), (LSTM(hidden, return_sequences=False), Dense(10)))`, one
    label per sequence from the last state, labels `(batch,)`; kind "transformer":
    `Network((T, width), (TransformerBlock(n_heads), Dense(10)))`, a label per token, labels
    `(batch, T)`, the loss their mean over every token. `smoke`: the sizes `--smoke` replaces
    (`sized(smoke=True)`). `tol`: how close each implementation's 3-step updates must come to
    raw JAX's (`max_rel_update_error`).
    """
    name: str
    title: str
    kind: str
    T: int
    width: int
    batch: int
    lr: float
    tol: float
    hidden: int = 0
    n_heads: int = 0
    smoke: tuple = ()
    loss: str = "softmax_cross_entropy_with_integer_labels"

    def sized(self, smoke=False):
        """This workload, or with `--smoke`'s smaller sizes."""
        import dataclasses
        return dataclasses.replace(self, **dict(self.smoke), smoke=()) if smoke else self

    def net(self):
        head = fnnet.Dense(10)
        if self.kind == "lstm":
            return fnnet.Network((self.T, self.width), (fnnet.LSTM(self.hidden, return_sequences=False), head))
        return fnnet.Network((self.T, self.width), (fnnet.TransformerBlock(self.n_heads), head))

    def data(self, key):
        """X `(batch, T, width)` standard normal; labels in [0, 10), `(batch,)` or `(batch, T)`."""
        kx, ky = jax.random.split(key)
        labels = (self.batch,) if self.kind == "lstm" else (self.batch, self.T)
        return (jax.random.normal(kx, (self.batch, self.T, self.width), jnp.float32),
                jax.random.randint(ky, labels, 0, 10))

    def describe(self):
        if self.kind == "lstm":
            return f"T {self.T}, batch {self.batch}, {self.width}→{self.hidden}"
        return f"T {self.T}, d {self.width}, {self.n_heads} heads, batch {self.batch}"


W7 = SequenceWorkload("W7", "LSTM → Dense(10) on the last state", "lstm", T=64, width=64, batch=32, lr=0.1,
                      tol=1e-3, hidden=128, smoke=(("T", 8), ("width", 16), ("hidden", 32), ("batch", 4)))
W8 = SequenceWorkload("W8", "TransformerBlock → Dense(10) per token", "transformer", T=128, width=128,
                      batch=16, lr=0.05, tol=1e-3, n_heads=4, smoke=(("T", 16), ("width", 32), ("batch", 2)))
SEQUENCE_WORKLOADS = (W7, W8)


# ---------- the memory of one sequence layer's training step, per sequence length ----------

@dataclass(frozen=True)
class MemoryCase:
    """One row family of the "memory" section: a layer alone on `(batch, T, width)` inputs.

    `layer` is a static fnnet layer value; `baseline` names the case this one trades time for
    memory against (its ratios are printed), None for none; `timed`: also time the jitted
    forward + backward, paired with the baseline's. A recurrent layer with a recompute option
    (every k-th state stored) is one more entry: `MemoryCase("LSTM(128, ...)", fnnet.LSTM(128,
    ...), 64, 32, baseline="LSTM(128)", timed=True)`.
    """
    name: str
    layer: object
    width: int
    batch: int
    smoke_width: int = 16
    smoke_batch: int = 2
    baseline: "str | None" = None
    timed: bool = False


MEMORY_CASES = (
    MemoryCase("LSTM(128)", fnnet.LSTM(128), width=64, batch=32, timed=True),
    MemoryCase("LSTM(128, checkpoint_every=8)", fnnet.LSTM(128, checkpoint_every=8), width=64, batch=32,
               baseline="LSTM(128)", timed=True),
    MemoryCase("MHA(4)", fnnet.MultiHeadAttention(4), width=128, batch=16, timed=True),
    MemoryCase("MHA(4, recompute)", fnnet.MultiHeadAttention(4, recompute=True), width=128, batch=16,
               baseline="MHA(4)", timed=True),
    MemoryCase("TransformerBlock(4)", fnnet.TransformerBlock(4), width=128, batch=16),
)
MEMORY_T = (64, 256, 1024)
MEMORY_T_SMOKE = (16, 32)
