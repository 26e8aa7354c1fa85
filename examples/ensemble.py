"""64 XOR networks trained at once: one compiled call, vmapped over initialisations.

The textbook's 2-4-1 ReLU network on XOR (SGD, lr 1.0, 2000 epochs) from 64 keys,
and a learning-rate sweep, each as a single `fnnet.fit_ensemble` call; then the
cost of the 64 models against one, both after compilation.

    python examples/ensemble.py [--models 64] [--epochs 2000]
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnnet

X = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
y = jnp.array([[0], [1], [1], [0]], jnp.float32)
net = fnnet.mlp([2, 4, 1], activation="relu", W_init="he_normal")
loss = fnnet.losses.sigmoid_binary_cross_entropy


def accuracy(params):
    """(N,) accuracy of each model."""
    logits = jax.vmap(net.apply, in_axes=(0, None))(params, X)
    return np.asarray(((logits > 0) == (y > 0.5)).mean(axis=(1, 2)))


def timed(f, repeats=5):
    """Median seconds of `f()` over `repeats` runs, after one warm-up (compilation) run."""
    jax.block_until_ready(f())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2000)
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.key(0), args.models)

    params, history = fnnet.fit_ensemble(net, keys, (X, y), loss, optax.sgd(1.0), epochs=args.epochs)
    converged = accuracy(params) == 1
    print(f"{converged.sum()}/{args.models} models reach 100% accuracy after {args.epochs} epochs "
          f"(final loss: median {np.median(history['loss'][:, -1]):.4f})")

    rates = np.geomspace(0.03, 3.0, args.models)
    params, history = fnnet.fit_ensemble(net, keys, (X, y), loss, optax.sgd, learning_rates=rates,
                                         epochs=args.epochs)
    ok = accuracy(params) == 1
    for lo, hi in [(0.03, 0.1), (0.1, 0.3), (0.3, 1.0), (1.0, 3.01)]:
        band = (rates >= lo) & (rates < hi)
        print(f"lr in [{lo:g}, {hi:g}): {ok[band].sum()}/{band.sum()} converge, "
              f"{(history['diverged_at'][band] >= 0).sum()} diverge")

    sgd = optax.sgd(1.0)  # one optimizer object: repeated calls reuse the compiled program
    many = timed(lambda: fnnet.fit_ensemble(net, keys, (X, y), loss, sgd, epochs=args.epochs)[0])
    one = timed(lambda: fnnet.fit_ensemble(net, keys[:1], (X, y), loss, sgd, epochs=args.epochs)[0])
    print(f"{args.models} models: {many * 1e3:.1f} ms, 1 model: {one * 1e3:.1f} ms for {args.epochs} "
          f"epochs (median of 5): the ensemble costs {many / one:.1f}× one model, "
          f"{args.models * args.epochs / many:,.0f} model-epochs per second")
    return 0 if converged.any() else 1


if __name__ == "__main__":
    sys.exit(main())
