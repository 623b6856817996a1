"""Two-dimensional toy distributions, the data of lessons 01–04.

Every sampler takes ``n`` and a ``torch.Generator`` and returns an (n, 2) float tensor, so the
same seed always gives the same point cloud.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .seeding import make_generator, rand, randn
from .validation import check_positive_int


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = Σ_k π_k · N(x; μ_k, σ² I) with a shared isotropic standard deviation σ."""

    means: torch.Tensor  # (K, D)
    std: float
    weights: torch.Tensor  # (K,), sums to 1

    def __post_init__(self):
        if self.means.ndim != 2:
            raise ValueError(f"means: expected shape (K, D), got {tuple(self.means.shape)}")
        if self.weights.shape != (self.means.shape[0],):
            raise ValueError(
                f"weights: expected shape ({self.means.shape[0]},), got {tuple(self.weights.shape)}"
            )
        if not self.std > 0:
            raise ValueError(f"std: expected a positive number, got {self.std}")

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Draw k ~ Categorical(π), then x = μ_k + σ·n with n ~ N(0, I)."""
        check_positive_int(n, "n")
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        noise = randn((n, self.means.shape[1]), generator)
        return (self.means.cpu()[k] + self.std * noise).to(device or "cpu")


def eight_gaussians_mixture(radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
    """Eight equal Gaussians on a circle of the given radius."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means=means, std=std, weights=torch.full((8,), 1 / 8))


def sample_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eight Gaussians on a circle of radius 4 (σ = 0.3)."""
    return eight_gaussians_mixture().sample(n, generator)


def sample_two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> torch.Tensor:
    """Two interleaved half circles, scaled and centred to roughly [-3, 3]²."""
    check_positive_int(n, "n")
    upper = rand((n,), generator) < 0.5
    angle = math.pi * rand((n,), generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.5
    return points + noise * 2.5 * randn((n, 2), generator)


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the dark squares of a 4×4 checkerboard of 2×2 squares covering [-4, 4]².

    A square (column c, row r), c, r ∈ {-2, -1, 0, 1}, is dark when c + r is even.
    """
    check_positive_int(n, "n")
    x = 8 * rand((n,), generator) - 4
    column = torch.floor(x / 2).clamp(-2, 1)
    # of the four rows, the two dark ones in this column are -2 + (c mod 2) and that + 2
    row = -2 + torch.remainder(column, 2) + 2 * torch.randint(0, 2, (n,), generator=generator)
    y = 2 * row + 2 * rand((n,), generator)
    return torch.stack([x, y], dim=1)


def sample_spiral(n: int, generator: torch.Generator | None = None, noise: float = 0.15) -> torch.Tensor:
    """An Archimedean spiral r ∝ θ with small Gaussian noise, in roughly [-4, 4]²."""
    check_positive_int(n, "n")
    theta = torch.sqrt(rand((n,), generator)) * 3 * math.pi
    r = theta / (3 * math.pi) * 4
    points = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return points + noise * randn((n, 2), generator)


def sample_standard_normal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) in 2-D: the noise end (t = 1) of every flow in the course."""
    check_positive_int(n, "n")
    return randn((n, 2), generator)


TOY_DISTRIBUTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "8gaussians": sample_8gaussians,
    "two_moons": sample_two_moons,
    "checkerboard": sample_checkerboard,
    "spiral": sample_spiral,
    "normal": sample_standard_normal,
}


def sample_toy(name: str, n: int, seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` points from the toy distribution called ``name`` (see ``TOY_DISTRIBUTIONS``)."""
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"name: expected one of {sorted(TOY_DISTRIBUTIONS)}, got {name!r}")
    if generator is None and seed is not None:
        generator = make_generator(seed)
    return TOY_DISTRIBUTIONS[name](n, generator)
