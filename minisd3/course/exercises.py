"""Practice notebooks: exercises/ generated from solutions/ (the single source).

``solutions/NN_name.ipynb`` is the single source. In its code cells each answer sits between
nbgrader's markers, and the block's first line is a comment pointing to the task (the markdown cell
above states the task, signature, shapes and equation; the comment must not spell the answer, which
tests/test_exercises.py checks)::

        ### BEGIN SOLUTION
        # Exercise 1, write this function: see the task above
        ...
        ### END SOLUTION

``exercises/NN_name.ipynb`` keeps every other line and puts, at the marker's indentation::

        raise NotImplementedError("Exercise 1, write this function: see the task above")

Exercises are written without outputs, execution counts or run metadata, so the same solutions
always give the same bytes, and ``python -m minisd3 exercises --check`` can tell when exercises/
is stale. Check cells keep their metadata (the check and its points, :mod:`minisd3.course.check_cells`)
and are locked against editing. Grading a learner's copy is :mod:`minisd3.course.grading`.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat

from .check_cells import check_cell_metadata, check_cells
from .checks.core import error_summary

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
STUB = "raise NotImplementedError"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


# ---------------------------------------------------------------------------------------------
# generating exercises from solutions
# ---------------------------------------------------------------------------------------------

def strip_solutions(source: str, where: str = "cell") -> tuple[str, list[str]]:
    """Replace each solution block in ``source`` by a stub; return the new source and the stubs' messages.

    ``where`` names the cell in error messages (a block left open, an END without BEGIN, or a block
    whose first line is not the comment that becomes the stub's message).
    """
    lines = source.split("\n")
    kept: list[str] = []
    messages: list[str] = []
    i = 0
    while i < len(lines):
        marker = lines[i].strip()
        if marker == END_SOLUTION:
            raise ValueError(f"{where}, line {i + 1}: {END_SOLUTION!r} without a {BEGIN_SOLUTION!r} before it")
        if marker != BEGIN_SOLUTION:
            kept.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() in (BEGIN_SOLUTION, END_SOLUTION)), None)
        if end is None or lines[end].strip() == BEGIN_SOLUTION:
            raise ValueError(f"{where}, line {i + 1}: {BEGIN_SOLUTION!r} is not closed by {END_SOLUTION!r}")
        first = lines[i + 1].strip() if end > i + 1 else ""
        message = first.lstrip("#").strip()
        if not first.startswith("#") or not message:
            raise ValueError(f"{where}, line {i + 2}: a solution block must start with a comment saying what to "
                             f"implement (it becomes the NotImplementedError message), got {first!r}")
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        kept.append(f"{indent}{STUB}({json.dumps(message, ensure_ascii=False)})")
        messages.append(message)
        i = end + 1
    return "\n".join(kept), messages


def _check_syntax(source: str, where: str) -> None:
    """The stubbed cell must still be Python (IPython's %magic and !shell lines aside)."""
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        ast.parse(python)
    except SyntaxError as err:
        raise ValueError(f"{where}: the exercise cell is not valid Python after stubbing "
                         f"({err.msg}, line {err.lineno})") from err


def exercise_notebook(solution: nbformat.NotebookNode, lesson: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook: solution blocks stubbed, outputs, execution counts
    and run metadata dropped (nbgrader's too), cell ids numbered, notebook metadata fixed, hint cells kept
    collapsed (``{"jupyter": {"source_hidden": true}}``), cells with a solution block not deletable, check
    cells keeping their check and points and locked (:func:`~minisd3.course.check_cells.check_cell_metadata`).

    Raises ValueError naming the cell when a solution block or a check cell's metadata is malformed.
    """
    checks = {check.name: check for check in check_cells(solution, f"solutions/{lesson}.ipynb")}
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "minisd3": {"lesson": lesson, "generated_from": f"solutions/{lesson}.ipynb"},
    }
    for index, cell in enumerate(solution.cells):
        where = f"solutions/{lesson}.ipynb cell {index}"
        if cell.cell_type == "code":
            source, stubs = strip_solutions(cell.source, where)
            _check_syntax(source, where)
            new = nbformat.v4.new_code_cell(source)
            if stubs:  # as nbgrader's LockCells does to a solution cell: editable, not deletable
                new.metadata["deletable"] = False
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = f"cell-{index}"
        if cell.metadata.get("tags"):
            new.metadata["tags"] = list(cell.metadata["tags"])
        if cell.metadata.get("jupyter", {}).get("source_hidden"):  # a collapsed hint stays collapsed
            new.metadata["jupyter"] = {"source_hidden": True}
        meta = cell.metadata.get("minisd3")
        if isinstance(meta, dict) and meta.get("check") in checks:
            new.metadata.update(check_cell_metadata(checks[meta["check"]]))
        nb.cells.append(new)
    nbformat.validate(nb)
    return nb


def render_exercise(solution_path: str | Path) -> str:
    """The exact text of the exercise generated from the solution notebook at ``solution_path``."""
    path = Path(solution_path)
    try:
        solution = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several types for unreadable JSON
        raise ValueError(f"solution_path: {path} is not a readable notebook ({error_summary(err)})") from err
    text = nbformat.writes(exercise_notebook(solution, path.stem))
    return text if text.endswith("\n") else text + "\n"


def stub_messages(nb: nbformat.NotebookNode) -> list[str]:
    """The messages of the ``raise NotImplementedError("…")`` stubs in an exercise notebook, in order."""
    pattern = re.compile(rf"^\s*{STUB}\((.*)\)\s*$")
    return [json.loads(match.group(1)) for cell in nb.cells if cell.cell_type == "code"
            for match in map(pattern.match, cell.source.split("\n")) if match]


def _folders(solutions_dir: str | Path, exercises_dir: str | Path) -> tuple[Path, Path]:
    solutions, exercises = Path(solutions_dir), Path(exercises_dir)
    if not solutions.is_dir():
        raise ValueError(f"solutions_dir: expected a folder of solution notebooks, got {str(solutions)!r} "
                         "(run from the repository root or pass --solutions)")
    if exercises.exists() and not exercises.is_dir():
        raise ValueError(f"exercises_dir: expected a folder, got the file {str(exercises)!r}")
    return solutions, exercises


def expected_exercises(solutions_dir: str | Path, exercises_dir: str | Path) -> dict[Path, str]:
    """Every exercise path with the text it must have, one per ``solutions_dir/*.ipynb``."""
    solutions, exercises = _folders(solutions_dir, exercises_dir)
    return {exercises / path.name: render_exercise(path) for path in sorted(solutions.glob("*.ipynb"))}


def stale_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Path]:
    """Exercise files that are missing, differ from what the solutions generate, or have no solution."""
    expected = expected_exercises(solutions_dir, exercises_dir)
    exercises = Path(exercises_dir)
    stale = [path for path, text in expected.items()
             if not path.is_file() or path.read_bytes() != text.encode("utf-8")]
    orphans = [path for path in sorted(exercises.glob("*.ipynb")) if path not in expected] if exercises.is_dir() else []
    return stale + orphans


def write_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Path]:
    """Regenerate exercises/ from solutions/: write what changed, remove exercises without a solution.
    Returns the paths written or removed."""
    expected = expected_exercises(solutions_dir, exercises_dir)
    changed = stale_exercises(solutions_dir, exercises_dir)
    Path(exercises_dir).mkdir(parents=True, exist_ok=True)
    for path in changed:
        if path in expected:
            path.write_bytes(expected[path].encode("utf-8"))
        else:
            path.unlink()
    return changed
