"""from_torch: each PyTorch layer's weights in fnnet's layout give the same outputs (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet.convert import from_torch
from oracles import rel_error

torch = pytest.importorskip("torch")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _t(a):
    return torch.tensor(np.asarray(a))


@pytest.mark.parametrize("case", ["Linear", "Linear no bias", "Conv2d", "Conv2d grouped strided", "Embedding",
                                  "LayerNorm", "MultiheadAttention"])
def test_feedforward_layers(case):
    torch.manual_seed(0)
    x = _x((2, 5, 6))
    if case.startswith("Linear"):
        module, layer = torch.nn.Linear(6, 3, bias=case == "Linear"), fnnet.Dense(3)
    elif case == "Conv2d":
        module, layer, x = torch.nn.Conv2d(6, 4, 3, padding=1), fnnet.Conv2D(4, 3), _x((2, 5, 5, 6))
    elif case == "Conv2d grouped strided":
        module, layer, x = (torch.nn.Conv2d(6, 4, (3, 2), stride=2, groups=2),
                            fnnet.Conv2D(4, (3, 2), stride=2, padding="VALID", groups=2), _x((2, 7, 6, 6)))
    elif case == "Embedding":
        module, layer, x = torch.nn.Embedding(7, 3), fnnet.Embedding(7, 3), np.array([[1, 6, 0], [2, 2, 5]])
    elif case == "LayerNorm":
        module, layer = torch.nn.LayerNorm(6), fnnet.LayerNorm()
        with torch.no_grad():
            module.weight.normal_(), module.bias.normal_()
    else:
        module, layer = torch.nn.MultiheadAttention(6, 2, batch_first=True), fnnet.MultiHeadAttention(2)
    module = module.double()
    params = from_torch(module)
    assert jax.tree.structure(params) == jax.tree.structure(layer.init(jax.random.key(0), x.shape[1:])[0])
    y = layer.forward(params, jnp.asarray(x))[0]
    with torch.no_grad():
        if case.startswith("Conv2d"):  # torch is NCHW
            ref = module(_t(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        elif case == "MultiheadAttention":
            ref = module(_t(x), _t(x), _t(x))[0]
        else:
            ref = module(_t(x))
    assert rel_error(y, ref.numpy()) <= 1e-12


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_and_stacks(kind):
    torch.manual_seed(0)
    x = _x((2, 5, 3))
    module = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True).double()
    layer = {"RNN": fnnet.SimpleRNN, "LSTM": fnnet.LSTM, "GRU": fnnet.GRU}[kind]
    stack = fnnet.Sequential(layer(4), layer(4))
    params = from_torch(module)
    assert isinstance(params, list) and len(params) == 2
    y = stack.forward(params, jnp.asarray(x))[0]
    with torch.no_grad():
        ref = module(_t(x))[0]
    assert rel_error(y, ref.numpy()) <= 1e-12
    assert from_torch(module, dtype=np.float32)[0]["Wx"].dtype == jnp.float32


def test_what_has_no_counterpart_is_named():
    with pytest.raises(TypeError, match=r"no fnnet layer for torch.nn.Softmax; expected one of Linear"):
        from_torch(torch.nn.Softmax())
    with pytest.raises(ValueError, match=r"proj_size > 0 has no fnnet counterpart"):
        from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match=r"padding_mode='reflect'\) has no fnnet counterpart"):
        from_torch(torch.nn.Conv2d(2, 2, 3, padding_mode="reflect"))
