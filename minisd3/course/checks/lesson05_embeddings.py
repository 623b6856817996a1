"""Lesson 05 (sinusoidal embeddings): the checks of the timestep embedding (``timestep_embedding``) and
the 2-D sin-cos positions (``sincos_2d_positions``), with the knob-turning references for their wrong variants."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import embeddings
from ...seeding import make_generator
from .core import _call, _check, _compare


def _sinusoid(t: torch.Tensor, dim: int, *, scale: float = embeddings.TIME_SCALE, divisor: int | None = None,
              sign: float = -1.0, log_of_period: float = math.log(embeddings.MAX_PERIOD), cos_first: bool = True,
              interleave: bool = False, two_pi: bool = False, first_index: int = 0) -> torch.Tensor:
    """The timestep embedding in float64 with one knob turned (for the wrong variants):
    angles = scale·t·exp(sign·log_of_period·i/divisor) (·2π) for i = first_index … first_index + half − 1,
    [cos | sin] halves (or sin first, or interleaved)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64) + first_index
    freqs = torch.exp(sign * log_of_period * i / (divisor or half))
    angles = scale * t.double()[:, None] * freqs[None] * (2 * math.pi if two_pi else 1.0)
    first, second = (angles.cos(), angles.sin()) if cos_first else (angles.sin(), angles.cos())
    if interleave:
        return torch.stack([first, second], dim=2).flatten(1)
    return torch.cat([first, second], dim=1)


@_check("timestep_embedding", "matches minisd3.embeddings.timestep_embedding")
def check_timestep_embedding(timestep_embedding: Callable) -> None:
    """Check ``timestep_embedding(t, dim)`` → [cos(1000t·ω_i) | sin(1000t·ω_i)], ω_i = exp(−ln(10000)·i/(dim/2)),
    on tiny times (where a frequency without its minus sign is still computable), on t in [0, 1], and for dim 16."""
    gen = make_generator(501)
    tiny = torch.cat([torch.zeros(1), 1e-5 * torch.rand(15, generator=gen)])
    spread = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(30, generator=gen)])
    for t, dim in ((tiny, 256), (spread, 256), (spread, 16)):
        got = _call(timestep_embedding, "timestep_embedding", t, dim)
        half = dim // 2
        _compare(got, embeddings.timestep_embedding(t, dim), [
            ("time_not_scaled", "t not scaled by 1000: the sinusoid takes τ = 1000·t (SD3's timesteps); with t ∈ [0, 1] unscaled "
             "almost every channel stays near cos 0 = 1, sin 0 = 0 and the embedding barely changes with t",
             _sinusoid(t, dim, scale=1.0)),
            ("sin_cos_swapped", "sin and cos halves swapped: SD3 (flip_sin_to_cos=True) puts the cosine half first, "
             "[cos(τ·ω) | sin(τ·ω)]", _sinusoid(t, dim, cos_first=False)),
            ("time_not_scaled_and_swapped",
             "t not scaled by 1000 and sin and cos halves swapped: use τ = 1000·t and put the cosine half first",
             _sinusoid(t, dim, scale=1.0, cos_first=False)),
            ("divisor_half_minus_one", f"frequencies off: divide i by half = dim/2 = {half}, not by half − 1 = {half - 1} "
             "(ω_i = exp(−ln(10000)·i/half), diffusers' downscale_freq_shift=0)",
             _sinusoid(t, dim, divisor=half - 1)),
            ("divisor_dim", f"frequencies off: divide the exponent by half, not dim: ω_i = exp(−ln(10000)·i/half) with "
             f"half = dim/2 = {half}, not i/dim = i/{dim}", _sinusoid(t, dim, divisor=dim)),
            ("index_from_one", "frequencies off: i runs 0 … half − 1 (torch.arange(half)), so the first frequency is "
             "ω_0 = 1; yours start at i = 1", _sinusoid(t, dim, first_index=1)),
            ("max_period_1000", "frequencies off: the period constant is 10000, ω_i = exp(−ln(10000)·i/half); 1000 is the "
             "time scale τ = 1000·t", _sinusoid(t, dim, log_of_period=math.log(1000))),
            ("missing_minus_sign", "frequencies off: the exponent needs its minus sign, ω_i = exp(−ln(10000)·i/half), so the "
             "frequencies fall from 1 to about 1/10000; yours grow to about 10000", _sinusoid(t, dim, sign=1.0)),
            ("log10", "frequencies off: use the natural log, exp(−ln(10000)·i/half) = 10000^(−i/half), not log10 "
             "(math.log10(10000) = 4, ln(10000) ≈ 9.21)",
             _sinusoid(t, dim, log_of_period=math.log10(embeddings.MAX_PERIOD))),
            ("log10", "frequencies off: use the natural log, exp(−ln(10000)·i/half) = 10000^(−i/half), not log10 "
             "(math.log10(10000) = 4, ln(10000) ≈ 9.21); and divide by half, not dim",
             _sinusoid(t, dim, log_of_period=math.log10(embeddings.MAX_PERIOD), divisor=dim)),
            ("extra_two_pi", "an extra 2π: the angles are τ·ω_i, without 2π", _sinusoid(t, dim, two_pi=True)),
            ("interleaved", "cos and sin interleaved channel by channel; SD3 concatenates two halves, all cosines then all sines "
             "(torch.cat([cos, sin], dim=1))", _sinusoid(t, dim, interleave=True)),
        ], formula="[cos(1000t·ω_i) | sin(1000t·ω_i)]", atol=1e-3,
            shape_hint="return (B, dim), one row per time: the dim/2 cosines, then the dim/2 sines "
                       "(half = dim // 2, not a fixed 128)")


def _positions_2d(dim: int, rows: int, cols: int, *, columns_first: bool = True, row_major: bool = True,
                  sin_first: bool = True, divisor: int | None = None, interleave: bool = False) -> torch.Tensor:
    """2-D sin-cos positions in float64 with one knob turned (for the wrong variants): per token
    [sincos(x) | sincos(y)] with x the column and y the row, each sincos(p) = [sin(p·ω_i) | cos(p·ω_i)],
    ω_i = 10000^(−i/divisor), i < k = dim/4 (divisor k by default), or sin and cos interleaved channel by channel."""
    k = dim // 4
    omega = embeddings.MAX_PERIOD ** (-torch.arange(k, dtype=torch.float64) / (divisor or k))
    yy, xx = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                            indexing="ij")
    if not row_major:
        yy, xx = yy.T, xx.T

    def sincos(p: torch.Tensor) -> torch.Tensor:
        angles = p.flatten()[:, None] * omega[None]
        parts = [angles.sin(), angles.cos()] if sin_first else [angles.cos(), angles.sin()]
        return torch.stack(parts, dim=2).flatten(1) if interleave else torch.cat(parts, dim=1)

    halves = [sincos(xx), sincos(yy)] if columns_first else [sincos(yy), sincos(xx)]
    return torch.cat(halves, dim=1)


@_check("sincos_2d_positions", "matches minisd3.embeddings.sincos_2d_positions")
def check_sincos_2d_positions(sincos_2d_positions: Callable) -> None:
    """Check ``sincos_2d_positions(dim, rows, cols)`` → (rows·cols, dim): tokens in row-major order, each
    [sin(x·ω) | cos(x·ω) | sin(y·ω) | cos(y·ω)] with x the column, y the row and ω_i = 10000^(−i/(dim/4)),
    on grids that are not square (so rows and columns cannot be confused unseen)."""
    for dim, rows, cols in ((16, 3, 5), (8, 4, 2), (32, 6, 7)):
        got = _call(sincos_2d_positions, "sincos_2d_positions", dim, rows, cols)
        k = dim // 4
        _compare(got, embeddings.sincos_2d_positions(dim, rows, cols).double(), [
            ("rows_first", "the row (y) half comes first; SD3 and DiT put the column coordinate x in the first dim/2 channels "
             "and the row coordinate y in the second", _positions_2d(dim, rows, cols, columns_first=False)),
            ("column_major", "tokens in column-major order: patchify numbers patches row by row, token n = i·cols + j, so use "
             "torch.meshgrid(rows, cols, indexing='ij') and flatten", _positions_2d(dim, rows, cols, row_major=False)),
            ("cos_before_sin", "cosines before sines within each half: positions use [sin | cos] (the timestep embedding is the "
             "one with its cosines first)", _positions_2d(dim, rows, cols, sin_first=False)),
            ("divisor_half", f"frequencies off: each 1-D half has k = dim/4 = {k} frequencies, ω_i = 10000^(−i/k); divide i by "
             f"k, not by dim/2 = {2 * k}", _positions_2d(dim, rows, cols, divisor=2 * k)),
            ("divisor_dim", f"frequencies off: each 1-D half has k = dim/4 = {k} frequencies, ω_i = 10000^(−i/k); divide i by "
             f"k, not by dim = {dim}", _positions_2d(dim, rows, cols, divisor=dim)),
            ("interleaved", "sin and cos interleaved channel by channel; each 1-D half is two blocks, all sines then all "
             "cosines (torch.cat([sin, cos], dim=1))", _positions_2d(dim, rows, cols, interleave=True)),
            ("rows_first_and_cos_before_sin",
             "row and column halves swapped and cosines first", _positions_2d(dim, rows, cols, columns_first=False,
                                                                              sin_first=False)),
        ], formula="[sincos(column) | sincos(row)]", atol=1e-5,
            shape_hint="return (rows·cols, dim): one row per patch, dim/2 channels for the column, dim/2 for the row")
