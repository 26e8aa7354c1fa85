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

import functools

import jax
import jax.numpy as jnp
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


def resolve(where: str, mesh=None) -> "Mesh | None":
    """The mesh to train on, with every axis `Auto`; None for one device.

    `mesh` (any `jax.sharding.Mesh` with a "data" axis: from `data_mesh`,
    `jax.make_mesh` with Explicit or Auto axes, or `Mesh(devices, names)`), or else
    the mesh set with `jax.set_mesh`. Training runs on the same devices with the same
    axis names as Auto axes, so `jit` propagates the batch sharding through the
    unchanged single-device code and no layer needs a sharding annotation; the batch
    is split along "data" and replicated over any other axis.

    Raises:
      TypeError: `mesh` is not a Mesh, or has no "data" axis (the message names its axes).
      ValueError: `mesh` differs from the mesh set with `jax.set_mesh` around the call.
    """
    try:
        context = jax.sharding.get_mesh()
    except ValueError:  # called inside the user's own jit: its shardings govern
        context = None
    if context is not None and not context.empty:
        if mesh is not None and _as_auto(_checked(where, mesh)) != _as_auto(_checked(where, context)):
            raise ValueError(
                f"{where}: mesh= ({_describe(mesh)}) differs from the mesh set with jax.set_mesh "
                f"around this call ({_describe(context)}); pass one of them"
            )
        mesh = context
    return None if mesh is None else _as_auto(_checked(where, mesh))


def _checked(where, mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh with a {AXIS!r} axis, e.g. "
                        f"fnnet.parallel.data_mesh(); got {type(mesh).__name__} {mesh!r}")
    if AXIS not in mesh.axis_names:
        raise TypeError(f"{where}: the mesh has axes {mesh.axis_names} but no {AXIS!r} axis to split "
                        f"the batch along; name one axis {AXIS!r}, e.g. jax.make_mesh((n,), ({AXIS!r},))")
    return mesh


def _describe(mesh) -> str:
    return ", ".join(f"{name!r}: {size}" for name, size in mesh.shape.items()) + f" on {mesh.size} devices"


@functools.lru_cache(maxsize=32)
def _as_auto(mesh: Mesh) -> Mesh:
    """`mesh` with every axis Auto (the same devices and axis names)."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return mesh.update(axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def place(tree, sharding: NamedSharding):
    """Every array of `tree` on `sharding`, whose mesh has Auto axes (a no-op where it already
    is). An array the user sharded on the same devices under Explicit axes is re-labelled, not
    copied; an array spread over several processes keeps its own layout."""
    def put(a):
        if isinstance(a, jax.Array) and a.is_fully_addressable and not sharding.is_fully_addressable:
            # this process's value, replicated to every process's devices (each holds the same value)
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
            if a.committed:
                return jax.device_put(np.asarray(a), sharding)
        if not (isinstance(a, jax.Array) and not a.is_fully_addressable):
            a = jax.device_put(a, sharding)  # equivalent layouts are left as they are...
        if isinstance(a.sharding, NamedSharding) and a.sharding.mesh != sharding.mesh:
            a = jax.make_array_from_single_device_arrays(  # ...so label them with the Auto mesh
                a.shape, NamedSharding(sharding.mesh, a.sharding.spec), [s.data for s in a.addressable_shards])
        return a
    return jax.tree.map(put, tree)


def check_batch(where: str, mesh: Mesh, batch_size: int) -> None:
    """ValueError unless the "data" axis of `mesh` divides `batch_size`."""
    n = mesh.shape[AXIS]
    if batch_size % n:
        below, above = batch_size - batch_size % n, batch_size + n - batch_size % n
        raise ValueError(
            f"{where}: batch size {batch_size} does not split evenly over the {n} devices of the "
            f"mesh's {AXIS!r} axis; use a multiple of {n}, e.g. {below or above} or {above}"
        )
