"""Classifier-free guidance (Ho & Salimans 2022) for flows.

Training drops the conditioning with probability p (it is replaced by a "null" condition), so one
network learns both v(z, t | c) and v(z, t | ∅). Sampling combines them with a scale w:

    v_w = v(z, t | ∅) + w · (v(z, t | c) − v(z, t | ∅))

w = 1 is the conditional model, w = 0 the unconditional one, w > 1 pushes further towards c.
SD3 drops each of its three text encoders independently with p = 0.463.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .ode import VelocityField
from .seeding import rand


def cfg_combine(v_uncond: torch.Tensor, v_cond: torch.Tensor, w: float) -> torch.Tensor:
    """v_∅ + w·(v_c − v_∅)."""
    if v_uncond.shape != v_cond.shape:
        raise ValueError(f"v_cond: expected the shape of v_uncond {tuple(v_uncond.shape)}, got {tuple(v_cond.shape)}")
    return v_uncond + w * (v_cond - v_uncond)


def guided_field(velocity: Callable[..., torch.Tensor], cond: tuple, uncond: tuple, w: float) -> VelocityField:
    """A field v_w(z, t) for the ODE solvers from a conditional network ``velocity(z, t, *condition)``.

    ``cond`` and ``uncond`` are the extra arguments (batched like z) for the two predictions; both
    are evaluated in one batched call. With w = 1 only the conditional prediction is computed.
    """
    if w == 1.0:
        return lambda z, t: velocity(z, t, *cond)

    def field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = [torch.cat([u, c]) for u, c in zip(uncond, cond)]
        v_uncond, v_cond = velocity(torch.cat([z, z]), torch.cat([t, t]), *both).chunk(2)
        return cfg_combine(v_uncond, v_cond, w)

    return field


def drop_mask(batch: int | tuple[int, ...], p: float, generator: torch.Generator | None = None,
              device=None) -> torch.Tensor:
    """A (batch,) bool mask (or of shape ``batch`` when a tuple), each entry True with probability p
    independently: which conditions to replace by the null one."""
    if not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    return rand((batch,) if isinstance(batch, int) else tuple(batch), generator, device) < p
