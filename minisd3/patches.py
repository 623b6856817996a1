"""Images as tokens: cut an image into p×p patches and put them back.

    patchify:   (B, C, H, W) → (B, N, p·p·C),  N = (H/p)·(W/p), patches in row-major order,
                each patch flattened as (p_row, p_col, channel)
    unpatchify: the inverse, given the grid (H/p, W/p)
"""
from __future__ import annotations

import torch
from einops import rearrange

from .validation import check_tensor


def check_patchable(x: torch.Tensor, patch_size: int, name: str = "x") -> None:
    """Raise if ``x`` is not (B, C, H, W) with H and W divisible by ``patch_size``."""
    check_tensor(x, name, ndim=4, floating=False)
    if patch_size < 1:
        raise ValueError(f"patch_size: expected a positive int, got {patch_size}")
    h, w = x.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"{name}: expected height and width divisible by the patch size {patch_size}, got {h}×{w}"
        )


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, (H/p)(W/p), p·p·C)."""
    check_patchable(x, patch_size)
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(tokens: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, p·p·C) → (B, C, h·p, w·p) for a patch grid ``grid = (h, w)``."""
    check_tensor(tokens, "tokens", ndim=3, floating=False)
    h, w = grid
    if tokens.shape[1] != h * w:
        raise ValueError(f"tokens: expected {h}×{w} = {h * w} tokens for grid {grid}, got {tokens.shape[1]}")
    if tokens.shape[2] % (patch_size * patch_size):
        raise ValueError(
            f"tokens: expected a feature size divisible by patch_size² = {patch_size**2}, got {tokens.shape[2]}"
        )
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=h, w=w, p=patch_size, q=patch_size)
