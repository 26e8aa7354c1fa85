"""Elementwise activations f, each carried with its derivative f′.

An `Activation` is a static, hashable value: safe as a `jax.jit` static argument
and printed by its name. `f` comes from `jax.nn` where JAX has it, and `f′` is
written out by hand, following JAX's convention at kinks (relu′(0) = 0,
leaky_relu′(0) = 1, elu′(0) = α), so that backprop equals `jax.grad` everywhere.

Pick one by name (`"relu"`) or pass the object (`fnnet.activations.relu`). Your
own activation is `Activation("name", f, df)` with `f`, `df` elementwise
functions of `z`; keyword hyper-parameters go in `params`:

    >>> from fnnet.activations import leaky_relu
    >>> leaky_relu.replace(negative_slope=0.2)
    leaky_relu(negative_slope=0.2)
"""

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._registry import resolve


@dataclass(frozen=True)
class Activation:
    """An elementwise function and its derivative.

    Attributes:
      name: printed name.
      fn: `f(z, **params) -> a`, elementwise.
      derivative: `f′(z, **params)`, elementwise, same shape and dtype as `z`.
      params: hyper-parameters as `((name, value), ...)`, so the value stays hashable.
    """

    name: str
    fn: Callable
    derivative: Callable
    params: tuple[tuple[str, float], ...] = ()

    def __call__(self, z):
        """a = f(z); any shape."""
        return self.fn(_inexact(z), **dict(self.params))

    def grad(self, z):
        """f′(z); same shape as `z`."""
        return self.derivative(_inexact(z), **dict(self.params))

    def backward(self, z, da):
        """∂L/∂z = f′(z) ⊙ ∂L/∂a; `z` and `da` of the same shape."""
        return self.grad(z) * da

    def replace(self, **params) -> "Activation":
        """The same activation with other hyper-parameters, e.g. `elu.replace(alpha=0.5)`."""
        unknown = set(params) - {k for k, _ in self.params}
        if unknown:
            raise TypeError(
                f"activation {self.name!r} has no hyper-parameter {sorted(unknown)}; "
                f"it takes {[k for k, _ in self.params]}"
            )
        merged = dict(self.params) | params
        return Activation(self.name, self.fn, self.derivative, tuple(merged.items()))

    @property
    def is_builtin(self) -> bool:
        """Whether this is one of fnnet's activations (any hyper-parameter values), so that its
        name and params rebuild it: `get(name).replace(**params)`, as a checkpoint does."""
        known = _BY_NAME.get(self.name)
        return (known is not None and [k for k, _ in known.params] == [k for k, _ in self.params]
                and known.replace(**dict(self.params)) == self)

    def __repr__(self):
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.params)})"


def _inexact(z):
    """`z` as a JAX array of a floating dtype (integers become the default float)."""
    z = jnp.asarray(z)
    if jnp.issubdtype(z.dtype, jnp.inexact):
        return z
    return z.astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _identity(z):
    return z


def _d_identity(z):
    return jnp.ones_like(z)


def _d_relu(z):
    return (z > 0).astype(z.dtype)


def _d_leaky_relu(z, negative_slope):
    return jnp.where(z >= 0, 1.0, negative_slope).astype(z.dtype)


def _d_elu(z, alpha):
    return jnp.where(z > 0, 1.0, alpha * jnp.exp(jnp.minimum(z, 0))).astype(z.dtype)


def _d_sigmoid(z):
    # σ(z)σ(−z) rather than σ(1 − σ): no cancellation for large |z|.
    return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


def _d_tanh(z):
    return 1 - jnp.tanh(z) ** 2


def _d_silu(z):
    # d/dz zσ(z) = σ(z) + zσ(z)σ(−z)
    s = jax.nn.sigmoid(z)
    return s * (1 + z * jax.nn.sigmoid(-z))


_SQRT_2_OVER_PI = np.sqrt(2 / np.pi)
_GELU_C = 0.044715


def _gelu_tanh(z):
    return jax.nn.gelu(z, approximate=True)


def _d_gelu_tanh(z):
    # f = ½z(1 + t), t = tanh(u), u = √(2/π)(z + c z³)
    c = _SQRT_2_OVER_PI.astype(z.dtype)
    t = jnp.tanh(c * (z + _GELU_C * z**3))
    du = c * (1 + 3 * _GELU_C * z**2)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * du


def _gelu_exact(z):
    return jax.nn.gelu(z, approximate=False)


def _d_gelu_exact(z):
    # f = zΦ(z)  ⇒  f′ = Φ(z) + zφ(z)
    phi = jnp.exp(-0.5 * z**2) / np.sqrt(2 * np.pi).astype(z.dtype)
    return jax.scipy.special.ndtr(z) + z * phi


def _elu(z, alpha):
    return jax.nn.elu(z, alpha)


def _leaky_relu(z, negative_slope):
    return jax.nn.leaky_relu(z, negative_slope)


identity = Activation("identity", _identity, _d_identity)
relu = Activation("relu", jax.nn.relu, _d_relu)
leaky_relu = Activation("leaky_relu", _leaky_relu, _d_leaky_relu, (("negative_slope", 0.01),))
elu = Activation("elu", _elu, _d_elu, (("alpha", 1.0),))
sigmoid = Activation("sigmoid", jax.nn.sigmoid, _d_sigmoid)
tanh = Activation("tanh", jnp.tanh, _d_tanh)
softplus = Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
silu = Activation("silu", jax.nn.silu, _d_silu)
gelu = Activation("gelu", _gelu_tanh, _d_gelu_tanh)
gelu_exact = Activation("gelu_exact", _gelu_exact, _d_gelu_exact)

ALL = (identity, relu, leaky_relu, elu, sigmoid, tanh, softplus, silu, gelu, gelu_exact)
_BY_NAME = {a.name: a for a in ALL} | {"linear": identity, "swish": silu}


# JAX's own functions, with their default hyper-parameters, stand for fnnet's.
_BY_FUNCTION = {
    jax.nn.identity: identity, jax.nn.relu: relu, jax.nn.leaky_relu: leaky_relu,
    jax.nn.elu: elu, jax.nn.sigmoid: sigmoid, jnp.tanh: tanh,
    jax.nn.softplus: softplus, jax.nn.silu: silu, jax.nn.gelu: gelu,
}


def get(activation: "str | Activation | Callable") -> Activation:
    """The `Activation` named by `activation` (or `activation` itself).

    Names: identity (alias linear), relu, leaky_relu, elu, sigmoid, tanh,
    softplus, silu (alias swish), gelu (tanh approximation, as `jax.nn.gelu`),
    gelu_exact (erf form). JAX's functions stand for themselves: `jax.nn.relu`,
    `jnp.tanh`, `jax.nn.gelu`, ... Any other function needs its derivative:
    wrap it as `Activation(name, f, df)`.
    """
    if callable(activation) and not isinstance(activation, Activation):
        try:
            return _BY_FUNCTION[activation]
        except (KeyError, TypeError):
            pass
    return resolve(activation, _BY_NAME, "activation", Activation)
