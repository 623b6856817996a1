"""Files written whole or not at all, and weights loaded with every mismatch named.

A reader (a notebook, a resumed run, another process) must never see half a file: everything the
package writes goes to a temporary name beside its target and is renamed over it when complete
(``os.replace`` is atomic on one file system). A failure leaves the previous version, or nothing.

    with atomic_file("run/metrics.csv") as tmp:      # write tmp; renamed over the target on success
        ...
    with atomic_folder("run/checkpoints/step_0001000") as tmp:   # a whole folder at once
        ...
    write_text_atomic("run/summary.json", text)
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or made for another configuration."""


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block ends without error.

    On an error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` (and all it held) on success.

    On an error the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as written:
                    os.fsync(written.fileno())
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def load_weights_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(tensors)``, or :class:`CheckpointError` listing every missing,
    unexpected and wrongly shaped tensor by name (``what`` names the weights in the message)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape)
    if missing or unexpected or wrong:
        lines = [f"{what}: the checkpoint was made for another configuration"]
        lines += [f"  missing from checkpoint: {k}" for k in missing[:20]]
        lines += [f"  not in this model: {k}" for k in unexpected[:20]]
        lines += [f"  shape mismatch {w}" for w in wrong[:20]]
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(tensors)
