"""Check cells: how a solution notebook marks the cells that run its checks, and what each is worth.

In ``solutions/NN_name.ipynb`` a check cell carries, in its metadata, the check it runs and its points
(nbgrader's ``grade_id`` and ``points``, in the course's own namespace)::

    "metadata": {"minisd3": {"check": "shift_time", "points": 1}}

This is the one place points are declared. The exercise generator (:mod:`minisd3.course.exercises`)
copies the metadata into exercises/ and locks the cells (:func:`check_cell_metadata`); nbgrader's own
metadata in the solutions is derived from it (:mod:`minisd3.course.nbgrader_metadata`); the grader
(:mod:`minisd3.course.grading`) puts every check cell back from the solutions before it runs a
learner's copy and scores each check out of its points.
"""
from __future__ import annotations

from dataclasses import dataclass

import nbformat


@dataclass(frozen=True)
class CheckCell:
    """A check cell of a solution notebook: the check it runs, its points and its source."""

    name: str
    points: float
    source: str


def check_cells(solution: nbformat.NotebookNode, where: str = "solution") -> list[CheckCell]:
    """The check cells of a solution notebook, in order, from their ``minisd3`` metadata (points 1
    when a cell gives none).

    Raises ValueError (naming ``where`` and the cell) when a check's name or points are malformed or
    a check appears twice.
    """
    found: list[CheckCell] = []
    for index, cell in enumerate(solution.cells):
        meta = cell.metadata.get("minisd3", {})
        if not isinstance(meta, dict) or "check" not in meta:
            continue
        name, points = meta.get("check"), meta.get("points", 1)
        if not isinstance(name, str) or not name.isidentifier() or cell.cell_type != "code":
            raise ValueError(f"{where} cell {index}: minisd3.check must name a check in a code cell, got {name!r}")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
            raise ValueError(f"{where} cell {index}: minisd3.points must be a positive number, got {points!r}")
        if any(other.name == name for other in found):
            raise ValueError(f"{where} cell {index}: a second check cell for {name!r}")
        found.append(CheckCell(name, points, cell.source))
    return found


def check_cell_metadata(check: CheckCell) -> dict:
    """The metadata of a check cell: its check and points, and locked in Jupyter (not editable, not deletable)."""
    return {"minisd3": {"check": check.name, "points": check.points}, "editable": False, "deletable": False}
