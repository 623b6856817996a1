"""Command line: ``python -m minisd3 COMMAND`` (or the ``minisd3`` script).

    execute NOTEBOOK... [--fast]        run lessons top to bottom and save them with their outputs
    exercises [--check]                 regenerate exercises/ from solutions/ (--check: list stale files, exit 1)
    grade NOTEBOOK [--lesson NN] [--json]
                                        run a practice notebook and score its checks (exit 2 if it cannot run)
    train | sample | eval | bench | autoencoder | encode-latents
                                        training engine commands (see minisd3/cli.py)
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli import add_commands


def _execute(args: argparse.Namespace) -> int:
    from .course.notebooks import execute_notebook

    for path in args.notebooks:
        _, seconds = execute_notebook(path, fast=args.fast, save_to=path, timeout=args.timeout)
        print(f"{path}: ran in {seconds:.1f} s ({'fast' if args.fast else 'full'} mode), outputs saved")
    return 0


def _exercises(args: argparse.Namespace) -> int:
    from .course.exercises import stale_exercises, write_exercises

    try:
        if args.check:
            stale = stale_exercises(args.solutions, args.exercises)
            for path in stale:
                print(f"stale: {path}")
            if stale:
                print(f"{len(stale)} exercise notebook(s) out of date: run `python -m minisd3 exercises`")
                return 1
            print(f"{args.exercises}/ is up to date with {args.solutions}/")
            return 0
        changed = write_exercises(args.solutions, args.exercises)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'wrote' if path.exists() else 'removed'} {path}")
    print(f"{args.exercises}/ is up to date with {args.solutions}/ ({len(changed)} file(s) changed)")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from .course.exercises import GradingError, grade_notebook

    try:
        report = grade_notebook(args.notebook, lesson=args.lesson, timeout=args.timeout)
    except GradingError as err:
        if args.json:
            print(json.dumps({"notebook": args.notebook, "error": str(err)}, ensure_ascii=False))
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) if args.json else report.text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minisd3", description="minisd3 course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="run notebooks top to bottom and save their outputs")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--fast", action="store_true", help="fast mode (MINISD3_FAST=1)")
    run.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    run.set_defaults(handler=_execute)
    exercises = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    exercises.add_argument("--check", action="store_true",
                           help="change nothing; list stale exercise files and exit 1 if there are any")
    exercises.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    exercises.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    exercises.set_defaults(handler=_exercises)
    grade = sub.add_parser("grade", help="run a practice notebook (fast mode, errors allowed) and score its checks")
    grade.add_argument("notebook", help="an exercises/NN_*.ipynb notebook or a learner's copy of one")
    grade.add_argument("--lesson", help="the lesson (e.g. 03 or 03_rectified_flow) when the file does not say")
    grade.add_argument("--json", action="store_true", help="print the report as JSON")
    grade.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    grade.set_defaults(handler=_grade)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
