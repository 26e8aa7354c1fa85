"""`fnnet gradcheck`: check fnnet's hand-written backprop against jax.grad and finite differences."""

import json

import jax

from fnnet import activations, initializers, losses
from fnnet.gradcheck import check_grads, random_batch
from fnnet.network import mlp
from fnnet.cli.flags import ints, names


def add_parser(commands):
    check = commands.add_parser(
        "gradcheck",
        help="check fnnet's hand-written backprop against jax.grad and finite differences",
        description="Build a network from flags, check fnnet.backprop against jax.grad and "
                    "float64 finite differences on random data, and print the report.",
    )
    check.add_argument("--sizes", type=ints, nargs="+", default=[[4, 8, 8, 3]],
                       help="layer widths, n_in first: 4 8 3 or 4,8,3 (default 4 8 8 3)")
    check.add_argument("--activation", default="tanh",
                       help=f"hidden activation, or one per hidden layer such as relu,tanh: "
                            f"{names(activations.ALL)} (default tanh)")
    check.add_argument("--output-activation", default="identity", help="output activation (default identity)")
    check.add_argument("--loss", default="softmax_cross_entropy_with_integer_labels",
                       help=f"{names(losses.ALL)}, or bce, mse (default softmax_cross_entropy_with_integer_labels)")
    check.add_argument("--init", default="lecun_normal",
                       help=f"weight initializer: {names(initializers.ALL)} (default lecun_normal)")
    check.add_argument("--batch", type=int, default=16, help="examples (default 16)")
    check.add_argument("--seed", type=int, default=0, help="seed of the params and data (default 0)")
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="(default float64)")
    check.add_argument("--directions", type=int, default=4, help="random directions per leaf (default 4)")
    check.add_argument("--elementwise", action="store_true", help="finite differences on every element too")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--all", action="store_true",
                       help="sweep every activation × loss on the network and print one row each")
    check.set_defaults(run=run, subparser=check)


def _check_one(args, activation, loss):
    sizes = [n for group in args.sizes for n in group]
    activation = activation.split(",") if "," in activation else activation
    net = mlp(sizes, activation=activation, output_activation=args.output_activation, W_init=args.init)
    kp, kd = jax.random.split(jax.random.key(args.seed))
    params = net.init(kp)
    X, y = random_batch(kd, net, loss, args.batch)
    return net, check_grads(net, params, X, y, loss, dtype=args.dtype, directions=args.directions,
                            elementwise=args.elementwise, key=jax.random.key(args.seed))


def run(args, parser) -> int:
    if args.batch < 1:
        parser.error(f"--batch must be ≥ 1, got {args.batch}")
    try:
        if not args.all:
            net, report = _check_one(args, args.activation, args.loss)
            print(report.to_json(indent=2) if args.json else f"{net}\n{report}")
            return 0 if report.ok else 1
        pairs = [(act.name, loss.name) for act in activations.ALL for loss in losses.ALL]
        _check_one(args, *pairs[0])  # a bad flag fails here, before the header is printed
        if args.json:
            rows = [dict(activation=a, loss=l, **_check_one(args, a, l)[1].to_dict()) for a, l in pairs]
            print(json.dumps(rows, indent=2))
            return 0 if all(row["ok"] for row in rows) else 1
        width = max(len(loss) for _, loss in pairs)
        print(f"{'activation':<12}{'loss':<{width + 2}}{'max rel err':<13}{'fd max err':<12}result", flush=True)
        failed = 0
        for act, loss in pairs:  # each row as soon as its check finishes
            _, report = _check_one(args, act, loss)
            rel = max(leaf.max_rel_error for leaf in report.leaves)
            fd = max(leaf.fd_max_error for leaf in report.leaves)
            result = "ok" if report.ok else f"FAIL: {report.message}"
            print(f"{act:<12}{loss:<{width + 2}}{rel:<13.1e}{fd:<12.1e}{result}", flush=True)
            failed += not report.ok
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    print(f"{len(pairs) - failed}/{len(pairs)} activation × loss pairs pass ({args.dtype})")
    return 0 if failed == 0 else 1
