"""fnnet: purely functional neural networks on JAX, with hand-written, verified backprop."""

from fnnet import activations, datasets, initializers, layers, losses, parallel, testing, text
from fnnet.backprop import backprop
from fnnet.checkpoint import Checkpoint, load, save
from fnnet.convert import from_torch
from fnnet.gradcheck import GradCheckReport, check_grads
from fnnet.inference import evaluate, generate, predict
from fnnet.interop import as_jax_function
from fnnet.layercheck import check_layer, check_layers
from fnnet.layers import (GRU, LSTM, Activation, AvgPool2D, BatchNorm, Bidirectional, Conv2D, Dense, Dropout,
                          Embedding, Flatten, GlobalAvgPool2D, LayerNorm, MaxPool2D, MultiHeadAttention,
                          PositionalEmbedding, Reshape, Residual, Sequential, SimpleRNN, TransformerBlock)
from fnnet.network import Network, mlp
from fnnet.train import DivergenceError, RecompileWarning, fit, fit_ensemble, per_example_grads, train_step

__all__ = [
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Bidirectional",
    "Checkpoint",
    "Conv2D",
    "Dense",
    "DivergenceError",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GlobalAvgPool2D",
    "GradCheckReport",
    "LSTM",
    "LayerNorm",
    "MaxPool2D",
    "MultiHeadAttention",
    "Network",
    "PositionalEmbedding",
    "RecompileWarning",
    "Reshape",
    "Residual",
    "Sequential",
    "SimpleRNN",
    "TransformerBlock",
    "activations",
    "as_jax_function",
    "backprop",
    "check_grads",
    "check_layer",
    "check_layers",
    "datasets",
    "evaluate",
    "fit",
    "fit_ensemble",
    "from_torch",
    "generate",
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
    "text",
    "train_step",
]
__version__ = "0.1.0"
