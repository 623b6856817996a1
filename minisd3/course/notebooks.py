"""Running lesson and practice notebooks headlessly (nbclient), for building, testing and grading.

:func:`execute_notebook` runs a lesson top to bottom and stops at the first error (building, testing);
:func:`run_cells` runs a practice notebook cell by cell, each under a time limit, and carries on past
errors, hung cells and a dead kernel, saying what happened to every cell (grading).
"""
from __future__ import annotations

import ast
import math
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbclient.util import ensure_async, run_sync

from ..env import FAST_ENV, STATIC_ENV

KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]  # no TCP-encryption notes in the outputs
TIMEOUT_ENAME = "CellTimeout"
"""The exception name :func:`run_cells` gives a cell it interrupted past its time limit."""
PROBE_SECONDS = 10
"""How long :func:`run_cells` waits for the kernel to answer its probe (after an interrupt, to come back)."""


@contextmanager
def _kernel_env(fast: bool) -> Iterator[None]:
    """Set ``MINISD3_FAST`` (from ``fast``) and the static-widgets switch for a kernel started inside."""
    saved = {k: os.environ.get(k) for k in (FAST_ENV, STATIC_ENV)}
    os.environ[FAST_ENV] = "1" if fast else "0"
    os.environ[STATIC_ENV] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(path.parent.resolve())}}, extra_arguments=KERNEL_ARGS)
    start = time.perf_counter()
    try:
        with _kernel_env(fast):
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


@dataclass(frozen=True)
class CellRun:
    """What happened to one code cell in :func:`run_cells`.

    ``status`` is ``"ok"``, ``"error"`` (it raised ``ename: evalue``), ``"timeout"`` (interrupted past
    its limit), ``"died"`` (the kernel died while it ran) or ``"not run"`` (``evalue`` says why).
    ``probe`` is the probe expression's value right after the cell (``None`` if not asked or it raised).
    """

    index: int
    status: str
    ename: str = ""
    evalue: str = ""
    probe: str | None = None


def _note(cell: nbformat.NotebookNode, text: str) -> None:
    """Add a line from the runner to a cell's outputs (on stderr), for whoever reads the executed notebook."""
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=f"[minisd3 grader] {text}\n"))


async def _ask(client: NotebookClient, expression: str) -> str:
    """The value of ``expression`` (which gives a str) in the client's kernel, asked without a trace in
    the notebook: a silent execute request whose ``user_expressions`` answer comes back on the shell
    channel, not as an output. Raises ``queue.Empty`` when the kernel does not answer within
    :data:`PROBE_SECONDS`, ValueError when the expression raised or gave no str."""
    msg_id = await ensure_async(client.kc.execute("", silent=True, store_history=False,
                                                  user_expressions={"value": expression}))
    deadline = time.monotonic() + PROBE_SECONDS
    while True:
        reply = await ensure_async(client.kc.get_shell_msg(timeout=max(0.0, deadline - time.monotonic())))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    value = reply["content"].get("user_expressions", {}).get("value", {})
    if value.get("status") != "ok":
        raise ValueError(f"the probe raised {value.get('ename')}: {value.get('evalue')}")
    try:
        text = ast.literal_eval(value["data"]["text/plain"])  # the answer is the value's repr
    except (KeyError, ValueError, SyntaxError):
        text = None
    if not isinstance(text, str):
        raise ValueError(f"the probe should give a str, got {value.get('data')!r}")
    return text


def run_cells(nb: nbformat.NotebookNode, folder: str | Path, *, fast: bool, cell_timeout: float,
              notebook_timeout: float, probe: str | None = None) -> list[CellRun]:
    """Run the code cells of ``nb`` in order in a fresh ``python3`` kernel working in ``folder``; the
    outputs land in ``nb``. Returns a :class:`CellRun` for every non-empty code cell.

    Errors are allowed. A cell past ``cell_timeout`` seconds, or past what is left of
    ``notebook_timeout`` for the whole notebook, is interrupted and the next cell runs; when the
    kernel dies, when it does not come back from an interrupt, or when the notebook's time is spent,
    the remaining cells are ``not run``. Each cut-off cell gets a line in its outputs saying so.
    ``probe``, an expression giving a str, is evaluated silently after every cell that ran, when given
    (:func:`_ask`); its value is :attr:`CellRun.probe` (``None`` when it raised).

    Raises ValueError when the kernel cannot start.
    """
    replies: dict[int, dict] = {}
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(Path(folder).resolve())}},
                            extra_arguments=KERNEL_ARGS,
                            on_cell_executed=lambda cell, cell_index, execute_reply: replies.update({cell_index: execute_reply}))
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.source.strip()]
    runs: list[CellRun] = []
    stopped = ""  # why the remaining cells do not run
    with _kernel_env(fast), ExitStack() as kernel:
        try:
            kernel.enter_context(client.setup_kernel())
        except Exception as err:  # no python3 kernel, a kernel that does not answer, a broken install
            raise ValueError(f"could not start a python3 kernel ({type(err).__name__}: {err})") from err
        start = time.monotonic()
        for i in code:
            left = notebook_timeout - (time.monotonic() - start)
            if not stopped and left < 1:
                stopped = f"the notebook's time limit ({notebook_timeout:g} s) was spent"
            if stopped:
                runs.append(CellRun(i, "not run", evalue=stopped))
                continue
            why = f"its {cell_timeout:g} s limit" if cell_timeout <= left else f"the notebook's {notebook_timeout:g} s limit"
            client.timeout = math.ceil(min(cell_timeout, left))
            client.error_on_timeout = {"ename": TIMEOUT_ENAME, "evalue": f"ran past {why} and was interrupted",
                                       "traceback": []}
            try:
                client.execute_cell(nb.cells[i], i)
            except DeadKernelError:
                _note(nb.cells[i], "the kernel died while this cell ran; the cells below did not run")
                runs.append(CellRun(i, "died", "DeadKernelError", "the kernel died while this cell ran "
                                                                  "(os._exit, a crash, or out of memory)"))
                stopped = f"the kernel died in cell {i + 1}"
                continue
            content = replies.pop(i, {}).get("content", {})
            status = "ok" if content.get("status", "ok") == "ok" else "error"
            ename, evalue = content.get("ename", ""), content.get("evalue", "")
            if ename == TIMEOUT_ENAME:
                status = "timeout"
                _note(nb.cells[i], f"this cell {evalue}")
            answer = None
            if probe is not None:
                try:
                    answer = run_sync(_ask)(client, probe)
                except ValueError:
                    pass
                except Empty:
                    stopped = f"the kernel did not answer after cell {i + 1} was interrupted"
                    _note(nb.cells[i], "the kernel did not answer after this cell; the cells below did not run")
            runs.append(CellRun(i, status, ename, evalue, answer))
    return runs
