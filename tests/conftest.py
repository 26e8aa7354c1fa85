"""Test configuration: float64 available everywhere, implicit rank promotion an error.

Float32 tests build float32 arrays explicitly; with x64 on, any silent promotion
to float64 inside fnnet shows up as a dtype mismatch.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Start the backend now, with JAX's default devices (one on CPU): `fnnet train --devices N` run
# in-process must then find the device count fixed, whichever test runs first.
jax.devices()


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
