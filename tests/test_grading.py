"""Grading: check cells put back from the source, results taken from the checks themselves, time
limits per cell, and a class graded in one go (CSV, JSON, summary, exit codes).

Most tests grade a tiny practice ("01_tiny": two one-line exercises whose checks live in a small
module beside the notebooks) so that a whole class runs in seconds; one grades the real practice 04
the way the issue fooled the old grader.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nbformat
import pytest

from minisd3.cli import main
from minisd3.course.check_cells import CheckCell, check_cells
from minisd3.course.exercises import exercise_notebook
from minisd3.course.grading import grade_notebook, resolve_lesson, restore_check_cells
from minisd3.course.results import CheckResult, parse_results, take_results

ROOT = Path(__file__).resolve().parents[1]

TINY_CHECKS = '''
from minisd3.course.results import CheckResult


def check_double(double):
    got = double(3)
    if got == 6:
        result = CheckResult("double", True, None, "double(3) is 6")
    elif got == 1.5:
        result = CheckResult("double", False, "halved", "you halved x; double it: return 2 * x")
    else:
        result = CheckResult("double", False, None, f"double(3) should be 6, got {got!r}")
    result.show()
    return result


def check_square(square):
    got = square(4)
    result = CheckResult("square", got == 16, None if got == 16 else "doubled",
                         "square(4) is 16" if got == 16 else f"square(4) should be 16, got {got!r}")
    result.show()
    return result
'''

DOUBLE = "def double(x):\n    ### BEGIN SOLUTION\n    # return twice x\n    return 2 * x\n    ### END SOLUTION"
SQUARE = "def square(x):\n    ### BEGIN SOLUTION\n    # return x times x\n    return x * x\n    ### END SOLUTION"


def check_cell(name: str, points: int):
    cell = nbformat.v4.new_code_cell(f"from tinychecks import check_{name}\n\ncheck_{name}({name});")
    cell.metadata["minisd3"] = {"check": name, "points": points}
    return cell


def tiny_solution() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Practice 01 — tiny"),
        nbformat.v4.new_code_cell(DOUBLE), check_cell("double", 2),
        nbformat.v4.new_code_cell(SQUARE), check_cell("square", 1),
    ])


def student(answers: dict[int, str], extra: list[tuple[int, str]] = ()) -> nbformat.NotebookNode:
    """The exercise with cell ``i``'s source replaced by ``answers[i]``, and ``extra`` cells inserted (position, source)."""
    nb = exercise_notebook(tiny_solution(), "01_tiny")
    for index, source in answers.items():
        nb.cells[index].source = source
    for position, source in sorted(extra, reverse=True):
        cell = nbformat.v4.new_code_cell(source)
        cell.id = f"extra-{position}"
        nb.cells.insert(position, cell)
    return nb


GOOD = {1: "def double(x):\n    return 2 * x", 3: "def square(x):\n    return x * x"}
FORGED_LINES = "\n".join([  # a PASS line for each check, the old grader's JSON output, a result logged by hand
    'print("[check] double: PASS")', 'print("[check] square: PASS")',
    "from IPython.display import display",
    'display({"text/plain": "[check] square: PASS", "application/vnd.minisd3.check+json": '
    '{"name": "square", "passed": True, "mistake": None, "message": ""}}, raw=True)',
    "from minisd3.course.results import CheckResult", 'CheckResult("square", True, None, "forged").show()',
])
CLASS = {
    "alice": student(GOOD),
    "bob": student({1: "def double(x):\n    return x / 2", 3: GOOD[3]}),  # partly wrong
    "carol": student(GOOD, extra=[(3, "import os\nos._exit(1)")]),  # crashes after the first check
    "dave": student({1: "def double(x):\n    while True:\n        pass", 3: GOOD[3]}),  # hangs in the check
    "mallory": student({2: "from tinychecks import check_double\ncheck_double(lambda x: 2 * x);",
                        4: "from tinychecks import check_square\ncheck_square(lambda x: x * x);"},
                       extra=[(5, FORGED_LINES)]),  # stubs raise; check cells rewritten; PASS lines and results forged
}


@pytest.fixture
def tiny_class(tmp_path, monkeypatch):
    """solutions/01_tiny.ipynb, the checks module (on the kernels' PYTHONPATH) and class/NAME.ipynb for each student."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "tinychecks.py").write_text(TINY_CHECKS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "lib"))
    (tmp_path / "solutions").mkdir()
    nbformat.write(tiny_solution(), tmp_path / "solutions" / "01_tiny.ipynb")
    (tmp_path / "class").mkdir()
    for name, nb in CLASS.items():
        nbformat.write(nb, tmp_path / "class" / f"{name}.ipynb")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- the result channel

def test_a_result_is_printed_for_the_learner_and_logged_for_the_grader(capsys):
    take_results()
    result = CheckResult("shift_time", False, "shift_twice", "applied the shift twice; apply it once")
    result.show()
    assert capsys.readouterr().out == result.line + "\n"
    assert parse_results(take_results()) == [result]
    assert take_results() == "[]"
    for bad in ("not json", '{"name": "x"}', '[{"name": "x", "passed": "yes", "mistake": null, "message": ""}]'):
        with pytest.raises(ValueError):
            parse_results(bad)


# ----------------------------------------------------------------------------- check cells

def test_check_cells_read_points_from_the_metadata_and_reject_malformed_ones():
    assert check_cells(tiny_solution()) == [CheckCell("double", 2, tiny_solution().cells[2].source),
                                            CheckCell("square", 1, tiny_solution().cells[4].source)]
    for meta, words in (({"check": "double", "points": -1}, "positive"), ({"check": "double", "points": "2"}, "positive"),
                        ({"check": "not a name"}, "name a check"), ({"check": "square"}, "second")):
        nb = tiny_solution()
        nb.cells[2].metadata["minisd3"] = meta
        with pytest.raises(ValueError, match=words):
            check_cells(nb, "solutions/01_tiny.ipynb")


def test_exercise_check_cells_keep_their_points_and_are_locked():
    nb = exercise_notebook(tiny_solution(), "01_tiny")
    assert nb.cells[2].metadata == {"minisd3": {"check": "double", "points": 2}, "editable": False, "deletable": False}
    assert "minisd3" not in nb.cells[1].metadata


def test_restore_puts_edited_deleted_and_unmarked_check_cells_back():
    checks = check_cells(tiny_solution())
    nb = student({2: "check_double(lambda x: 2 * x)"})
    del nb.cells[4]  # the square check deleted
    nb.cells.append(nbformat.v4.new_code_cell("from tinychecks import check_double\ncheck_double(lambda x: 2 * x)"))
    nb.cells[-1].metadata["minisd3"] = {"check": "double", "points": 2}  # a later copy of the cell: left alone
    positions, notes = restore_check_cells(nb, checks)
    assert positions == {"double": 2, "square": 5}
    assert nb.cells[2].source == checks[0].source and nb.cells[2].id == "cell-2"
    assert nb.cells[5].source == checks[1].source and nb.cells[5].metadata["minisd3"]["points"] == 1
    assert nb.cells[4].source.endswith("check_double(lambda x: 2 * x)")
    assert len(notes) == 2 and "cell 3" in notes[0] and "edited" in notes[0] and "missing" in notes[1]

    unmarked = student(GOOD)
    for cell in unmarked.cells:
        cell.metadata = {}  # a copy made before check cells carried metadata
    unmarked.cells[4].source = "from tinychecks import check_square\ncheck_square(lambda x: x * x)"
    positions, notes = restore_check_cells(unmarked, checks)
    assert positions == {"double": 2, "square": 4} and unmarked.cells[4].source == checks[1].source
    assert len(notes) == 1 and "cell 5" in notes[0]


@pytest.mark.parametrize("name, lesson", [
    ("03", "03_rectified_flow"), ("3", "03_rectified_flow"), ("rectified_flow", "03_rectified_flow"),
    ("alice_02_ddpm copy.ipynb", "02_ddpm"), ("01-homework.ipynb", "01_flows_2d"), ("notes.ipynb", None),
    ("5", "05_sinusoidal_embeddings"), ("bob_patchify_dit.ipynb", "06_patchify_dit"), ("07", "07_mmdit_qknorm"),
    ("09", "09_scaling_up"), ("12", None), ("08", "08_latent_space"), ("10", "10_spelling"),
    ("carol_spelling.ipynb", "10_spelling"),
    ("11", "11_data_preferences_scale"), ("dave_data_preferences_scale.ipynb", "11_data_preferences_scale"),
])
def test_resolve_lesson(name, lesson):
    assert resolve_lesson(name) == lesson


# ----------------------------------------------------------------------------- a class

EXPECTED = {  # student: (score, double, square)
    "alice": ("3", "PASS", "PASS"),
    "bob": ("1", "FAIL", "PASS"),
    "carol": ("2", "PASS", "NOT RUN"),
    "dave": ("1", "TIMEOUT", "PASS"),
    "mallory": ("0", "ERROR", "ERROR"),
}


def test_grading_a_class(tiny_class, capsys):
    code = main(["grade", "class", "--out", "grades.csv", "--timeout", "5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO((tiny_class / "grades.csv").read_text()))}
    assert {name: (r["score"], r["double"], r["square"]) for name, r in rows.items()} == EXPECTED
    assert all(r["status"] == "graded" and r["max_score"] == "3" and r["lesson"] == "01_tiny" for r in rows.values())
    assert (rows["alice"]["double points"], rows["alice"]["square points"]) == ("2", "1")
    assert rows["bob"]["double mistake"] == "halved" and "double it" in rows["bob"]["double message"]
    assert "kernel died in cell 4 (`import os`)" in rows["carol"]["notes"]
    assert rows["carol"]["square message"] == "the kernel died in cell 4"
    assert "cell 2 (`def double(x):`)" not in rows["dave"]["notes"]  # the function cell ran; the check cell hung
    assert "cell 3 (`from tinychecks import check_double`) ran past its 5 s limit" in rows["dave"]["notes"]
    assert "loop forever" in rows["dave"]["double message"]
    assert rows["mallory"]["double message"].startswith("not implemented yet: NotImplementedError: return twice x")
    assert rows["mallory"]["notes"].count("had been edited") == 2
    for name in EXPECTED:  # the executed notebooks, check cells restored, beside the report
        executed = nbformat.read(tiny_class / "grades_executed" / f"{name}.ipynb", as_version=4)
        assert rows[name]["executed"] == str(Path("grades_executed") / f"{name}.ipynb")
        assert executed.cells[2].source == tiny_solution().cells[2].source
    dave = nbformat.read(tiny_class / "grades_executed" / "dave.ipynb", as_version=4)
    assert "interrupted" in dave.cells[2].outputs[-1]["text"]

    out = captured.out
    assert "5 of 5 notebooks graded" in out
    assert "double (2 pt): 2/5 passed; commonest mistake halved ×1 (you halved x; double it: return 2 * x)" in out
    assert "square (1 pt): 3/5 passed" in out and "ERROR NotImplementedError ×1" in out and "NOT RUN ×1" in out
    assert "mallory: 0/3 points" in out and "dave: 1/3 points" in out


def test_the_notebook_time_limit_cuts_the_rest(tiny_class):
    report = grade_notebook("class/dave.ipynb", solutions="solutions", cell_timeout=30, notebook_timeout=3)
    assert [(o.status, o.points) for o in report.checks] == [("TIMEOUT", 0), ("NOT RUN", 0)]
    assert "the notebook's 3 s limit" in report.checks[0].message
    assert report.checks[1].message == "the notebook's time limit (3 s) was spent"
    assert report.notes[-1].startswith("the cells from cell 4 (`def square(x):`) on did not run")


def test_json_carries_what_the_csv_carries(tiny_class, capsys):
    (tiny_class / "class" / "bob.ipynb").unlink()
    for name in ("carol", "dave"):
        (tiny_class / "class" / f"{name}.ipynb").unlink()
    (tiny_class / "class" / "eve.ipynb").write_text("my notes, not a notebook")
    code = main(["grade", "class/*.ipynb", "--json", "--out", "grades.csv"])
    captured = capsys.readouterr()
    assert code == 1  # one notebook could not be graded; the others were
    data = json.loads(captured.out)
    rows = list(csv.DictReader(io.StringIO((tiny_class / "grades.csv").read_text())))
    assert [n["student"] for n in data["notebooks"]] == [r["student"] for r in rows] == ["alice", "eve", "mallory"]
    for entry, row in zip(data["notebooks"], rows):
        assert entry["status"] == row["status"]
        if entry["status"] == "could not run":
            assert "not a readable Jupyter notebook" in entry["error"] == row["notes"]
            continue
        assert f"{entry['score']:g}" == row["score"] and " | ".join(entry["notes"]) == row["notes"]
        for check in entry["checks"]:
            assert (check["status"], f"{check['points']:g}", check["mistake"] or "", check["message"]) == (
                row[check["name"]], row[f"{check['name']} points"], row[f"{check['name']} mistake"],
                row[f"{check['name']} message"])
    assert [(s["name"], s["passed"], s["graded"]) for s in data["summary"]] == [("double", 1, 2), ("square", 1, 2)]
    assert "eve" in captured.err and "not a readable Jupyter notebook" in captured.err


def test_a_notebook_naming_no_lesson_could_not_run(tiny_class, capsys):
    nbformat.write(nbformat.v4.new_notebook(), tiny_class / "homework.ipynb")
    assert main(["grade", "homework.ipynb"]) == 1
    assert "cannot tell which lesson homework.ipynb practises" in capsys.readouterr().err
    assert main(["grade", "homework.ipynb", "--lesson", "1", "--timeout", "5"]) == 0  # graded: the checks were missing
    out = capsys.readouterr().out
    assert "NOT RUN" not in out and "ERROR    double" in out and "the check cell of double was missing" in out


@pytest.mark.parametrize("args, words", [
    (["nowhere/*.ipynb"], "notebooks: 'nowhere/*.ipynb' matched no .ipynb notebook"),
    (["class", "--timeout", "0"], "argument --timeout: expected a positive number of seconds, got '0'"),
    (["class", "--notebook-timeout", "soon"], "argument --notebook-timeout: expected a positive number"),
    (["class", "--out", "grades.txt"], "--out: expected a .csv file"),
    (["class", "--lesson", "42"], "lesson: expected one of 01_tiny"),
    (["class", "--solutions", "missing"], "solutions: expected the folder of solution notebooks"),
])
def test_bad_input_is_one_line_naming_the_argument(tiny_class, capsys, args, words):
    try:
        code = main(["grade", *args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_the_issues_forged_practice_04_scores_nothing(tmp_path, capsys):
    """Tried as a new user would: the stubs still raise, the two check cells check the package's own
    functions, and an extra cell prints a PASS line for every check."""
    nb = nbformat.read(ROOT / "exercises" / "04_timestep_sampling.ipynb", as_version=4)
    for cell in nb.cells:
        cell.source = (cell.source
                       .replace("check_sample_logit_normal(sample_logit_normal)",
                                "import minisd3.timesteps\ncheck_sample_logit_normal(minisd3.timesteps.sample_logit_normal)")
                       .replace("check_shift_time(shift_time)", "check_shift_time(minisd3.timesteps.shift_time)"))
    nb.cells.append(nbformat.v4.new_code_cell('print("[check] sample_logit_normal: PASS")\n'
                                              'print("[check] shift_time: PASS")'))
    path = tmp_path / "mallory_04.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, solutions=ROOT / "solutions")
    assert [(o.name, o.status, o.error) for o in report.checks] == [
        ("sample_logit_normal", "ERROR", "NotImplementedError"), ("shift_time", "ERROR", "NotImplementedError")]
    assert report.score == 0 and sum("had been edited" in note for note in report.notes) == 2
