"""The memory of one sequence layer's training step (forward + hand-written backward), from
XLA's buffer assignment, and the bytes of the cache forward hands to backward: the figure that
BPTT's T cached states and attention's T×T weights per head drive (benchmarks/run.py, section
"memory"; the cases are `workloads.MEMORY_CASES`)."""

import math

import jax
import jax.numpy as jnp

MIB = 2 ** 20


def inputs(case, T, smoke=False):
    """(params, x, dy) of `case.layer` on `(batch, T, width)` standard normal inputs; dy of y's shape."""
    width, batch = (case.smoke_width, case.smoke_batch) if smoke else (case.width, case.batch)
    params, _ = case.layer.init(jax.random.key(0), (T, width), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (batch, T, width), jnp.float32)
    y = jax.eval_shape(lambda p, x: case.layer.forward(p, x)[0], params, x)
    dy = jax.random.normal(jax.random.key(2), y.shape, y.dtype)
    return params, x, dy


def training_step(layer):
    """`step(params, x, dy) -> (dparams, dx)`: forward, then the layer's own backward."""
    def step(params, x, dy):
        _, cache = layer.forward(params, x)
        return layer.backward(params, cache, dy)
    return step


def cache_bytes(layer, params, x) -> int:
    """Bytes of the cache `layer.forward` returns (its leaves' shapes, not computed)."""
    cache = jax.eval_shape(lambda p, x: layer.forward(p, x)[1], params, x)
    return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(cache))


def compiled_bytes(f, *args) -> dict:
    """XLA's memory of `jit(f)` on `args`, in bytes, from `compile().memory_analysis()`: its
    `temp_size_in_bytes`, `argument_size_in_bytes`, `output_size_in_bytes`, `alias_size_in_bytes`,
    and "total" = argument + output + temp − alias. (The CPU backend's `peak_memory_in_bytes`
    leaves the temporaries out, measured: below temp alone, so it is not used.)"""
    stats = jax.jit(f).lower(*args).compile().memory_analysis()
    out = {"temp": stats.temp_size_in_bytes, "argument": stats.argument_size_in_bytes,
           "output": stats.output_size_in_bytes, "alias": stats.alias_size_in_bytes}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def measure(case, T, smoke=False) -> dict:
    """One row: the cache's bytes, and the compiled memory of the fused step (forward + backward
    in one jit, as a training step compiles it) and of the backward alone (cache as an argument:
    what must be live between the two when they are not fused)."""
    params, x, dy = inputs(case, T, smoke)
    layer = case.layer
    step = compiled_bytes(training_step(layer), params, x, dy)
    _, cache = jax.eval_shape(layer.forward, params, x)
    cache_args = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
    backward = compiled_bytes(layer.backward, params, cache_args, dy)
    return {"batch": x.shape[0], "width": x.shape[2], "cache_bytes": cache_bytes(layer, params, x),
            "step": step, "backward": backward}
