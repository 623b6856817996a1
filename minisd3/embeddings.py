"""Sinusoidal embeddings of time and of 2-D position. The timestep embedding is as in SD3 (and
diffusers' ``get_timestep_embedding`` with
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
from torch import nn

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


class TimestepEmbedder(nn.Module):
    """t ↦ Linear → SiLU → Linear applied to :func:`timestep_embedding` (256 frequencies), as SD3."""

    def __init__(self, hidden: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(p·ω_0) … sin(p·ω_{k−1}), cos(p·ω_0) … cos(p·ω_{k−1})], ω_i = 10000^(−i/k), k = dim/2."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even number ≥ 2, got {dim}")
    k = dim // 2
    omega = 1.0 / MAX_PERIOD ** (torch.arange(k, dtype=torch.float64) / k)
    angles = positions.to(torch.float64).reshape(-1, 1) * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d_positions(dim: int, rows: int, cols: int, row_spacing: float = 1.0,
                        col_spacing: float = 1.0, origin: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Fixed 2-D sin-cos positions for a rows×cols grid of patches, shape (rows·cols, dim), row-major.

    The first half of the channels encodes the column coordinate x = origin[1] + j·col_spacing and the
    second half the row coordinate y = origin[0] + i·row_spacing, each with :func:`sincos_1d` (as DiT
    and SD3; ``origin`` (0, 0) and spacing 1 is their table).
    """
    if dim % 4:
        raise ValueError(f"dim: expected a multiple of 4 (two sin-cos halves), got {dim}")
    y = origin[0] + torch.arange(rows, dtype=torch.float64) * row_spacing
    x = origin[1] + torch.arange(cols, dtype=torch.float64) * col_spacing
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.cat([sincos_1d(xx.flatten(), dim // 2), sincos_1d(yy.flatten(), dim // 2)], dim=1).float()
