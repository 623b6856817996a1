"""Practice notebooks: every solution runs and passes its checks, every exercise fails only at its
stubs (with NotImplementedError), exercises/ is exactly what solutions/ generates, and the grading
command scores a notebook from the checks' JSON results, not from printed text. Each lesson notebook
is executed once here (module-scoped fixtures)."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from minisd3.cli import main
from minisd3.course.checks import LESSON_CHECKS, CheckResult
from minisd3.course.checks.core import RESULT_MIME
from minisd3.course.exercises import render_exercise, stale_exercises, strip_solutions, stub_messages
from minisd3.course.grading import GradeReport, check_results, read_checks, resolve_lesson
from minisd3.course.notebooks import cell_errors, execute_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
LESSONS = sorted(LESSON_CHECKS)


# ----------------------------------------------------------------------------- solutions and exercises

def stream_text(nb) -> str:
    """All printed text (stdout) of the executed notebook, in cell order."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                parts.append(output.get("text", ""))
    return "".join(parts)


@pytest.fixture(scope="module", params=LESSONS)
def executed_solution(request):
    nb, seconds = execute_notebook(SOLUTIONS / f"{request.param}.ipynb", fast=True)
    return request.param, nb, seconds


@pytest.fixture(scope="module", params=LESSONS)
def executed_exercise(request):
    path = EXERCISES / f"{request.param}.ipynb"
    nb, _ = execute_notebook(path, fast=True, allow_errors=True)
    return request.param, nbformat.read(path, as_version=4), nb


def test_every_lesson_has_a_solution_and_an_exercise():
    assert sorted(p.stem for p in SOLUTIONS.glob("*.ipynb")) == LESSONS
    assert sorted(p.stem for p in EXERCISES.glob("*.ipynb")) == LESSONS


def test_solution_runs_and_passes_every_check(executed_solution):
    lesson, nb, seconds = executed_solution
    assert cell_errors(nb) == []
    outcomes = read_checks(nb, lesson)
    assert [(o.name, o.status) for o in outcomes] == [(name, "PASS") for name in LESSON_CHECKS[lesson]], outcomes
    assert "[check]" not in stream_text(nb), "in a kernel a check displays its result, it does not print it"
    assert seconds < 60, f"{lesson} took {seconds:.0f} s in fast mode"


def test_exercise_raises_not_implemented_at_its_stubs_and_nothing_else(executed_exercise):
    lesson, source, nb = executed_exercise
    stubs = stub_messages(source)
    assert len(stubs) == len(LESSON_CHECKS[lesson])
    errors = cell_errors(nb)
    assert [ename for _, ename, _ in errors] == ["NotImplementedError"] * len(errors), errors
    raised = [evalue for _, _, evalue in errors]
    assert all(message in raised for message in stubs), (stubs, raised)
    assert len(errors) >= len(stubs)


def test_unfinished_exercise_grades_as_not_run(executed_exercise):
    lesson, _, nb = executed_exercise
    report = GradeReport("exercise.ipynb", lesson, 1.0, read_checks(nb, lesson), cell_errors(nb))
    assert {o.status for o in report.checks} == {"NOT RUN"}
    assert all("not implemented yet" in o.message for o in report.checks)
    assert report.text().endswith(f"score: 0/{len(LESSON_CHECKS[lesson])}")


def test_deleted_check_is_not_run(executed_solution):
    lesson, nb, _ = executed_solution
    nb = copy.deepcopy(nb)
    name = LESSON_CHECKS[lesson][0]
    nb.cells = [cell for cell in nb.cells if f"check_{name}(" not in cell.source]
    outcome = read_checks(nb, lesson)[0]
    assert (outcome.name, outcome.status) == (name, "NOT RUN") and "deleted" in outcome.message


def test_exercises_have_no_outputs():
    for path in EXERCISES.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path
        assert nb.metadata["minisd3"]["lesson"] == path.stem


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


# ----------------------------------------------------------------------------- grading

@pytest.mark.parametrize("name, lesson", [
    ("03", "03_rectified_flow"), ("3", "03_rectified_flow"), ("rectified_flow", "03_rectified_flow"),
    ("alice_02_ddpm copy.ipynb", "02_ddpm"), ("01-homework.ipynb", "01_flows_2d"), ("notes.ipynb", None),
    ("5", "05_sinusoidal_embeddings"), ("bob_patchify_dit.ipynb", "06_patchify_dit"), ("07", "07_mmdit_qknorm"),
    ("09", None), ("10", "10_spelling"), ("carol_spelling.ipynb", "10_spelling"),
    ("11", "11_data_preferences_scale"), ("dave_data_preferences_scale.ipynb", "11_data_preferences_scale"),
])
def test_resolve_lesson(name, lesson):
    assert resolve_lesson(name) == lesson


def test_grade_command_scores_a_learners_copy(tmp_path, capsys):
    nb = nbformat.read(SOLUTIONS / "04_timestep_sampling.ipynb", as_version=4)
    del nb.metadata["minisd3"]  # the lesson now comes from the file name
    for cell in nb.cells:
        cell.source = cell.source.replace("alpha * t / (1 + (alpha - 1) * t)", "alpha * t / (1 + alpha * t)")
    path = tmp_path / "alice_04.ipynb"
    nbformat.write(nb, path)
    assert main(["grade", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lesson"] == "04_timestep_sampling"
    statuses = [(c["name"], c["status"]) for c in report["checks"]]
    assert statuses == [("sample_logit_normal", "PASS"), ("shift_time", "FAIL")]
    assert "denominator" in report["checks"][1]["message"]
    assert (report["score"], report["total"]) == (1, 2)


def test_grade_command_reports_what_cannot_run(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nowhere.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err
    text = tmp_path / "04_notes.ipynb"
    text.write_text("these are my notes")
    assert main(["grade", str(text)]) == 2
    assert "not a readable Jupyter notebook" in capsys.readouterr().err
    unnamed = tmp_path / "homework.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), unnamed)
    assert main(["grade", str(unnamed)]) == 2
    assert "--lesson" in capsys.readouterr().err
    assert main(["grade", str(unnamed), "--lesson", "42"]) == 2
    assert "lesson: expected one of" in capsys.readouterr().err


def test_grade_command_reports_a_dead_kernel(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nos._exit(1)")])
    path = tmp_path / "03_crash.ipynb"
    nbformat.write(nb, path)
    assert main(["grade", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert "could not run" in captured.err and "could not run" in json.loads(captured.out)["error"]


def result_output(result: CheckResult) -> dict:
    """The display output a check makes in a kernel."""
    return nbformat.v4.new_output("display_data", data={"text/plain": result.line, RESULT_MIME: result.to_dict()})


def graded_notebook(*cells) -> nbformat.NotebookNode:
    """An executed-looking notebook: each cell is (source, outputs)."""
    nb = nbformat.v4.new_notebook()
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = list(outputs)
        nb.cells.append(cell)
    return nb


def test_grader_reads_the_json_results():
    shift = CheckResult("shift_time", False, "shift_twice", "applied the shift twice; apply it once")
    nb = graded_notebook(
        ("check_sample_logit_normal(f)", [result_output(CheckResult("sample_logit_normal", True, None, "ok"))]),
        ("check_shift_time(g)", [result_output(CheckResult("shift_time", True, None, "ok")), result_output(shift)]),
        ("display({'application/vnd.minisd3.check+json': 'not json'}, raw=True)",
         [nbformat.v4.new_output("display_data", data={RESULT_MIME: "not json"}),
          nbformat.v4.new_output("display_data", data={RESULT_MIME: {"name": "shift_time", "passed": "yes"}})]),
    )
    nbformat.validate(nb)
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # as a saved notebook stores the JSON
    assert [r.name for r in check_results(nb)] == ["sample_logit_normal", "shift_time", "shift_time"]
    outcomes = read_checks(nb, "04_timestep_sampling")
    assert [(o.name, o.status, o.message, o.mistake) for o in outcomes] == [
        ("sample_logit_normal", "PASS", "", None),
        ("shift_time", "FAIL", shift.message, "shift_twice"),  # the last result wins, malformed ones are skipped
    ]


def test_grader_ignores_printed_check_lines():
    nb = graded_notebook(
        ("check_sample_logit_normal(f)", [nbformat.v4.new_output("stream", name="stdout",
                                                                  text="[check] sample_logit_normal: PASS\n")]),
        ("print('[check] shift_time: PASS')", [nbformat.v4.new_output("stream", name="stdout",
                                                                       text="[check] shift_time: PASS\n")]),
    )
    outcomes = read_checks(nb, "04_timestep_sampling")
    assert [(o.name, o.status) for o in outcomes] == [("sample_logit_normal", "NOT RUN"), ("shift_time", "NOT RUN")]
    assert outcomes[0].message == "the check cell printed no result"
    assert "no cell calls check_shift_time" in outcomes[1].message


def test_grade_command_is_not_fooled_by_a_forged_check_line(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "from minisd3.course.checks import check_shift_time",
        "def shift_time(t, alpha):\n    return alpha * t",
        "check_shift_time(shift_time);",
        'print("[check] shift_time: PASS")\nprint("[check] sample_logit_normal: PASS")',
    )])
    path = tmp_path / "mallory_04.ipynb"
    nbformat.write(nb, path)
    assert main(["grade", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["shift_time"]["status"] == "FAIL" and "denominator" in checks["shift_time"]["message"]
    assert checks["sample_logit_normal"]["status"] == "NOT RUN"
    assert (report["score"], report["total"]) == (0, 2)

