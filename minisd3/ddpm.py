"""DDPM: noise schedules, forward noising, ε-prediction, and ancestral and DDIM sampling.

Discrete steps k = 0 … T−1 (T = 1000). With β_k the schedule, α_k = 1 − β_k, ᾱ_k = ∏_{s≤k} α_s:

    q(x_k | x0) = N(√ᾱ_k · x0, (1 − ᾱ_k) I)        x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε
    loss        = E_{k, x0, ε} ‖ε̂(x_k, k) − ε‖²
    ancestral   x_{k−1} = 1/√α_k · (x_k − β_k/√(1 − ᾱ_k) · ε̂) + σ_k·n,
                σ_k² = β̃_k = (1 − ᾱ_{k−1}) / (1 − ᾱ_k) · β_k   (no noise at k = 0)
    DDIM (η=0)  x̂0 = (x_k − √(1 − ᾱ_k)·ε̂) / √ᾱ_k,  x_j = √ᾱ_j·x̂0 + √(1 − ᾱ_j)·ε̂   (j < k)

The network sees the continuous time t = (k + 1)/T ∈ (0, 1], so that, as everywhere in the
course, t near 0 is data and t = 1 is (almost pure) noise.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ode import Trajectory
from .seeding import randn
from .validation import check_positive_int, check_same_shape, check_tensor

NoiseModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""ε̂(x, t): x of shape (B, ...), continuous t of shape (B,) → predicted noise shaped like x."""


@dataclass(frozen=True)
class NoiseSchedule:
    """β_k for k = 0 … T−1 and what follows from it (α_k, ᾱ_k)."""

    betas: torch.Tensor

    def __post_init__(self):
        check_tensor(self.betas, "betas", ndim=1)
        if self.betas.min() <= 0 or self.betas.max() >= 1:
            raise ValueError(
                f"betas: expected values in (0, 1), got range [{self.betas.min():.3g}, {self.betas.max():.3g}]"
            )

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas(self) -> torch.Tensor:
        return 1 - self.betas

    @property
    def alpha_bars(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, dim=0)

    def model_time(self, k: torch.Tensor) -> torch.Tensor:
        """The continuous time the network sees: t = (k + 1) / T."""
        return (k.to(torch.float32) + 1) / self.num_steps


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Ho et al.'s linear β from 1e-4 to 0.02 (scaled to other T so that ᾱ_T stays comparable)."""
    check_positive_int(num_steps, "num_steps")
    scale = 1000 / num_steps
    return NoiseSchedule(torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64).float())


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal: ᾱ(τ) = f(τ)/f(0), f(τ) = cos²((τ + s)/(1 + s) · π/2), β_k = 1 − ᾱ_{k+1}/ᾱ_k."""
    check_positive_int(num_steps, "num_steps")
    tau = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    return NoiseSchedule(betas.float())


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def make_schedule(kind: str, num_steps: int = 1000) -> NoiseSchedule:
    """``"linear"`` or ``"cosine"``."""
    if kind not in SCHEDULES:
        raise ValueError(f"kind: expected one of {sorted(SCHEDULES)}, got {kind!r}")
    return SCHEDULES[kind](num_steps)


def _check_steps(k: torch.Tensor, schedule: NoiseSchedule, batch: int, name: str = "k", device=None) -> torch.Tensor:
    if not isinstance(k, torch.Tensor) or k.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: expected an integer tensor of step indices, got {getattr(k, 'dtype', type(k))}")
    if k.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},), got {tuple(k.shape)}")
    if device is not None and k.device.type != torch.device(device).type:
        raise ValueError(f"{name}: expected device {device}, got {k.device}")
    if k.numel() and (k.min() < 0 or k.max() >= schedule.num_steps):
        raise ValueError(f"{name}: expected indices in [0, {schedule.num_steps - 1}], got [{k.min()}, {k.max()}]")
    return k


def q_sample(x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """x_k = √ᾱ_k · x0 + √(1 − ᾱ_k) · ε, a draw from q(x_k | x0)."""
    check_tensor(x0, "x0", min_ndim=1)
    check_tensor(eps, "eps")
    check_same_shape(x0, "x0", eps, "eps")
    _check_steps(k, schedule, x0.shape[0], device=x0.device)
    ab = schedule.alpha_bars.to(x0.device)[k].reshape(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def eps_loss(model: NoiseModel, x0: torch.Tensor, schedule: NoiseSchedule,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The ε-prediction loss: k ~ U{0…T−1}, ε ~ N(0, I), mean of ‖ε̂(x_k, t_k) − ε‖² per element."""
    check_tensor(x0, "x0", min_ndim=2)
    k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator).to(x0.device)
    eps = randn(x0.shape, generator, x0.device)
    pred = model(q_sample(x0, k, eps, schedule), schedule.model_time(k))
    return ((pred - eps) ** 2).mean()


def ancestral_step(model: NoiseModel, x: torch.Tensor, k: int, schedule: NoiseSchedule,
                   noise: torch.Tensor) -> torch.Tensor:
    """One reverse step x_k → x_{k−1} of DDPM (module docstring); no noise is added at k = 0."""
    check_tensor(x, "x", min_ndim=1)
    check_same_shape(x, "x", noise, "noise")
    if not 0 <= int(k) < schedule.num_steps:
        raise ValueError(f"k: expected an index in [0, {schedule.num_steps - 1}], got {k}")
    beta, alpha, ab = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
    t = schedule.model_time(torch.full((x.shape[0],), int(k), device=x.device))
    mean = (x - beta / (1 - ab).sqrt() * model(x, t)) / alpha.sqrt()
    if k == 0:
        return mean
    posterior_var = (1 - schedule.alpha_bars[k - 1]) / (1 - ab) * beta
    return mean + posterior_var.sqrt() * noise


def ancestral_sample(model: NoiseModel, x_T: torch.Tensor, schedule: NoiseSchedule,
                     generator: torch.Generator | None = None,
                     return_trajectory: bool = False) -> torch.Tensor:
    """Run all T ancestral steps from x_{T−1} = ``x_T`` (pure noise). With ``return_trajectory``
    returns the (T+1, B, ...) stack of states."""
    check_tensor(x_T, "x_T", min_ndim=1)
    x, states = x_T, [x_T]
    with torch.no_grad():
        for k in reversed(range(schedule.num_steps)):
            x = ancestral_step(model, x, k, schedule, randn(x.shape, generator, x.device))
            if return_trajectory:
                states.append(x)
    return torch.stack(states) if return_trajectory else x


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced step indices from T−1 down to 0."""
    check_positive_int(steps, "steps")
    if steps > schedule.num_steps:
        raise ValueError(f"steps: expected at most {schedule.num_steps}, got {steps}")
    return torch.linspace(schedule.num_steps - 1, 0, steps).round().long()


def ddim_sample(model: NoiseModel, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                return_trajectory: bool = False, clip_x0: float | None = None) -> torch.Tensor | Trajectory:
    """Deterministic DDIM (η = 0), the probability-flow ODE of DDPM discretised, in ``steps`` steps.

    ``clip_x0 = c`` clamps each x̂0 to [−c, c] (images live in [−1, 1]): at high noise x̂0 divides
    the network's error by √ᾱ_k ≈ 0.006, and clipping stops that error from running away (diffusers'
    ``clip_sample``).

    The trajectory's ``times`` are the model times t = (k + 1)/T of the visited steps, then 0;
    its ``velocities`` are the finite differences (x_next − x)/h so it plots like a flow's path.
    """
    check_tensor(x_T, "x_T", min_ndim=1)
    ks = ddim_timesteps(schedule, steps)
    ab_all = schedule.alpha_bars.to(x_T.device)
    x, states = x_T, [x_T]
    with torch.no_grad():
        for i, k in enumerate(ks):
            ab = ab_all[k]
            eps = model(x, schedule.model_time(k.expand(x.shape[0]).to(x.device)))
            x0_hat = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            if clip_x0 is not None:
                x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
                eps = (x - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
            ab_next = ab_all[ks[i + 1]] if i + 1 < len(ks) else torch.ones((), device=x.device)
            x = ab_next.sqrt() * x0_hat + (1 - ab_next).sqrt() * eps
            states.append(x)
    if not return_trajectory:
        return x
    times = torch.cat([schedule.model_time(ks), torch.zeros(1)]).to(x_T.device)
    stacked = torch.stack(states)
    h = (times[1:] - times[:-1]).reshape(-1, *([1] * x_T.ndim))
    return Trajectory(times=times, states=stacked, velocities=(stacked[1:] - stacked[:-1]) / h)
