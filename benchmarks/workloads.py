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


def batch(workload, key):
    """One batch: XOR's four points for W1, random data otherwise."""
    if workload is W1:
        return XOR_X, XOR_Y
    return workload.data(key)
