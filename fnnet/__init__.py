"""fnnet: purely functional neural networks on JAX, with hand-written, verified backprop."""

from fnnet import activations, initializers, layers, losses
from fnnet.backprop import backprop
from fnnet.layers import Activation, Dense
from fnnet.network import Network, mlp

__all__ = [
    "Activation",
    "Dense",
    "Network",
    "activations",
    "backprop",
    "initializers",
    "layers",
    "losses",
    "mlp",
]
__version__ = "0.1.0"
