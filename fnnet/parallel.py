"""Data parallelism with `jax.sharding`: the batch split along a "data" mesh axis, params replicated.

    mesh = data_mesh()                                   # every device, one "data" axis
    step = train_step(net, loss, optimizer, mesh=mesh)   # batch sharded, params replicated
    params, history = fit(net, params, (X, y), loss, optimizer, ..., mesh=mesh)

Nothing here is hand-made parallelism: `jax.jit` compiles the step once for the
mesh and XLA inserts the all-reduce where backprop's `dW = aᵀ δ` sums over the
sharded batch axis, so the hand-written backward pass runs unchanged and its
batch mean is the global mean.

On several hosts, call `jax.distributed.initialize()` first in every process;
`data_mesh()` then spans all processes' devices, and each process passes its
own rows through `global_batch(mesh, X_local, y_local)`.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

AXIS = "data"
"""The mesh axis the batch is split along."""


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "data" over `devices`.

    Args:
      devices: a list of devices, a number n (the first n of `jax.devices()`),
        or None for all of `jax.devices()` (every process's, after
        `jax.distributed.initialize()`).

    The axis type is `Auto`: jit propagates shardings through the unchanged
    single-device code.
    """
    available = jax.devices()
    if devices is None:
        devices = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"data_mesh: asked for {devices} devices but JAX has {len(available)} "
                f"({available[0].platform}); to simulate n CPU devices set "
                f"jax.config.update('jax_num_cpu_devices', n) right after `import jax`"
            )
        devices = available[:devices]
    devices = list(devices)
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (params, optimizer state, metrics)."""
    return NamedSharding(mesh, jax.P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Axis 0 (the batch) split along "data"; any other mesh axis replicates."""
    return NamedSharding(mesh, jax.P(AXIS))


def global_batch(mesh: Mesh, *local):
    """One global array per local array, batch-sharded: this process's rows, in process order.

    In a single process this is `jax.device_put(x, batch_sharded(mesh))`; across
    hosts every process calls it with its own, equally sized, share of the rows
    (`jax.make_array_from_process_local_data`).
    """
    sharding = batch_sharded(mesh)
    arrays = tuple(jax.make_array_from_process_local_data(sharding, np.asarray(x)) for x in local)
    return arrays[0] if len(arrays) == 1 else arrays


def check_mesh(where: str, mesh, batch_size: int | None = None) -> None:
    """TypeError/ValueError unless `mesh` has a "data" axis (that divides `batch_size`)."""
    if not isinstance(mesh, Mesh) or AXIS not in mesh.axis_names:
        raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh with a {AXIS!r} axis, e.g. "
                        f"fnnet.parallel.data_mesh(); got {mesh!r}")
    n = mesh.shape[AXIS]
    if batch_size is not None and batch_size % n:
        below, above = batch_size - batch_size % n, batch_size + n - batch_size % n
        raise ValueError(
            f"{where}: batch size {batch_size} does not split evenly over the {n} devices of the "
            f"mesh's {AXIS!r} axis; use a multiple of {n}, e.g. {below or above} or {above}"
        )
