"""`--layers SPEC`: a network written on one line, for `fnnet train` and `fnnet gradcheck`.

    conv:16:3:relu,maxpool:2,conv:32:3:relu,gap,dense:10
    conv:16:3,bn,relu,res(conv:16:3,bn,relu,conv:16:3),relu,gap,dense:10
    res(conv:32:3:stride=2,bn,relu|conv:32:1:stride=2),relu      # a projection shortcut after '|'
    embed:64,pos,transformer:4:causal=true,layernorm,dense:104    # on --data text: token ids

The grammar. Items are separated by commas; whitespace anywhere is ignored.

    item  := NAME(":" arg)*  |  "res(" items ["|" items] ")"  |  "seq(" items ")"
    arg   := value  |  key "=" value

| item | layer | arguments, in order (the first ones by position, any by name) |
|---|---|---|
| `conv` | `Conv2D` | n_out, kernel, act, stride, padding, dilation, groups |
| `dense` | `Dense` | n_out, act |
| `maxpool`, `avgpool` | `MaxPool2D`, `AvgPool2D` | window, stride, padding |
| `gap` (`globalavgpool`) | `GlobalAvgPool2D` | |
| `flatten` | `Flatten` | |
| `reshape` | `Reshape` | the per-example shape: `reshape:8:8:1` (one -1 may stand for the rest) |
| `bn` (`batchnorm`) | `BatchNorm` | momentum, eps |
| `layernorm` (`ln`) | `LayerNorm` | axis (one int), eps |
| `dropout` | `Dropout` | rate, the probability of dropping |
| `embed` (`embedding`) | `Embedding` | dim, pad_id; the vocabulary from the token data |
| `pos` (`positional`) | `PositionalEmbedding` | max_len (default: the data's window length), sinusoidal |
| `transformer` | `TransformerBlock` | heads, mlp_ratio, dropout, causal |
| `mha` (`attention`) | `MultiHeadAttention` | heads, causal, dropout, recompute |
| `lstm`, `gru` | `LSTM`, `GRU` | hidden, seq (return_sequences), checkpoint (checkpoint_every) |
| `rnn` | `SimpleRNN` | hidden, act, seq, checkpoint |
| `relu`, `tanh`, ... | `Activation` | an activation's name alone (`fnnet.activations`) |
| `res(...)` | `Residual` | its block, then after `|` an optional shortcut (default: identity) |
| `seq(...)` | `Sequential` | its items |

Required: n_out and kernel of conv, n_out of dense, window of a pool, rate of dropout, the
shape of reshape, dim of embed, heads of transformer and mha, hidden of the recurrent layers.
kernel, stride, dilation and window are an int or rows×columns `3x1`; padding is `same`
(conv's default) or `valid` (the pools' default); act an activation name (default identity, so
`dense:10` gives logits); causal, seq, sinusoidal and recompute `true` or `false`. Names are
case-insensitive.

Token data (`fnnet train --data text`: windows of T character ids) start with `embed`, the
only place it may stand; the sequence layers take `(T, d)` per example, and `dense` acts at
each position of a sequence (on an image it needs `flatten` or `gap` first).

A spec's items are the network's layers; a block of several items is a `Sequential`. Errors
name the item by its position from 1 (`item 4.2` is the second item inside item 4's
parentheses, `item 4|1` the first after its `|`), quote it and say what was expected, e.g.
`--layers item 2 'maxpol:2': unknown layer 'maxpol' (did you mean maxpool?)`.

Which input the data take: images `(H, W, C)` when the first item that cares about the shape
is an image layer (conv, a pool, gap; `bn`, `layernorm`, `dropout`, activations, `flatten` and
`res`/`seq` look inside or pass), flat rows otherwise (`wants_images`).
"""

import difflib
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnnet import activations
from fnnet.layers import (GRU, LSTM, Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten,
                          GlobalAvgPool2D, LayerNorm, MaxPool2D, MultiHeadAttention, PositionalEmbedding, Reshape,
                          Residual, Sequential, SimpleRNN, TransformerBlock)
from fnnet.network import Network

FLAG = "--layers"


# ---------- the values arguments take ----------


class Value(NamedTuple):
    """How one argument is read: `read(text)` (a ValueError when it does not fit) and what it expects."""

    read: Callable[[str], object]
    expected: str


def _int(minimum):
    def read(text):
        n = int(text)
        if n < minimum:
            raise ValueError
        return n
    return Value(read, f"an int ≥ {minimum}")


def _size(text):
    rows, x, columns = text.lower().partition("x")
    pair = (int(rows), int(columns)) if x else (int(rows),) * 2
    if min(pair) < 1:
        raise ValueError
    return pair if x else pair[0]


def _padding(text):
    if text.lower() not in ("same", "valid"):
        raise ValueError
    return text.upper()


def _dim(text):
    n = int(text)
    if n < 1 and n != -1:
        raise ValueError
    return n


def _real(text):
    return float(text)


def _activation(text):
    return activations.get(text.lower())


def _bool(text):
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError
    return value


INT = _int(1)
INT0 = _int(0)
BOOL = Value(_bool, "true or false")
SIZE = Value(_size, "an int ≥ 1 or rows×columns like 3x1")
PADDING = Value(_padding, "same or valid")
ACT = Value(_activation, f"an activation: {', '.join(a.name for a in activations.ALL)}")
REAL = Value(_real, "a number")
DIM = Value(_dim, "an int ≥ 1, or -1 for the rest")
AXIS = Value(int, "an int (a per-example axis; -1 is the last)")


class Param(NamedTuple):
    """One argument of an item: its name in the spec, the layer's field it sets, how it reads."""

    name: str
    field: str
    value: Value
    required: bool = False


class Kind(NamedTuple):
    """One entry of the grammar: the item's names (canonical first), the layer it makes, its
    arguments, the input it takes (`"images"`, `"rows"` or None: any shape), and an example for
    messages."""

    names: tuple
    layer: type
    params: tuple
    takes: "str | None"
    example: str
    variadic: "Value | None" = None  # reshape: every argument is one more dimension
    data: "str | None" = None  # the input it asks of the data when it comes first, if not `takes`
    filled: tuple = ()  # fields the token data fill when the spec leaves them out: "vocab", "max_len"


_POOL = (Param("window", "window", SIZE, True), Param("stride", "stride", SIZE), Param("padding", "padding", PADDING))
KINDS = (
    Kind(("conv", "conv2d"), Conv2D, (
        Param("n_out", "n_out", INT, True), Param("kernel", "kernel", SIZE, True), Param("act", "activation", ACT),
        Param("stride", "stride", SIZE), Param("padding", "padding", PADDING), Param("dilation", "dilation", SIZE),
        Param("groups", "groups", INT)), "images", "conv:16:3"),
    Kind(("dense",), Dense, (Param("n_out", "n_out", INT, True), Param("act", "activation", ACT)), "rows", "dense:10"),
    Kind(("maxpool",), MaxPool2D, _POOL, "images", "maxpool:2"),
    Kind(("avgpool",), AvgPool2D, _POOL, "images", "avgpool:2"),
    Kind(("gap", "globalavgpool"), GlobalAvgPool2D, (), "images", "gap"),
    Kind(("flatten",), Flatten, (), None, "flatten"),
    Kind(("reshape",), Reshape, (), None, "reshape:8:8:1", variadic=DIM, data="rows"),  # rows made images
    Kind(("bn", "batchnorm"), BatchNorm, (Param("momentum", "momentum", REAL), Param("eps", "eps", REAL)),
         None, "bn"),
    Kind(("layernorm", "ln"), LayerNorm, (Param("axis", "axes", AXIS), Param("eps", "eps", REAL)), None, "layernorm"),
    Kind(("dropout",), Dropout, (Param("rate", "rate", REAL, True),), None, "dropout:0.1"),
    Kind(("embed", "embedding"), Embedding, (Param("dim", "dim", INT, True), Param("pad_id", "pad_id", INT0)),
         "tokens", "embed:64", filled=("vocab",)),
    Kind(("pos", "positional"), PositionalEmbedding, (Param("max_len", "max_len", INT),
                                                      Param("sinusoidal", "sinusoidal", BOOL)),
         "sequences", "pos", filled=("max_len",)),
    Kind(("transformer",), TransformerBlock, (
        Param("heads", "n_heads", INT, True), Param("mlp_ratio", "mlp_ratio", INT), Param("dropout", "dropout", REAL),
        Param("causal", "causal", BOOL)), "sequences", "transformer:4:causal=true"),
    Kind(("mha", "attention"), MultiHeadAttention, (
        Param("heads", "n_heads", INT, True), Param("causal", "causal", BOOL), Param("dropout", "dropout", REAL),
        Param("recompute", "recompute", BOOL)), "sequences", "mha:4:causal=true"),
    *(Kind((name,), layer, (Param("hidden", "hidden", INT, True), Param("seq", "return_sequences", BOOL),
                            Param("checkpoint", "checkpoint_every", INT)), "sequences", f"{name}:64")
      for name, layer in (("lstm", LSTM), ("gru", GRU))),
    Kind(("rnn",), SimpleRNN, (Param("hidden", "hidden", INT, True), Param("act", "activation", ACT),
                               Param("seq", "return_sequences", BOOL), Param("checkpoint", "checkpoint_every", INT)),
         "sequences", "rnn:64"),
)
_BY_NAME = {name: kind for kind in KINDS for name in kind.names}
COMBINATORS = ("res", "seq")


class Item(NamedTuple):
    """One parsed item: its name (`"conv"`, `"relu"`, `"res"`, ...), where it is (`"3"`, `"4.2"`,
    `"4|1"`), its text, its layer, the input it asks of the data when it comes first, the input it
    takes ("images", "rows" or None), and for res(...) and seq(...) the items inside (`block`, and
    after `|` the `shortcut`)."""

    name: str
    where: str
    text: str
    layer: object
    data: "str | None"
    takes: "str | None" = None
    block: tuple = ()
    shortcut: tuple = ()


def _fail(where, text, message):
    return ValueError(f"{FLAG} item {where} {text!r}: {message}")


# ---------- parsing ----------


def parse(text: str, tokens: "dict | None" = None) -> tuple:
    """The `Item`s of a spec (see the module docstring), each with its layer built; a one-line
    ValueError naming the first bad item by position otherwise. `tokens`: for token data, what
    `embed` and `pos` take from them, `{"vocab": V, "max_len": T}`.

    >>> [item.layer for item in parse("dense:8:relu, dropout:0.5")]
    [Dense(n_out=8, activation=relu, W_init=lecun_normal, b_init=zeros), Dropout(rate=0.5)]
    """
    text = "".join(text.split())
    if not text:
        raise ValueError(f"{FLAG} is empty; expected layers separated by commas, e.g. "
                         f"{FLAG} conv:16:3:relu,maxpool:2,flatten,dense:10")
    return _items(text, "", tokens)


def _items(text, prefix, tokens):
    return tuple(_item(part, f"{prefix}{i}", tokens) for i, part in enumerate(_split(text, ",", prefix), 1))


def _split(text, separator, prefix):
    """`text` cut at `separator` outside parentheses; a ValueError for an unbalanced one, naming
    the item it is in (`prefix` + its number)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise _fail(f"{prefix}{len(parts) + 1}", text[start:i + 1],
                            "')' closes no '('; expected res(...) or seq(...) around a block")
        elif c == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth > 0:
        raise _fail(f"{prefix}{len(parts) + 1}", text[start:], "'(' is never closed; expected ')' after the block")
    return [*parts, text[start:]]


def _item(text, where, tokens) -> Item:
    if not text:
        raise _fail(where, text, "an empty item; expected a layer between the commas (a doubled or "
                                 "trailing comma?)")
    if "(" in text:
        return _combinator(text, where, tokens)
    if "|" in text:
        raise _fail(where, text, "'|' separates a block from its shortcut inside res(...), e.g. "
                                 "res(conv:16:3:stride=2|conv:16:1:stride=2)")
    name, *args = text.split(":")
    name = name.lower()
    kind = _BY_NAME.get(name)
    if kind is not None:
        return Item(kind.names[0], where, text, _layer(kind, args, where, text, tokens), kind.data or kind.takes,
                    kind.takes)
    try:
        act = activations.get(name)
    except ValueError:
        known = [*_BY_NAME, *COMBINATORS, *(a.name for a in activations.ALL)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _fail(where, text, f"unknown layer {name!r}{hint}; expected one of "
                                 f"{', '.join(k.names[0] for k in KINDS)}, res(...), seq(...), or an "
                                 f"activation ({', '.join(a.name for a in activations.ALL)})") from None
    if args:
        raise _fail(where, text, f"the activation {act.name} takes no arguments; write {act.name} alone")
    return Item(act.name, where, text, Activation(act), None)


def _combinator(text, where, tokens) -> Item:
    match = re.fullmatch(r"(\w+)\((.*)\)", text, re.S)
    if match is None or match.group(1).lower() not in COMBINATORS:
        raise _fail(where, text, "only res(...) and seq(...) take parentheses, with nothing after the ')'; "
                                 "e.g. res(conv:16:3,bn,relu)")
    name, inner = match.group(1).lower(), match.group(2)
    paths = _split(inner, "|", f"{where}.")
    if name == "seq" and len(paths) > 1 or len(paths) > 2:
        raise _fail(where, text, "'|' separates res's block from its shortcut, once: res(block|shortcut)"
                    if name == "res" else "seq(...) takes no '|'; a shortcut belongs in res(block|shortcut)")
    if not paths[0] or len(paths) == 2 and not paths[1]:
        raise _fail(where, text, f"an empty {'shortcut' if paths[0] else 'block'}; expected layers "
                                 f"inside, e.g. res(conv:16:3,bn,relu)")
    block = _items(paths[0], f"{where}.", tokens)
    shortcut = _items(paths[1], f"{where}|", tokens) if len(paths) == 2 else ()
    data = next((item.data for item in block + shortcut if item.data is not None), None)
    layer = (Sequential(*(item.layer for item in block)) if name == "seq"
             else Residual(_one(block), _one(shortcut) if shortcut else None))
    return Item(name, where, text, layer, data, None, block, shortcut)


def _one(items):
    """The layer of a block: its item's own, or a `Sequential` of several."""
    return items[0].layer if len(items) == 1 else Sequential(*(item.layer for item in items))


def _layer(kind, args, where, text, tokens):
    """The layer of `kind` from its `args` (the texts after the name), or a ValueError naming
    the argument that does not fit."""
    names = ", ".join(p.name for p in kind.params)
    takes = (f"{kind.names[0]} takes {names}" if kind.params else f"{kind.names[0]} takes no arguments"
             if kind.variadic is None else f"{kind.names[0]} takes the dimensions, e.g. {kind.example}")
    values, dims, by_name = {}, [], False
    for j, arg in enumerate(args):
        key, equals, value = arg.partition("=")
        if equals:
            by_name = True
            param = next((p for p in kind.params if p.name == key.lower()), None)
            if param is None:
                raise _fail(where, text, f"unknown argument {key!r}; {takes}")
        else:
            value = arg
            if by_name:
                raise _fail(where, text, f"{arg!r} by position after an argument by name; name it too ({takes})")
            if kind.variadic is not None:
                dims.append(_read(kind.variadic, "each dimension", value, where, text))
                continue
            if j >= len(kind.params):
                raise _fail(where, text, f"too many arguments ({len(args)}); {takes}")
            param = kind.params[j]
        if param.field in values:
            raise _fail(where, text, f"{param.name} given twice")
        values[param.field] = _read(param.value, param.name, value, where, text)
    missing = [p.name for p in kind.params if p.required and p.field not in values]
    if missing or kind.variadic is not None and not dims:
        what = " and ".join(missing) or "a shape"
        raise _fail(where, text, f"{kind.names[0]} needs {what}, e.g. {kind.example}")
    if kind.variadic is not None:
        values = {"shape": tuple(dims)}
    for field in kind.filled:
        if field not in values:
            if tokens is None:
                raise _fail(where, text, f"{kind.names[0]} takes its {field} from token data, and only "
                                         f"fnnet train --data text gives them"
                                         + (f"; elsewhere give it, e.g. {kind.names[0]}:64" if field in
                                            (p.field for p in kind.params) else ""))
            values[field] = tokens[field]
    try:
        return kind.layer(**values)
    except ValueError as e:
        raise _fail(where, text, _unnamed(str(e), kind.layer)) from None


def _unnamed(message, cls):
    """A layer's error `message` without the layer's repr it starts with (the item is quoted
    instead): "Dropout(rate=1.5): rate must be ..." → "rate must be ..."."""
    if not message.startswith(cls.__name__ + "("):
        return message
    depth = 0
    for i, c in enumerate(message):
        depth += (c == "(") - (c == ")")
        if depth == 0 and c == ")":
            return message[i + 1:].removeprefix(":").lstrip()
    return message


def _read(value, name, text, where, item):
    try:
        return value.read(text)
    except ValueError:
        raise _fail(where, item, f"{name} must be {value.expected}, got {text!r}") from None


# ---------- building ----------


def wants_images(items) -> bool:
    """Whether the data should come as images: the first item that cares asks for them."""
    return next((item.data for item in items if item.data is not None), None) == "images"


def network(items, in_shape, tokens=False) -> Network:
    """The `Network` of `items` on examples of shape `in_shape` (token ids `(T,)` if `tokens`); a
    ValueError naming the first item that cannot take the shape it gets.

    >>> print(network(parse("conv:4:3,gap,dense:2"), (8, 8, 1)).out_shape)
    (2,)
    >>> print(network(parse("embed:8,lstm:16,dense:5", {"vocab": 5, "max_len": 12}), (12,), tokens=True).out_shape)
    (12, 5)
    """
    first = items[0]
    if tokens and first.name != "embed":
        raise _fail(first.where, first.text, f"the data are token ids (T,) = {tuple(in_shape)} per example; "
                                             f"start the spec with embed:DIM to turn them into vectors")
    for item in walk(items[1:] if tokens else items):
        if item.name == "embed":
            raise _fail(item.where, item.text, "embed reads token ids: it can only be the first item, on "
                                               "fnnet train --data text")
    _shapes(items, tuple(in_shape))
    return Network(tuple(in_shape), tuple(item.layer for item in items))


def walk(items):
    """Every item of `items`, depth first: each, then the items inside its res(...) or seq(...)."""
    for item in items:
        yield item
        yield from walk(item.block + item.shortcut)


def _shapes(items, shape):
    """The output shape of a chain of items on `shape`, item by item, so that an error names
    the innermost item that cannot take its input."""
    for item in items:
        if item.takes == "images" and len(shape) == 1:
            raise _fail(item.where, item.text, f"expects images (H, W, C) per example but gets flat rows "
                                               f"{shape}; put reshape:H:W:C before it (e.g. reshape:8:8:1 "
                                               f"for 8×8 pixels)")
        if item.takes == "images" and len(shape) == 2:
            raise _fail(item.where, item.text, f"expects images (H, W, C) per example but gets sequences "
                                               f"(T, d) = {shape}")
        if item.takes == "rows" and len(shape) == 3:  # on sequences (T, d), dense acts at each position
            raise _fail(item.where, item.text, f"expects flat rows (n,) per example but gets {shape}; put "
                                               f"flatten or gap before it")
        if item.takes == "sequences" and len(shape) != 2:
            raise _fail(item.where, item.text, f"expects sequences (T, d) per example but gets {shape}"
                        + ("; embed token ids first (embed:DIM)" if len(shape) == 1 else ""))
        for path in (item.block, item.shortcut):
            _shapes(path, shape)
        try:
            shape = _out_shape(item.layer, shape)
        except ValueError as e:  # as Network does: without JAX's note on its frames
            message = str(e).split("\n--------------------\n")[0]
            raise _fail(item.where, item.text, _unnamed(message, type(item.layer))) from None
    return shape


def _out_shape(layer, in_shape):
    """The per-example output shape of `layer` on `in_shape`, computed without FLOPs."""
    shapes = []

    def init(key):
        params, shape = layer.init(key, in_shape, jnp.float32)
        shapes.append(tuple(shape))
        return params

    jax.eval_shape(init, jax.random.key(0))
    return shapes[0]


def check_output(net, out_shape, needs):
    """A ValueError unless `net` outputs `out_shape` per example (`(n_out,)`, or `(T, n_out)` for
    token data); `needs` says who asks for it."""
    out_shape = tuple(out_shape)
    if net.out_shape != out_shape:
        n_out = out_shape[-1]
        ending = (f"dense:{n_out}" if len(net.out_shape) == len(out_shape)
                  else f"flatten,dense:{n_out} (or gap,dense:{n_out})" if len(out_shape) == 1
                  else f"sequences to the end (seq=true on lstm, gru, rnn) and dense:{n_out}")
        raise ValueError(f"{FLAG}: the last layer outputs {net.out_shape} per example; {needs} needs "
                         f"{out_shape}: end the spec with {ending}")


def locate(items, path) -> "Item | None":
    """The item that made the layer at `path` in the network (`"[3]['block'][0]"`, as the layer
    check names it), or None if no single item did.

    >>> locate(parse("conv:4:3,res(conv:4:3,relu|conv:4:1)"), "[1]['block'][1]").where
    '2.2'
    """
    chain, item = items, None  # chain: the items an index picks from
    for key in re.findall(r"\[(\d+|'[^']*')\]", path):
        if key.isdigit():
            if chain is None or int(key) >= len(chain):
                return None
            item = chain[int(key)]
        elif item is not None and key.strip("'") in ("block", "shortcut"):
            part = getattr(item, key.strip("'"))
            if not part:
                return None
            if len(part) > 1:  # several items: a Sequential, which an index picks from next
                chain = part
                continue
            item = part[0]
        else:
            return None
        chain = item.block if item.name == "seq" else None
    return item


def blame(items, report) -> "str | None":
    """"the broken layer is --layers item 2.1 'conv:16:3'" for a failed `check_grads` report of
    the network of `items`, or None when it names no layer."""
    culprit = None if report.layers is None else report.layers.culprit
    item = None if culprit is None else locate(items, culprit.path)
    return None if item is None else f"the broken layer is {FLAG} item {item.where} {item.text!r}"
