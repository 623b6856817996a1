"""Environment: the first-cell report, fast mode, device choice and seeding."""
import random

import numpy as np
import pytest
import torch

import minisd3
from minisd3.env import env_report, fast_mode, full_or_fast, get_device
from minisd3.seeding import make_generator, rand, randn, seed_everything


def test_env_report_keys_and_fast_mode(monkeypatch, capsys):
    monkeypatch.setenv("MINISD3_FAST", "1")
    report = env_report()
    assert set(report) == {"python", "torch", "device", "cpu threads", "mode"}
    assert "fast" in report["mode"] and "MINISD3_FAST=1" in report["mode"]
    assert report["torch"] == torch.__version__
    printed = capsys.readouterr().out
    assert "fast" in printed and torch.__version__ in printed


def test_env_report_full_mode(monkeypatch, capsys):
    monkeypatch.setenv("MINISD3_FAST", "0")
    assert env_report()["mode"] == "full"
    assert "full" in capsys.readouterr().out


def test_fast_mode_values(monkeypatch):
    for value, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("no", False)]:
        monkeypatch.setenv("MINISD3_FAST", value)
        assert fast_mode() is expected
        assert full_or_fast(100, 5) == (5 if expected else 100)


def test_get_device_defaults_to_cpu(monkeypatch):
    monkeypatch.delenv("MINISD3_DEVICE", raising=False)
    assert get_device() == torch.device("cpu")
    assert get_device("CPU ") == torch.device("cpu")
    assert get_device("auto").type in {"cpu", "cuda", "mps"}
    monkeypatch.setenv("MINISD3_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert minisd3.get_device is get_device


def test_seeding_is_reproducible():
    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(2))
    seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert torch.equal(randn((3, 2), make_generator(1)), randn((3, 2), make_generator(1)))
    assert torch.equal(rand((4,), make_generator(1)), torch.rand(4, generator=make_generator(1)))
    assert randn((2,), make_generator(0), dtype=torch.float64).dtype == torch.float64


def test_threads_are_chosen_not_inherited(monkeypatch):
    from minisd3.env import CPU_THREADS, THREADS_ENV, use_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        torch.set_num_threads(2)
        assert use_threads() == CPU_THREADS == torch.get_num_threads()
        monkeypatch.setenv(THREADS_ENV, "2")
        assert use_threads() == 2 == torch.get_num_threads()
        assert use_threads(1) == 1 == torch.get_num_threads()  # the flag wins over the variable
        for bad in ("0", "-1", "two"):
            with pytest.raises(ValueError, match="--threads: expected a positive number of CPU threads"):
                use_threads(bad)
        monkeypatch.setenv(THREADS_ENV, "many")
        with pytest.raises(ValueError, match="MINISD3_THREADS: expected a positive number"):
            use_threads()
    finally:
        torch.set_num_threads(before)


def test_the_threads_flag_is_checked_at_the_command_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "minisd3", "sample", "--ckpt", "course", "--prompt", "one red circle",
                           "--threads", "0", "--out", str(tmp_path / "a.png")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "error: --threads: expected a positive number of CPU threads, got '0'\n"


def test_saved_progress_reads_finished(monkeypatch, capsys):
    """Headless (MINISD3_STATIC=1), a loop's bar prints one line, at 100 % with its last postfix."""
    from tqdm.auto import tqdm as auto_tqdm

    from minisd3.env import FinishedBar, progress_bar
    from minisd3.training import fit

    monkeypatch.setenv("MINISD3_STATIC", "1")
    bar = progress_bar(range(250), desc="demo")
    assert isinstance(bar, FinishedBar)
    for i in bar:
        bar.set_postfix(loss=f"{i / 1000:.3f}")
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "demo: 100%" in printed and "250/250" in printed and "loss=0.249" in printed
    model = torch.nn.Linear(1, 1)
    losses = fit(model, lambda m, b, g: (m(b) ** 2).mean(), lambda g: torch.ones(4, 1), steps=7, progress=True,
                 desc="fit")
    assert f"loss={sum(losses) / len(losses):.4f}" in capsys.readouterr().out  # the last 100 steps', not step 0's
    with progress_bar(range(3), disable=True):
        pass
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("MINISD3_STATIC", "0")
    assert not isinstance(progress_bar(range(3)), FinishedBar) and isinstance(progress_bar(range(3)), auto_tqdm)
