"""`fnnet predict`: apply a checkpoint of `fnnet train` to new rows.

The rows are read as in training (the label column optional), standardised with the
training statistics the checkpoint holds, shaped as the network takes its input (rows of 64
pixels as (8, 8, 1) images for a network trained on digits as images), and each gets one
prediction, printed as the label it had in the training file (or the value, for regression).
A network with BatchNorm predicts with the running statistics the checkpoint holds. When the
rows carry labels, the loss and accuracy on them go to stderr.
"""

import argparse
import json
import sys

import numpy as np

from fnnet import datasets, losses
from fnnet.checkpoint import load
from fnnet.inference import evaluate, predict


def add_parser(commands):
    command = commands.add_parser(
        "predict", help="predict new rows with a checkpoint of fnnet train",
        description="Read rows in the training file's format (the label column optional), apply the "
                    "checkpoint's standardisation and network, and print one prediction per row.")
    command.add_argument("--checkpoint", required=True, metavar="FILE",
                         help="a .fnnet file written by fnnet train --save, e.g. run/best.fnnet")
    command.add_argument("--data", required=True, type=_data_file, metavar="FILE",
                         help="a .csv or .npz file with the training features (the label column optional)")
    command.add_argument("--json", action="store_true",
                         help="print a JSON list, one object per row: the label and each class's probability "
                              "(or the value, for regression)")
    command.set_defaults(run=run, subparser=command)


def run(args, parser) -> int:
    try:
        try:
            ckpt = load(args.checkpoint)
        except (ValueError, OSError) as e:
            raise ValueError(f"--checkpoint {args.checkpoint}: {e}") from None
        meta = ckpt.metadata.get("run")
        if meta is None or ckpt.net is None:
            raise ValueError(f"--checkpoint {args.checkpoint}: no run description in it (it was not written "
                             f"by fnnet train --save); in Python, use fnnet.predict")
        described, loss = meta["data"], losses.get(meta["resolved"]["loss"])
        if described["source"] == "text":
            raise ValueError(f"--checkpoint {args.checkpoint}: a language model of fnnet train --data text; "
                             f"fnnet predict reads rows of features. Draw text from it in Python: "
                             f"fnnet.generate(ckpt.net, ckpt.params, prompt_ids, length, key=...)")
        regression = described["task"] == "regression"
        d = described["d"]
        data = datasets.from_file(args.data, task=described["task"], n_features=d)
        if data.X.shape[1] != d:
            raise ValueError(f"--data {args.data}: rows have {data.X.shape[1]} features; the checkpoint "
                             f"was trained on {d}")
        _check_features(args.data, data.features, described["features"])
        X = (np.asarray(data.X) - meta["mean"][None]) / meta["std"][None]
        X = X.reshape(len(X), *ckpt.net.in_shape)  # the image shape, for a network trained on images
        y = None if data.y is None else _targets(args.data, data, described, loss)
    except (ValueError, TypeError, ImportError, OSError) as e:
        parser.error(str(e))

    net, params, state = ckpt.net, ckpt.params, ckpt.state
    names = described["classes"] or [str(i) for i in range(described["n_classes"] or 0)]
    if regression:
        rows = [{"value": float(v)} for v in predict(net, params, X, state=state)[:, 0]]
    else:
        if loss.probabilities_fn is None:  # e.g. mean squared error on one-hot labels: the largest output
            rows = [{"label": names[k]} for k in predict(net, params, X, state=state).argmax(1)]
        else:
            p = predict(net, params, X, loss=loss, output="probabilities", state=state)
            p = np.c_[1 - p, p] if p.shape[1] == 1 else p  # binary: P(class 0), P(class 1)
            rows = [{"label": names[k], "probabilities": dict(zip(names, map(float, pk)))}
                    for k, pk in zip(p.argmax(1), p)]
    if args.json:
        print("[\n" + ",\n".join(map(json.dumps, rows)) + "\n]")  # valid JSON, one row per line
    else:
        print("\n".join(str(row["value" if regression else "label"]) for row in rows))
    if y is not None:
        scores = evaluate(net, params, (X, y), loss, state=state)
        print(f"{args.data}: {len(X)} labelled rows: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
              file=sys.stderr)
    return 0


def _data_file(text):
    if text.endswith(datasets.FILE_SUFFIXES):
        return text
    raise argparse.ArgumentTypeError(f"expected a {' or '.join(datasets.FILE_SUFFIXES)} file, got {text!r}")


def _check_features(source, now, then):
    if now is None or then is None or list(now) == list(then):
        return
    column = next(i for i, (a, b) in enumerate(zip(now, then)) if a != b)
    raise ValueError(f"--data {source}: column {column + 1} is {now[column]!r}; the checkpoint was trained "
                     f"with {then[column]!r} there (columns {', '.join(then)})")


def _targets(source, data, described, loss):
    """The rows' labels as the loss's targets, by the training file's label names."""
    if described["task"] == "regression":
        return np.asarray(data.y)[:, None]
    n_classes, trained = described["n_classes"], described["classes"]
    if trained is None and data.classes is None:
        labels = np.asarray(data.y)
    else:
        index = {name: i for i, name in enumerate(trained or map(str, range(n_classes)))}
        names = data.classes or [str(i) for i in range(data.n_classes)]
        unknown = sorted(set(names[k] for k in np.unique(np.asarray(data.y))) - set(index))
        if unknown:
            raise ValueError(f"--data {source}: label {unknown[0]!r} was not a class in training "
                             f"(classes {', '.join(index)})")
        labels = np.array([index[names[k]] for k in np.asarray(data.y)], np.int32)
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"--data {source}: label {labels.max()} is not one of the {n_classes} classes "
                         f"the checkpoint was trained on")
    return loss.from_labels(labels, n_classes)
