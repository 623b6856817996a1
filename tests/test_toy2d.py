"""The 2-D toy samplers: seeded, (n, 2) float, and drawn from the distribution they name."""
import math

import pytest
import torch

from minisd3.seeding import make_generator
from minisd3.toy2d import (
    TOY_DISTRIBUTIONS,
    GaussianMixture,
    eight_gaussians_mixture,
    sample_8gaussians,
    sample_checkerboard,
    sample_spiral,
    sample_standard_normal,
    sample_toy,
    sample_two_moons,
)


@pytest.mark.parametrize("name", sorted(TOY_DISTRIBUTIONS))
def test_same_seed_same_points_and_shape(name):
    a = sample_toy(name, 300, seed=7)
    b = sample_toy(name, 300, seed=7)
    c = sample_toy(name, 300, seed=8)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("name", sorted(TOY_DISTRIBUTIONS))
def test_generator_and_seed_agree(name):
    assert torch.equal(sample_toy(name, 50, seed=3), TOY_DISTRIBUTIONS[name](50, make_generator(3)))


def test_checkerboard_points_lie_on_dark_squares_evenly():
    points = sample_checkerboard(40_000, make_generator(0))
    assert points.abs().max() <= 4
    column = torch.floor(points[:, 0] / 2).long()
    row = torch.floor(points[:, 1] / 2).long()
    assert ((column + row) % 2 == 0).all(), "a point fell on a light square"
    # eight dark squares, each with about an eighth of the points
    counts = torch.bincount((column + 2) * 4 + (row + 2), minlength=16).float() / points.shape[0]
    dark = torch.tensor([(c + r) % 2 == 0 for c in range(-2, 2) for r in range(-2, 2)])
    assert torch.allclose(counts[dark], torch.full((8,), 1 / 8), atol=0.01)
    assert (counts[~dark] == 0).all()


def test_8gaussians_moments_match_the_mixture():
    # mixture of 8 equal N(μ_k, σ²I), μ_k = 4(cos 2πk/8, sin 2πk/8): mean 0,
    # covariance σ²I + (1/8) Σ μ_k μ_kᵀ = (σ² + r²/2) I
    n, r, std = 200_000, 4.0, 0.3
    points = sample_8gaussians(n, make_generator(1)).double()
    mean = points.mean(0)
    cov = torch.cov(points.T)
    var = std**2 + r**2 / 2
    assert mean.abs().max() < 4 * math.sqrt(var / n)
    assert torch.allclose(cov, var * torch.eye(2, dtype=torch.float64), atol=0.05)
    # every point sits close to one of the eight centres
    angles = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    centres = r * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    nearest = torch.cdist(points[:5000], centres).min(1).values
    assert nearest.max() < 6 * std
    assert nearest.pow(2).mean().sqrt() == pytest.approx(std * math.sqrt(2), rel=0.05)


def test_gaussian_mixture_respects_weights_and_dimension():
    mixture = GaussianMixture(means=torch.tensor([[-5.0, 0, 0], [5.0, 0, 0]]), std=0.1,
                              weights=torch.tensor([0.25, 0.75]))
    points = mixture.sample(20_000, make_generator(2))
    assert points.shape == (20_000, 3)
    assert (points[:, 0] > 0).float().mean() == pytest.approx(0.75, abs=0.015)


def test_eight_gaussians_mixture_parameters():
    mixture = eight_gaussians_mixture(radius=2.0, std=0.5)
    assert mixture.means.shape == (8, 2)
    assert torch.allclose(mixture.means.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(mixture.means.sum(0), torch.zeros(2), atol=1e-5)
    assert mixture.std == 0.5 and torch.allclose(mixture.weights.sum(), torch.tensor(1.0))


def test_two_moons_without_noise_lie_on_the_two_half_circles():
    points = sample_two_moons(5000, make_generator(0), noise=0.0) / 2.5 + torch.tensor([0.5, 0.25])
    on_upper = ((points.norm(dim=1) - 1).abs() < 1e-5) & (points[:, 1] >= -1e-6)
    on_lower = (((points - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs() < 1e-5) & (points[:, 1] <= 0.5 + 1e-6)
    assert (on_upper | on_lower).all()
    assert on_upper.float().mean() == pytest.approx(0.5, abs=0.03)


def test_two_moons_is_centred():
    # upper moon mean (0, 2/π), lower (1, 1/2 − 2/π): together (1/2, 1/4), removed by the centring
    points = sample_two_moons(100_000, make_generator(4)).double()
    assert points.mean(0).abs().max() < 0.03
    assert points.abs().max() < 5


def test_spiral_without_noise_follows_r_proportional_to_theta():
    points = sample_spiral(3000, make_generator(0), noise=0.0).double()
    r = points.norm(dim=1)
    theta = r / 4 * 3 * math.pi
    expected = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    assert torch.allclose(points, expected, atol=1e-4)
    assert r.max() <= 4 + 1e-5


def test_standard_normal_moments():
    points = sample_standard_normal(100_000, make_generator(5)).double()
    assert points.mean(0).abs().max() < 0.02
    assert torch.allclose(torch.cov(points.T), torch.eye(2, dtype=torch.float64), atol=0.02)
