"""The ``deltainv`` command line.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``; this module
only lists them, so adding one is a one-line change here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules providing ``register(subparsers)``, in ``--help`` order.
SUBCOMMANDS = (
    "deltainv.serve.cli",
    "deltainv.eval.parity_cli",
    "deltainv.eval.numerics_cli",
    "deltainv.plugin.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    from deltainv import __version__

    parser = argparse.ArgumentParser(
        prog="deltainv",
        description="Fast, stable triangular inversion for delta-rule linear attention.",
    )
    parser.add_argument("--version", action="version", version=f"deltainv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
