"""Which package code each lesson uses: its ``from minisd3… import …`` lines, read from the notebook (ast).

The course website links every lesson page to the API reference of the names it imports, and every
API entry back to the lessons that import it. Nothing is executed: the imports are read from the
notebook's code cells, and each name is resolved (by importing the package module) to the place
autodoc documents it — the module that defines a function or class, the importing module for data.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import nbformat

PACKAGE = "minisd3"


@dataclass(frozen=True, order=True)
class CodeRef:
    """A documented object of the package: ``target`` its dotted name, ``kind`` ``"mod"`` or ``"obj"``."""

    target: str
    kind: str

    @property
    def role(self) -> str:
        """The MyST role that links to it."""
        return "{py:mod}" if self.kind == "mod" else "{py:obj}"


def _code(cell_source: str) -> str:
    """A code cell's source as Python: IPython magics and shell lines blanked (they are not Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def imported_names(notebook: nbformat.NotebookNode) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every package import in the notebook's code cells, in order, without repeats:
    ``from minisd3.ode import euler`` gives ``("minisd3.ode", "euler")``, ``import minisd3.ode`` gives
    ``("minisd3.ode", None)``. A cell that is not valid Python is skipped (it imports nothing we can see)."""
    found: dict[tuple[str, str | None], None] = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_code(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
                found.update({(node.module, alias.name): None for alias in node.names})
            elif isinstance(node, ast.Import):
                found.update({(alias.name, None): None for alias in node.names
                              if alias.name.split(".")[0] == PACKAGE and alias.name != PACKAGE})
    return list(found)


def resolve(module: str, name: str | None) -> CodeRef:
    """Where autodoc documents ``module.name``: a module is itself; a function or class is under the module
    that defines it (``minisd3.full_or_fast`` → ``minisd3.env.full_or_fast``); other data under ``module``.

    Raises ImportError or AttributeError when the lesson imports something the package does not have."""
    owner = importlib.import_module(module)
    if name is None:
        return CodeRef(module, "mod")
    try:
        value = getattr(owner, name)
    except AttributeError:  # ``from minisd3 import ddpm``: a submodule, imported as Python's import would
        value = importlib.import_module(f"{module}.{name}")
    if inspect.ismodule(value):
        return CodeRef(value.__name__, "mod")
    if inspect.isfunction(value) or inspect.isclass(value):
        home = getattr(value, "__module__", "") or ""
        if home.split(".")[0] == PACKAGE:
            return CodeRef(f"{home}.{value.__qualname__}", "obj")
    return CodeRef(f"{module}.{name}", "obj")


def lesson_code(notebook_path: str | Path) -> list[CodeRef]:
    """The package objects a lesson imports, sorted by dotted name, each once."""
    notebook = nbformat.read(notebook_path, as_version=4)
    return sorted({resolve(module, name) for module, name in imported_names(notebook)})
