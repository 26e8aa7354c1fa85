"""Handwritten digits read row by row by an LSTM (or a GRU), trained by fnnet's backprop through time.

Each 8×8 scikit-learn digit becomes a sequence of 8 steps (its rows, top to bottom) of 8
features (the row's pixels, 0..16 scaled to [0, 1]): the network sees one row at a time and
must remember the earlier ones. The network is LSTM(64) → last state → Dense(10) (or GRU(64)
with `--cell gru`). It checks the hand-written gradient of the whole network with
`fnnet.check_grads` (float64, 8 training digits: jax.grad, finite differences, and every
layer's backward, BPTT included, against jax.vjp of its forward), then trains with Adam (lr
1e-2, cosine decay to 0; 30 epochs of batches of 32, `fnnet.fit`) on the same 5 random
stratified 80/20 splits as `digits.py`, and reports each split's test accuracy, their mean,
and the median time of an epoch after compilation. Needs `pip install 'fnnet[data]'`.

    python examples/rnn_digits.py [--cell lstm|gru] [--splits 5] [--epochs 30]
"""

import argparse
import sys
import time

import jax
import numpy as np
import optax

import fnnet

STEPS, FEATURES = 8, 8
BATCH = 32
TARGET = 0.97
CELLS = {"lstm": fnnet.LSTM, "gru": fnnet.GRU}

loss = fnnet.losses.softmax_cross_entropy_with_integer_labels


def network(cell):
    return fnnet.Network((STEPS, FEATURES), (CELLS[cell](64, return_sequences=False), fnnet.Dense(10)))


def sequences(X):
    """Rows of 64 pixels in 0..16 `(n, 64)` as 8 steps of 8 features in [0, 1] `(n, 8, 8)`."""
    return X.reshape(-1, STEPS, FEATURES) / 16


def run(net, seed, data, optimizer, epochs):
    """Test accuracy, train accuracy and per-epoch seconds (after compilation) on split `seed`."""
    k_split, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    (X_train, y_train), (X_test, y_test) = fnnet.datasets.split(data, k_split)
    X_train, X_test = sequences(X_train), sequences(X_test)
    params = net.init(k_init)
    if seed == 0:
        report = fnnet.check_grads(net, params, X_train[:8], y_train[:8], loss)
        print(f"gradient check: {report.message}")
        if not report.ok:
            sys.exit(1)
    marks = []  # one epoch per compiled call: the clock between two callbacks is one epoch
    params, history = fnnet.fit(net, params, (X_train, y_train), loss, optimizer, epochs=epochs,
                                batch_size=BATCH, key=k_fit, log_every=1,
                                callback=lambda epoch, h: marks.append(time.perf_counter()))
    accuracy = fnnet.evaluate(net, params, (X_test, y_test), loss)["accuracy"]
    return accuracy, float(history["accuracy"][-1]), np.diff(marks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.splits < 1 or args.epochs < 2:
        parser.error("--splits must be ≥ 1 and --epochs ≥ 2 (an epoch's time needs two epochs)")
    net = network(args.cell)
    data = fnnet.datasets.digits()
    n_train = len(data.X) - int(0.2 * len(data.X) + 0.5)  # fnnet.datasets.split's test share
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, args.epochs * (n_train // BATCH)))
    print(net)
    accuracies, times = [], []
    for seed in range(args.splits):
        accuracy, train_accuracy, epoch_times = run(net, seed, data, optimizer, args.epochs)
        accuracies.append(accuracy)
        times.extend(epoch_times)
        print(f"split {seed}: test accuracy {accuracy:.2%} (train {train_accuracy:.2%}), "
              f"{np.median(epoch_times) * 1e3:.0f} ms per epoch", flush=True)
    mean = np.mean(accuracies)
    print(f"mean test accuracy over {args.splits} splits: {mean:.2%} (min {min(accuracies):.2%}, "
          f"max {max(accuracies):.2%}); target {TARGET:.0%}")
    print(f"per epoch: {np.median(times) * 1e3:.0f} ms (median, after compilation; "
          f"{n_train // BATCH} steps of {BATCH} sequences of {STEPS} steps)")
    return 0 if mean >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
