"""Grading a class: many notebooks, one row per student, a summary per check.

    book = grade_class(find_notebooks(["submissions/"]), executed_dir="grades_executed")
    write_text_atomic("grades.csv", book.csv_text())
    print(book.text())

Each notebook is graded on its own (:func:`minisd3.course.grading.grade_notebook`: a fresh kernel,
time limits per cell and per notebook); one that cannot be graded (unreadable, no known lesson) is
a row saying why, and the run goes on. The CSV and :meth:`Gradebook.to_dict` (``--json``) carry the
same facts: for every notebook its student, lesson, score, each check's status, points, named
mistake and message, the notes, and where the executed notebook was saved.
"""
from __future__ import annotations

import csv
import glob
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .grading import GradeReport, GradingError, grade_notebook, solution_lessons


@dataclass
class Entry:
    """One notebook of the class: its ``student``, its ``path``, and either its ``report`` or the
    ``error`` that kept it from being graded."""

    student: str
    path: Path
    report: GradeReport | None = None
    error: str = ""

    @property
    def status(self) -> str:
        return "graded" if self.report is not None else "could not run"

    def to_dict(self) -> dict:
        data = {"student": self.student, "status": self.status, "error": self.error}
        data.update(self.report.to_dict() if self.report is not None else {"notebook": str(self.path)})
        return data


def find_notebooks(patterns: Sequence[str], skip: str | Path | None = None) -> list[Path]:
    """The notebooks ``patterns`` name: a notebook, a folder (every ``.ipynb`` under it, checkpoints
    and hidden folders left out) or a glob pattern (``subs/*/04*.ipynb``), in order, each once;
    anything under ``skip`` (the folder the grader writes executed notebooks to) is left out.

    Raises ValueError naming the pattern that matched no notebook.
    """
    skip = Path(skip).resolve() if skip is not None else None
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*.ipynb")
                             if not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if p.endswith(".ipynb"))
        matches = [p for p in matches if skip is None or skip not in p.resolve().parents]
        if not matches:
            raise ValueError(f"notebooks: {pattern!r} matched no .ipynb notebook (a notebook, a folder or a glob pattern)")
        found.update(dict.fromkeys(matches))
    return list(found)


def student_of(path: Path, lessons: Sequence[str]) -> str:
    """Who handed in ``path``: its file name without ``.ipynb``, or its folder's name when the file
    keeps the lesson's own name (``alice/04_timestep_sampling.ipynb`` is alice's)."""
    return path.parent.resolve().name if path.stem in lessons else path.stem


def grade_class(paths: Sequence[Path], *, lesson: str | None = None, solutions: str | Path = "solutions",
                cell_timeout: float = 120, notebook_timeout: float = 600, executed_dir: str | Path | None = None,
                on_graded: Callable[[Entry], None] | None = None) -> Gradebook:
    """Grade every notebook in ``paths``, one after another, each in its own kernel.

    The keywords are :func:`~minisd3.course.grading.grade_notebook`'s. With ``executed_dir`` each
    executed notebook is saved there as ``STUDENT_LESSON.ipynb``. ``on_graded`` is called with each
    :class:`Entry` as soon as it is done (progress).

    Raises ValueError for a bad argument (``solutions``, ``lesson``, a time limit); a notebook that
    cannot be graded does not stop the run, it becomes an entry with its error.
    """
    lessons = solution_lessons(solutions)
    entries: list[Entry] = []
    used: set[str] = set()
    for path in paths:
        entry = Entry(student_of(Path(path), lessons), Path(path))
        save_to = None
        if executed_dir is not None:
            stem = f"{entry.student}_{Path(path).stem}" if Path(path).stem != entry.student else entry.student
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}-{n}"
            used.add(name)
            save_to = Path(executed_dir) / f"{name}.ipynb"
        try:
            entry.report = grade_notebook(path, lesson=lesson, solutions=solutions, cell_timeout=cell_timeout,
                                          notebook_timeout=notebook_timeout, save_to=save_to)
        except GradingError as err:
            entry.error = str(err)
        entries.append(entry)
        if on_graded is not None:
            on_graded(entry)
    return Gradebook(entries)


@dataclass(frozen=True)
class CheckSummary:
    """How a class did on one check: ``passed`` of ``graded`` notebooks, the commonest named mistake
    (``mistake``, its ``count`` and one ``message``) and the other ways it scored zero (``others``:
    ``{"ERROR NotImplementedError": 3, "TIMEOUT": 1, …}``)."""

    lesson: str
    name: str
    points: float
    graded: int
    passed: int
    mistake: str | None
    count: int
    message: str
    others: dict[str, int]

    def line(self) -> str:
        text = f"{self.name} ({self.points:g} pt): {self.passed}/{self.graded} passed"
        if self.mistake is not None:
            text += f"; commonest mistake {self.mistake} ×{self.count} ({self.message})"
        if self.others:
            text += "; " + ", ".join(f"{what} ×{n}" for what, n in self.others.items())
        return text


@dataclass
class Gradebook:
    """The entries of a class, in the order graded, with the per-check summary and the CSV."""

    entries: list[Entry]

    def checks(self) -> list[tuple[str, str, float]]:
        """(lesson, check, points) of every check graded, in lesson and notebook order."""
        seen: dict[tuple[str, str], float] = {}
        for entry in sorted((e for e in self.entries if e.report), key=lambda e: e.report.lesson):
            for outcome in entry.report.checks:
                seen.setdefault((entry.report.lesson, outcome.name), outcome.max_points)
        return [(lesson, name, points) for (lesson, name), points in seen.items()]

    def summary(self) -> list[CheckSummary]:
        """One :class:`CheckSummary` per check."""
        rows = []
        for lesson, name, points in self.checks():
            outcomes = [o for e in self.entries if e.report and e.report.lesson == lesson
                        for o in e.report.checks if o.name == name]
            mistakes = Counter(o.mistake for o in outcomes if o.status == "FAIL" and o.mistake)
            top, count = mistakes.most_common(1)[0] if mistakes else (None, 0)
            message = next((o.message for o in outcomes if o.mistake == top), "") if top else ""
            others = Counter(f"{o.status} {o.error}".strip() if o.status == "ERROR" else
                             ("FAIL (no named mistake)" if o.status == "FAIL" else o.status)
                             for o in outcomes if o.status != "PASS" and not (o.status == "FAIL" and o.mistake))
            rows.append(CheckSummary(lesson, name, points, len(outcomes), sum(o.status == "PASS" for o in outcomes),
                                     top, count, message, dict(others.most_common())))
        return rows

    def rows(self) -> list[dict[str, object]]:
        """One CSV row per notebook: student, notebook, lesson, status, score, max_score, seconds; then for
        each check its status, points, mistake and message; then notes (joined by `` | ``) and executed."""
        rows = []
        for entry in self.entries:
            report = entry.report
            row: dict[str, object] = {"student": entry.student, "notebook": str(entry.path),
                                      "lesson": report.lesson if report else "", "status": entry.status,
                                      "score": f"{report.score:g}" if report else "",
                                      "max_score": f"{report.max_score:g}" if report else "",
                                      "seconds": f"{report.seconds:.1f}" if report else ""}
            outcomes = {o.name: o for o in report.checks} if report else {}
            for _, name, _ in self.checks():
                o = outcomes.get(name)
                row[name] = o.status if o else ""
                row[f"{name} points"] = f"{o.points:g}" if o else ""
                row[f"{name} mistake"] = (o.mistake or "") if o else ""
                row[f"{name} message"] = o.message if o else ""
            row["notes"] = " | ".join(report.notes) if report else entry.error
            row["executed"] = (report.executed or "") if report else ""
            rows.append(row)
        return rows

    def csv_text(self) -> str:
        """The CSV of :meth:`rows`, with a header line."""
        rows = self.rows()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["student"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def to_dict(self) -> dict:
        """Every entry's facts and the summary, as JSON-ready data."""
        return {"notebooks": [entry.to_dict() for entry in self.entries],
                "summary": [summary.__dict__.copy() for summary in self.summary()]}

    def text(self) -> str:
        """The summary an instructor reads: how many were graded, and per check how many passed and what
        went wrong most."""
        graded = [e for e in self.entries if e.report]
        lines = [f"{len(graded)} of {len(self.entries)} notebooks graded"
                 + (f"; could not run: {', '.join(str(e.path) for e in self.entries if not e.report)}"
                    if len(graded) < len(self.entries) else "")]
        for lesson in dict.fromkeys(lesson for lesson, _, _ in self.checks()):
            reports = [e.report for e in graded if e.report.lesson == lesson]
            mean = sum(r.score for r in reports) / len(reports)
            lines.append(f"lesson {lesson}: {len(reports)} notebooks, mean score {mean:.2g}/{reports[0].max_score:g}")
            lines += [f"  {summary.line()}" for summary in self.summary() if summary.lesson == lesson]
        return "\n".join(lines)
