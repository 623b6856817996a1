"""SD3's training-time distributions over t and the resolution shift (Esser et al. 2024, §3.1).

Sampling t from a density π(t) instead of U(0, 1) is the same objective as uniform t with the loss
weighted by π(t):  E_{t~π} L(t) = ∫ π(t) L(t) dt = E_{t~U} [π(t) L(t)].

    logit-normal   t = sigmoid(m + s·n),  n ~ N(0, 1)
                   π(t) = 1/(s√(2π)) · 1/(t(1 − t)) · exp(−(logit(t) − m)² / (2s²))
    mode           t = f(u) = 1 − u − s·(cos²(πu/2) − 1 + u),  u ~ U(0, 1),  −1 ≤ s ≤ 2/(π − 2)
                   π(t) = 1 / |f′(f⁻¹(t))|,  f′(u) = −1 − s + (sπ/2)·sin(πu)
    cosmap         t = 1 − 1/(tan(πu/2) + 1),  π(t) = 2 / (π((1 − t)² + t²))
    shift          t′ = α·t / (1 + (α − 1)·t),  α = √(m/n) for m against n pixels
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .seeding import rand, randn
from .validation import check_positive_int, check_time

TimeSampler = Callable[..., torch.Tensor]
"""sampler(n, generator=None, device=None) → t of shape (n,) in [0, 1]."""

MODE_S_MAX = 2 / (math.pi - 2)


def sample_uniform(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t ~ U(0, 1)."""
    check_positive_int(n, "n")
    return rand((n,), generator, device)


def sample_logit_normal(n: int, m: float = 0.0, s: float = 1.0, generator: torch.Generator | None = None,
                        device=None) -> torch.Tensor:
    """t = sigmoid(m + s·n), n ~ N(0, 1): SD3's best choice is m = 0, s = 1."""
    check_positive_int(n, "n")
    _check_logit_normal_s(s)
    return torch.sigmoid(m + s * randn((n,), generator, device))


def _check_logit_normal_s(s: float) -> None:
    if not s > 0:
        raise ValueError(f"s: expected a positive scale, got {s}")


def _mode_map(u: torch.Tensor, s: float) -> torch.Tensor:
    return 1 - u - s * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)


def _check_mode_s(s: float) -> None:
    if not -1 <= s <= MODE_S_MAX:
        raise ValueError(f"s: expected a value in [-1, 2/(π − 2) ≈ {MODE_S_MAX:.4f}], got {s}")


def sample_mode(n: int, s: float = 1.29, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t = 1 − u − s·(cos²(πu/2) − 1 + u), u ~ U(0, 1); s > 0 puts more mass in the middle."""
    check_positive_int(n, "n")
    _check_mode_s(s)
    return _mode_map(rand((n,), generator, device), s).clamp(0, 1)


def sample_cosmap(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t = 1 − 1/(tan(πu/2) + 1), u ~ U(0, 1)."""
    check_positive_int(n, "n")
    u = rand((n,), generator, device)
    return 1 - 1 / (torch.tan(math.pi / 2 * u) + 1)


def logit_normal_density(t: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """π(t) of the logit-normal (module docstring); t in the open interval (0, 1)."""
    t = t.clamp(1e-12, 1 - 1e-12)
    logit = torch.log(t / (1 - t))
    return torch.exp(-((logit - m) ** 2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


def mode_density(t: torch.Tensor, s: float = 1.29, iterations: int = 60) -> torch.Tensor:
    """π(t) = 1/|f′(u)| at u = f⁻¹(t), with f decreasing; f⁻¹ by bisection."""
    _check_mode_s(s)
    lo, hi = torch.zeros_like(t), torch.ones_like(t)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_big = _mode_map(mid, s) > t  # f decreasing: f(mid) > t means u lies above mid
        lo, hi = torch.where(too_big, mid, lo), torch.where(too_big, hi, mid)
    u = (lo + hi) / 2
    return 1 / torch.abs(-1 - s + s * math.pi / 2 * torch.sin(math.pi * u))


def cosmap_density(t: torch.Tensor) -> torch.Tensor:
    """π(t) = 2 / (π((1 − t)² + t²))."""
    return 2 / (math.pi * ((1 - t) ** 2 + t**2))


def uniform_density(t: torch.Tensor) -> torch.Tensor:
    """π(t) = 1."""
    return torch.ones_like(t)


def shift_time(t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Resolution shift t′ = α·t / (1 + (α − 1)·t): α > 1 moves t towards noise. Apply it once."""
    check_time(t, "t")
    if not alpha > 0:
        raise ValueError(f"alpha: expected a positive shift, got {alpha}")
    return alpha * t / (1 + (alpha - 1) * t)


def resolution_shift_alpha(m_pixels: int, n_pixels: int) -> float:
    """α = √(m/n): the shift for training or sampling at m pixels a model tuned at n pixels."""
    check_positive_int(m_pixels, "m_pixels")
    check_positive_int(n_pixels, "n_pixels")
    return math.sqrt(m_pixels / n_pixels)


def make_time_sampler(name: str) -> TimeSampler:
    """A sampler by the paper's name: ``uniform``, ``lognorm(m,s)``, ``mode(s)`` or ``cosmap``."""
    compact = name.replace(" ", "").lower()
    if compact == "uniform":
        return sample_uniform
    if compact == "cosmap":
        return sample_cosmap
    for prefix, arity in (("lognorm(", 2), ("mode(", 1)):
        if compact.startswith(prefix) and compact.endswith(")"):
            try:
                args = [float(a) for a in compact[len(prefix):-1].split(",")]
            except ValueError:
                args = []
            if len(args) == arity:  # parameters checked here, not first when the sampler is called
                if arity == 2:
                    _check_logit_normal_s(args[1])
                    return lambda n, generator=None, device=None: sample_logit_normal(n, *args, generator, device)
                _check_mode_s(args[0])
                return lambda n, generator=None, device=None: sample_mode(n, args[0], generator, device)
    raise ValueError(f"name: expected 'uniform', 'lognorm(m,s)', 'mode(s)' or 'cosmap', got {name!r}")
