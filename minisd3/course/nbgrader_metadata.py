"""nbgrader's cell metadata in the solution notebooks, derived from the course's own.

An instructor who runs nbgrader puts ``solutions/*.ipynb`` into the course's ``source/`` folder and
runs ``nbgrader generate_assignment``. For that, every cell nbgrader must know carries nbgrader's
schema-3 metadata (``"nbgrader": {...}``):

- a **solution cell** (a code cell with a ``### BEGIN SOLUTION`` block) is
  ``{"grade": false, "grade_id": "solution-NAME", "locked": false, "schema_version": 3, "solution": true}``,
  NAME being the first function the cell defines (the cell's id when it defines none);
- a **check cell** (``{"minisd3": {"check": NAME, "points": P}}``, :mod:`minisd3.course.check_cells`) is an
  autograded test cell, ``{"grade": true, "grade_id": NAME, "locked": true, "points": P, "schema_version": 3,
  "solution": false}``;
- every other cell carries no nbgrader metadata.

Nothing here is kept by hand: :func:`nbgrader_cell_metadata` derives it from the solution block and the
check cell's ``minisd3`` metadata (the one place points are declared), ``python -m minisd3 exercises``
writes it into the solutions (:func:`write_nbgrader_metadata`) and ``--check`` reports a solution whose
nbgrader metadata differs (:func:`stale_nbgrader_metadata`). nbgrader itself is not needed at run time;
tests/test_nbgrader.py runs its ``generate_assignment`` on the solutions and compares the result with
exercises/.
"""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat

from .check_cells import check_cells
from .exercises import BEGIN_SOLUTION

SCHEMA_VERSION = 3


def _defined_function(source: str) -> str | None:
    """The name of the first function a cell defines (IPython's %magic and !shell lines ignored)."""
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return None
    return next((node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def has_solution_block(cell: nbformat.NotebookNode) -> bool:
    """Whether ``cell`` is a code cell holding a ``### BEGIN SOLUTION`` block."""
    return cell.cell_type == "code" and any(line.strip() == BEGIN_SOLUTION for line in cell.source.split("\n"))


def nbgrader_cell_metadata(cell: nbformat.NotebookNode, index: int, points: dict[str, float]) -> dict | None:
    """nbgrader's metadata for cell ``index`` of a solution notebook, or None for a cell nbgrader need not know.

    ``points`` maps each check of the notebook to its points (from :func:`~minisd3.course.check_cells.check_cells`).
    """
    meta = cell.metadata.get("minisd3")
    if isinstance(meta, dict) and meta.get("check") in points:
        return {"grade": True, "grade_id": meta["check"], "locked": True, "points": points[meta["check"]],
                "schema_version": SCHEMA_VERSION, "solution": False}
    if has_solution_block(cell):
        name = _defined_function(cell.source) or cell.get("id") or f"cell-{index}"
        return {"grade": False, "grade_id": f"solution-{name}", "locked": False,
                "schema_version": SCHEMA_VERSION, "solution": True}
    return None


def with_nbgrader_metadata(solution: nbformat.NotebookNode, where: str = "solution") -> nbformat.NotebookNode:
    """A copy of ``solution`` whose cells carry exactly the derived nbgrader metadata (stale entries removed).

    Raises ValueError (naming ``where``) when check cells are malformed or two cells get the same grade_id.
    """
    points = {check.name: check.points for check in check_cells(solution, where)}
    nb = copy.deepcopy(solution)
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        meta = nbgrader_cell_metadata(cell, index, points)
        cell.metadata.pop("nbgrader", None)
        if meta is None:
            continue
        if meta["grade_id"] in seen:
            raise ValueError(f"{where} cells {seen[meta['grade_id']]} and {index}: the same nbgrader grade_id "
                             f"{meta['grade_id']!r} (two solution cells define the same function?)")
        seen[meta["grade_id"]] = index
        cell.metadata["nbgrader"] = meta
    return nb


def _render(path: Path) -> tuple[str, str]:
    """The text of the solution notebook at ``path`` and the text it has with derived nbgrader metadata."""
    text = path.read_text("utf-8")
    try:
        solution = nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises several types for unreadable JSON
        raise ValueError(f"{path} is not a readable notebook ({err})") from err
    new = nbformat.writes(with_nbgrader_metadata(solution, str(path)))
    return text, new if new.endswith("\n") else new + "\n"


def stale_nbgrader_metadata(solutions_dir: str | Path = "solutions") -> list[Path]:
    """The solution notebooks whose nbgrader metadata is not what their check cells and solution blocks give."""
    return [path for path in sorted(Path(solutions_dir).glob("*.ipynb")) if len(set(_render(path))) == 2]


def write_nbgrader_metadata(solutions_dir: str | Path = "solutions") -> list[Path]:
    """Write the derived nbgrader metadata into every solution notebook that lacks it; the paths written."""
    written = []
    for path in sorted(Path(solutions_dir).glob("*.ipynb")):
        old, new = _render(path)
        if new != old:
            path.write_text(new, "utf-8")
            written.append(path)
    return written
