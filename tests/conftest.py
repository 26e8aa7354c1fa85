"""Test configuration: float64 available everywhere, implicit rank promotion an error, and
XLA's backend optimisation off in the test processes.

Float32 tests build float32 arrays explicitly; with x64 on, any silent promotion
to float64 inside fnnet shows up as a dtype mismatch.

The tests compile thousands of small programs and run each a few times, so compiling is
most of their time, and XLA:CPU's backend optimisation (LLVM's) most of compiling:
`--xla_backend_optimization_level=0` halves the time of the compile-bound tests. It
applies to this process only: the examples, benchmarks and commands that tests start as
subprocesses run as a user runs them (the variable is restored once JAX has read it).
"""

import os

_XLA_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS or ''} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Start the backend now, with JAX's default devices (one on CPU): `fnnet train --devices N` run
# in-process must then find the device count fixed, whichever test runs first.
jax.devices()
if _XLA_FLAGS is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _XLA_FLAGS


import contextlib

import pytest


def pytest_collection_modifyitems(items):
    """The tests marked heavy first, so that under xdist no core is left idle at the end
    while another finishes a long test it picked up last."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)

_compile_events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: _compile_events.append(event) if event.endswith("backend_compile_duration") else None)


@pytest.fixture
def compiles():
    """`with compiles() as n: ...` then `n()`: how many XLA programs were compiled inside."""
    @contextlib.contextmanager
    def count():
        start = len(_compile_events)
        yield lambda: len(_compile_events) - start
    return count
