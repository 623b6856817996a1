"""Seeded randomness: the same seed gives the same numbers, pictures and trained models."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (draws are moved to the target device)."""
    if not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {type(seed).__name__}")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws, made on the generator's device and moved to ``device``.

    Drawing on the CPU keeps results identical across CPU, CUDA and MPS for the same seed.
    """
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device or gen_device)


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform draws on [0, 1), made like :func:`randn`."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device or gen_device)
