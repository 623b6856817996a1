"""Where the course runs: device choice, fast mode and the first-cell environment report.

Fast mode (``MINISD3_FAST=1``, set by the tests) shrinks every lesson to well under a minute
on two CPU cores; full mode is what the committed notebooks show.
"""
from __future__ import annotations

import io
import os
import platform
from typing import TypeVar

import torch
from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

T = TypeVar("T")

DEVICE_ENV = "MINISD3_DEVICE"
FAST_ENV = "MINISD3_FAST"
THREADS_ENV = "MINISD3_THREADS"
STATIC_ENV = "MINISD3_STATIC"
"""Set to 1 when a notebook runs headless (``execute``, the tests): no widgets, progress as one final line."""
CPU_THREADS = 1
"""Torch's CPU threads when neither ``--threads`` nor ``MINISD3_THREADS`` says otherwise. Measured on 2
cores (benchmarks/threads.py, docs/benchmarks.md): two threads gain 5 % (a lesson's model) to 33 % (the
main job) on an idle machine and lose 2.3–3× beside one other busy process, so one is the safe default."""


def use_threads(threads: int | str | None = None) -> int:
    """Set torch's CPU threads to ``threads``, else ``MINISD3_THREADS``, else :data:`CPU_THREADS`; returns it.

    Raises ValueError (naming ``--threads`` or the variable) for anything but a positive integer.
    """
    name, value = ("--threads", threads) if threads is not None else (THREADS_ENV, os.environ.get(THREADS_ENV))
    if value is None or value == "":
        count = CPU_THREADS
    else:
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if count < 1:
            raise ValueError(f"{name}: expected a positive number of CPU threads, got {value!r}")
    torch.set_num_threads(count)
    return count


def fast_mode() -> bool:
    """True when ``MINISD3_FAST`` is set to 1/true/yes (the tests' short runs)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes"}


def full_or_fast(full: T, fast: T) -> T:
    """Pick a setting: ``fast`` in fast mode, ``full`` otherwise (step counts, sample sizes)."""
    return fast if fast_mode() else full


def get_device(name: str | None = None) -> torch.device:
    """The device to compute on.

    ``name`` (or the ``MINISD3_DEVICE`` variable) may be ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"`` or ``"auto"`` (the best one present). The default is the CPU, so every lesson
    behaves the same on every laptop. Asking for an accelerator that is absent is an error.
    """
    requested = (name or os.environ.get(DEVICE_ENV) or "cpu").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(
            f"device: expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {requested!r}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected a device present here ('cpu' or 'auto'), got {requested!r} "
                         "but no CUDA GPU is available")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device: expected a device present here ('cpu' or 'auto'), got {requested!r} "
                         "but MPS is not available")
    return device


def env_report(device: str | None = None) -> dict[str, str]:
    """Print and return what this lesson runs on: versions, device, CPU threads and fast/full mode.

    Also sets the CPU threads (:func:`use_threads`: ``MINISD3_THREADS``, else :data:`CPU_THREADS`) and, in a
    notebook, saves a description of every figure beside its picture (:func:`minisd3.figures.record_figures`).
    """
    from .figures import record_figures

    use_threads()
    record_figures()
    dev = get_device(device)
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "cpu threads": f"{torch.get_num_threads()} (MINISD3_THREADS=N to change)",
        "mode": "fast (MINISD3_FAST=1)" if fast_mode() else "full",
    }
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}} : {value}")
    return report


def static_mode() -> bool:
    """True when ``MINISD3_STATIC`` is 1/true/yes: a headless run whose saved outputs a reader sees later."""
    return os.environ.get(STATIC_ENV, "").strip().lower() in {"1", "true", "yes"}


class FinishedBar(text_tqdm):
    """A tqdm bar that shows nothing while it runs and prints its final state once, when it closes
    (e.g. ``rectified flow: 100%|██████████| 4000/4000 [00:21<00:00, 190it/s, loss=0.412]``)."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()  # the live updates go nowhere
        kwargs.setdefault("ascii", False)  # block characters, as a terminal shows them
        super().__init__(*args, **kwargs)

    def close(self):
        final = None if self.disable else self.__str__()
        super().close()
        if final:
            print(final, flush=True)


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)`` in a live session; in :func:`static_mode` (headless runs
    whose outputs are saved) a :class:`FinishedBar`, so a saved notebook shows each loop finished, at
    100 % with its last postfix, instead of a widget frozen at 0 %."""
    return (FinishedBar if static_mode() else auto_tqdm)(iterable, **kwargs)
