"""fnnet: purely functional neural networks on JAX, with hand-written, verified backprop."""

from fnnet import activations, datasets, initializers, layers, losses, parallel, testing
from fnnet.backprop import backprop
from fnnet.checkpoint import Checkpoint, load, save
from fnnet.gradcheck import GradCheckReport, check_grads
from fnnet.inference import evaluate, predict
from fnnet.layercheck import check_layer, check_layers
from fnnet.layers import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                          LayerNorm, MaxPool2D, Reshape, Residual, Sequential)
from fnnet.network import Network, mlp
from fnnet.train import DivergenceError, RecompileWarning, fit, fit_ensemble, per_example_grads, train_step

__all__ = [
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Checkpoint",
    "Conv2D",
    "Dense",
    "DivergenceError",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "GradCheckReport",
    "LayerNorm",
    "MaxPool2D",
    "Network",
    "RecompileWarning",
    "Reshape",
    "Residual",
    "Sequential",
    "activations",
    "backprop",
    "check_grads",
    "check_layer",
    "check_layers",
    "datasets",
    "evaluate",
    "fit",
    "fit_ensemble",
    "initializers",
    "layers",
    "load",
    "losses",
    "mlp",
    "parallel",
    "per_example_grads",
    "predict",
    "save",
    "testing",
    "train_step",
]
__version__ = "0.1.0"
