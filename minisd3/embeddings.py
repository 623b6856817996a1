"""Sinusoidal timestep embedding, as in SD3 (and diffusers' ``get_timestep_embedding`` with
``flip_sin_to_cos=True, downscale_freq_shift=0``).

For t ∈ [0, 1] and an even dimension d = 2h:

    τ = 1000·t,   ω_i = exp(−ln(10000) · i / h),  i = 0 … h − 1
    emb(t) = [cos(τ·ω_0) … cos(τ·ω_{h−1}), sin(τ·ω_0) … sin(τ·ω_{h−1})]

Scaling t by 1000 matters: with t ∈ [0, 1] unscaled, τ·ω_i < 1 for all but the first few
frequencies and the embedding barely changes along t.
"""
from __future__ import annotations

import math

import torch

from .validation import check_tensor

TIME_SCALE = 1000.0
MAX_PERIOD = 10000.0


def timestep_embedding(t: torch.Tensor, dim: int = 256, time_scale: float = TIME_SCALE,
                       max_period: float = MAX_PERIOD) -> torch.Tensor:
    """emb(t) of shape (B, dim) for t of shape (B,) (module docstring); cos half first."""
    check_tensor(t, "t", ndim=1)
    if dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even number ≥ 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (time_scale * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
