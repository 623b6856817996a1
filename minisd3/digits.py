"""8×8 handwritten digits from scikit-learn's bundled ``load_digits`` (offline, 1797 images).

Pixels are scaled from 0…16 to [-1, 1], the range diffusion models expect; :func:`to_unit_range`
and :func:`to_uint8` take any model's images in [-1, 1] back to display ranges.
"""
from __future__ import annotations

import torch


def load_digits_tensor(device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: images (1797, 1, 8, 8) in [-1, 1], labels (1797,) int64."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return images.to(device or "cpu"), labels.to(device or "cpu")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] back to [0, 1] for display, clipping what a sampler overshot."""
    return ((images + 1) / 2).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] → (N, 3, H, W) uint8 in 0…255 on the CPU (grey repeated on three
    channels), clipping what a sampler overshot: round((x + 1)·127.5)."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1)
