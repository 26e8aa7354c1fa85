"""Layers: static descriptions with pure init, forward and backward functions.

Every layer is a frozen (hashable) dataclass; see `fnnet.layers.base` for the protocol
(three methods for a stateless layer, two more for one with state or randomness). A layer
describes itself for a checkpoint by its dataclass fields, so a class registered with
`register` is saved and rebuilt by `fnnet.save(..., net=...)` and `fnnet.load` with no code
of its own.

| module | layers |
|---|---|
| `dense` | `Dense`, `Activation` |
| `combinators` | `Sequential`, `Residual` |
| `conv` | `Conv2D` |
| `normalization` | `BatchNorm`, `LayerNorm` |
| `dropout` | `Dropout` |
| `embedding` | `Embedding` |
| `pooling` | `MaxPool2D`, `AvgPool2D`, `GlobalAvgPool2D` |
| `recurrent` | `SimpleRNN`, `LSTM`, `GRU` |
| `bidirectional` | `Bidirectional` |
| `attention` | `MultiHeadAttention` |
| `positional` | `PositionalEmbedding` |
| `transformer` | `TransformerBlock` |
| `shape` | `Flatten`, `Reshape` |
"""

from fnnet.layers.attention import MultiHeadAttention
from fnnet.layers.base import TYPES, Layer, register
from fnnet.layers.bidirectional import Bidirectional
from fnnet.layers.combinators import Residual, Sequential
from fnnet.layers.conv import Conv2D
from fnnet.layers.dense import SMALL_LAYER, Activation, Dense
from fnnet.layers.dropout import Dropout
from fnnet.layers.embedding import Embedding
from fnnet.layers.normalization import BatchNorm, LayerNorm
from fnnet.layers.positional import PositionalEmbedding
from fnnet.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fnnet.layers.recurrent import GRU, LSTM, SimpleRNN
from fnnet.layers.shape import Flatten, Reshape
from fnnet.layers.transformer import TransformerBlock

__all__ = ["GRU", "LSTM", "TYPES", "Activation", "AvgPool2D", "BatchNorm", "Bidirectional", "Conv2D", "Dense", "Dropout", "Embedding",
           "Flatten", "GlobalAvgPool2D", "Layer", "LayerNorm", "MaxPool2D", "MultiHeadAttention", "PositionalEmbedding",
           "Reshape", "Residual", "SMALL_LAYER", "Sequential", "SimpleRNN", "TransformerBlock", "register"]
