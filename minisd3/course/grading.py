"""Grading a learner's practice notebook: run it in fast mode with errors allowed, read the check
results its check cells showed and score them against the lesson's expected checks in
:data:`minisd3.course.checks.LESSON_CHECKS`; of the learner's file only the lesson's name is used.

A result is read only from the JSON a check displays with its line (MIME type
``application/vnd.minisd3.check+json``, see :mod:`minisd3.course.checks`). Printed text, a
``[check] NAME: PASS`` line included, counts for nothing, so printing a check's line passes nothing.
The report (:class:`GradeReport`) prints as text or as JSON (``python -m minisd3 grade [--json]``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .checks import LESSON_CHECKS, CheckResult
from .checks.core import RESULT_MIME, error_summary
from .notebooks import cell_errors, execute_notebook


class GradingError(Exception):
    """The notebook could not be graded: no such file, not a notebook, unknown lesson, kernel died."""


@dataclass(frozen=True)
class CheckOutcome:
    """One expected check: ``status`` is PASS, FAIL or NOT RUN, ``message`` says why, ``mistake`` is the
    identifier of the mistake a FAIL named (:attr:`minisd3.course.checks.CheckResult.mistake`), if any."""

    name: str
    status: str
    message: str = ""
    mistake: str | None = None


@dataclass
class GradeReport:
    """The result of grading one notebook."""

    notebook: str
    lesson: str
    seconds: float
    checks: list[CheckOutcome]
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(outcome.status == "PASS" for outcome in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    def to_dict(self) -> dict:
        return {
            "notebook": self.notebook,
            "lesson": self.lesson,
            "seconds": round(self.seconds, 2),
            "checks": [{"name": o.name, "status": o.status, "message": o.message} for o in self.checks],
            "errors": [{"cell": cell, "ename": ename, "evalue": evalue} for cell, ename, evalue in self.errors],
            "score": self.score,
            "total": self.total,
        }

    def text(self) -> str:
        width = max(len(o.name) for o in self.checks)
        lines = [f"{self.notebook}: lesson {self.lesson}, ran in {self.seconds:.1f} s (fast mode)"]
        for o in self.checks:
            why = f"  — {o.message}" if o.status != "PASS" else ""
            lines.append(f"  {o.status:<7}  {o.name:<{width}}{why}")
        for cell, ename, evalue in self.errors:
            if ename != "NotImplementedError":
                lines.append(f"  note: cell {cell} raised {ename}: {evalue}")
        lines.append(f"score: {self.score}/{self.total}")
        return "\n".join(lines)


def resolve_lesson(name: str) -> str | None:
    """The lesson a name refers to: ``"03"``, ``"3"``, ``"03_rectified_flow"``, ``"rectified_flow"``
    or a file name containing one of them; ``None`` when it names no lesson with checks."""
    text = Path(str(name)).stem.lower()
    for lesson in LESSON_CHECKS:
        if lesson in text:
            return lesson
    for lesson in LESSON_CHECKS:
        if lesson.split("_", 1)[1] in text:
            return lesson
    number = re.match(r"^\D*?(\d{1,2})(?!\d)", text)
    if number:
        return next((lesson for lesson in LESSON_CHECKS if int(lesson[:2]) == int(number.group(1))), None)
    return None


def _lesson_of(path: Path, nb: nbformat.NotebookNode, lesson: str | None) -> str:
    if lesson is not None:
        found = resolve_lesson(lesson)
        if found is None:
            raise GradingError(f"lesson: expected one of {', '.join(LESSON_CHECKS)} (or its number), got {lesson!r}")
        return found
    course_metadata = nb.metadata.get("minisd3")
    stated = course_metadata.get("lesson") if isinstance(course_metadata, dict) else None
    found = stated if stated in LESSON_CHECKS else resolve_lesson(path.name)
    if found is None:
        raise GradingError(f"cannot tell which lesson {path} practises (its metadata and file name name none of "
                           f"{', '.join(LESSON_CHECKS)}); pass --lesson NN")
    return found


def check_results(nb: nbformat.NotebookNode) -> list[CheckResult]:
    """Every check result an executed notebook's outputs carry, in output order: the
    :data:`~minisd3.course.checks.core.RESULT_MIME` JSON of its display outputs. Printed text is not
    read, so a printed ``[check] NAME: PASS`` line counts for nothing; malformed JSON is skipped."""
    results = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue
            data = output.get("data", {}).get(RESULT_MIME)
            try:
                results.append(CheckResult.from_dict(json.loads(data) if isinstance(data, str) else data))
            except ValueError:  # absent, not JSON, or not a check result's fields
                continue
    return results


def read_checks(nb: nbformat.NotebookNode, lesson: str) -> list[CheckOutcome]:
    """The outcome of each of ``lesson``'s expected checks in an executed notebook.

    A check counts as run when its result is among :func:`check_results` (the last one wins);
    otherwise it is NOT RUN, with the reason read from the cell that calls it.
    """
    shown = {result.name: result for result in check_results(nb)}
    outcomes = []
    for name in LESSON_CHECKS[lesson]:
        if name in shown:
            result = shown[name]
            outcomes.append(CheckOutcome(name, "PASS", "") if result.passed
                            else CheckOutcome(name, "FAIL", result.message, result.mistake))
            continue
        callers = [cell for cell in nb.cells if cell.cell_type == "code" and f"check_{name}(" in cell.source]
        errors = [o for cell in callers for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if not callers:
            reason = f"no cell calls check_{name} (was the check cell deleted?)"
        elif errors and errors[0].get("ename") == "NotImplementedError":
            reason = f"{name} is not implemented yet (NotImplementedError: {errors[0].get('evalue')})"
        elif errors:
            reason = f"the check cell raised {errors[0].get('ename')}: {errors[0].get('evalue')}"
        else:
            reason = "the check cell printed no result"
        outcomes.append(CheckOutcome(name, "NOT RUN", reason))
    return outcomes


def grade_notebook(path: str | Path, lesson: str | None = None, timeout: int = 300) -> GradeReport:
    """Run the notebook at ``path`` (fast mode, errors allowed) and score its lesson's checks.

    ``lesson`` overrides the lesson read from the notebook's metadata or file name. Raises
    :class:`GradingError` when the notebook cannot be read or run.
    """
    path = Path(path)
    if not path.exists():
        raise GradingError(f"no such file: {path}")
    if not path.is_file():
        raise GradingError(f"not a file: {path} (expected a .ipynb notebook)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook's structure, a wrong encoding
        raise GradingError(f"{path} is not a readable Jupyter notebook "
                           f"({type(err).__name__}: {error_summary(err)})") from err
    found = _lesson_of(path, nb, lesson)
    try:
        executed, seconds = execute_notebook(path, fast=True, allow_errors=True, timeout=timeout)
    except Exception as err:  # dead kernel, cell timeout, missing kernel
        raise GradingError(f"{path} could not run to the end ({type(err).__name__}: {error_summary(err)})") from err
    return GradeReport(str(path), found, seconds, read_checks(executed, found), cell_errors(executed))
