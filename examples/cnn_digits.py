"""Handwritten digits as 8×8 images, with a small CNN trained by fnnet's backprop.

The 1797 scikit-learn digits become images of shape (8, 8, 1), pixels 0..16 scaled
to [0, 1] by dividing by 16 (a convolution shares its kernel across positions, so
every pixel keeps the same scale; per-pixel standardisation, as the MLP of
`digits.py` uses, would give each position its own). The network is
conv 3×3, 32 → max-pool 2 → conv 3×3, 64 → max-pool 2 → dropout 0.3 → dense 10
(21k parameters). It checks the hand-written gradient of the whole network with
`fnnet.check_grads` (float64, 8 training images, every layer's backward against
`jax.vjp` of its forward), then trains with Adam (lr 2e-3, cosine decay to 0; 20
epochs of batches of 16, `fnnet.fit`) on the same 5 random stratified 80/20 splits
as `digits.py`, and reports each split's test accuracy, their mean, and the median
time of an epoch after compilation. The MLP of `digits.py` reaches about 97.5%;
this CNN 98.9% (splits from 98.05% to 99.44%; one split's 359 test images carry a
standard error of about 0.55 points, the mean of 5 about 0.25). Batches of 16 learn
as well as batches of 32 here and, measured on CPU inside `fit`, cost about 0.7×
the time per epoch. Needs `pip install 'fnnet[data]'`.

    python examples/cnn_digits.py [--splits 5] [--epochs 20]
"""

import argparse
import sys
import time

import jax
import numpy as np
import optax

import fnnet

SHAPE = (8, 8, 1)
BATCH = 16
TARGET = 0.985

loss = fnnet.losses.softmax_cross_entropy_with_integer_labels
net = fnnet.Network(SHAPE, (
    fnnet.Conv2D(32, 3, activation="relu", W_init="he_normal"),
    fnnet.MaxPool2D(2),
    fnnet.Conv2D(64, 3, activation="relu", W_init="he_normal"),
    fnnet.MaxPool2D(2),
    fnnet.Flatten(),
    fnnet.Dropout(0.3),
    fnnet.Dense(10),
))


def images(X):
    """Rows of 64 pixels in 0..16 `(n, 64)` as images in [0, 1] `(n, 8, 8, 1)`."""
    return X.reshape(-1, *SHAPE) / 16


def run(seed, data, optimizer, epochs):
    """Test accuracy, train accuracy and per-epoch seconds (after compilation) on split `seed`."""
    k_split, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    (X_train, y_train), (X_test, y_test) = fnnet.datasets.split(data, k_split)
    X_train, X_test = images(X_train), images(X_test)
    params = net.init(k_init)
    if seed == 0:
        report = fnnet.check_grads(net, params, X_train[:8], y_train[:8], loss)
        print(f"gradient check: {report.message}")
        if not report.ok:
            sys.exit(1)
    # One epoch per compiled call (the same program each time): the host's clock between two
    # callbacks is one epoch's run, the first call's compilation excluded.
    marks = []
    params, history = fnnet.fit(net, params, (X_train, y_train), loss, optimizer, epochs=epochs,
                                batch_size=BATCH, key=k_fit, log_every=1,
                                callback=lambda epoch, h: marks.append(time.perf_counter()))
    accuracy = fnnet.evaluate(net, params, (X_test, y_test), loss)["accuracy"]
    return accuracy, float(history["accuracy"][-1]), np.diff(marks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    if args.splits < 1 or args.epochs < 2:
        parser.error("--splits must be ≥ 1 and --epochs ≥ 2 (an epoch's time needs two epochs)")
    data = fnnet.datasets.digits()
    n_train = len(data.X) - int(0.2 * len(data.X) + 0.5)  # fnnet.datasets.split's test share: ⌊0.2·n + ½⌋
    # One optimizer object for all splits, so that they share one compiled program.
    optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, args.epochs * (n_train // BATCH)))
    print(net)
    accuracies, times = [], []
    for seed in range(args.splits):
        accuracy, train_accuracy, epoch_times = run(seed, data, optimizer, args.epochs)
        accuracies.append(accuracy)
        times.extend(epoch_times)
        print(f"split {seed}: test accuracy {accuracy:.2%} (train {train_accuracy:.2%}), "
              f"{np.median(epoch_times) * 1e3:.0f} ms per epoch")
    mean = np.mean(accuracies)
    print(f"mean test accuracy over {args.splits} splits: {mean:.2%} (min {min(accuracies):.2%}, "
          f"max {max(accuracies):.2%}); target {TARGET:.1%}")
    print(f"per epoch: {np.median(times) * 1e3:.0f} ms (median, after compilation; "
          f"{n_train // BATCH} steps of {BATCH} images)")
    return 0 if mean >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
