"""Input checks shared across modules: random keys, and pytrees against the tree they should match."""

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


def shape_mismatches(got, expected):
    """(key path, got shape, expected shape) for each leaf whose shape differs; same structure."""
    return [
        (path, jnp.shape(g), jnp.shape(e))
        for (path, g), e in zip(jax.tree.flatten_with_path(got)[0], jax.tree.leaves(expected))
        if jnp.shape(g) != jnp.shape(e)
    ]


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
