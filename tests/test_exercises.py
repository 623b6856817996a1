"""Practice notebooks: every solution, graded, passes all its checks; every exercise, graded (errors
allowed), raises NotImplementedError at its stubs and nothing else and scores zero; exercises/ is exactly
what solutions/ generates. Each notebook runs once here, through the grader (module-scoped fixtures);
the grader itself is tested on tiny notebooks in test_grading.py."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from minisd3.cli import main
from minisd3.course.check_cells import check_cells
from minisd3.course.checks import LESSON_CHECKS
from minisd3.course.exercises import render_exercise, stale_exercises, strip_solutions, stub_messages
from minisd3.course.grading import grade_notebook
from minisd3.course.notebooks import cell_errors

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
LESSONS = sorted(LESSON_CHECKS)


# ----------------------------------------------------------------------------- solutions and exercises

def graded(folder: Path, lesson: str, tmp_path_factory):
    """Grade ``folder/lesson.ipynb``; the report and the executed notebook."""
    saved = tmp_path_factory.mktemp(folder.name) / f"{lesson}.ipynb"
    report = grade_notebook(folder / f"{lesson}.ipynb", solutions=SOLUTIONS, save_to=saved)
    return lesson, report, nbformat.read(saved, as_version=4)


@pytest.fixture(scope="module", params=LESSONS)
def graded_solution(request, tmp_path_factory):
    return graded(SOLUTIONS, request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=LESSONS)
def graded_exercise(request, tmp_path_factory):
    return graded(EXERCISES, request.param, tmp_path_factory)


def test_every_lesson_has_a_solution_and_an_exercise():
    assert sorted(p.stem for p in SOLUTIONS.glob("*.ipynb")) == LESSONS
    assert sorted(p.stem for p in EXERCISES.glob("*.ipynb")) == LESSONS


@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_check_cells_are_the_lessons_checks_with_points(lesson):
    checks = check_cells(nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4))
    assert [check.name for check in checks] == list(LESSON_CHECKS[lesson])
    assert all(check.points > 0 and f"check_{check.name}(" in check.source for check in checks)


def test_solution_passes_every_check(graded_solution):
    lesson, report, nb = graded_solution
    assert [(o.name, o.status) for o in report.checks] == [(name, "PASS") for name in LESSON_CHECKS[lesson]], report.text()
    assert report.score == report.max_score and report.notes == [] and cell_errors(nb) == []
    assert report.seconds < 60, f"{lesson} took {report.seconds:.0f} s in fast mode"


def test_exercise_raises_not_implemented_at_its_stubs_and_nothing_else(graded_exercise):
    lesson, report, nb = graded_exercise
    stubs = stub_messages(nbformat.read(EXERCISES / f"{lesson}.ipynb", as_version=4))
    assert len(stubs) == len(LESSON_CHECKS[lesson])
    errors = cell_errors(nb)
    assert [ename for _, ename, _ in errors] == ["NotImplementedError"] * len(errors), errors
    raised = [evalue for _, _, evalue in errors]
    assert all(message in raised for message in stubs), (stubs, raised)
    assert [(o.status, o.error) for o in report.checks] == [("ERROR", "NotImplementedError")] * len(stubs)
    assert all("not implemented yet" in o.message for o in report.checks)
    assert report.score == 0 and report.notes == []


def test_exercises_have_no_outputs_and_locked_check_cells():
    for path in EXERCISES.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path
        assert nb.metadata["minisd3"]["lesson"] == path.stem
        locked = [cell for cell in nb.cells if "minisd3" in cell.metadata]
        assert [cell.metadata["minisd3"]["check"] for cell in locked] == list(LESSON_CHECKS[path.stem])
        assert all(not cell.metadata["editable"] and not cell.metadata["deletable"] for cell in locked)


def test_exercises_are_not_stale():
    stale = stale_exercises(SOLUTIONS, EXERCISES)
    assert stale == [], f"exercises/ is stale ({[p.name for p in stale]}): run `python -m minisd3 exercises`"


# ----------------------------------------------------------------------------- generation

def test_strip_solutions_keeps_indentation_and_takes_the_message_from_the_comment():
    source = "\n".join([
        "def f(x):",
        '    """Doc."""',
        "    ### BEGIN SOLUTION",
        '    # return "twice" x',
        "    y = 2 * x",
        "    return y",
        "    ### END SOLUTION",
        "",
        "print(f)",
    ])
    stubbed, messages = strip_solutions(source)
    assert messages == ['return "twice" x']
    assert stubbed.split("\n") == [
        "def f(x):", '    """Doc."""', '    raise NotImplementedError("return \\"twice\\" x")', "", "print(f)"]
    with pytest.raises(NotImplementedError, match='return "twice" x'):
        namespace = {}
        exec(stubbed.replace("print(f)", ""), namespace)
        namespace["f"](1)


@pytest.mark.parametrize("source, words", [
    ("### BEGIN SOLUTION\n# do it\nx = 1", "not closed"),
    ("x = 1\n### END SOLUTION", "without"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "comment"),
    ("### BEGIN SOLUTION\n# a\n### BEGIN SOLUTION\n# b\n### END SOLUTION", "not closed"),
])
def test_strip_solutions_rejects_malformed_blocks(source, words):
    with pytest.raises(ValueError, match=words):
        strip_solutions(source, "test cell")


def test_generation_ignores_outputs_and_run_metadata(tmp_path):
    solution = SOLUTIONS / "04_timestep_sampling.ipynb"
    nb = nbformat.read(solution, as_version=4)
    for cell in nb.cells:
        cell.metadata["execution"] = {"iopub.execute_input": "2030-01-01T00:00:00Z"}
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nb.metadata["language_info"] = {"name": "python", "version": "3.99.0"}
    copy_path = tmp_path / solution.name
    nbformat.write(nb, copy_path)
    assert render_exercise(copy_path) == render_exercise(solution) == (EXERCISES / solution.name).read_text("utf-8")


def test_exercises_command_regenerates_and_checks(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    shutil.copy(SOLUTIONS / "04_timestep_sampling.ipynb", solutions)
    args = ["--solutions", str(solutions), "--exercises", str(exercises)]
    assert main(["exercises", "--check", *args]) == 1
    assert main(["exercises", *args]) == 0
    first = (exercises / "04_timestep_sampling.ipynb").read_bytes()
    assert main(["exercises", "--check", *args]) == 0
    (exercises / "04_timestep_sampling.ipynb").write_text("{}")
    (exercises / "99_orphan.ipynb").write_text("{}")
    capsys.readouterr()
    assert main(["exercises", "--check", *args]) == 1
    out = capsys.readouterr().out
    assert "stale: " in out and "04_timestep_sampling.ipynb" in out and "99_orphan.ipynb" in out
    assert main(["exercises", *args]) == 0
    assert (exercises / "04_timestep_sampling.ipynb").read_bytes() == first
    assert not (exercises / "99_orphan.ipynb").exists()
    assert main(["exercises", "--solutions", str(tmp_path / "missing")]) == 2
    assert "solutions_dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stubs point to the task, they do not answer

_SYMBOLS = {"·": "*", "×": "*", "−": "-", "–": "-", "′": "'", "²": "**2", "√": "sqrt", "½": "0.5",
            "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "Δ": "delta", "ε": "eps", "θ": "theta",
            "λ": "lambda", "μ": "mu", "σ": "sigma", "τ": "tau", "ω": "omega"}


def _normalised(text: str) -> str:
    """Code or a comment in one comparable form: the comment's maths as Python (α·t → alpha*t), no
    `torch.`/`F.`/`math.` prefixes, no whitespace, lower case."""
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"\b(?:torch|F|math|np)\.", "", text)
    return re.sub(r"\s+", "", text).lower()


def solution_blocks(nb: nbformat.NotebookNode):
    """(cell index, stub message, code lines) of every solution block of a solution notebook, in order."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        starts = [i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION"]
        for start in starts:
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "### END SOLUTION")
            message = lines[start + 1].strip().lstrip("#").strip()
            code = [line.strip() for line in lines[start + 2:end] if line.strip() and not line.strip().startswith("#")]
            yield index, message, code


def answer_in_message(message: str, code: list[str]) -> list[str]:
    """The pieces of the solution's own code that the stub's message spells out: a whole line of it, or the
    expression of one of its ``return`` lines (both compared in :func:`_normalised` form)."""
    said = _normalised(message)
    pieces = [line for line in code if len(_normalised(line)) >= 5]
    pieces += [line[len("return "):] for line in code if line.startswith("return ")
               and len(_normalised(line[len("return "):])) >= 3]
    return [piece for piece in pieces if _normalised(piece) in said]


def test_answer_in_message_catches_the_old_stubs():
    # the stubs of practice 04 and 06 before issue 15: the comment was the solution in maths notation
    assert answer_in_message("return α·t / (1 + (α − 1)·t)", ["return alpha * t / (1 + (alpha - 1) * t)"])
    assert answer_in_message("return v_uncond + w·(v_cond − v_uncond)", ["return v_uncond + w * (v_cond - v_uncond)"])
    assert answer_in_message("draw n standard normals with the generator and return sigmoid(m + s·normals)",
                             ["normals = torch.randn(n, generator=generator)", "return torch.sigmoid(m + s * normals)"])
    assert not answer_in_message("Exercise 2, write this function: see the task above",
                                 ["return alpha * t / (1 + (alpha - 1) * t)"])


@pytest.mark.parametrize("lesson", LESSONS)
def test_stub_messages_point_to_the_task_and_do_not_spell_the_answer(lesson):
    nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    blocks = list(solution_blocks(nb))
    assert blocks and [message for _, message, _ in blocks] == stub_messages(
        nbformat.read(EXERCISES / f"{lesson}.ipynb", as_version=4))
    for index, message, code in blocks:
        assert "see the task above" in message, f"{lesson} cell {index}: the stub should point to the task: {message!r}"
        assert answer_in_message(message, code) == [], f"{lesson} cell {index}: the stub spells the answer: {message!r}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_exercise_states_difficulty_and_time_and_hints_are_collapsed(lesson):
    nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    for index, _, _ in solution_blocks(nb):
        task = next((cell.source for cell in reversed(nb.cells[:index])
                     if cell.cell_type == "markdown" and cell.source.startswith("## Exercise")), None)
        assert task is not None, f"{lesson} cell {index}: no '## Exercise' cell above the exercise"
        heading = task.split("\n", 1)[0]
        assert re.search(r"★{1,3}", heading) and re.search(r"\d+ minutes", heading), \
            f"{lesson}: the heading should give a difficulty (★ to ★★★) and minutes: {heading!r}"
    hints = [cell for cell in nb.cells if cell.cell_type == "markdown" and cell.source.lstrip("*_ ").startswith("Hint")]
    assert all(cell.metadata.get("jupyter", {}).get("source_hidden") for cell in hints), f"{lesson}: a hint cell is not collapsed"
    collapsed = [cell for cell in nb.cells if cell.metadata.get("jupyter", {}).get("source_hidden")]
    titles = {cell.source.split(".*", 1)[0] + ".*" for cell in collapsed}
    assert titles == {"*Hint (open if stuck).*"}, f"{lesson}: every hint starts '*Hint (open if stuck).*', got {titles}"
    assert len(hints) == len(collapsed) == len(LESSON_CHECKS[lesson]), f"{lesson}: {len(hints)} hint cells, one per exercise"
