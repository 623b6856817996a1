"""Running lesson and practice notebooks headlessly (nbclient), for building, testing and grading."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from ..env import FAST_ENV, STATIC_ENV


def execute_notebook(path: str | Path, *, fast: bool, allow_errors: bool = False, timeout: int = 900,
                     save_to: str | Path | None = None) -> tuple[nbformat.NotebookNode, float]:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel, working in its folder.

    ``fast`` sets ``MINISD3_FAST`` for the kernel. Widgets fall back to static figures. The
    executed notebook is written to ``save_to`` when given. Returns it with the wall time in s.

    Raises ValueError (one line: the notebook, the cell, what happened) when a cell raises or the kernel dies.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected an existing .ipynb file, got {str(path)!r}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several types for unreadable JSON
        raise ValueError(f"path: {path} is not a readable notebook ({err})") from err
    saved = {k: os.environ.get(k) for k in (FAST_ENV, STATIC_ENV)}
    os.environ[FAST_ENV] = "1" if fast else "0"
    os.environ[STATIC_ENV] = "1"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(path.parent.resolve())}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no TCP-encryption notes
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        failed = next((i for i, cell in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                                     for o in cell.get("outputs", []))), None)
        raise ValueError(f"{path}: cell {failed} raised {err.ename}: {err.evalue}") from err
    except DeadKernelError as err:
        code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        started = getattr(client, "code_cells_executed", 0)  # nbclient counts a cell as it starts it
        where = f"while running cell {code[started - 1]}" if 0 < started <= len(code) else "before its first cell"
        raise ValueError(f"{path}: the kernel died {where} (killed, or out of memory); nothing was written") from err
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    elapsed = time.perf_counter() - start
    if save_to is not None:
        nbformat.write(nb, save_to)
    return nb, elapsed


def cell_errors(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """(cell index, exception name, message) for every code cell whose output is an error."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                found.append((index, output.get("ename", ""), output.get("evalue", "")))
    return found
