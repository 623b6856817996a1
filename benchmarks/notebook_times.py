"""Benchmark: wall seconds of every lesson notebook, run top to bottom in fast and in full mode.

Each notebook in notebooks/ runs in a fresh kernel with :func:`minisd3.course.notebooks.execute_notebook`;
nothing is saved (the committed outputs stay as they are). Prints a table and exits with 1 if a
notebook failed.

    python benchmarks/notebook_times.py [--fast-only] [--only PATTERN]

``--only`` keeps the notebooks whose file name contains PATTERN or matches it as a glob.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import platform
from pathlib import Path

import torch

from minisd3.course.notebooks import execute_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def select(pattern: str | None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if pattern:
        paths = [p for p in paths if pattern in p.name or fnmatch.fnmatch(p.name, pattern)]
    return paths


def describe(err: BaseException) -> str:
    """The exception and those it was raised from or during (nbclient hides a dead kernel that way)."""
    parts = []
    while err is not None and len(parts) < 4:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        parts.append(type(err).__name__ + (f": {lines[-1][:160]}" if lines else ""))
        err = err.__cause__ or err.__context__
    return " <- ".join(parts)


def timed_run(path: Path, fast: bool, failures: list[str]) -> str:
    """Seconds as text, or "failed" (the reason is appended to ``failures``)."""
    try:
        _, seconds = execute_notebook(path, fast=fast, save_to=None)
    except Exception as err:  # a failing cell raises nbclient's CellExecutionError; report and go on
        failures.append(f"{path.name} ({'fast' if fast else 'full'}): {describe(err)}")
        return "failed"
    return f"{seconds:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-only", action="store_true", help="skip the full-mode runs")
    parser.add_argument("--only", metavar="PATTERN", help="notebooks whose name contains or matches PATTERN")
    args = parser.parse_args(argv)

    paths = select(args.only)
    if not paths:
        print(f"no notebook in {NOTEBOOKS} matches {args.only!r}" if args.only else f"no notebook in {NOTEBOOKS}")
        return 1
    modes = ["fast"] if args.fast_only else ["fast", "full"]
    width = max(len(p.name) for p in paths)
    print(f"{'notebook':<{width}}  " + "  ".join(f"{m + ' s':>20}" for m in modes), flush=True)
    failures: list[str] = []
    for path in paths:
        cells = [timed_run(path, fast=(mode == "fast"), failures=failures) for mode in modes]
        print(f"{path.name:<{width}}  " + "  ".join(f"{c:>20}" for c in cells), flush=True)
    load = " load average {:.1f} {:.1f} {:.1f},".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,{load} "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads in this process")
    for failure in failures:
        print(f"failed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
