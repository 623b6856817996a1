"""The course website's own pages, as MyST markdown: the landing page, the practice and instructor pages,
the API reference pages and each lesson's "Code this lesson uses" list.

Their words come from the repository (README's lesson table and sections, the solutions' check cells,
the package's docstrings), so the site says what the README says and never drifts from it. Every
function here returns text; :mod:`minisd3.course.site` writes it and runs Sphinx.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .lesson_code import CodeRef

LESSON_ROW = re.compile(r"^\|\s*(\d\d)\s*\|\s*\[(?P<title>[^\]]+)\]\((?P<path>notebooks/[^)]+\.ipynb)\)\s*\|(?P<see>.*)\|\s*$")


@dataclass(frozen=True)
class Lesson:
    """A row of README's lesson table: number, title, notebook path (``notebooks/NN_name.ipynb``), what one sees."""

    number: str
    title: str
    path: str
    see: str

    @property
    def docname(self) -> str:
        """The lesson page's Sphinx document name (its path without ``.ipynb``)."""
        return self.path.removesuffix(".ipynb")

    @property
    def label(self) -> str:
        return f"{self.number} {self.title}"


def lesson_table(readme: str) -> list[Lesson]:
    """The lessons of README's table, in its order. Raises ValueError when the README has none."""
    lessons = [Lesson(m[1], m["title"].strip(), m["path"], m["see"].strip())
               for m in map(LESSON_ROW.match, readme.splitlines()) if m]
    if not lessons:
        raise ValueError("README.md: expected the lesson table (| 01 | [title](notebooks/01_….ipynb) | … |), got none")
    return lessons


def readme_section(readme: str, heading: str) -> str:
    """The body of README's ``## heading`` section (up to the next level-2 heading), without the heading line.
    Raises ValueError when there is no such section."""
    match = re.search(rf"^## {re.escape(heading)}\s*\n(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    if match is None:
        raise ValueError(f"README.md: expected a '## {heading}' section, got none")
    return match[1].strip() + "\n"


def _toctree(caption: str, entries: list[str], hidden: bool = False) -> str:
    options = f":caption: {caption}\n:maxdepth: 1\n" + (":hidden:\n" if hidden else "")
    return "```{toctree}\n" + options + "\n" + "\n".join(entries) + "\n```\n"


def landing_page(readme: str, lessons: list[Lesson], notes: list[str]) -> str:
    """``index.md``: README's "What this is" (with the lesson table), what the site holds, and the navigation."""
    return "\n".join([
        "# minisd3 — learn Stable Diffusion 3 by building it\n",
        readme_section(readme, "What this is"),
        "## What you find on this site\n",
        "- **Lessons**: every notebook as committed, with the saved outputs of its full-length run — figures, "
        "tables, progress bars, and the explorers' static pictures. The site is built from the saved notebooks; "
        "nothing is re-run. At the end of each lesson, *Code this lesson uses* links to the package code it imports.",
        "- **[Practice notebooks](practice.md)**: an exercise notebook per lesson to download, with checks that name "
        "the mistake.",
        "- **[For instructors](instructors.md)**: handing out the exercises, the checks and their points, grading.",
        "- **Notes**: benchmarks, the text-to-image recipe and the studies behind lessons 10–11.",
        "- **[API reference](api/index.md)**: the `minisd3` package from its docstrings; each entry names the lessons "
        "that import it.\n",
        "To run the lessons yourself: `pip install -r requirements.txt` in a fresh virtual environment, then "
        "`jupyter lab notebooks/01_flows_2d.ipynb` (README.md).\n",
        _toctree("Lessons", [lesson.docname for lesson in lessons], hidden=True),
        _toctree("Practice", ["practice", "instructors"], hidden=True),
        _toctree("Notes", notes, hidden=True),
        _toctree("Reference", ["api/index"], hidden=True),
    ])


def practice_page(lessons: list[Lesson], exercises: list[str]) -> str:
    """``practice.md``: each exercise notebook with a link to read it and a link to download it."""
    by_number = {lesson.number: lesson for lesson in lessons}
    rows = []
    for name in exercises:
        lesson = by_number.get(name[:2])
        title = lesson.title if lesson else name
        rows.append(f"| {name[:2]} | [{title}](exercises/{name}) | {{download}}`{name} <exercises/{name}>` |")
    return "\n".join([
        "# Practice notebooks\n",
        "One exercise notebook per lesson. Each exercise is a stub that raises `NotImplementedError` until you "
        "write it; the check cell after it prints `PASS` or names the mistake. Download a notebook, open it in "
        "Jupyter next to the lesson, and run it top to bottom. The answers are not on this site.\n",
        "| # | practice notebook (read) | download |",
        "|---|---|---|",
        *rows,
        "",
        _toctree("Practice notebooks", [f"exercises/{name.removesuffix('.ipynb')}" for name in exercises], hidden=True),
    ])


def instructor_page(readme: str, checks: dict[str, list[tuple[str, float]]], lessons: list[Lesson]) -> str:
    """``instructors.md``: README's "Practice notebooks and grading" and a table of every check and its points."""
    titles = {lesson.number: lesson.title for lesson in lessons}
    rows = [f"| {name[:2]} | {titles.get(name[:2], name)} | "
            + ", ".join(f"`{check}` ({points:g})" for check, points in found)
            + f" | {sum(points for _, points in found):g} |" for name, found in checks.items()]
    return "\n".join([
        "# For instructors\n",
        "The exercise notebooks to hand out are on [Practice notebooks](practice.md), each with a download link. "
        "What follows is README's section on practice and grading.\n",
        readme_section(readme, "Practice notebooks and grading"),
        "## Checks and points\n",
        "Each practice notebook's check cells, as `solutions/` declares them (the grader scores each check out of its "
        "points; `exercises/` carries the same cells, locked):\n",
        "| # | lesson | checks (points) | total |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def lesson_code_cell(refs: list[CodeRef]) -> str:
    """The markdown cell appended to a lesson page: the package code the lesson imports, a line per module,
    each name linked to its reference."""
    by_module: dict[str, list[CodeRef]] = {}
    for ref in refs:
        module = ref.target if ref.kind == "mod" else ref.target.rpartition(".")[0]
        by_module.setdefault(module, []).extend([] if ref.kind == "mod" else [ref])
    lines = [f"- {{py:mod}}`{module}`" + (": " + ", ".join(f"{ref.role}`~{ref.target}`" for ref in names) if names else "")
             for module, names in by_module.items()]
    return ("## Code this lesson uses\n\nThe `minisd3` code this lesson imports (read from its `import` lines), each "
            "linked to its reference:\n\n" + "\n".join(lines) + "\n")


def api_index(modules: list[str]) -> str:
    """``api/index.md``: the package's modules by layer, each a page."""
    layers = {"lessons": [m for m in modules if m.split(".")[1:2] not in (["engine"], ["course"], ["cli"])],
              "engine": [m for m in modules if m.startswith("minisd3.engine")],
              "course": [m for m in modules if m.startswith("minisd3.course")],
              "command line": [m for m in modules if m == "minisd3.cli"]}
    parts = ["# API reference\n",
             "The `minisd3` package, generated from its docstrings. Imports go course → engine → lessons, never back. "
             "Each module and function names the lessons that import it.\n"]
    for layer, names in layers.items():
        if names:
            parts.append(_toctree(f"{layer}", names))
    return "\n".join(parts)


def api_page(module: str, lessons_using: list[Lesson], data: list[str]) -> str:
    """``api/<module>.md``: the module by autodoc, after a line naming the lessons that import it. Its
    module-level constants (``data``) are documented one by one, since autodoc leaves out those without a
    doc comment, and a lesson or a docstring may link to any of them."""
    used = ", ".join(f"[{lesson.label}](../{lesson.path})" for lesson in lessons_using)
    return "\n".join([
        f"# `{module}`\n",
        f"Lessons that import it: {used}.\n" if used else "",
        "```{eval-rst}",
        f".. automodule:: {module}",
        "   :members:",
        "   :undoc-members:",
        "   :show-inheritance:",
        *([f"   :exclude-members: {', '.join(data)}"] if data else []),
        *[line for name in data for line in ("", f".. autodata:: {module}.{name}", "   :no-value:")],
        "```\n",
    ])


def lessons_line(lessons_using: list[Lesson]) -> list[str]:
    """The reST lines autodoc appends to a documented object's docstring: the lessons that import it."""
    if not lessons_using:
        return []
    links = ", ".join(f":doc:`{lesson.label} </{lesson.docname}>`" for lesson in lessons_using)
    return ["", f":Lessons that import it: {links}"]
