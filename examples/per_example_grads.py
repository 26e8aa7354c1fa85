"""Spotting mislabeled points by their per-example gradient norms.

Flip the labels of 5% of a two-moons training set, train an MLP, then take
every example's own gradient ∂ℓᵢ/∂params with `fnnet.per_example_grads` (one
vmapped call over the batch). A point the network cannot fit keeps a large
gradient: ranking the norms finds most of the flipped labels.

    python examples/per_example_grads.py [--n 400] [--flip 0.05]
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnnet

loss = fnnet.losses.sigmoid_binary_cross_entropy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    k_data, k_flip, k_init, k_fit = jax.random.split(jax.random.key(args.seed), 4)
    data = fnnet.datasets.moons(k_data, n=args.n, noise=0.1)
    n_flip = int(round(args.flip * args.n))
    flipped = np.asarray(jax.random.choice(k_flip, args.n, (n_flip,), replace=False))
    labels = np.asarray(data.y).copy()
    labels[flipped] = 1 - labels[flipped]
    y = jnp.asarray(labels, jnp.float32)[:, None]

    net = fnnet.mlp([2, 16, 16, 1], activation="tanh")
    params, history = fnnet.fit(net, net.init(k_init), (data.X, y), loss, optax.adam(1e-2),
                                epochs=100, batch_size=32, key=k_fit)
    print(f"trained: loss {history['loss'][-1]:.3f}, accuracy on the noisy labels "
          f"{history['accuracy'][-1]:.1%} ({args.flip:.0%} of the labels are wrong)")

    grads = fnnet.per_example_grads(net, params, data.X, y, loss)            # leaves: (n, ...)
    norms = jnp.sqrt(sum((g.reshape(args.n, -1) ** 2).sum(1) for g in jax.tree.leaves(grads)))
    top = np.argsort(-np.asarray(norms))[:n_flip]
    found = len(set(top.tolist()) & set(flipped.tolist()))
    print(f"largest {n_flip} gradient norms: {found} of them are the {n_flip} flipped labels "
          f"({found / n_flip:.0%} precision; chance would be {args.flip:.0%})")
    print(f"median norm: flipped {np.median(norms[flipped]):.3f}, others "
          f"{np.median(np.delete(np.asarray(norms), flipped)):.3f}")
    return 0 if found / n_flip >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
