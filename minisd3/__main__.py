"""Command line: ``python -m minisd3 COMMAND`` (or the ``minisd3`` script).

    execute NOTEBOOK... [--fast]   run lessons top to bottom and save them with their outputs
"""
from __future__ import annotations

import argparse
import sys


def _execute(args: argparse.Namespace) -> int:
    from .notebooks import execute_notebook

    for path in args.notebooks:
        _, seconds = execute_notebook(path, fast=args.fast, save_to=path, timeout=args.timeout)
        print(f"{path}: ran in {seconds:.1f} s ({'fast' if args.fast else 'full'} mode), outputs saved")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minisd3", description="minisd3 course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="run notebooks top to bottom and save their outputs")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--fast", action="store_true", help="fast mode (MINISD3_FAST=1)")
    run.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    run.set_defaults(handler=_execute)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
