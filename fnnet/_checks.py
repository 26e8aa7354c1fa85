"""Input checks shared across modules: random keys, and pytrees against the tree they should match."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def structure_mismatch(got, expected) -> str:
    """How `got`'s tree structure differs from `expected`'s, by key path; "" if it does not."""
    got_leaves, got_def = jax.tree.flatten_with_path(got)
    exp_leaves, exp_def = jax.tree.flatten_with_path(expected)
    if got_def == exp_def:
        return ""
    got_paths = {jax.tree_util.keystr(p) for p, _ in got_leaves}
    exp_paths = {jax.tree_util.keystr(p) for p, _ in exp_leaves}
    return "; ".join(
        f"{what} {', '.join(sorted(paths))}"
        for what, paths in (("missing", exp_paths - got_paths), ("unexpected", got_paths - exp_paths))
        if paths
    ) or f"the containers differ: got {got_def}, expected {exp_def}"


class Mismatch(NamedTuple):
    """Where a tree differs from the tree it should match.

    `path` is None when the structures differ (`detail` names the missing and
    unexpected key paths); otherwise it is the first leaf whose shape (or dtype)
    differs, with `got` and `want` its and the expected shape.
    """

    detail: str
    path: "tuple | None" = None
    got: tuple = ()
    want: tuple = ()


def tree_mismatch(got, expected, dtypes=False) -> "Mismatch | None":
    """How `got` differs from `expected`: structure first, then each leaf's shape (and, with
    `dtypes`, its dtype); None if it does not. Looks at no values, so it is free under `jit`."""
    got_leaves, got_def = jax.tree.flatten(got)
    expected_leaves, expected_def = jax.tree.flatten(expected)
    if got_def == expected_def and all(  # the common case, fast: nothing differs
            np.shape(g) == np.shape(e) and (not dtypes or jnp.result_type(g) == jnp.result_type(e))
            for g, e in zip(got_leaves, expected_leaves)):
        return None
    detail = structure_mismatch(got, expected)
    if detail:
        return Mismatch(detail)
    for (path, g), e in zip(jax.tree.flatten_with_path(got)[0], jax.tree.leaves(expected)):
        shapes = jnp.shape(g), jnp.shape(e)
        if shapes[0] != shapes[1]:
            return Mismatch(f"{jax.tree_util.keystr(path)} has shape {shapes[0]}, expected {shapes[1]}",
                            path, *shapes)
        if dtypes and jnp.result_type(g) != jnp.result_type(e):
            return Mismatch(f"{jax.tree_util.keystr(path)} has dtype {jnp.result_type(g)}, expected "
                            f"{jnp.result_type(e)}", path, *shapes)
    return None


def as_array(x):
    """`x` itself if it is an array (JAX, numpy, or a tracer), else `np.asarray(x)`: Python lists
    and scalars as data are converted, as `jnp.asarray` would."""
    return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def is_int(n, minimum=None) -> bool:
    """`n` is a Python int (not a bool), and ≥ `minimum` if given."""
    return isinstance(n, int) and not isinstance(n, bool) and (minimum is None or n >= minimum)


def host_values(a) -> np.ndarray:
    """`a` on the host; of an array spread over several processes, this process's rows."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return np.concatenate([np.asarray(shard.data) for shard in a.addressable_shards])
    return np.asarray(a)


def check_key(where: str, key):
    """Raise a TypeError unless `key` is a JAX random key (typed, or raw uint32 of shape (2,))."""
    if not (isinstance(key, jax.Array)
            and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,))):
        raise TypeError(
            f"{where}: expected a JAX random key such as jax.random.key(0), "
            f"got {type(key).__name__} {key!r}"
        )
