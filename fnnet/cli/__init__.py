"""The `fnnet` command line (also `python -m fnnet`).

    fnnet train [--data digits] [--hidden 64] [--optimizer adam] [--lr 1e-3] [--epochs 100] ...
    fnnet train --data digits --layers conv:16:3,bn,relu,maxpool:2,flatten,dense:10 ...
    fnnet predict --checkpoint run/best.fnnet --data new.csv [--json]
    fnnet gradcheck [--sizes 4 8 3] [--activation tanh] [--loss mse] [--dtype float64] ...
    fnnet gradcheck --layers conv:4:3,bn,relu,gap,dense:3 [--in-shape 6,6,2]
    fnnet gradcheck --all

`--layers SPEC` (fnnet.cli.spec) writes any network of fnnet's layers on one line.

Every flag is checked before anything trains. Exit status: 0 when every check passes, 1 when
one fails (or training diverges), 2 for bad arguments, with one line naming the flag.
"""

import argparse
import sys

import jax
import optax

from fnnet import __version__
from fnnet.cli import gradcheck, predict, train


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line: `fnnet train: error: --lr must be ...`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser():
    parser = Parser(prog="fnnet", description="fnnet: functional neural networks on JAX.")
    parser.add_argument("--version", action="version",
                        version=f"fnnet {__version__} (jax {jax.__version__}, optax {optax.__version__})")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (train, predict, gradcheck):
        command.add_parser(commands)
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, args.subparser)
    except BrokenPipeError:  # `fnnet predict ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
