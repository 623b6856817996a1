"""The sinusoidal timestep embedding: SD3's formula, and the 1000·t scaling that makes it move."""
import math

import numpy as np
import pytest
import torch

from minisd3.embeddings import timestep_embedding


def reference_embedding(t: np.ndarray, dim: int = 256) -> np.ndarray:
    """[cos(1000t·ω_i)…, sin(1000t·ω_i)…], ω_i = exp(−ln(10000)·i/(dim/2)), in float64."""
    half = dim // 2
    omega = np.exp(-math.log(10000) * np.arange(half) / half)
    angle = 1000 * t[:, None] * omega[None]
    return np.concatenate([np.cos(angle), np.sin(angle)], axis=1)


def relative_change(a, b):
    return ((a - b).norm() / a.norm()).item()


def test_matches_an_independent_formula():
    t = np.array([0.0, 0.001, 0.25, 0.5, 0.999, 1.0])
    emb = timestep_embedding(torch.tensor(t, dtype=torch.float32))
    assert emb.shape == (6, 256) and emb.dtype == torch.float32
    assert np.allclose(emb.numpy(), reference_embedding(t.astype(np.float32).astype(np.float64)), atol=2e-4)


def test_cos_half_comes_first():
    emb = timestep_embedding(torch.zeros(1), 8)
    assert torch.equal(emb, torch.tensor([[1.0, 1, 1, 1, 0, 0, 0, 0]]))
    # the first frequency is 1 rad per unit of 1000·t
    one = timestep_embedding(torch.tensor([0.001]), 8)
    assert one[0, 0].item() == pytest.approx(math.cos(1.0), abs=1e-5)
    assert one[0, 4].item() == pytest.approx(math.sin(1.0), abs=1e-5)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_other_even_dimensions(dim):
    t = np.array([0.3, 0.7])
    assert np.allclose(timestep_embedding(torch.tensor(t), dim).numpy(), reference_embedding(t, dim), atol=2e-4)


def test_time_is_scaled_by_1000_so_nearby_times_differ():
    """The trap: sinusoids of an unscaled t ∈ [0, 1] barely change between t = 0.5 and 0.51."""
    a, b = timestep_embedding(torch.tensor([0.5])), timestep_embedding(torch.tensor([0.51]))
    assert relative_change(a, b) > 0.3
    unscaled = [timestep_embedding(torch.tensor([t]), time_scale=1.0) for t in (0.5, 0.51)]
    assert relative_change(*unscaled) < 0.01
    # even neighbouring DDPM steps k/1000 get clearly different embeddings
    k = timestep_embedding(torch.tensor([0.400, 0.401]))
    assert relative_change(k[:1], k[1:]) > 0.1


def test_norm_is_constant():
    emb = timestep_embedding(torch.linspace(0, 1, 11), 64)
    assert torch.allclose(emb.norm(dim=1), torch.full((11,), math.sqrt(32)), atol=1e-4)
