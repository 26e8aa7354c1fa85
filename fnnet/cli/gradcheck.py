"""`fnnet gradcheck`: check fnnet's hand-written backprop against jax.grad and finite differences.

The network is an MLP from flags (`--sizes`, `--activation`, ...) or any network of fnnet's
layers as `--layers SPEC` (`fnnet.cli.spec`), on examples of `--in-shape`. When the check
fails, the report's last line names the broken layer by its path in the model summary printed
above it (`[3]['block'][0] Conv2D(...)`), from every layer's backward checked against `jax.vjp`
of its own forward; with `--layers`, one more line names its spec item
(`the broken layer is --layers item 4.1 'conv:16:3'`).
"""

import itertools
import json

import jax

from fnnet import activations, initializers, losses
from fnnet.cli import spec
from fnnet.cli.flags import ints, layers, names
from fnnet.gradcheck import check_grads, random_batch
from fnnet.network import mlp

MLP_DEFAULTS = {"sizes": [[4, 8, 8, 3]], "activation": "tanh", "output_activation": "identity",
                "init": "lecun_normal"}
"""The MLP's flags and their defaults; --layers replaces them."""
DEFAULT_LOSS = "softmax_cross_entropy_with_integer_labels"
IN_SHAPES = {True: (6, 6, 2), False: (4,)}
"""--in-shape by default, for a spec that takes images and for one that takes rows: small, so the
check is quick, with two channels, so that a bug mixing them up shows."""


def add_parser(commands):
    check = commands.add_parser(
        "gradcheck",
        help="check fnnet's hand-written backprop against jax.grad and finite differences",
        description="Build a network from flags, check fnnet.backprop against jax.grad and "
                    "float64 finite differences on random data, and print the report.",
    )
    check.add_argument("--layers", type=layers, metavar="SPEC|@FILE",
                       help="the network as comma-separated layers instead of an MLP, as in fnnet train "
                            "--layers, e.g. conv:4:3,bn,relu,res(conv:4:3,relu),gap,dense:3")
    check.add_argument("--in-shape", type=ints, metavar="H,W,C|N",
                       help=f"with --layers: one example's shape (default {','.join(map(str, IN_SHAPES[True]))} "
                            f"when the spec's first shape-specific layer is conv, a pool or gap, else "
                            f"{IN_SHAPES[False][0]})")
    check.add_argument("--sizes", type=ints, nargs="+",
                       help="layer widths, n_in first: 4 8 3 or 4,8,3 (default 4 8 8 3)")
    check.add_argument("--activation",
                       help=f"hidden activation, or one per hidden layer such as relu,tanh: "
                            f"{names(activations.ALL)} (default tanh)")
    check.add_argument("--output-activation", help="output activation (default identity)")
    check.add_argument("--loss",
                       help=f"{names(losses.ALL)}, or bce, mse (default softmax_cross_entropy_with_integer_labels); "
                            f"with --all, several separated by commas, to sweep only those")
    check.add_argument("--init",
                       help=f"weight initializer: {names(initializers.ALL)} (default lecun_normal)")
    check.add_argument("--batch", type=int, default=16, help="examples (default 16)")
    check.add_argument("--seed", type=int, default=0, help="seed of the params and data (default 0)")
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="(default float64)")
    check.add_argument("--directions", type=int, default=4, help="random directions per leaf (default 4)")
    check.add_argument("--elementwise", action="store_true", help="finite differences on every element too")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--all", action="store_true",
                       help="sweep every activation × loss (or × the losses of --loss) on the network and print "
                            "one row each")
    check.set_defaults(run=run, subparser=check)


def _network(args, activation):
    """The network of the flags (`activation`: the MLP's hidden one) and its spec's items (None
    for an MLP); ValueError naming a bad flag."""
    if args.layers is None:
        if args.in_shape is not None:
            raise ValueError("--in-shape is for --layers; an MLP's input is the first of --sizes")
        sizes = [n for group in args.sizes for n in group]
        activation = activation.split(",") if "," in activation else activation
        return mlp(sizes, activation=activation, output_activation=args.output_activation, W_init=args.init), None
    items = spec.parse(args.layers)
    return spec.network(items, args.in_shape or IN_SHAPES[spec.wants_images(items)]), items


def _check_one(args, activation, loss):
    """(network, its spec's items or None, report)."""
    net, items = _network(args, activation)
    kp, kd = jax.random.split(jax.random.key(args.seed))
    params = net.init(kp)
    X, y = random_batch(kd, net, loss, args.batch)
    return net, items, check_grads(net, params, X, y, loss, dtype=args.dtype, directions=args.directions,
                                   elementwise=args.elementwise, key=jax.random.key(args.seed))


def run(args, parser) -> int:
    if args.batch < 1:
        parser.error(f"--batch must be ≥ 1, got {args.batch}")
    given = [name for name in (*MLP_DEFAULTS, "all") if getattr(args, name) not in (None, False)]
    if args.layers is not None and given:
        parser.error(f"--layers gives the whole network, and --{given[0].replace('_', '-')} "
                     + ("sweeps the MLP's hidden activation: put activations in the spec instead" if given[0] == "all"
                        else "describes an MLP: give one or the other"))
    for name, default in MLP_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    try:
        if not args.all:
            if args.loss and "," in args.loss:
                raise ValueError(f"--loss {args.loss}: several losses are for the --all sweep; check one at a time "
                                 f"without it")
            net, items, report = _check_one(args, args.activation, args.loss or DEFAULT_LOSS)
            blamed = None if items is None or report.ok else spec.blame(items, report)
            if args.json:
                print(json.dumps(report.to_dict() | ({} if items is None else {"blame": blamed}), indent=2))
            else:
                print("\n".join([str(net), str(report), *([blamed] if blamed else [])]))
            return 0 if report.ok else 1
        swept = losses.ALL if args.loss is None else [losses.get(name) for name in args.loss.split(",")]
        pairs = [(act.name, loss.name) for act in activations.ALL for loss in swept]
        first = _check_one(args, *pairs[0])[2]  # a bad flag fails here, before the header is printed
        reports = itertools.chain([first], (_check_one(args, a, l)[2] for a, l in pairs[1:]))  # each when asked
        if args.json:
            rows = [dict(activation=a, loss=l, **report.to_dict()) for (a, l), report in zip(pairs, reports)]
            print(json.dumps(rows, indent=2))
            return 0 if all(row["ok"] for row in rows) else 1
        width = max(len(loss) for _, loss in pairs)
        print(f"{'activation':<12}{'loss':<{width + 2}}{'max rel err':<13}{'fd max err':<12}result", flush=True)
        failed = 0
        for (act, loss), report in zip(pairs, reports):  # each row as soon as its check finishes
            rel = max(leaf.max_rel_error for leaf in report.leaves)
            fd = max(leaf.fd_max_error for leaf in report.leaves)
            result = "ok" if report.ok else f"FAIL: {report.message}"
            print(f"{act:<12}{loss:<{width + 2}}{rel:<13.1e}{fd:<12.1e}{result}", flush=True)
            failed += not report.ok
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    print(f"{len(pairs) - failed}/{len(pairs)} activation × loss pairs pass ({args.dtype})")
    return 0 if failed == 0 else 1
