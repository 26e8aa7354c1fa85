"""The `fnnet` command line (also `python -m fnnet`).

    fnnet gradcheck [--sizes 4 8 3] [--activation tanh] [--loss mse] [--dtype float64] ...
    fnnet gradcheck --all

Exit status: 0 when every check passes, 1 when one fails, 2 for bad arguments.
"""

import argparse
import json
import sys

import jax

from fnnet import activations, losses
from fnnet.gradcheck import check_grads, random_batch
from fnnet.network import mlp


def _ints(text):
    """'2,4,1' or '2' → [2, 4, 1] / [2] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,4,1, got {text!r}") from None


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


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return args.run(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
