"""`fnnet train`: train a network from flags and keep checkpoints that hold the whole run.

The network is an MLP (`--hidden`, `--sizes`, `--activation`) or any stack of fnnet's layers
written as `--layers SPEC` (see `fnnet.cli.spec`). A dataset whose rows are images (digits:
`image_shape` (8, 8, 1)) is given to a spec as images when its first layer that cares is an
image layer (conv, a pool, gap), as flat rows otherwise; standardisation is per pixel either way.
A network with BatchNorm trains with its state, which the checkpoints keep; Dropout draws its
masks from the run's seed.

`--data text` trains a character-level language model instead: windows of `--context`
character ids of Python's documentation (`fnnet.text`) in order, the text's end held out, a
`--layers` network starting with `embed` (by default a causal Transformer), bits per character
in the results and a sample drawn with `fnnet.generate`.

The data are split three ways (stratified for classification): training, validation
(`--val-fraction`, which monitors, selects `best.fnnet` and stops early with `--patience`) and
test (`--test-fraction`, evaluated once, at the end, on the selected model). Features are
standardised with the training rows' statistics. A checkpoint's metadata["run"] holds the
flags, the schedule's horizon, the standardisation, the label names and a description of the
data, so `--resume DIR` alone continues the run and `fnnet predict` applies it to raw rows.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import __version__, activations, datasets, losses, parallel, text
from fnnet.checkpoint import load, save
from fnnet.cli import spec
from fnnet.cli.flags import check_writable_dir, dataset_name, ints, layers, names
from fnnet.cli.progress import Progress
from fnnet.gradcheck import check_grads
from fnnet.inference import evaluate, generate, predict
from fnnet.network import mlp
from fnnet.train import GRAD_MODES, DivergenceError, fit

DEFAULTS = {
    "data": "digits", "layers": None, "sizes": None, "hidden": [64], "activation": "relu", "loss": None,
    "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "warmup": 0, "weight_decay": None,
    "epochs": 100, "batch_size": None, "seed": 0, "grad": "backprop",
    "test_fraction": 0.2, "val_fraction": 0.1, "patience": None, "context": None,
}
"""The run's configuration, which a checkpoint keeps and `--resume` restores (None: chosen from the data)."""
TEXT = "text"
"""--data text: a character-level language model on Python's documentation (`fnnet.text`)."""
TEXT_DEFAULTS = {"epochs": 10, "lr": 3e-3, "schedule": "cosine", "batch_size": 32, "test_fraction": 0.1,
                 "val_fraction": 0.05, "context": 64}
"""What --data text changes of DEFAULTS: the held-out part is the text's last 15%, its last 10% the test."""
PROMPT = "The "
"""--data text: the start of the sample drawn after training."""
MLP_FLAGS = ("sizes", "hidden", "activation")
"""The flags that describe an MLP, which --layers replaces."""
MAY_CHANGE = ("epochs", "patience")
"""What a resumed run may set anew: to extend it, or to stop it sooner or later."""
OPTIMIZERS = {
    "sgd": optax.sgd,
    "momentum": lambda rate: optax.sgd(rate, momentum=0.9),
    "adam": optax.adam,
    "adamw": optax.adamw,
}
SCHEDULES = ("constant", "cosine")


def add_parser(commands):
    d = DEFAULTS
    train = commands.add_parser(
        "train", help="train an MLP or a --layers network on a dataset, with a gradient check first",
        description="Train an MLP, or any network of fnnet's layers written as --layers SPEC, with "
                    "fnnet: gradient check, fused epochs, validation-based model selection and early "
                    "stopping, test metrics once at the end. Bad flags exit 2 before anything trains.")
    arg = train.add_argument
    arg("--data", type=dataset_name, metavar="NAME|FILE",
        help=f"{', '.join(datasets.NAMES)} (default {d['data']}), or a .npz (X, y) or .csv file "
             f"(features, then the label: class names or numbers; real-valued targets with "
             f"--loss mean_squared_error; separated by , ; or tab), or text: a character-level "
             f"language model on Python's own documentation (its last 10%% the test set, reported in "
             f"bits per character; by default a causal Transformer: {_text_spec('V')}; "
             f"--epochs {TEXT_DEFAULTS['epochs']}, --lr {TEXT_DEFAULTS['lr']}, --schedule cosine, --batch-size "
             f"{TEXT_DEFAULTS['batch_size']})")
    arg("--context", type=int, metavar="T",
        help=f"with --data text: characters per window, the model's context (default {TEXT_DEFAULTS['context']})")
    arg("--layers", type=layers, metavar="SPEC|@FILE",
        help="the network as comma-separated layers instead of an MLP, e.g. "
             "conv:16:3:relu,maxpool:2,flatten,dense:10 or @spec.txt: conv:N:K[:act][:stride=S]"
             "[:padding=valid][:dilation=D][:groups=G], dense:N[:act], maxpool:K[:S], avgpool:K[:S], gap, "
             "flatten, reshape:H:W:C, bn, layernorm, dropout:RATE, an activation alone (relu, ...), "
             "res(BLOCK[|SHORTCUT]), seq(...); images for digits when the first shape-specific layer "
             "is conv/pool/gap")
    arg("--sizes", type=ints, nargs="+",
        help="all layer widths, n_in first and n_out last (default: from --hidden and the data)")
    arg("--hidden", type=ints, nargs="+", help="hidden widths when --sizes is not given (default 64)")
    arg("--activation", type=_canonical(activations.get),
        help=f"hidden activation: {names(activations.ALL)} (default {d['activation']})")
    arg("--loss", type=_canonical(losses.get),
        help=f"{names(losses.ALL)}, or bce, mse (default: sigmoid_binary_cross_entropy for 2 "
             f"classes, else softmax_cross_entropy_with_integer_labels)")
    arg("--optimizer", choices=sorted(OPTIMIZERS), help=f"(default {d['optimizer']})")
    arg("--lr", type=float, help=f"peak learning rate (default {d['lr']})")
    arg("--schedule", choices=SCHEDULES,
        help="learning rate over the run: constant, or cosine decay to 0 at the last epoch (default constant)")
    arg("--warmup", type=int, metavar="EPOCHS", help="epochs of linear warm-up from 0 to --lr (default 0)")
    arg("--weight-decay", type=float,
        help="decoupled in adamw (default 1e-4, optax's), added to the gradient in sgd, momentum and "
             "adam (default 0); weights only, never biases")
    arg("--epochs", type=int, help=f"(default {d['epochs']}); with --resume, a larger value extends the run")
    arg("--batch-size", type=int,
        help="examples per step, 0 for full batch (default: all examples when ≤ 64, else the largest "
             "size in 32..64 dividing the training set, so no row sits out an epoch, else 64)")
    arg("--seed", type=int, help=f"seed of the split, initialisation and shuffling (default {d['seed']})")
    arg("--grad", choices=GRAD_MODES, help=f"(default {d['grad']})")
    arg("--test-fraction", type=float,
        help=f"of all rows, held out and evaluated once at the end (default {d['test_fraction']})")
    arg("--val-fraction", type=float,
        help=f"of all rows, held out to monitor, select best.fnnet and stop early; 0 for none "
             f"(default {d['val_fraction']})")
    arg("--patience", type=int, metavar="EPOCHS",
        help="stop when the validation loss has not improved for this many epochs (default: never)")
    arg("--log-every", type=int, metavar="EPOCHS",
        help="report progress, check the validation loss and save every this many epochs (default epochs/20)")
    arg("--no-gradcheck", action="store_true", help="skip the gradient check before training")
    arg("--plot", metavar="FILE.png", help="save loss/accuracy curves (needs matplotlib)")
    arg("--json", action="store_true", help="print the results as JSON on stdout (the rest goes to stderr)")
    arg("--save", metavar="DIR",
        help="keep DIR/latest.fnnet and DIR/best.fnnet (lowest validation loss); default with --resume DIR: DIR")
    arg("--resume", metavar="DIR|FILE",
        help="continue bit-identically from DIR/latest.fnnet (or a .fnnet file), with its configuration")
    arg("--devices", type=int, metavar="N",
        help="train data-parallel over N devices (on a CPU-only machine, N simulated ones)")
    train.set_defaults(run=run, subparser=train)


def _canonical(get):
    """An argparse type: the canonical name of a registry entry (so `bce` and its full name agree)."""
    def name(text):
        try:
            return get(text).name
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _flag(name) -> str:
    return "--" + name.replace("_", "-")


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# ---------- the run: data, network, optimizer ----------


class Run(NamedTuple):
    """Everything a training run is built from, and `meta`, what its checkpoints keep of it."""

    net: object
    loss: object
    optimizer: object
    train: tuple
    val: "tuple | None"
    test: tuple
    batch: int
    k_init: object
    k_fit: object
    meta: dict
    items: "tuple | None" = None  # the --layers spec's items (None: an MLP), to name a broken layer by


def prepare(flags, horizon, devices=1) -> Run:
    """The run of `flags` (see DEFAULTS); ValueError naming the flag on a bad combination.

    `horizon`: epochs the learning-rate schedule spans (a resumed run keeps its own)."""
    k_data, k_split, k_init, k_fit = jax.random.split(jax.random.key(flags["seed"]), 4)
    if flags["data"] == TEXT:
        net, loss, (train, val, test), items, description = _text(flags)
        sizes, mean, std = None, None, None
    else:
        net, loss, (train, val, test), items, description, sizes, (mean, std) = _features(flags, k_data, k_split)
    n = len(train[0])
    batch = (_default_batch(n, devices) if flags["batch_size"] is None else n if flags["batch_size"] == 0
             else flags["batch_size"])
    if not 1 <= batch <= n:
        raise ValueError(f"--batch-size must be in [1, {n}] (the training examples) or 0, got {batch}")
    decay = flags["weight_decay"] if flags["weight_decay"] is not None else 1e-4 if flags["optimizer"] == "adamw" else 0.0
    optimizer = _optimizer(flags, decay, n // batch, horizon)
    resolved = flags | {"loss": loss.name, "sizes": sizes, "batch_size": batch, "weight_decay": decay,
                        "layers": flags["layers"] or (_text_spec(description["n_classes"]) if flags["data"] == TEXT
                                                      else None)}
    meta = {"flags": flags, "resolved": resolved, "horizon": horizon, "data": description,
            "mean": mean, "std": std, "fnnet": __version__}
    return Run(net, loss, optimizer, train, val, test, batch, k_init, k_fit, meta, items)


def _text_spec(vocab):
    """--data text's network when --layers gives none: a small causal Transformer."""
    return (f"embed:64,pos,transformer:4:causal=true,transformer:4:causal=true,layernorm,dense:{vocab}")


def _text(flags):
    """(net, loss, (train, val, test), items, description) of --data text: windows of --context
    character ids of Python's documentation (`fnnet.text.python_docs`), in order: the text's last
    --test-fraction the test set, the --val-fraction before it the validation set, the rest the
    training set, whose characters are the vocabulary (plus one unknown symbol)."""
    loss = losses.get(flags["loss"] or "softmax_cross_entropy_with_integer_labels")
    if loss is not losses.softmax_cross_entropy_with_integer_labels:
        raise ValueError(f"--loss {loss.name}: --data text predicts each next character, one of the vocabulary's "
                         f"ids: use softmax_cross_entropy_with_integer_labels (the default)")
    T, held = flags["context"], flags["test_fraction"] + flags["val_fraction"]
    corpus = text.python_docs(held_out=held)
    cut = round(len(corpus.held_out) * flags["val_fraction"] / held)

    def windows(name, ids):  # a part too short for one window is the error of the flag that sized it
        try:
            return text.windows(ids, T)
        except ValueError as e:
            raise ValueError(f"{_flag(name)} {flags[name]}: {e}") from None

    parts = (windows("context", corpus.train),
             windows("val_fraction", corpus.held_out[:cut]) if flags["val_fraction"] else None,
             windows("test_fraction", corpus.held_out[cut:]))
    items = spec.parse(flags["layers"] or _text_spec(corpus.vocab), {"vocab": corpus.vocab, "max_len": T})
    net = spec.network(items, (T,), tokens=True)
    spec.check_output(net, (T, corpus.vocab), f"{loss.name} on text ({corpus.vocab} symbols at each position)")
    _check_causal(items)
    description = {"source": TEXT, "task": "next character", "n": len(corpus.train) + len(corpus.held_out),
                   "d": T, "n_classes": corpus.vocab, "classes": list(corpus.chars), "features": None,
                   "sha256": None}
    return net, loss, parts, items, description


def _check_causal(items):
    """ValueError naming the first attention item that looks ahead: on text it would see the
    very character it predicts."""
    for item in spec.walk(items):
        if getattr(item.layer, "causal", True) is False:
            raise ValueError(f"{spec.FLAG} item {item.where} {item.text!r}: attends to later positions, whose "
                             f"characters it is to predict; on --data text write causal=true, e.g. "
                             f"{item.name}:{item.layer.n_heads}:causal=true")


def _features(flags, k_data, k_split):
    """(net, loss, (train, val, test), items, description, sizes, (mean, std)) of a dataset of
    feature rows (or images): see `prepare`."""
    is_file = flags["data"].endswith(datasets.FILE_SUFFIXES)
    loss = flags["loss"] and losses.get(flags["loss"])
    regression = is_file and loss is losses.mean_squared_error
    items = None if flags["layers"] is None else spec.parse(flags["layers"])  # fails before loading data
    data = datasets.load(flags["data"], k_data, **({"task": "regression"} if regression else {}))
    if loss is None:
        loss = losses.get("sigmoid_binary_cross_entropy" if data.n_classes == 2
                          else "softmax_cross_entropy_with_integer_labels")
    train, val, test = _split(data, flags, k_split, stratify=not regression)
    if data.name == "xor":  # the textbook's 4 points, unscaled
        mean, std = np.zeros(data.X.shape[1], np.float32), np.ones(data.X.shape[1], np.float32)
    else:
        _, _, (mean, std) = datasets.standardize(train[0], train[0][:1])
        mean, std = np.asarray(mean[0]), np.asarray(std[0])

    def prepared(part):
        X, y = part
        return (X - mean[None]) / std[None], (y[:, None] if regression else loss.from_labels(y, data.n_classes))

    train, test = prepared(train), prepared(test)
    val = None if val is None else prepared(val)
    n_out = 1 if regression else data.n_classes if train[1].ndim == 1 else train[1].shape[-1]
    d = data.X.shape[1]
    if items is not None:
        sizes = None
        images = spec.wants_images(items) and data.image_shape is not None
        net = spec.network(items, data.image_shape if images else (d,))
        spec.check_output(net, (n_out,), f"{loss.name} on {flags['data']}"
                          + (" (one real-valued target)" if regression else f" ({data.n_classes} classes)"))
    else:
        if flags["sizes"]:
            sizes = flags["sizes"]
            if sizes[0] != d or sizes[-1] != n_out:
                raise ValueError(f"--sizes {_show(sizes)} does not fit {flags['data']}: it has {d} features "
                                 f"and needs {n_out} outputs for {loss.name}; e.g. --sizes {d},64,{n_out}")
        else:
            sizes = [d, *flags["hidden"], n_out]
        net = mlp(sizes, activation=flags["activation"], W_init="he_normal")
    # Standardised as rows (per pixel), then shaped as the network takes them: (n, 8, 8, 1) for images.
    parts = tuple(None if part is None else (part[0].reshape(len(part[0]), *net.in_shape), part[1])
                  for part in (train, val, test))
    description = {
        "source": flags["data"], "task": "regression" if regression else "classification",
        "n": int(data.X.shape[0]), "d": d, "n_classes": data.n_classes,
        "classes": None if data.classes is None else list(data.classes),
        "features": None if data.features is None else list(data.features),
        "sha256": _sha256(flags["data"]) if is_file else None,
    }
    return net, loss, parts, items, description, sizes, (mean, std)


def _split(data, flags, key, stratify):
    """(train, val or None, test) pairs of host arrays: test_fraction and val_fraction of all rows."""
    everything = (np.asarray(data.X), np.asarray(data.y))
    if data.name == "xor":  # 4 points, all needed: trained and evaluated on all, as the textbook
        return everything, (everything if flags["val_fraction"] else None), everything
    k_test, k_val = jax.random.split(key)
    try:
        rest, test = datasets.split(everything, k_test, flags["test_fraction"], stratify=stratify)
    except ValueError as e:
        raise ValueError(f"--test-fraction {flags['test_fraction']}: {e}") from None
    if not flags["val_fraction"]:
        return rest, None, test
    try:
        train, val = datasets.split(rest, k_val, flags["val_fraction"] / (1 - flags["test_fraction"]),
                                    stratify=stratify)
    except ValueError as e:
        raise ValueError(f"--val-fraction {flags['val_fraction']}: {e}") from None
    return train, val, test


def _default_batch(n, devices):
    """All n when n ≤ 64; else the largest batch in 32..64 (a multiple of `devices`) dividing n, else 64."""
    if n <= 64:
        return n
    sizes = [b for b in range(64, 31, -1) if b % devices == 0] or [devices]
    return next((b for b in sizes if n % b == 0), sizes[0])


def _optimizer(flags, decay, steps, horizon):
    """The optax optimizer: `steps` per epoch, the schedule spanning `horizon` epochs."""
    lr, warmup, total = flags["lr"], flags["warmup"] * steps, max(1, horizon * steps)
    if flags["schedule"] == "cosine":
        rate = (optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total) if warmup
                else optax.cosine_decay_schedule(lr, total))
    else:
        rate = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    if flags["optimizer"] == "adamw":
        return optax.adamw(rate, weight_decay=decay, mask=_weights)
    base = OPTIMIZERS[flags["optimizer"]](rate)
    return optax.chain(optax.add_decayed_weights(decay, _weights), base) if decay else base


def _weights(params):
    """True at each layer's "W", False at its "b": weight decay leaves biases alone."""
    return jax.tree.map_with_path(lambda path, _: getattr(path[-1], "key", None) == "W", params)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------- checking the flags, before anything trains ----------


def _check(flags, args):
    """ValueError naming the first bad flag (the ones that need no data)."""
    f = flags
    mlp_flags = [name for name in MLP_FLAGS if getattr(args, name) is not None]
    if f["layers"] is not None and mlp_flags:
        raise ValueError(f"--layers gives the whole network, and {_flag(mlp_flags[0])} describes an MLP: "
                         f"give one or the other (an MLP as a spec: --layers dense:64:relu,dense:10)")
    if f["data"] == TEXT and mlp_flags:
        raise ValueError(f"{_flag(mlp_flags[0])} describes an MLP on rows of features; --data text trains a "
                         f"network on windows of characters: give it as --layers (default {_text_spec('V')}, "
                         f"V the vocabulary)")
    if f["context"] is not None and (f["data"] != TEXT or f["context"] < 1):
        raise ValueError(f"--context is the window length of --data text, an int ≥ 1; got --context "
                         f"{f['context']} with --data {f['data']}")
    if not (f["lr"] > 0 and np.isfinite(f["lr"])):
        raise ValueError(f"--lr must be a positive number, got {f['lr']}")
    if f["epochs"] < 1:
        raise ValueError(f"--epochs must be ≥ 1, got {f['epochs']}")
    if not 0 <= f["warmup"] < f["epochs"]:
        raise ValueError(f"--warmup must be in [0, --epochs) = [0, {f['epochs']}), got {f['warmup']}")
    if f["weight_decay"] is not None and not (f["weight_decay"] >= 0 and np.isfinite(f["weight_decay"])):
        raise ValueError(f"--weight-decay must be ≥ 0, got {f['weight_decay']}")
    if f["batch_size"] is not None and f["batch_size"] < 0:
        raise ValueError(f"--batch-size must be ≥ 1, or 0 for full batch, got {f['batch_size']}")
    if not 0 < f["test_fraction"] < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {f['test_fraction']}")
    if not 0 <= f["val_fraction"] < 1 - f["test_fraction"]:
        raise ValueError(f"--val-fraction must be in [0, 1 − --test-fraction) = [0, {1 - f['test_fraction']:g}), "
                         f"got {f['val_fraction']}")
    if f["patience"] is not None:
        if f["patience"] < 1:
            raise ValueError(f"--patience must be ≥ 1 epochs, got {f['patience']}")
        if not f["val_fraction"]:
            raise ValueError("--patience stops on the validation loss and needs a validation set: "
                             "--val-fraction > 0")
    if args.log_every is not None and args.log_every < 1:
        raise ValueError(f"--log-every must be ≥ 1, got {args.log_every}")
    if args.plot:
        _check_plot(args.plot)


def _check_plot(path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'fnnet[plot]'") from None
    kinds = Figure().canvas.get_supported_filetypes()
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in kinds:
        raise ValueError(f"--plot {path}: unknown image type {suffix!r}; expected one of {', '.join(sorted(kinds))}")
    check_writable_dir("--plot", os.path.dirname(path) or ".")


def _resume_file(path):
    file = os.path.join(path, "latest.fnnet") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ValueError(f"--resume {path}: no checkpoint there; expected the directory given to --save "
                         f"(holding latest.fnnet) or a .fnnet file")
    return file


def _resumed(saved, given, where):
    """The saved run's flags with `given` applied; ValueError if one contradicts the run."""
    flags, resolved = DEFAULTS | saved["flags"], DEFAULTS | saved["resolved"]  # a flag added since: its default
    for name, value in given.items():
        if name not in MAY_CHANGE and value not in (flags[name], resolved[name]):
            raise ValueError(
                f"{_flag(name)} {_show(value)} contradicts {where}, trained with "
                f"{_flag(name)} {_show(resolved[name])}; a resumed run keeps its configuration (only "
                f"{' and '.join(map(_flag, MAY_CHANGE))} may change): drop {_flag(name)}, or start a new run")
    return flags | {name: given[name] for name in MAY_CHANGE if name in given}


# ---------- the command ----------


def run(args, parser) -> int:
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    for name in ("sizes", "hidden"):
        if name in given:
            given[name] = [n for group in given[name] for n in group]
    say = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print
    try:
        if args.devices is not None and args.devices < 1:
            raise ValueError(f"--devices must be ≥ 1, got {args.devices}")
        mesh = None if args.devices is None else _mesh(args.devices)  # before any other JAX work
        saved, resumed_from = None, None
        if args.resume:
            resumed_from = _resume_file(args.resume)
            try:
                saved = load(resumed_from).metadata
            except (ValueError, OSError) as e:
                raise ValueError(f"--resume {args.resume}: {e}") from None
            if "run" not in saved:
                raise ValueError(f"--resume {args.resume}: {resumed_from} holds no run configuration "
                                 f"(it was not written by fnnet train)")
            flags = _resumed(saved["run"], given, resumed_from)
            horizon = saved["run"]["horizon"]
            if flags["schedule"] == "cosine" and flags["epochs"] > horizon:
                raise ValueError(f"--epochs {flags['epochs']} runs past the end of the cosine schedule of "
                                 f"{resumed_from} (epoch {horizon}, where the learning rate reaches 0): "
                                 f"start a new run with --epochs {flags['epochs']}")
            if saved["epoch"] >= flags["epochs"]:
                raise ValueError(f"--resume {args.resume} is already at epoch {saved['epoch']} ≥ --epochs "
                                 f"{flags['epochs']}: pass a larger --epochs to extend it")
            args.save = args.save or os.path.dirname(os.path.abspath(resumed_from))
        else:
            flags = DEFAULTS | (TEXT_DEFAULTS if given.get("data") == TEXT else {}) | given
        _check(flags, args)
        if args.save:
            check_writable_dir("--save", args.save)
            latest = os.path.join(args.save, "latest.fnnet")
            if os.path.exists(latest) and not (resumed_from and _same_dir(resumed_from, args.save)):
                raise ValueError(f"--save {args.save}: {latest} holds an earlier run; continue it with "
                                 f"--resume {args.save}, or choose another directory")
        run = prepare(flags, saved["run"]["horizon"] if saved else flags["epochs"],
                      1 if mesh is None else mesh.size)
        if saved:
            _check_same_data(run.meta["data"], saved["run"]["data"], resumed_from)
        if mesh is not None:
            parallel.check_batch("--devices", mesh, run.batch)
    except (ValueError, TypeError, ImportError, OSError) as e:
        parser.error(str(e))

    net, loss, optimizer, train, val, test = run[:6]
    params = net.init(run.k_init)
    state = net.init_state() if net.has_state else None  # BatchNorm's running statistics
    opt_state = optimizer.init(params)
    say(net)
    n = len(train[0])
    rows = "windows" if flags["data"] == TEXT else "rows"
    split = (f"{n} training, {0 if val is None else len(val[0])} validation, {len(test[0])} test {rows}"
             + (f" of {net.in_shape[0]} characters" if flags["data"] == TEXT else ""))
    say(f"{flags['data']}: {split}" + ("" if flags["data"] != "xor" else " (all 4 points for each)"))
    if n % run.batch:
        print(f"note: batch size {run.batch} leaves {n % run.batch} of the {n} training {rows} out of each "
              f"epoch (a different few each epoch); a size dividing {n} uses them all", file=sys.stderr)
    if mesh is not None:
        say(f"data-parallel over {mesh.size} {mesh.devices.flat[0].platform} devices, "
            f"{run.batch // mesh.size} examples per device per step")
    report = None
    if args.no_gradcheck:
        say("gradient check skipped (--no-gradcheck)")
    else:
        n_check = min(4 if flags["data"] == TEXT else 32, n)  # 4 windows: 256 characters
        report = check_grads(net, params, train[0][:n_check], train[1][:n_check], loss)
        say(f"gradient check ({n_check} examples, float64): {report.message}")
        if not report.ok:
            say(report)
            blamed = None if run.items is None else spec.blame(run.items, report)
            if blamed:
                say(blamed)
            return 1

    history, start, best = {}, 0, None  # best: (epoch, val_loss, params, state) at a chunk end
    if saved:
        try:
            ckpt = load(resumed_from, net=net, optimizer=optimizer)
        except (ValueError, OSError) as e:
            parser.error(f"--resume {args.resume}: {e}")
        params, opt_state, state = ckpt.params, ckpt.opt_state, ckpt.state
        start, history = saved["epoch"], {k: np.asarray(v) for k, v in saved["history"].items()}
        best = _saved_best(saved, resumed_from, net, params, state)
        say(f"resumed from {resumed_from} at epoch {start}")
    chunk = args.log_every or max(1, flags["epochs"] // 20)
    saved_epoch = start if saved and args.save and _same_dir(resumed_from, args.save) else None
    started, timed, stopped = time.perf_counter(), [], None  # timed: (epochs, seconds) per chunk
    progress = Progress(start, flags["epochs"])
    epoch = start
    while epoch < flags["epochs"]:
        if flags["patience"] and best and epoch - best[0] >= flags["patience"]:
            stopped = epoch
            break
        length = min(chunk, flags["epochs"] - epoch)
        began = time.perf_counter()
        try:
            out = fit(net, params, train, loss, optimizer, epochs=length, batch_size=run.batch, key=run.k_fit,
                      grad=flags["grad"], validation=val, opt_state=opt_state, initial_epoch=epoch,
                      return_opt_state=True, mesh=mesh, state=state)
            params, opt_state, h = out[:3]
            state = out[3] if net.has_state else None
        except DivergenceError as e:
            progress.close()
            where = ("" if not args.save else "; no checkpoint was saved before it" if saved_epoch is None
                     else f"; the last good checkpoint is {os.path.join(args.save, 'latest.fnnet')} "
                          f"(epoch {saved_epoch})")
            print(f"fnnet train: training diverged: the loss or the parameters became non-finite at epoch "
                  f"{e.epoch}, step {e.step}; try a lower --lr (now {flags['lr']}){where}", file=sys.stderr)
            return 1
        timed.append((length, time.perf_counter() - began))
        history = {k: np.concatenate([history.get(k, np.zeros(0)), v]) for k, v in h.items()}
        epoch += length
        progress.update(epoch, history)
        improved = val is not None and (best is None or history["val_loss"][-1] < best[1])
        if improved:
            best = (epoch, float(history["val_loss"][-1]), params, state)
        if args.save:
            meta = {"epoch": epoch, "history": {k: v.tolist() for k, v in history.items()},
                    "best": None if best is None else {"epoch": best[0], "val_loss": best[1]}, "run": run.meta}
            save(os.path.join(args.save, "latest.fnnet"), params, opt_state, net=net, metadata=meta, state=state)
            saved_epoch = epoch
            if improved:
                save(os.path.join(args.save, "best.fnnet"), params, opt_state, net=net, metadata=meta, state=state)
    progress.close()
    if stopped is not None:
        say(f"stopped early at epoch {stopped}: the validation loss has not improved for "
            f"{stopped - best[0]} epochs (--patience {flags['patience']})")
    # per-epoch time after compilation: the full-length chunks after the first (which compiled)
    steady_chunks = [(k, s) for k, s in timed[1:] if k == chunk] or timed or [(1, np.nan)]
    steady = sum(s for _, s in steady_chunks) / sum(k for k, _ in steady_chunks)
    selected, selected_state = (params, state) if best is None else best[2:]
    parts = {"train": train, "validation": val, "test": test}
    results = {
        "data": flags["data"], "layers": flags["layers"], "sizes": run.meta["resolved"]["sizes"],
        "in_shape": list(net.in_shape), "loss_name": loss.name,
        **{k: run.meta["resolved"][k] for k in ("optimizer", "lr", "schedule", "warmup", "weight_decay",
                                                  "epochs", "batch_size", "grad", "seed")},
        "devices": 1 if mesh is None else mesh.size,
        "gradcheck_ok": None if report is None else report.ok,
        "selected_epoch": epoch if best is None else best[0], "stopped_early_at": stopped,
        **{part: {k: float(v) for k, v in evaluate(net, selected, data, loss, state=selected_state).items()}
           for part, data in parts.items() if data is not None},
        "seconds_total": time.perf_counter() - started, "seconds_per_epoch": steady,
    }
    if flags["data"] == TEXT:
        for part in parts:
            if part in results:
                results[part]["bits_per_char"] = results[part]["loss"] / np.log(2)
        corpus = text.Corpus(None, None, tuple(run.meta["data"]["classes"]))
        ids = generate(net, selected, corpus.encode(PROMPT), 200, key=jax.random.fold_in(run.k_init, 1),
                       temperature=0.8, state=selected_state)
        results["sample"] = corpus.decode(ids)
    if args.plot:
        _plot(args.plot, history, net, selected, selected_state, flags, train)
        results["plot"] = args.plot
        say(f"plot written to {args.plot}")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if best is not None:
            print(f"selected epoch {best[0]} of {epoch} (lowest validation loss, {best[1]:.4f})")
        for part in parts:
            if part in results:
                print(f"{part}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[part].items()))
        print(f"{results['seconds_per_epoch'] * 1e3:.2f} ms per epoch after compilation, "
              f"{results['seconds_total']:.1f} s in all")
        if "sample" in results:
            print(f"sample (temperature 0.8):\n{results['sample']}")
    return 0


def _mesh(n):
    """A data mesh of n devices; on CPU, n simulated ones if JAX has not started yet."""
    try:
        jax.config.update("jax_num_cpu_devices", n)  # CPU backend only; must precede any JAX op
    except RuntimeError:
        pass  # JAX already started (fnnet called in-process): use the devices it has
    return parallel.data_mesh(n)


def _same_dir(file, directory):
    return os.path.samefile(os.path.dirname(os.path.abspath(file)), directory)


def _check_same_data(now, then, where):
    for key in then:
        if now[key] != then[key]:
            raise ValueError(f"--resume: the data are not those {where} was trained on: its {key} was "
                             f"{then[key]}, now {now[key]}")


def _saved_best(saved, resumed_from, net, params, state):
    """(epoch, val_loss, params, state) of the resumed run's best model: its best.fnnet if beside it."""
    if saved.get("best") is None:
        return None
    epoch, value = saved["best"]["epoch"], saved["best"]["val_loss"]
    path = os.path.join(os.path.dirname(resumed_from), "best.fnnet")
    if os.path.isfile(path):
        try:
            ckpt = load(path, net=net)
            if ckpt.metadata.get("epoch") == epoch:
                return epoch, value, ckpt.params, ckpt.state
        except (ValueError, OSError):
            pass
    return saved["epoch"], float(saved["history"]["val_loss"][-1]), params, state  # best.fnnet gone: anew


def _plot(path, history, net, params, state, flags, train):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two_d = net.in_shape == (2,)
    fig, axes = plt.subplots(1, 3 if two_d else 2, figsize=(15 if two_d else 10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], label="train")
        if "val_" + metric in history:
            ax.plot(epochs, history["val_" + metric], label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=metric, yscale="log" if metric == "loss" else "linear")
        if ax.lines:
            ax.legend()
    if two_d:
        X, y = np.asarray(train[0]), np.asarray(train[1])
        lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        out = predict(net, params, jnp.asarray(np.c_[gx.ravel(), gy.ravel()], jnp.float32), state=state)
        z = (out[:, 0] > 0) if out.shape[1] == 1 else out.argmax(1)
        axes[2].contourf(gx, gy, z.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
        labels = y.reshape(len(y), -1).argmax(1) if y.ndim > 1 and y.shape[1] > 1 else y.ravel()
        axes[2].scatter(X[:, 0], X[:, 1], c=labels, s=8, cmap="coolwarm")
        scale = "" if flags["data"] == "xor" else " (standardised)"
        axes[2].set(title="decision boundary (training data)", xlabel=f"feature 1{scale}",
                    ylabel=f"feature 2{scale}")
    fig.suptitle(f"fnnet train --data {flags['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
