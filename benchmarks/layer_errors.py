"""The largest float64 error of each layer's hand-written backward against `jax.vjp` of its
forward (and central finite differences), over a fixed spread of configurations and batch
sizes: `python -m benchmarks.layer_errors`. It prints one row per layer type; the test suite's
hypothesis runs draw further shapes."""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import fnnet  # noqa: E402
from fnnet.layers import (GRU, LSTM, Activation, AvgPool2D, BatchNorm, Bidirectional, Conv2D, Dense,  # noqa: E402
                          Dropout, Embedding, Flatten, GlobalAvgPool2D, LayerNorm, MaxPool2D, MultiHeadAttention,
                          PositionalEmbedding, Reshape, Residual, Sequential, SimpleRNN, TransformerBlock)

MASKED = "masked"  # a case checked with a padding mask: rows of full, shorter, one and no real steps
TOKENS = (0, 9)  # a case on integer token ids in [0, 9)

CASES = {  # layer type: [(layer, one example's input shape[, MASKED or TOKENS]), ...]
    "Dense": [(Dense(5, a), (7,)) for a in ("identity", "relu", "tanh", "gelu", "sigmoid")] + [(Dense(5, "tanh"), (4, 6))],
    "Activation": [(Activation(a), (3, 4)) for a in ("relu", "silu", "elu", "softplus")],
    "Conv2D": [
        (Conv2D(4, 3), (6, 6, 2)),
        (Conv2D(4, 3, stride=2, activation="relu"), (7, 6, 3)),
        (Conv2D(6, (3, 2), stride=(2, 1), padding="VALID", dilation=(1, 2)), (8, 7, 2)),
        (Conv2D(4, 3, padding=((2, 0), (1, 3)), dilation=2, activation="tanh"), (6, 5, 2)),
        (Conv2D(6, 3, groups=2), (5, 5, 4)),
        (Conv2D(6, 3, stride=2, groups=3, activation="tanh"), (7, 7, 3)),  # depthwise, 2 per channel
        (Conv2D(8, 1, stride=2), (6, 6, 8)),
    ],
    "MaxPool2D": [(MaxPool2D(2), (6, 6, 2)), (MaxPool2D(3, 2, "SAME"), (7, 5, 2)), (MaxPool2D((2, 3), 1), (5, 6, 1))],
    "AvgPool2D": [(AvgPool2D(2), (6, 6, 2)), (AvgPool2D(3, 2, "SAME"), (7, 5, 2)), (AvgPool2D((3, 2), 1, "SAME"), (5, 4, 1))],
    "GlobalAvgPool2D": [(GlobalAvgPool2D(), (5, 4, 3))],
    "Flatten": [(Flatten(), (3, 4, 2))],
    "Reshape": [(Reshape((6, 4)), (3, 4, 2))],
    "BatchNorm": [(BatchNorm(), (5,)), (BatchNorm(), (4, 4, 3))],
    "LayerNorm": [(LayerNorm(), (6,)), (LayerNorm(axes=(-3, -2, -1)), (3, 3, 2))],
    "Dropout": [(Dropout(0.3), (8,)), (Dropout(0.5), (4, 4, 2))],
    "Sequential": [(Sequential(Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3)), (6, 6, 2))],
    "Residual": [(Residual(Sequential(Conv2D(4, 3), BatchNorm(), Activation("relu")), Conv2D(4, 1)), (5, 5, 2)),
                 (Residual(Dense(6, "tanh")), (6,))],
    "Embedding": [(Embedding(9, 4), (6,), TOKENS), (Embedding(9, 4, pad_id=0), (6,), TOKENS)],
    "SimpleRNN": [(SimpleRNN(4), (5, 3)), (SimpleRNN(4, "relu", return_sequences=False), (5, 3), MASKED)],
    "LSTM": [(LSTM(4), (5, 3)), (LSTM(4, return_sequences=False), (5, 3), MASKED),
             (LSTM(4, checkpoint_every=2), (5, 3), MASKED)],
    "GRU": [(GRU(4), (5, 3)), (GRU(4, return_sequences=False), (5, 3), MASKED), (GRU(4, checkpoint_every=3), (5, 3))],
    "Bidirectional": [(Bidirectional(LSTM(3)), (5, 2), MASKED), (Bidirectional(GRU(3, return_sequences=False)), (5, 2))],
    "MultiHeadAttention": [(MultiHeadAttention(2), (5, 6)), (MultiHeadAttention(2, causal=True), (5, 6), MASKED),
                           (MultiHeadAttention(3, recompute=True), (4, 6), MASKED),
                           (MultiHeadAttention(2, dropout=0.2), (4, 6))],
    "PositionalEmbedding": [(PositionalEmbedding(7), (5, 4)), (PositionalEmbedding(7, sinusoidal=True), (5, 4))],
    "TransformerBlock": [(TransformerBlock(2, mlp_ratio=2, causal=True), (5, 8), MASKED),
                         (TransformerBlock(2, dropout=0.1), (4, 8))],
}
BATCHES = (1, 4)


def main():
    rows = [("layer", "checks", "max rel. error vs jax.vjp", "max rel. error vs finite differences")]
    for name, cases in CASES.items():
        vjp = fd = 0.0
        n = 0
        for i, (layer, in_shape, *how) in enumerate(cases):
            for batch in BATCHES:
                if name == "BatchNorm" and batch == 1 and len(in_shape) == 1:
                    continue  # one value per channel: no batch statistics to take
                options = {}
                if how == [TOKENS]:
                    options["int_range"] = TOKENS
                if how == [MASKED]:
                    T = in_shape[0]
                    lengths = jnp.array([T, T - 2, 1, 0][:batch])
                    options["mask"] = jnp.arange(T)[None, :] < lengths[:, None]
                report = fnnet.check_layer(layer, in_shape, key=jax.random.key(i), batch=batch, **options)
                assert report.ok, report
                n += len(report.results)
                outputs = [o for r in report.results for o in r.outputs]
                vjp = max([vjp] + [o.max_rel_error for o in outputs])
                fd = max([fd] + [o.fd_error for o in outputs if o.fd_error is not None])
        rows.append((name, str(n), f"{vjp:.1e}", f"{fd:.1e}"))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
