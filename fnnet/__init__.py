"""fnnet: purely functional neural networks on JAX, with hand-written, verified backprop."""

from fnnet import activations, initializers, layers, losses, testing
from fnnet.backprop import backprop
from fnnet.gradcheck import GradCheckReport, check_grads
from fnnet.layers import Activation, Dense
from fnnet.network import Network, mlp

__all__ = [
    "Activation",
    "Dense",
    "GradCheckReport",
    "Network",
    "activations",
    "backprop",
    "check_grads",
    "initializers",
    "layers",
    "losses",
    "mlp",
    "testing",
]
__version__ = "0.1.0"
