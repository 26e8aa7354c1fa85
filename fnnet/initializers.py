"""Weight initializers: `init(key, shape, dtype) -> array`, from explicit keys only.

For a weight of shape `(n_in, n_out)`, fan_in = n_in and fan_out = n_out.

| name             | distribution                                   |
|------------------|------------------------------------------------|
| `textbook`       | 0.1 · N(0, 1), as the textbook's `SimpleNN`     |
| `glorot_uniform` | U(±√(6 / (fan_in + fan_out)))   (alias xavier_uniform) |
| `glorot_normal`  | N(0, 2 / (fan_in + fan_out))    (alias xavier_normal)  |
| `he_uniform`     | U(±√(6 / fan_in))               (alias kaiming_uniform) |
| `he_normal`      | N(0, 2 / fan_in)                (alias kaiming_normal)  |
| `lecun_normal`   | N(0, 1 / fan_in)                               |
| `normal`         | N(0, 1), as PyTorch's `nn.Embedding`           |
| `zeros`          | 0                                              |

The Glorot/He/LeCun "normal" variants are truncated at two standard deviations
and rescaled to keep the stated variance, as in `jax.nn.initializers`.
"""

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from fnnet._registry import resolve


@dataclass(frozen=True)
class Initializer:
    """A named initializer: a static, hashable value printed by its name.

    Attributes:
      name: printed name.
      fn: `fn(key, shape, dtype) -> array of that shape and dtype`.
    """

    name: str
    fn: Callable

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.fn(key, shape, dtype)

    @property
    def is_builtin(self) -> bool:
        """Whether this is one of fnnet's initializers, so that `get(name)` rebuilds it."""
        return _BY_NAME.get(self.name) is self

    def __repr__(self):
        return self.name


def _textbook(key, shape, dtype):
    return 0.1 * jax.random.normal(key, shape, dtype)


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _zeros(key, shape, dtype):
    del key
    return jnp.zeros(shape, dtype)


textbook = Initializer("textbook", _textbook)
glorot_uniform = Initializer("glorot_uniform", jax.nn.initializers.glorot_uniform())
glorot_normal = Initializer("glorot_normal", jax.nn.initializers.glorot_normal())
he_uniform = Initializer("he_uniform", jax.nn.initializers.he_uniform())
he_normal = Initializer("he_normal", jax.nn.initializers.he_normal())
lecun_normal = Initializer("lecun_normal", jax.nn.initializers.lecun_normal())
normal = Initializer("normal", _normal)
zeros = Initializer("zeros", _zeros)

ALL = (textbook, glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal, normal, zeros)
_BY_NAME = {i.name: i for i in ALL} | {
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "kaiming_uniform": he_uniform,
    "kaiming_normal": he_normal,
}


def get(initializer: "str | Initializer") -> Initializer:
    """The `Initializer` named by `initializer` (or `initializer` itself)."""
    return resolve(initializer, _BY_NAME, "initializer", Initializer)
