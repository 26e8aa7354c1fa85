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
