"""Runs are never lost or mixed: a used run directory is refused, Ctrl-C checkpoints, time-based
checkpoints, a summary that is valid JSON, a resume that keeps its schedule (the real command line)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY, cli, tiny

import minisd3.engine.loop as loop_module
from minisd3.engine.checkpoints import resolve_checkpoint
from minisd3.engine.loop import train_run

TRAIN = ["train", "--preset", "shapes", "--quiet"] + [a for s in TINY for a in ("--set", s)]


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_used_run_directory_is_refused_unless_resumed_or_overwritten(tmp_path):
    run = tmp_path / "run"
    first = cli(*TRAIN, "--max-steps", "2", "--out", str(run))
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip().splitlines()[-1].startswith(f"{run}: trained to step 2")
    before = (run / "metrics.csv").read_text()
    again = cli(*TRAIN, "--max-steps", "2", "--out", str(run))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"--out: '{run}' already holds a run" in again.stderr and "--resume" in again.stderr
    assert "--overwrite" in again.stderr
    assert (run / "metrics.csv").read_text() == before  # nothing touched
    over = cli(*TRAIN, "--max-steps", "2", "--out", str(run), "--overwrite")
    assert over.returncode == 0, over.stderr[-2000:]
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert f"moved to {aside}" in over.stdout and (aside / "metrics.csv").read_text() == before
    both = cli(*TRAIN, "--max-steps", "2", "--resume", str(run), "--overwrite")
    assert both.returncode == 2 and "--overwrite: expected either --resume" in both.stderr
    neither = cli(*TRAIN, "--max-steps", "2")
    assert neither.returncode == 2 and "--out: expected a run directory" in neither.stderr


def test_resume_alone_continues_in_place_and_keeps_the_run_length(tmp_path):
    run = tmp_path / "run"
    train_run(tiny("max_steps=4"), run, progress=False, stop_at=2)
    done = cli(*TRAIN, "--max-steps", "4", "--resume", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r.split(",")[0] for r in (run / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2", "3", "4"]
    longer = cli(*TRAIN, "--max-steps", "8", "--resume", str(run))
    assert longer.returncode == 2 and "made for max_steps=4" in longer.stderr and "--max-steps 8" in longer.stderr
    assert json.loads((run / "config.json").read_text())["max_steps"] == 4  # --max-steps is the run's length


def test_the_summary_is_valid_json_and_agrees_with_the_metrics(tmp_path):
    run = tmp_path / "run"
    train_run(tiny("max_steps=2"), run, progress=False)
    train_run(tiny("max_steps=2"), run, resume=run, progress=False)  # nothing left to train
    summary = strict_json(run / "summary.json")
    last = (run / "metrics.csv").read_text().splitlines()[-1].split(",")
    assert summary["step"] == 2 and summary["loss"] == pytest.approx(float(last[1]), abs=1e-6)


def test_checkpoints_are_written_by_wall_time_as_well_as_by_step(tmp_path, monkeypatch):
    saved = []
    real = loop_module.save_checkpoint

    def record(run_dir, step, *args, **kwargs):
        saved.append(step)
        return real(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(loop_module, "save_checkpoint", record)
    train_run(tiny("max_steps=4", "ckpt_minutes=0"), tmp_path / "steps", progress=False)
    assert saved == [4]  # ckpt_every=100: only the final step
    saved.clear()
    train_run(tiny("max_steps=4", "ckpt_minutes=1e-9"), tmp_path / "time", progress=False)
    assert saved == [1, 2, 3, 4]  # every step is "5 minutes" later here


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess is POSIX")
def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "minisd3", *TRAIN, "--max-steps", "100000", "--out", str(run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = run / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted at step" in err and f"python -m minisd3 train --resume {run}" in err
    step = int(err.split("interrupted at step ")[1].split()[0])
    assert step >= 2 and resolve_checkpoint(run).name == f"step_{step:07d}"
    resumed = train_run(tiny("max_steps=100000"), run, resume=run, progress=False, stop_at=step + 1)
    assert resumed["step"] == step + 1


def test_execute_writes_to_out_and_never_in_place_unless_asked(tmp_path):
    lesson = tmp_path / "lesson.ipynb"
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nbformat.write(nb, lesson)
    original = lesson.read_text()
    missing = cli("execute", str(lesson))
    assert missing.returncode == 2 and "--out: expected a folder" in missing.stderr and "Traceback" not in missing.stderr
    done = cli("execute", str(lesson), "--out", str(tmp_path / "ran"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert lesson.read_text() == original and f"wrote {tmp_path / 'ran' / 'lesson.ipynb'}" in done.stdout
    assert "42" in (tmp_path / "ran" / "lesson.ipynb").read_text()
    assert "without encryption" not in done.stderr
    inplace = cli("execute", str(lesson), "--inplace")
    assert inplace.returncode == 0 and "42" in lesson.read_text()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), lesson)
    broken = cli("execute", str(lesson), "--out", str(tmp_path / "ran"))
    assert broken.returncode == 2 and "cell 0 raised ZeroDivisionError" in broken.stderr
    assert "Traceback" not in broken.stderr
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("import os; os._exit(1)")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), lesson)
    died = cli("execute", str(lesson), "--out", str(tmp_path / "died"))
    assert died.returncode == 2 and "the kernel died while running cell 1" in died.stderr, died.stderr[-2000:]
    assert "Traceback" not in died.stderr and not (tmp_path / "died" / "lesson.ipynb").exists()


def test_checkpoint_and_set_errors_name_the_flag_and_say_what_was_found(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    sample = ["sample", "--prompt", "one red circle", "--out", str(tmp_path / "a.png"), "--ckpt"]
    cases = {
        (*sample, str(tmp_path / "nowhere")): "--ckpt: expected a run directory",
        (*sample, str(tmp_path / "empty")): "an empty folder",
        (*sample, str(tmp_path / "other")): "a folder without checkpoints/latest or state.json",
        (*TRAIN, "--resume", str(tmp_path / "nowhere")): "--resume: expected a run directory",
        (*TRAIN, "--resume", str(tmp_path / "empty")): "an empty folder",
        (*TRAIN, "--set", "learning_rate=1", "--out", str(tmp_path / "r")): "did you mean 'lr'? the keys are ",
    }
    messages = []
    for argv, expected in cases.items():
        done = cli(*argv)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stderr[-2000:])
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, (argv, done.stderr)
        messages.append(done.stderr)
    assert "nowhere': no such file or folder" in messages[0]
    assert "max_steps" in messages[-1] and "p_uncond" in messages[-1]  # the list of keys
