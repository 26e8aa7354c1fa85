"""Independent oracles and shared data for the tests."""

import jax
import numpy as np

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], np.float64)


def rel_error(a, b) -> float:
    """max|a − b| / max|b|: the error relative to the leaf's scale (0 if both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max(initial=0.0)
    err = np.abs(a - b).max(initial=0.0)
    return err / scale if scale > 0 else err


def tree_rel_error(a, b) -> float:
    """The largest `rel_error` over the leaves of two trees of the same structure."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(jax.tree.leaves(jax.tree.map(rel_error, a, b)), default=0.0)


def autodiff(net, loss, params, X, y):
    """The oracle: jax.value_and_grad of the batch-mean loss of net.apply."""
    return jax.value_and_grad(lambda p: loss(net.apply(p, X), y).mean())(params)
