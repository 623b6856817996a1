"""Grading one practice notebook: put its check cells back as handed out, run it cell by cell, and
score each check from the result the check itself logged in the kernel.

What makes a grade (the steps, in order):

1. **Check cells come from the source.** In ``solutions/NN_name.ipynb`` every check cell carries
   ``{"minisd3": {"check": NAME, "points": P}}`` in its metadata (nbgrader's ``grade_id`` and
   ``points``, in the course's own namespace; :func:`check_cells` reads them). The points are
   declared there and nowhere else; the exercise generator copies the metadata and locks the cells.
   Before running, :func:`restore_check_cells` replaces each check cell of the learner's copy by the
   source's (found by its metadata, else by the ``check_NAME(`` call in it; one that is missing is
   added at the end), as nbgrader's overwrite step does with its checksummed cells. An edited cell
   is noted in the report. So a check cell rewritten to check the package's own function, or
   deleted, grades as what was handed out.
2. **Results come from the checks, not from text.** The notebook runs cell by cell in a fresh kernel
   (:func:`minisd3.course.notebooks.run_cells`). After every cell the grader asks the kernel, in a
   silent request whose answer never becomes an output, for the check results logged since it last
   asked (:data:`minisd3.course.results.KERNEL_PROBE`). A check scores only from what its own check
   cell's run logged (the last result under its name). Printed or displayed text, ``[check] NAME:
   PASS`` included, is never read, and a result a learner's cell logs itself lands between other
   cells and is dropped.
3. **A check cell that raised scores zero** (ERROR, with the exception in the report), even if a
   result was logged during it; one past its time limit is interrupted and scores zero (TIMEOUT) and
   the notebook carries on; after a dead kernel or a spent notebook time limit the checks left are
   NOT RUN. The report names each cell that hung, died or raised something other than a stub's
   ``NotImplementedError``.

What it does not stop: code in the learner's cells runs in the same kernel as the checks, so a
learner set on cheating could patch the checks themselves (monkeypatching ``minisd3``); that is
copying, not fooling the grader by accident, and reading the notebook shows it.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..files import write_text_atomic
from .check_cells import CheckCell, check_cell_metadata, check_cells
from .checks.core import LESSON_CHECKS, error_summary
from .notebooks import CellRun, run_cells
from .results import KERNEL_PROBE, parse_results

STATUSES = ("PASS", "FAIL", "ERROR", "TIMEOUT", "NOT RUN")
"""A check's outcome: passed; failed (the check ran and named what is wrong); its cell raised; its
cell ran past its time limit; it never ran (the kernel died earlier, or the notebook's time ran out)."""


class GradingError(Exception):
    """The notebook could not be graded: unreadable, not a notebook, no known lesson, no kernel."""


@dataclass(frozen=True)
class CheckOutcome:
    """One check of a graded notebook: ``status`` (one of :data:`STATUSES`), the ``points`` it earned
    of ``max_points``, ``message`` (why, for all but PASS), the ``mistake`` a FAIL named, the
    exception name an ERROR raised (``error``) and the 1-based number of its check ``cell``."""

    name: str
    status: str
    points: float
    max_points: float
    message: str = ""
    mistake: str | None = None
    error: str = ""
    cell: int | None = None


@dataclass
class GradeReport:
    """The result of grading one notebook (``notes``: edited check cells, hung cells, a dead kernel,
    other errors; ``executed``: where the executed notebook was saved, if it was)."""

    notebook: str
    lesson: str
    seconds: float
    checks: list[CheckOutcome]
    notes: list[str] = field(default_factory=list)
    executed: str | None = None

    @property
    def score(self) -> float:
        return sum(outcome.points for outcome in self.checks)

    @property
    def max_score(self) -> float:
        return sum(outcome.max_points for outcome in self.checks)

    def to_dict(self) -> dict:
        return {"notebook": self.notebook, "lesson": self.lesson, "seconds": round(self.seconds, 2),
                "score": self.score, "max_score": self.max_score,
                "checks": [outcome.__dict__.copy() for outcome in self.checks],
                "notes": list(self.notes), "executed": self.executed}

    def text(self) -> str:
        width = max((len(o.name) for o in self.checks), default=0)
        lines = [f"{self.notebook}: lesson {self.lesson}, ran in {self.seconds:.1f} s (fast mode)"]
        for o in self.checks:
            why = f"  — cell {o.cell}: {o.message}" if o.status != "PASS" else ""
            lines.append(f"  {o.status:<7}  {o.name:<{width}}  {o.points:g}/{o.max_points:g}{why}")
        lines += [f"  note: {note}" for note in self.notes]
        passed = sum(o.status == "PASS" for o in self.checks)
        lines.append(f"score: {self.score:g}/{self.max_score:g} points ({passed} of {len(self.checks)} checks passed)")
        return "\n".join(lines)


def resolve_lesson(name: str, lessons: Iterable[str] = LESSON_CHECKS) -> str | None:
    """The lesson among ``lessons`` a name refers to: ``"03"``, ``"3"``, ``"03_rectified_flow"``,
    ``"rectified_flow"`` or a file name containing one of them; ``None`` when it names none."""
    lessons = list(lessons)
    text = Path(str(name)).stem.lower()
    for lesson in lessons:
        if lesson in text:
            return lesson
    for lesson in lessons:
        if lesson.split("_", 1)[-1] in text:
            return lesson
    number = re.match(r"^\D*?(\d{1,2})(?!\d)", text)
    if number:
        return next((lesson for lesson in lessons if lesson[:2].isdigit() and int(lesson[:2]) == int(number.group(1))),
                    None)
    return None


def solution_lessons(solutions: str | Path) -> list[str]:
    """The lessons with a solution notebook in ``solutions``; ValueError when it is not a folder."""
    folder = Path(solutions)
    if not folder.is_dir():
        raise ValueError(f"solutions: expected the folder of solution notebooks, got {str(folder)!r} "
                         "(run from the repository root or pass --solutions)")
    return sorted(path.stem for path in folder.glob("*.ipynb"))


def _label(nb: nbformat.NotebookNode, index: int) -> str:
    """``cell N (`its first line`)``: how a report names a cell (N counts from 1, as a reader does)."""
    first = next((line.strip() for line in nb.cells[index].source.split("\n") if line.strip()), "")
    return f"cell {index + 1} (`{first[:48]}{'…' if len(first) > 48 else ''}`)"


def _find_check_cell(nb: nbformat.NotebookNode, name: str, taken: set[int]) -> int | None:
    """The index of the first cell not in ``taken`` whose metadata names check ``name``, else of the first
    such code cell calling ``check_NAME(``; ``None`` when there is neither."""
    def marked(cell) -> bool:
        meta = cell.metadata.get("minisd3")
        return isinstance(meta, dict) and meta.get("check") == name

    def calls(cell) -> bool:
        return cell.cell_type == "code" and f"check_{name}(" in cell.source

    for matches in (marked, calls):
        index = next((i for i, cell in enumerate(nb.cells) if i not in taken and matches(cell)), None)
        if index is not None:
            return index
    return None


def restore_check_cells(nb: nbformat.NotebookNode, checks: list[CheckCell]) -> tuple[dict[str, int], list[str]]:
    """Put every check cell of ``nb`` back as the source has it (in place); return each check's cell
    index and a note for every cell that had been edited or was missing.

    A check's cell is the first whose ``minisd3.check`` metadata names it, else the first code cell
    calling ``check_NAME(``; when there is none, the source's cell is added at the end.
    """
    positions: dict[str, int] = {}
    notes = []
    for check in checks:
        index = _find_check_cell(nb, check.name, set(positions.values()))
        restored = nbformat.v4.new_code_cell(check.source, metadata=check_cell_metadata(check))
        if index is not None and nb.cells[index].get("id"):
            restored["id"] = nb.cells[index]["id"]
        elif nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
            del restored["id"]
        if index is None:
            nb.cells.append(restored)
            index = len(nb.cells) - 1
            notes.append(f"the check cell of {check.name} was missing; the grader added it at the end ({_label(nb, index)})")
        else:
            if nb.cells[index].cell_type != "code" or nb.cells[index].source != check.source:
                notes.append(f"{_label(nb, index)}, the check cell of {check.name}, had been edited; "
                             "the grader ran it as handed out")
            nb.cells[index] = restored
        positions[check.name] = index
    return positions, notes


def _outcome(check: CheckCell, index: int, run: CellRun | None) -> CheckOutcome:
    """Score one check from the run of its cell."""
    base = {"name": check.name, "max_points": check.points, "cell": index + 1}
    if run is None or run.status == "not run":
        return CheckOutcome(status="NOT RUN", points=0, message=run.evalue if run else "its cell is empty", **base)
    if run.status == "timeout":
        return CheckOutcome(status="TIMEOUT", points=0, message=f"the check {run.evalue} (does your function "
                                                                  "loop forever?)", **base)
    if run.status in ("error", "died"):
        hint = "not implemented yet: " if run.ename == "NotImplementedError" else ""
        return CheckOutcome(status="ERROR", points=0, message=f"{hint}{run.ename}: {run.evalue}", error=run.ename, **base)
    try:
        mine = [result for result in parse_results(run.probe or "") if result.name == check.name]
    except ValueError:
        mine = []
    if not mine:
        return CheckOutcome(status="ERROR", points=0, message="the check cell ran but its check gave no result", **base)
    result = mine[-1]
    if result.passed:
        return CheckOutcome(status="PASS", points=check.points, **base)
    return CheckOutcome(status="FAIL", points=0, message=result.message, mistake=result.mistake, **base)


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """The notebook at ``path``; :class:`GradingError` when there is none or it is not a notebook."""
    path = Path(path)
    if not path.is_file():
        raise GradingError(f"no such file: {path}" if not path.exists() else f"not a file: {path} (expected a .ipynb notebook)")
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # not JSON, not a notebook's structure, a wrong encoding
        raise GradingError(f"{path} is not a readable Jupyter notebook ({type(err).__name__}: {error_summary(err)})") from err
    return nb


def lesson_of(path: str | Path, nb: nbformat.NotebookNode, lessons: list[str]) -> str:
    """The lesson a notebook practises: its ``minisd3.lesson`` metadata, else its file name;
    :class:`GradingError` when neither names one of ``lessons``."""
    meta = nb.metadata.get("minisd3")
    stated = meta.get("lesson") if isinstance(meta, dict) else None
    found = stated if stated in lessons else resolve_lesson(Path(path).name, lessons)
    if found is None:
        raise GradingError(f"cannot tell which lesson {path} practises (its metadata and file name name none of "
                           f"{', '.join(lessons)}); pass --lesson NN")
    return found


def grade_notebook(path: str | Path, *, lesson: str | None = None, solutions: str | Path = "solutions",
                   cell_timeout: float = 120, notebook_timeout: float = 600,
                   save_to: str | Path | None = None) -> GradeReport:
    """Grade the practice notebook at ``path`` (fast mode, in a fresh kernel, working in its folder).

    ``lesson`` (one of the lessons in ``solutions``) overrides the lesson read from the notebook's
    metadata or file name. Each cell may run ``cell_timeout`` seconds and the whole notebook
    ``notebook_timeout``. The executed notebook, check cells restored, is saved to ``save_to`` when given.

    Raises ValueError for a bad argument (``solutions`` not a folder, ``lesson`` naming no lesson,
    a limit that is not positive) and :class:`GradingError` when this notebook cannot be graded.
    """
    lessons = solution_lessons(solutions)
    for name, value in (("cell_timeout", cell_timeout), ("notebook_timeout", notebook_timeout)):
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
    if lesson is not None and resolve_lesson(lesson, lessons) is None:
        raise ValueError(f"lesson: expected one of {', '.join(lessons)} (or its number), got {lesson!r}")
    path = Path(path)
    nb = read_notebook(path)
    found = resolve_lesson(lesson, lessons) if lesson is not None else lesson_of(path, nb, lessons)
    source = Path(solutions) / f"{found}.ipynb"
    try:
        solution = nbformat.read(source, as_version=4)
    except Exception as err:  # nbformat raises several types for unreadable JSON
        raise ValueError(f"solutions: {source} is not a readable notebook ({error_summary(err)})") from err
    checks = check_cells(solution, str(source))
    positions, notes = restore_check_cells(nb, checks)
    start = time.perf_counter()
    try:
        runs = {run.index: run for run in run_cells(nb, path.parent, fast=True, cell_timeout=cell_timeout,
                                                     notebook_timeout=notebook_timeout, probe=KERNEL_PROBE)}
    except ValueError as err:  # the kernel did not start
        raise GradingError(f"{path} could not run: {err}") from err
    seconds = time.perf_counter() - start
    outcomes = [_outcome(check, positions[check.name], runs.get(positions[check.name])) for check in checks]
    check_indices = set(positions.values())
    for index, run in sorted(runs.items()):
        if run.status == "timeout":
            notes.append(f"{_label(nb, index)} {run.evalue}")
        elif run.status == "error" and index not in check_indices and run.ename != "NotImplementedError":
            notes.append(f"{_label(nb, index)} raised {run.ename}: {run.evalue}")
        elif run.status == "died":
            notes.append(f"the kernel died in {_label(nb, index)}; the cells below it did not run")
            break
        elif run.status == "not run":
            notes.append(f"the cells from {_label(nb, index)} on did not run: {run.evalue}")
            break
    report = GradeReport(str(path), found, seconds, outcomes, notes)
    if save_to is not None:
        write_text_atomic(save_to, nbformat.writes(nb))
        report.executed = str(save_to)
    return report
