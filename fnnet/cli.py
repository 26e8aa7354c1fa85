"""The `fnnet` command line (also `python -m fnnet`).

    fnnet train [--data digits] [--hidden 64] [--optimizer adam] [--lr 1e-3] [--epochs 100] ...
    fnnet gradcheck [--sizes 4 8 3] [--activation tanh] [--loss mse] [--dtype float64] ...
    fnnet gradcheck --all

Exit status: 0 when every check passes, 1 when one fails, 2 for bad arguments.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import activations, datasets, losses, parallel
from fnnet.checkpoint import load, save
from fnnet.gradcheck import check_grads, random_batch
from fnnet.network import mlp
from fnnet.train import DivergenceError, GRAD_MODES, fit, metrics

OPTIMIZERS = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": optax.adam,
    "adamw": optax.adamw,
}


def _ints(text):
    """'2,4,1' or '2' → [2, 4, 1] / [2] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,4,1, got {text!r}") from None


def _dataset_name(text):
    """A name in datasets.NAMES or a .npz/.csv path (argparse type)."""
    if text in datasets.NAMES or text.endswith(datasets.FILE_SUFFIXES):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; expected one of {', '.join(datasets.NAMES)}, "
                                     f"or a {' or '.join(datasets.FILE_SUFFIXES)} file")


def _parser():
    parser = argparse.ArgumentParser(prog="fnnet", description="fnnet: functional neural networks on JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "gradcheck",
        help="check fnnet's hand-written backprop against jax.grad and finite differences",
        description="Build a network from flags, check fnnet.backprop against jax.grad and "
                    "float64 finite differences on random data, and print the report.",
    )
    check.add_argument("--sizes", type=_ints, nargs="+", default=[[4, 8, 8, 3]],
                       help="layer widths, n_in first: 4 8 3 or 4,8,3 (default 4 8 8 3)")
    check.add_argument("--activation", default="tanh",
                       help="hidden activation, or one per hidden layer: relu,tanh (default tanh)")
    check.add_argument("--output-activation", default="identity")
    check.add_argument("--loss", default="softmax_cross_entropy_with_integer_labels",
                       help="loss name (default softmax_cross_entropy_with_integer_labels)")
    check.add_argument("--init", default="lecun_normal", help="weight initializer (default lecun_normal)")
    check.add_argument("--batch", type=int, default=16, help="examples (default 16)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    check.add_argument("--directions", type=int, default=4, help="random directions per leaf (default 4)")
    check.add_argument("--elementwise", action="store_true", help="finite differences on every element too")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--all", action="store_true",
                       help="sweep every activation × loss on the network and print one row each")
    check.set_defaults(run=gradcheck, subparser=check)

    train = commands.add_parser(
        "train", help="train an MLP on a dataset, with a gradient check first",
        description="Train an MLP with fnnet: gradient check, fused epochs, test metrics.")
    train.add_argument("--data", default="digits", type=_dataset_name, metavar="NAME|FILE",
                       help=f"{', '.join(datasets.NAMES)} (default digits), or a .npz (X, y) or .csv "
                            f"(features, then the label) file")
    train.add_argument("--sizes", type=_ints, nargs="+",
                       help="all layer widths, n_in first and n_out last (default: from --hidden and the data)")
    train.add_argument("--hidden", type=_ints, nargs="+", default=[[64]],
                       help="hidden widths when --sizes is not given (default 64)")
    train.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    train.add_argument("--loss", default=None,
                       help="default: sigmoid_binary_cross_entropy for 2 classes, else "
                            "softmax_cross_entropy_with_integer_labels")
    train.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=None,
                       help="0 for full batch (default 64, or all examples when fewer)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--grad", choices=GRAD_MODES, default="backprop")
    train.add_argument("--test-fraction", type=float, default=0.2)
    train.add_argument("--plot", metavar="FILE.png", help="save loss/accuracy curves (needs matplotlib)")
    train.add_argument("--json", action="store_true", help="print the results as JSON")
    train.add_argument("--save", metavar="DIR", help="keep DIR/latest.fnnet and DIR/best.fnnet (lowest test loss)")
    train.add_argument("--resume", metavar="DIR", help="continue from DIR/latest.fnnet, bit-identically")
    train.add_argument("--devices", type=int, metavar="N",
                       help="train data-parallel over N devices (on a CPU-only machine, N simulated ones)")
    train.set_defaults(run=train_command, subparser=train)
    return parser


def _check_one(args, activation, loss):
    sizes = [n for group in args.sizes for n in group]
    activation = activation.split(",") if "," in activation else activation
    net = mlp(sizes, activation=activation, output_activation=args.output_activation, W_init=args.init)
    if args.batch < 1:
        raise ValueError(f"--batch must be ≥ 1, got {args.batch}")
    kp, kd = jax.random.split(jax.random.key(args.seed))
    params = net.init(kp)
    X, y = random_batch(kd, net, loss, args.batch)
    return net, check_grads(net, params, X, y, loss, dtype=args.dtype, directions=args.directions,
                            elementwise=args.elementwise, key=jax.random.key(args.seed))


def gradcheck(args, parser) -> int:
    try:
        if not args.all:
            net, report = _check_one(args, args.activation, args.loss)
            print(report.to_json(indent=2) if args.json else f"{net}\n{report}")
            return 0 if report.ok else 1
        rows = []
        for act in activations.ALL:
            for loss in losses.ALL:
                _, report = _check_one(args, act.name, loss.name)
                rows.append((act.name, loss.name, report))
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps([dict(activation=a, loss=l, **r.to_dict()) for a, l, r in rows], indent=2))
    else:
        width = max(len(loss.name) for loss in losses.ALL)
        print(f"{'activation':<12}{'loss':<{width + 2}}{'max rel err':<13}{'fd max err':<12}result")
        for act, loss, report in rows:
            rel = max(leaf.max_rel_error for leaf in report.leaves)
            fd = max(leaf.fd_max_error for leaf in report.leaves)
            result = "ok" if report.ok else f"FAIL: {report.message}"
            print(f"{act:<12}{loss:<{width + 2}}{rel:<13.1e}{fd:<12.1e}{result}")
        failed = sum(not r.ok for _, _, r in rows)
        print(f"{len(rows) - failed}/{len(rows)} activation × loss pairs pass ({args.dtype})")
    return 0 if all(r.ok for _, _, r in rows) else 1


def _prepare(args):
    """(net, loss, optimizer, train, test) from the flags; ValueError on a bad combination."""
    if args.lr <= 0 or not np.isfinite(args.lr):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be ≥ 1, got {args.epochs}")
    key = jax.random.key(args.seed)
    k_data, k_split, k_init, k_fit = jax.random.split(key, 4)
    data = datasets.load(args.data, k_data)
    if args.data == "xor":  # 4 points, all needed: trained and evaluated on all, as the textbook
        (X_train, y_train), (X_test, y_test) = (data.X, data.y), (data.X, data.y)
    else:
        (X_train, y_train), (X_test, y_test) = datasets.split(data, k_split, args.test_fraction)
        X_train, X_test, _ = datasets.standardize(X_train, X_test)
    loss = losses.get(args.loss or ("sigmoid_binary_cross_entropy" if data.n_classes == 2
                                     else "softmax_cross_entropy_with_integer_labels"))
    train, test = ((X, loss.from_labels(y, data.n_classes)) for X, y in ((X_train, y_train), (X_test, y_test)))
    n_out = data.n_classes if train[1].ndim == 1 else train[1].shape[-1]
    d = data.X.shape[1]
    if args.sizes:
        sizes = [n for group in args.sizes for n in group]
        if sizes[0] != d or sizes[-1] != n_out:
            raise ValueError(f"--sizes {','.join(map(str, sizes))} does not fit {args.data}: it has "
                             f"{d} features and needs {n_out} outputs for {loss.name}; "
                             f"e.g. --sizes {d},64,{n_out}")
    else:
        sizes = [d, *[n for group in args.hidden for n in group], n_out]
    net = mlp(sizes, activation=args.activation, W_init="he_normal")
    batch = (min(64, len(X_train)) if args.batch_size is None else None if args.batch_size == 0
             else args.batch_size)
    if batch is not None and not 1 <= batch <= len(X_train):
        raise ValueError(f"--batch-size must be in [1, {len(X_train)}] (the training examples) or 0, "
                         f"got {args.batch_size}")
    return net, loss, OPTIMIZERS[args.optimizer](args.lr), train, test, batch, k_init, k_fit


def _mesh(n):
    """A data mesh of n devices; on CPU, n simulated ones if JAX has not started yet."""
    try:
        jax.config.update("jax_num_cpu_devices", n)  # CPU backend only; must precede any JAX op
    except RuntimeError:
        pass  # JAX already started (fnnet called in-process): use the devices it has
    return parallel.data_mesh(n)


def train_command(args, parser) -> int:
    try:
        mesh = None if args.devices is None else _mesh(args.devices)
        net, loss, optimizer, train, test, batch, k_init, k_fit = _prepare(args)
        per_step = batch or len(train[0])  # examples per step
        if mesh is not None:
            parallel.check_batch("--devices", mesh, per_step)
    except (ValueError, TypeError, ImportError, OSError) as e:
        parser.error(str(e))
    say = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print
    params = net.init(k_init)
    say(net)
    if mesh is not None:
        say(f"data-parallel over {mesh.size} {mesh.devices.flat[0].platform} devices, "
            f"{per_step // mesh.size} examples per device per step")
    n_check = min(32, len(train[0]))
    report = check_grads(net, params, train[0][:n_check], train[1][:n_check], loss)
    say(f"gradient check ({n_check} examples, float64): {report.message}")
    if not report.ok:
        say(report)
        return 1

    chunk = max(1, args.epochs // 20)
    started, timed = time.perf_counter(), []  # (epochs, seconds) of each chunk's fit call

    def progress(epoch, history):
        done = int(30 * epoch / args.epochs)
        acc = f"  accuracy {history['accuracy'][-1]:.4f}" if "accuracy" in history else ""
        val = f"  test accuracy {history['val_accuracy'][-1]:.4f}" if "val_accuracy" in history else ""
        tty = sys.stderr.isatty()  # redraw one line on a terminal, a line per update in a log
        bar = f"[{'#' * done}{'.' * (30 - done)}] epoch {epoch}/{args.epochs}"
        print(("\r" if tty else "") + f"{bar}  loss {history['loss'][-1]:.4f}{acc}{val}",
              end="" if tty else "\n", file=sys.stderr, flush=True)

    opt_state, history, start = optimizer.init(params), {}, 0  # every chunk then runs one program
    if args.resume:
        try:
            ckpt = load(os.path.join(args.resume, "latest.fnnet"), net=net, optimizer=optimizer)
        except (ValueError, OSError) as e:
            parser.error(f"--resume {args.resume}: {e}")
        params, opt_state = ckpt.params, ckpt.opt_state
        start, history = ckpt.metadata["epoch"], {k: np.asarray(v) for k, v in ckpt.metadata["history"].items()}
        say(f"resumed from {args.resume} at epoch {start}")
        if start >= args.epochs:
            raise SystemExit(f"fnnet train: {args.resume} is already at epoch {start} ≥ --epochs {args.epochs}")
    saved = start if args.resume and args.save == args.resume else None  # epoch of save's latest
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    best = min(history.get("val_loss", [np.inf]), default=np.inf)
    # Chunks of epochs: fit with initial_epoch continues bit-identically, and reuses its program.
    for epoch in range(start, args.epochs, chunk):
        n = min(chunk, args.epochs - epoch)
        began = time.perf_counter()
        try:
            params, opt_state, h = fit(net, params, train, loss, optimizer, epochs=n, batch_size=batch,
                                       key=k_fit, grad=args.grad, validation=test, opt_state=opt_state,
                                       initial_epoch=epoch, return_opt_state=True, mesh=mesh)
        except DivergenceError as e:
            where = ("" if not args.save else "; no checkpoint was saved before it" if saved is None
                     else f"; the last good checkpoint is {os.path.join(args.save, 'latest.fnnet')} (epoch {saved})")
            print(f"\n{e}{where}", file=sys.stderr)
            return 1
        timed.append((n, time.perf_counter() - began))
        history = {k: np.concatenate([history.get(k, np.zeros(0)), v]) for k, v in h.items()}
        progress(epoch + n, history)
        if args.save:
            meta = {"epoch": epoch + n, "history": {k: v.tolist() for k, v in history.items()}}
            save(os.path.join(args.save, "latest.fnnet"), params, opt_state, net=net, metadata=meta)
            saved = epoch + n
            if history["val_loss"][-1] < best:
                best = float(history["val_loss"][-1])
                save(os.path.join(args.save, "best.fnnet"), params, opt_state, net=net, metadata=meta)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    # per-epoch time after compilation: the full-length chunks after the first (which compiled)
    steady_chunks = [(n, s) for n, s in timed[1:] if n == chunk] or timed
    steady = sum(s for _, s in steady_chunks) / sum(n for n, _ in steady_chunks)
    results = {
        "data": args.data, "sizes": [net.in_shape[0], *[layer.n_out for layer in net.layers]],
        "loss_name": loss.name, "optimizer": args.optimizer, "lr": args.lr, "epochs": args.epochs,
        "batch_size": per_step, "grad": args.grad, "seed": args.seed,
        "devices": 1 if mesh is None else mesh.size,
        "gradcheck_ok": report.ok,
        "train": {k: float(v) for k, v in metrics(net, loss, params, *train).items()},
        "test": {k: float(v) for k, v in metrics(net, loss, params, *test).items()},
        "seconds_total": time.perf_counter() - started, "seconds_per_epoch": steady,
    }
    if args.plot:
        _plot(args.plot, history, net, params, args, train)
        results["plot"] = args.plot
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for part in ("train", "test"):
            print(f"{part}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[part].items()))
        print(f"{results['seconds_per_epoch'] * 1e3:.2f} ms per epoch after compilation, "
              f"{results['seconds_total']:.1f} s in all")
    return 0


def _plot(path, history, net, params, args, train):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fnnet train: --plot needs matplotlib: pip install 'fnnet[plot]'") from None
    two_d = net.in_shape == (2,)
    fig, axes = plt.subplots(1, 3 if two_d else 2, figsize=(15 if two_d else 10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    axes[0].plot(epochs, history["loss"], label="train")
    axes[0].plot(epochs, history["val_loss"], label="test")
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    if "accuracy" in history:
        axes[1].plot(epochs, history["accuracy"], label="train")
        axes[1].plot(epochs, history["val_accuracy"], label="test")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in axes[:2]:
        ax.legend()
    if two_d:
        X, y = np.asarray(train[0]), np.asarray(train[1])
        lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        out = np.asarray(net.apply(params, jnp.asarray(np.c_[gx.ravel(), gy.ravel()], jnp.float32)))
        z = (out[:, 0] > 0) if out.shape[1] == 1 else out.argmax(1)
        axes[2].contourf(gx, gy, z.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
        labels = y.reshape(len(y), -1).argmax(1) if y.ndim > 1 and y.shape[1] > 1 else y.ravel()
        axes[2].scatter(X[:, 0], X[:, 1], c=labels, s=8, cmap="coolwarm")
        axes[2].set(title="decision boundary (training data)")
    fig.suptitle(f"fnnet train --data {args.data}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return args.run(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
