"""Sample-quality metrics that need no download: sliced Wasserstein distance and MMD.

    SW₂(P, Q)² = E_{θ ~ U(S^{D−1})} W₂²(θᵀP, θᵀQ),  W₂ of 1-D sets = RMS of sorted differences
    SW₁(P, Q)  = E_{θ ~ U(S^{D−1})} W₁(θᵀP, θᵀQ),   W₁ of 1-D sets = mean |sorted differences|
    MMD²(P, Q) = E k(x, x′) + E k(y, y′) − 2 E k(x, y),  k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²))
"""
from __future__ import annotations

import torch

from .seeding import make_generator, randn
from .validation import check_tensor


def _flat_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(x, "x", min_ndim=2)
    check_tensor(y, "y", min_ndim=2)
    x, y = x.flatten(1).float(), y.flatten(1).float()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected samples of dimension {x.shape[1]} like x, got {y.shape[1]}")
    return x, y


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, seed: int = 0,
                       p: int = 2) -> float:
    """SW_p between two sample sets (N, ...) and (M, ...); unequal sizes are compared by quantiles.

    ``p = 2`` (the default, the lessons' metric) or ``p = 1``. The projections come from ``seed``,
    so the same sets always give the same number.
    """
    if p not in (1, 2):
        raise ValueError(f"p: expected 1 or 2, got {p!r}")
    x, y = _flat_pair(x, y)
    theta = randn((x.shape[1], n_projections), make_generator(seed), x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y.to(x.device) @ theta, dim=0)
    if px.shape[0] != py.shape[0]:
        n = min(px.shape[0], py.shape[0])
        q = torch.linspace(0, 1, n, device=x.device)
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    if p == 1:
        return float((px - py).abs().mean())
    return float(((px - py) ** 2).mean().sqrt())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels of the given bandwidths σ."""
    x, y = _flat_pair(x, y)
    y = y.to(x.device)

    def kernel(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * s**2)) for s in bandwidths)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())
