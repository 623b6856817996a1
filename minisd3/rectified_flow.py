"""Rectified flow with SD3's time direction: t = 0 is data, t = 1 is noise.

    path        z_t = (1 − t)·x0 + t·ε,   ε ~ N(0, I)
    target      v = dz_t/dt = ε − x0
    loss        E_{t~π, x0, ε} ‖v̂(z_t, t) − (ε − x0)‖²
    sampling    integrate dz/dt = v̂ from t = 1 (noise) to t = 0 (data);
                Euler: z_{t−Δ} = z_t − Δ·v̂(z_t, t)
    straightness S = ∫₀¹ E‖(z_1 − z_0) − v̂(z_t, t)‖² dt along the simulated path (0 if straight)
    path length  ∫₀¹ ‖v̂(z_t, t)‖ dt ≈ Σ_i ‖v̂_i·Δt_i‖, never shorter than the straight ‖z_1 − z_0‖
    reflow      pairs (ε, x̂0 = sample(ε)); retrain on z_t = (1 − t)·x̂0 + t·ε

The rectified-flow paper (Liu et al. 2022) runs time the other way (t = 0 noise, t = 1 data)
and so has v = x1 − x0 with the opposite sign; never mix the two directions.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .ode import Trajectory, VelocityField, integrate, time_grid
from .seeding import randn
from .timesteps import TimeSampler, sample_uniform, shift_time
from .validation import as_batch_time, check_same_shape, check_tensor, check_time, expand_time


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """z_t = (1 − t)·x0 + t·ε, with t a float or a (B,) tensor in [0, 1]."""
    check_tensor(x0, "x0", min_ndim=1)
    check_tensor(eps, "eps")
    check_same_shape(x0, "x0", eps, "eps")
    t = expand_time(as_batch_time(t, x0.shape[0], x0.device, x0.dtype), x0)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = dz_t/dt = ε − x0 (points from data towards noise)."""
    check_tensor(x0, "x0", min_ndim=1)
    check_tensor(eps, "eps")
    check_same_shape(x0, "x0", eps, "eps")
    return eps - x0


def rf_loss(model: VelocityField, x0: torch.Tensor, eps: torch.Tensor | None = None,
            t: torch.Tensor | None = None, time_sampler: TimeSampler = sample_uniform,
            generator: torch.Generator | None = None, weight: Callable[[torch.Tensor], torch.Tensor] | None = None
            ) -> torch.Tensor:
    """Mean of w(t)·‖v̂(z_t, t) − (ε − x0)‖² over the batch (per element).

    ``t`` is drawn from ``time_sampler`` unless given; ``eps`` is drawn unless given (reflow passes
    its fixed pairs). ``weight`` (default 1) lets lesson 04 show that weighting by π(t) under
    uniform t equals sampling t from π.
    """
    check_tensor(x0, "x0", min_ndim=2)
    if eps is None:
        eps = randn(x0.shape, generator, x0.device, x0.dtype)
    if t is None:
        t = time_sampler(x0.shape[0], generator=generator, device=x0.device)
    check_time(t, "t", batch=x0.shape[0], device=x0.device)
    z_t = interpolate(x0, eps, t)
    per_sample = ((model(z_t, t) - velocity_target(x0, eps)) ** 2).flatten(1).mean(1)
    if weight is not None:
        per_sample = per_sample * weight(t)
    return per_sample.mean()


def sampling_times(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """The grid 1 → 0 in ``steps`` equal steps, then the resolution shift t′ = αt/(1 + (α − 1)t)."""
    grid = time_grid(steps, 1.0, 0.0, device)
    return grid if shift == 1.0 else shift_time(grid, shift)


def sample(model: VelocityField, noise: torch.Tensor, steps: int, method: str = "euler", shift: float = 1.0,
           return_trajectory: bool = False) -> torch.Tensor | Trajectory:
    """Integrate the learned flow from ``noise`` at t = 1 to data at t = 0 (Euler or Heun)."""
    check_tensor(noise, "noise", min_ndim=1)
    return integrate(model, noise, sampling_times(steps, shift, noise.device), method, return_trajectory)


def straightness(trajectory: Trajectory) -> float:
    """S = Σ_i |h_i| · mean_b ‖(z_1 − z_0) − v_i‖² along a simulated path from t = 1 to t = 0.

    z_1 is the start (noise), z_0 the end point; v_i the velocity used on step i. A straight path
    moves at the constant velocity z_1 − z_0 and scores 0.
    """
    if not isinstance(trajectory, Trajectory):
        raise ValueError(f"trajectory: expected a Trajectory, got {type(trajectory).__name__}")
    displacement = trajectory.start - trajectory.end  # z_1 − z_0 = the average velocity over [0, 1]
    h = (trajectory.times[:-1] - trajectory.times[1:]).abs()
    sq = ((displacement[None] - trajectory.velocities) ** 2).flatten(2).sum(2).mean(1)
    return float((h * sq).sum())


def path_length(trajectory: Trajectory) -> dict[str, float]:
    """How far a simulated path travels: ``{"length": mean_b Σ_i ‖h_i·v_i‖, "straight": mean_b ‖z_1 − z_0‖,
    "ratio": mean_b of their ratio}`` (norms over all elements of a sample; ratio ≥ 1, 1 for a straight path).

    The SD3 paper (Esser et al. 2024, Table 6) reports it per model size: larger models travel shorter paths and
    lose less quality when sampled with few steps.
    """
    if not isinstance(trajectory, Trajectory):
        raise ValueError(f"trajectory: expected a Trajectory, got {type(trajectory).__name__}")
    h = (trajectory.times[:-1] - trajectory.times[1:]).abs()
    steps = (h[:, None] * trajectory.velocities.flatten(2).norm(dim=2)).sum(0)  # (B,)
    straight = (trajectory.start - trajectory.end).flatten(1).norm(dim=1)
    return {"length": float(steps.mean()), "straight": float(straight.mean()),
            "ratio": float((steps / straight.clamp_min(1e-12)).mean())}


def reflow_pairs(model: VelocityField, noise: torch.Tensor, steps: int = 100,
                 method: str = "heun") -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate the trained flow from ``noise``: returns the coupled pairs (ε, x̂0) for reflow."""
    x0_hat = sample(model, noise, steps, method)
    return noise, x0_hat
