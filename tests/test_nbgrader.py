"""nbgrader compatibility: the solution notebooks carry nbgrader's schema-3 cell metadata, derived from
their check cells and solution blocks (never kept by hand), and nbgrader's own ``generate_assignment``
on solutions/ gives the student notebooks exercises/ holds, up to the stub's text (nbgrader puts one
fixed ``code_stub`` where we put a pointer to the exercise's task) and the run metadata it keeps."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.nbgraderformat import MetadataValidator

from minisd3.cli import main
from minisd3.course.check_cells import check_cells
from minisd3.course.exercises import STUB
from minisd3.course.nbgrader_metadata import (
    has_solution_block,
    stale_nbgrader_metadata,
    with_nbgrader_metadata,
    write_nbgrader_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
LESSONS = sorted(path.stem for path in SOLUTIONS.glob("*.ipynb"))
NBGRADER_STUB = f"{STUB}()"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_solutions_carry_the_derived_nbgrader_metadata():
    stale = stale_nbgrader_metadata(SOLUTIONS)
    assert stale == [], f"nbgrader metadata stale in {[p.name for p in stale]}: run `python -m minisd3 exercises`"


@pytest.mark.parametrize("lesson", LESSONS)
def test_nbgrader_metadata_follows_schema_3_and_the_check_cells(lesson):
    nb = read(SOLUTIONS / f"{lesson}.ipynb")
    MetadataValidator().validate_nb(nb)  # nbgrader's own validator: required keys, types, grade ids, points
    points = {check.name: check.points for check in check_cells(nb)}
    graded, solutions = {}, 0
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        check = cell.metadata.get("minisd3", {}).get("check")
        if meta is None:
            assert check is None and not has_solution_block(cell), cell.source[:80]
            continue
        assert meta["schema_version"] == 3 and re.fullmatch(r"[A-Za-z0-9_\-]+", meta["grade_id"])
        assert set(meta) <= {"grade", "grade_id", "locked", "points", "schema_version", "solution"}
        if meta["grade"]:  # an autograded test cell: our check cell, locked, its points from minisd3's metadata
            assert meta["locked"] and not meta["solution"] and meta["grade_id"] == check
            graded[check] = meta["points"]
        else:  # a solution cell: editable, no points
            assert meta["solution"] and not meta["locked"] and "points" not in meta and check is None
            assert has_solution_block(cell)
            solutions += 1
    assert graded == points
    assert solutions == sum(has_solution_block(cell) for cell in nb.cells) >= len(points)
    ids = [cell.metadata["nbgrader"]["grade_id"] for cell in nb.cells if "nbgrader" in cell.metadata]
    assert len(ids) == len(set(ids))


def test_points_are_declared_once(tmp_path, capsys):
    """Changing a check's points in its minisd3 metadata makes the nbgrader metadata stale, and the
    exercises command carries the change into it; hand-edited nbgrader metadata is put back."""
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    path = solutions / "04_timestep_sampling.ipynb"
    shutil.copy(SOLUTIONS / path.name, path)
    nb = read(path)
    check_cell = next(cell for cell in nb.cells if "minisd3" in cell.metadata)
    check_cell.metadata["minisd3"]["points"] = 3
    next(cell for cell in nb.cells if has_solution_block(cell)).metadata["nbgrader"]["locked"] = True
    nbformat.write(nb, path)
    assert stale_nbgrader_metadata(solutions) == [path]
    args = ["--solutions", str(solutions), "--exercises", str(exercises)]
    assert main(["exercises", *args]) == 0
    assert main(["exercises", "--check", *args]) == 0
    assert stale_nbgrader_metadata(solutions) == [] and write_nbgrader_metadata(solutions) == []
    fixed = read(path)
    check_cell = next(cell for cell in fixed.cells if "minisd3" in cell.metadata)
    assert check_cell.metadata["nbgrader"]["points"] == 3
    assert not next(cell for cell in fixed.cells if has_solution_block(cell)).metadata["nbgrader"]["locked"]
    nb.cells.append(nbformat.v4.new_code_cell("def sample_logit_normal():\n    ### BEGIN SOLUTION\n    # again\n"
                                              "    pass\n    ### END SOLUTION"))
    with pytest.raises(ValueError, match="same nbgrader grade_id 'solution-sample_logit_normal'"):
        with_nbgrader_metadata(nb)


def student_view(nb: nbformat.NotebookNode) -> list[tuple]:
    """What a student gets from a notebook: each cell's type, source (our stub lines written as nbgrader's
    stub), outputs, whether it is editable / deletable / collapsed, and the check it runs."""
    cells = []
    for cell in nb.cells:
        source = re.sub(rf"^(\s*){re.escape(STUB)}\(.*\)$", lambda match: match.group(1) + NBGRADER_STUB,
                        cell.source, flags=re.MULTILINE)
        meta = cell.metadata
        cells.append((cell.cell_type, source, cell.get("outputs", []), cell.get("execution_count"),
                      meta.get("editable", True), meta.get("deletable", True),
                      meta.get("jupyter", {}).get("source_hidden", False), meta.get("minisd3")))
    return cells


@pytest.fixture(scope="module")
def nbgrader_release(tmp_path_factory):
    """``nbgrader generate_assignment`` run on solutions/ in a fresh course folder; the release folder."""
    course = tmp_path_factory.mktemp("nbgrader_course")
    shutil.copytree(SOLUTIONS, course / "source" / "practice")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.ClearSolutions.code_stub = {{'python': {NBGRADER_STUB!r}}}\n")
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "practice", "--force"],
                          cwd=course, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return course / "release" / "practice"


@pytest.mark.parametrize("lesson", LESSONS)
def test_nbgrader_generate_assignment_gives_our_exercises(nbgrader_release, lesson):
    theirs, ours = read(nbgrader_release / f"{lesson}.ipynb"), read(EXERCISES / f"{lesson}.ipynb")
    assert student_view(theirs) == student_view(ours)
    for cell in theirs.cells:  # nbgrader's copy also has its metadata (with checksums) for its autograder
        if "nbgrader" in cell.metadata:
            assert cell.metadata["nbgrader"]["checksum"]
    assert not any(STUB + "(" in line and NBGRADER_STUB not in line for cell in theirs.cells
                   for line in cell.source.split("\n"))


def test_a_failed_check_raises_under_nbgrader(monkeypatch, capsys):
    """nbgrader scores a test cell by whether it raised: under nbgrader a failed check raises, a passed one does not."""
    from minisd3.course.checks import check_shift_time
    from minisd3.timesteps import shift_time

    def reversed_shift(t, alpha):
        return t / (alpha - (alpha - 1) * t)

    assert not check_shift_time(reversed_shift).passed  # outside nbgrader: the line only
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert check_shift_time(shift_time).passed
    with pytest.raises(AssertionError, match=r"^\[check\] shift_time: FAIL — .*wrong way"):
        check_shift_time(reversed_shift)
    assert capsys.readouterr().out.count("[check] shift_time: FAIL") == 2


def test_nbgrader_autograde_scores_the_checks(nbgrader_release, tmp_path):
    """A student's copy of practice 04 from nbgrader's release, exercise 1 right and exercise 2 wrong, autograded
    by nbgrader: 1 of 2 points, the wrong check's cell scored zero with our message in its error."""
    from nbgrader.api import Gradebook

    course = nbgrader_release.parents[1]
    lesson = "04_timestep_sampling"
    nb = read(nbgrader_release / f"{lesson}.ipynb")
    answers = {"sample_logit_normal": "return torch.sigmoid(m + s * torch.randn(n, generator=generator))",
               "shift_time": "return t / (alpha - (alpha - 1) * t)"}
    for cell in nb.cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id", "").removeprefix("solution-")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = cell.source.replace(NBGRADER_STUB, answers[name])
    submitted = course / "submitted" / "alice" / "practice"
    submitted.mkdir(parents=True)
    nbformat.write(nb, submitted / f"{lesson}.ipynb")
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               MINISD3_FAST="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "practice", "--force", "--create"],
                          cwd=course, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        graded = gradebook.find_submission_notebook(lesson, "practice", "alice")
        assert (graded.score, graded.max_score) == (1, 2)
        assert gradebook.find_grade("sample_logit_normal", lesson, "practice", "alice").score == 1
        assert gradebook.find_grade("shift_time", lesson, "practice", "alice").score == 0
    autograded = read(course / "autograded" / "alice" / "practice" / f"{lesson}.ipynb")
    check = next(cell for cell in autograded.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "shift_time")
    assert any(output.get("ename") == "AssertionError" and "wrong way" in output.get("evalue", "")
               for output in check.outputs), check.outputs
