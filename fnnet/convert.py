"""PyTorch weights in fnnet's layouts, to port a trained model or compare with one.

`from_torch(module)` reads a `torch.nn` layer's weights (without importing torch: anything
with its attributes will do) and returns the params of the matching fnnet layer:

| torch                      | fnnet                  | params                                                         |
|----------------------------|------------------------|----------------------------------------------------------------|
| `Linear(n_in, n_out)`      | `Dense(n_out)`         | `{"W": weight.T, "b": bias}`                                   |
| `Conv2d(C, O, k)`          | `Conv2D(O, k)`         | `{"W": weight` OIHW → HWIO`, "b": bias}`                       |
| `Embedding(vocab, dim)`    | `Embedding(vocab, dim)`| `{"W": weight}`                                                |
| `RNN(n_in, h)` (tanh/relu) | `SimpleRNN(h)`         | `{"Wx": weight_ih.T, "Wh": weight_hh.T, "b": bias_ih + bias_hh}` |
| `LSTM(n_in, h)`            | `LSTM(h)`              | the same, gates (i, f, g, o) in PyTorch's order                |
| `GRU(n_in, h)`             | `GRU(h)`               | `{"Wx": weight_ih.T, "Wh": weight_hh.T, "bx": bias_ih, "bh": bias_hh}`, gates (r, z, n) |
| `LayerNorm(d)`             | `LayerNorm()`          | `{"gamma": weight, "beta": bias}`                              |
| `MultiheadAttention(d, h)` | `MultiHeadAttention(h)`| `{"Wq": W_q.T, ..., "bq": b_q, ...}` from `in_proj_weight`, `out_proj` |

fnnet multiplies `x W` with W `(n_in, n_out)`, so its matrices are PyTorch's transposed; a
missing bias (`bias=False`) becomes zeros. A recurrent module of `num_layers` > 1 gives a list,
one entry per layer (`Sequential` of that many fnnet layers); a bidirectional one
`{"forward": ..., "backward": ...}` for `Bidirectional`.
"""

import numpy as np
import jax.numpy as jnp


def _array(t, dtype):
    a = t.detach().cpu().numpy()
    return jnp.asarray(a if dtype is None else a.astype(dtype))


def _bias(module, name, n, dtype):
    b = getattr(module, name, None)
    return _array(b, dtype) if b is not None else jnp.zeros((n,), dtype or np.float32)


def _recurrent(module, kind, dtype):
    if getattr(module, "proj_size", 0):
        raise ValueError("from_torch: an LSTM with proj_size > 0 has no fnnet counterpart")
    directions = ("", "_reverse") if module.bidirectional else ("",)
    layers = []
    for layer in range(module.num_layers):
        per_direction = []
        for suffix in directions:
            get = lambda name: getattr(module, f"{name}_l{layer}{suffix}", None)  # noqa: E731
            Wx, Wh = _array(get("weight_ih"), dtype), _array(get("weight_hh"), dtype)
            b_ih, b_hh = get("bias_ih"), get("bias_hh")
            zeros = jnp.zeros((Wx.shape[0],), Wx.dtype)
            b_ih = zeros if b_ih is None else _array(b_ih, dtype)
            b_hh = zeros if b_hh is None else _array(b_hh, dtype)
            if kind == "GRU":
                per_direction.append({"Wx": Wx.T, "Wh": Wh.T, "bx": b_ih, "bh": b_hh})
            else:
                per_direction.append({"Wx": Wx.T, "Wh": Wh.T, "b": b_ih + b_hh})
        layers.append(per_direction[0] if len(per_direction) == 1
                      else {"forward": per_direction[0], "backward": per_direction[1]})
    return layers[0] if len(layers) == 1 else layers


def from_torch(module, dtype=None):
    """The fnnet params of a PyTorch layer (see the module docstring for the table).

    Args:
      module: a `torch.nn.Linear`, `Conv2d`, `Embedding`, `RNN`, `LSTM`, `GRU`, `LayerNorm` or
        `MultiheadAttention` (told apart by its class name).
      dtype: the params' dtype; default the module's.

    Returns:
      The params tree of the fnnet layer named in the table.
    """
    kind = type(module).__name__
    if kind == "Linear":
        return {"W": _array(module.weight, dtype).T, "b": _bias(module, "bias", module.out_features, dtype)}
    if kind == "Conv2d":
        if module.padding_mode != "zeros":
            raise ValueError(f"from_torch: Conv2d(padding_mode={module.padding_mode!r}) has no fnnet counterpart; "
                             f"fnnet pads with zeros")
        return {"W": jnp.transpose(_array(module.weight, dtype), (2, 3, 1, 0)),
                "b": _bias(module, "bias", module.out_channels, dtype)}
    if kind == "Embedding":
        return {"W": _array(module.weight, dtype)}
    if kind in ("RNN", "LSTM", "GRU"):
        return _recurrent(module, kind, dtype)
    if kind == "LayerNorm":
        return {"gamma": _array(module.weight, dtype), "beta": _array(module.bias, dtype)}
    if kind == "MultiheadAttention":
        if not module._qkv_same_embed_dim:
            raise ValueError("from_torch: MultiheadAttention with kdim or vdim ≠ embed_dim has no fnnet counterpart")
        d = module.embed_dim
        W = _array(module.in_proj_weight, dtype)
        b = (_array(module.in_proj_bias, dtype) if module.in_proj_bias is not None
             else jnp.zeros((3 * d,), W.dtype))
        params = {}
        for i, name in enumerate("qkv"):
            params[f"W{name}"], params[f"b{name}"] = W[i * d:(i + 1) * d].T, b[i * d:(i + 1) * d]
        params["Wo"], params["bo"] = _array(module.out_proj.weight, dtype).T, _bias(module.out_proj, "bias", d, dtype)
        return {k: params[k] for k in sorted(params)}
    raise TypeError(f"from_torch: no fnnet layer for torch.nn.{kind}; expected one of Linear, Conv2d, Embedding, "
                    f"RNN, LSTM, GRU, LayerNorm, MultiheadAttention")
