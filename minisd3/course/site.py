"""The course website: every lesson with its saved outputs, the practice notebooks, the instructor's page,
the notes in docs/ and the package's API reference, built offline by Sphinx from the committed files.

    build_site("site/")      what ``python -m minisd3 site --out site/`` runs

Sphinx with myst-nb reads the notebooks with execution off: a notebook is read, never run or written
(the lessons are copied into a temporary source tree, where a "Code this lesson uses" cell is added
to the copy). Everything a page loads is served by the site itself: MathJax 3 comes from the installed
``sphinx-mathjax-offline`` package and no widget manager is loaded from a CDN (the lessons' saved
widget state has no views: their progress bars are saved as text, their explorers as pictures). The
build fails on any Sphinx warning (a broken cross-reference, a missing image, an unknown lesson).

Needs ``sphinx``, ``myst-nb``, ``sphinx-book-theme`` and ``sphinx-mathjax-offline`` (requirements.txt).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import pkgutil
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .check_cells import check_cells
from .lesson_code import PACKAGE, CodeRef, lesson_code
from .site_pages import (
    Lesson,
    api_index,
    api_page,
    instructor_page,
    landing_page,
    lesson_code_cell,
    lesson_table,
    lessons_line,
    practice_page,
)

ROOT = Path(__file__).resolve().parents[2]
"""The repository the site is built from (this checkout)."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
COURSE_MIME = "application/vnd.minisd3."
"""The course's own output types (a figure's description for the tests): left out of the site's copies."""
PROBLEM = re.compile(r"\((WARNING|ERROR|SEVERE)/\d\)")
UNKNOWN_MARKUP = re.compile(r'Unknown interpreted text role|No role entry|Unknown directive type|No directive entry')
"""docutils' complaints about Sphinx's roles (``:func:``) and directives, which Sphinx itself knows."""
CSS = """\
/* minisd3: figures never wider than the text column; code and printed outputs scroll inside their own box (the
   theme already puts each table in a scrolling box); long inline names wrap instead of widening a phone's page */
.bd-article img, .cell_output img { max-width: 100%; height: auto; }
.bd-article .cell_output pre, .bd-article div.highlight pre { overflow-x: auto; }
.bd-article :is(p, li, td) code.literal,
.bd-article :is(p, li, td) code.literal span.pre { white-space: normal; overflow-wrap: anywhere; }
"""


class SiteBuildError(RuntimeError):
    """Sphinx stopped or warned; the message holds its warnings."""


@dataclass(frozen=True)
class SiteBuild:
    """A finished build: where the site is, how long it took, and how many pages it has."""

    out: Path
    seconds: float
    pages: int


def package_modules() -> list[str]:
    """Every module of the package that the API reference documents (all but ``__main__``), sorted."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{PACKAGE}.")]
    return sorted(name for name in names if not name.endswith("__main__"))


def module_data(module: str) -> list[str]:
    """The public names a module assigns at its top level (constants, type aliases), in source order."""
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    names: dict[str, None] = {}
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update({t.id: None for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_")})
    return list(names)


def _uses(lessons: list[Lesson], root: Path) -> tuple[dict[str, list[CodeRef]], dict[str, list[Lesson]]]:
    """Each lesson's imported package code, and for each documented name and module the lessons importing it."""
    code = {lesson.number: lesson_code(root / lesson.path) for lesson in lessons}
    users: dict[str, list[Lesson]] = {}
    for lesson in lessons:
        for ref in code[lesson.number]:
            module = ref.target if ref.kind == "mod" else ref.target.rpartition(".")[0]
            for key in {ref.target, module}:
                if lesson not in users.setdefault(key, []):
                    users[key].append(lesson)
    return code, users


def _copy_lesson(source: Path, target: Path, refs: list[CodeRef]) -> None:
    notebook = nbformat.read(source, as_version=4)
    views = [i for i, cell in enumerate(notebook.cells) for out in cell.get("outputs", []) if WIDGET_VIEW in out.get("data", {})]
    if views:  # myst-nb would load a widget manager from a CDN, which the site must not
        raise SiteBuildError(f"{source}: cell(s) {sorted(set(views))} keep a live widget view; save the explorer's static "
                             f"fallback instead (MINISD3_STATIC=1, as `python -m minisd3 execute` does)")
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for mime in [m for m in output.get("data", {}) if m.startswith(COURSE_MIME)]:
                del output["data"][mime]
    notebook.cells.append(nbformat.v4.new_markdown_cell(lesson_code_cell(refs)))
    nbformat.write(notebook, target)


def _config(root: Path, users: dict[str, list[Lesson]]) -> str:
    """conf.py of the generated source tree."""
    settings = {
        "project": "minisd3",
        "author": "the minisd3 course",
        "copyright": "the minisd3 course (MIT)",
        "extensions": ["myst_nb", "sphinx.ext.autodoc", "sphinx-mathjax-offline", "minisd3.course.site"],
        "nb_execution_mode": "off",
        "nb_ipywidgets_js": {},
        "nb_mime_priority_overrides": [("html", WIDGET_VIEW, None)],
        "nb_render_markdown_format": "myst",  # the lessons' printed tables (text/markdown outputs) as tables
        "myst_enable_extensions": ["dollarmath", "amsmath"],
        "myst_heading_anchors": 3,
        "html_theme": "sphinx_book_theme",
        "html_title": "minisd3",
        "html_static_path": ["_static"],
        "html_css_files": ["minisd3.css"],
        "html_context": {"default_mode": "light"},  # the lessons' figures are drawn on white
        "html_theme_options": {"show_toc_level": 2, "use_download_button": True, "home_page_in_toc": True},
        "html_show_sourcelink": False,
        "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
        "nitpicky": True,  # a link to package code that resolves to nothing fails the build ...
        "nitpick_ignore_regex": [(r"py:.*", r"(?!minisd3\.).*|.*\._\w*|.*\.[A-Z]")],  # other libraries' names (torch.Tensor),
        # private names and type variables aside
        "autodoc_member_order": "bysource",
        "autodoc_typehints": "signature",
        "minisd3_lessons_using": {name: [(lesson.label, lesson.docname) for lesson in found] for name, found in users.items()},
    }
    return "".join(f"{key} = {value!r}\n" for key, value in settings.items())


def write_sources(src: Path, root: Path = ROOT) -> list[Lesson]:
    """The Sphinx source tree of the site, under ``src``, laid out as the repository (so README's and the
    notes' relative links resolve): copies of the lessons, exercises and notes, and the generated pages."""
    readme = (root / "README.md").read_text(encoding="utf-8")
    lessons = lesson_table(readme)
    for lesson in lessons:
        if not (root / lesson.path).is_file():
            raise SiteBuildError(f"README.md names lesson {lesson.number} at {lesson.path}, which does not exist")
    code, users = _uses(lessons, root)
    for folder in ("notebooks", "exercises", "docs", "api", "_static"):
        (src / folder).mkdir(parents=True, exist_ok=True)
    for lesson in lessons:
        _copy_lesson(root / lesson.path, src / lesson.path, code[lesson.number])
    exercises = sorted(path.name for path in (root / "exercises").glob("*.ipynb"))
    for name in exercises:
        shutil.copyfile(root / "exercises" / name, src / "exercises" / name)
    notes = sorted(path.stem for path in (root / "docs").glob("*.md"))
    for name in notes:
        shutil.copyfile(root / "docs" / f"{name}.md", src / "docs" / f"{name}.md")
    checks = {path.name: [(c.name, c.points) for c in check_cells(nbformat.read(path, as_version=4), str(path))]
              for path in sorted((root / "solutions").glob("*.ipynb"))}  # only the check cells' names and points
    modules = package_modules()
    pages = {
        "index.md": landing_page(readme, lessons, [f"docs/{name}" for name in notes]),
        "practice.md": practice_page(lessons, exercises),
        "instructors.md": instructor_page(readme, checks, lessons),
        "api/index.md": api_index(modules),
        **{f"api/{module}.md": api_page(module, users.get(module, []), module_data(module)) for module in modules},
        "_static/minisd3.css": CSS,
        "conf.py": _config(root, users),
    }
    for name, text in pages.items():
        (src / name).write_text(text, encoding="utf-8")
    return lessons


def build_site(out: str | Path, root: str | Path = ROOT, quiet: bool = True) -> SiteBuild:
    """Build the website into ``out`` (a new or empty folder, or a previous site, which is replaced).

    Raises SiteBuildError with Sphinx's warnings when it warns (every warning fails the build), and
    ValueError when ``root`` is not the course's folder or ``out`` is a file or a folder that holds
    something other than a site.
    """
    from sphinx.cmd.build import build_main

    out, root = Path(out), Path(root)
    if not (root / "README.md").is_file() or not (root / "notebooks").is_dir():
        raise ValueError(f"--course: expected the course's folder (README.md, notebooks/, exercises/, docs/), got {str(root)!r}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / ".buildinfo").exists())):
        raise ValueError(f"--out: expected a new or empty folder or a previous site, got {str(out)!r}, which holds other files")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minisd3-site-") as tmp:
        src, built, warnings = Path(tmp) / "src", Path(tmp) / "html", Path(tmp) / "warnings.txt"
        write_sources(src, root)
        argv = ["-b", "html", "-W", "--keep-going", "-E", "-d", str(Path(tmp) / "doctrees"), "-w", str(warnings)]
        status = build_main(argv + (["-q"] if quiet else []) + [str(src), str(built)])
        if status != 0:
            raise SiteBuildError(f"the site's build failed (every Sphinx warning fails it):\n{warnings.read_text()}")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), out)
    return SiteBuild(out, time.perf_counter() - start, sum(1 for _ in out.rglob("*.html")))


def _is_clean_rest(text: str, env) -> bool:
    """Whether docutils reads ``text`` without a warning (Sphinx's own roles and directives, which need the
    Sphinx environment ``env``, aside)."""
    from docutils.core import publish_doctree

    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": stream, "env": env})
    return not any(PROBLEM.search(line) and not UNKNOWN_MARKUP.search(line) for line in stream.getvalue().splitlines())


def _docstring(app, what, name, obj, options, lines) -> None:
    """autodoc-process-docstring: a docstring that is not clean reST is shown as written (many are plain text
    with aligned formulas), and after each documented object come the lessons that import it."""
    if lines and not _is_clean_rest("\n".join(lines), app.env):
        lines[:] = ["::", ""] + [f"    {line}" for line in lines]
    found = app.config.minisd3_lessons_using.get(name, [])
    lines.extend(lessons_line([Lesson(label[:2], label[3:], f"{doc}.ipynb", "") for label, doc in found]))


def setup(app) -> dict:
    """Sphinx extension: docstrings that are not reST shown as written; the lessons that import each documented
    object named under its docstring."""
    app.add_config_value("minisd3_lessons_using", {}, "env")
    app.connect("autodoc-process-docstring", _docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
