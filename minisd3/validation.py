"""Input checks shared by every module: a wrong argument gets a ValueError that names it,
says what was expected and what came.

Checks of type, dtype, rank, shape and device read only a tensor's metadata and always run.
Checks of values (range, NaN) read the data: on an accelerator that is a device→host sync, and
under ``torch.compile`` a data-dependent branch that breaks the graph, in every training step.
So they run only where they are free (:func:`values_checkable`): on CPU tensors, outside a
``torch.compile`` trace. Python numbers are always checked."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor(
    value,
    name: str,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool = True,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the expected rank/shape (``None`` = any size there)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(value.shape)}")
    if shape is not None:
        ok = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(value.shape)}")
    return value


def check_same_shape(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Check two tensors have the same shape and sit on the same device."""
    if a.shape != b.shape:
        raise ValueError(f"{b_name}: expected the shape of {a_name} {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{b_name}: expected device {a.device} like {a_name}, got {b.device}")


def values_checkable(value: torch.Tensor) -> bool:
    """Whether a value check (range, NaN) on ``value`` costs no sync and no graph break:
    the tensor lives on the CPU and no ``torch.compile`` trace is running."""
    return value.device.type == "cpu" and not torch.compiler.is_compiling()


def check_time(t, name: str = "t", *, batch: int | None = None, device=None) -> torch.Tensor:
    """Check a time tensor: floating, shape (batch,), values in [0, 1] (t = 0 data, t = 1 noise).

    The values are checked only where :func:`values_checkable` (CPU, not compiling).
    """
    check_tensor(t, name, ndim=1)
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch},) to match the batch, got {tuple(t.shape)}")
    if device is not None and t.device != torch.device(device) and t.device.type != torch.device(device).type:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if t.numel() and values_checkable(t) and (torch.isnan(t).any() or t.min() < 0 or t.max() > 1):
        raise ValueError(
            f"{name}: expected values in [0, 1] (t = 0 data, t = 1 noise), "
            f"got range [{t.min().item():.4g}, {t.max().item():.4g}]"
        )
    return t


def check_positive_int(value, name: str) -> int:
    """Check ``value`` is an int ≥ 1 (step counts, sample sizes)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def as_batch_time(t, batch: int, device, dtype=torch.float32, name: str = "t") -> torch.Tensor:
    """Turn a float or (batch,) tensor into a checked (batch,) time tensor on ``device``."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        if not 0 <= t <= 1:  # a number is checked on every device (NaN fails both comparisons)
            raise ValueError(f"{name}: expected values in [0, 1] (t = 0 data, t = 1 noise), got {t}")
        t = torch.full((batch,), float(t), device=device, dtype=dtype)
    return check_time(t, name, batch=batch, device=device)


def expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) time tensor to broadcast against ``like`` of shape (B, ...)."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
