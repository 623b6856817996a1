"""Integrating an ODE dz/dt = v(z, t) along a time grid: Euler and Heun.

A flow model is sampled by integrating its velocity field from t = 1 (noise) to t = 0 (data).
With a decreasing grid t_0 = 1 > t_1 > … > t_N = 0 and h_i = t_{i+1} − t_i < 0:

    Euler:  z_{i+1} = z_i + h_i · v(z_i, t_i)                     (= z_i − Δ·v when h = −Δ)
    Heun:   z̃ = z_i + h_i · v(z_i, t_i)
            z_{i+1} = z_i + h_i · ½ (v(z_i, t_i) + v(z̃, t_{i+1}))

Euler's global error shrinks like h, Heun's like h² (at two evaluations a step).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .validation import check_positive_int, check_tensor

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v(z, t): z of shape (B, ...), t of shape (B,) → a tensor shaped like z."""


@dataclass
class Trajectory:
    """A simulated path: ``times`` (N+1,), ``states`` (N+1, B, ...) and the velocity actually used
    on each step, ``velocities`` (N, B, ...), so that states[i+1] = states[i] + h_i·velocities[i]."""

    times: torch.Tensor
    states: torch.Tensor
    velocities: torch.Tensor

    @property
    def start(self) -> torch.Tensor:
        return self.states[0]

    @property
    def end(self) -> torch.Tensor:
        return self.states[-1]


def time_grid(steps: int, t_start: float = 1.0, t_end: float = 0.0, device=None) -> torch.Tensor:
    """``steps + 1`` evenly spaced times from ``t_start`` to ``t_end`` (SD3 samples 1 → 0)."""
    check_positive_int(steps, "steps")
    return torch.linspace(t_start, t_end, steps + 1, device=device)


def integrate(
    velocity: VelocityField,
    z: torch.Tensor,
    times: torch.Tensor,
    method: str = "euler",
    return_trajectory: bool = False,
) -> torch.Tensor | Trajectory:
    """Integrate dz/dt = v(z, t) from ``times[0]`` to ``times[-1]`` starting at ``z``.

    ``method`` is ``"euler"`` or ``"heun"``. Returns the end point, or the whole
    :class:`Trajectory` when ``return_trajectory`` is true.
    """
    check_tensor(z, "z", min_ndim=1)
    check_tensor(times, "times", ndim=1)
    if times.numel() < 2:
        raise ValueError(f"times: expected at least 2 grid points, got {times.numel()}")
    if method not in ("euler", "heun"):
        raise ValueError(f"method: expected 'euler' or 'heun', got {method!r}")
    times = times.to(z.device)
    batch = z.shape[0]
    states, used = [z], []
    with torch.no_grad():
        for t_now, t_next in zip(times[:-1], times[1:]):
            h = t_next - t_now
            v = velocity(z, t_now.expand(batch))
            if method == "heun":
                v_next = velocity(z + h * v, t_next.expand(batch))
                v = 0.5 * (v + v_next)
            z = z + h * v
            if return_trajectory:
                states.append(z)
                used.append(v)
    if not return_trajectory:
        return z
    return Trajectory(times=times, states=torch.stack(states), velocities=torch.stack(used))


def euler(velocity: VelocityField, z: torch.Tensor, steps: int, t_start: float = 1.0, t_end: float = 0.0,
          return_trajectory: bool = False):
    """Euler with ``steps`` equal steps from ``t_start`` to ``t_end`` (see :func:`integrate`)."""
    return integrate(velocity, z, time_grid(steps, t_start, t_end), "euler", return_trajectory)


def heun(velocity: VelocityField, z: torch.Tensor, steps: int, t_start: float = 1.0, t_end: float = 0.0,
         return_trajectory: bool = False):
    """Heun (explicit trapezoid) with ``steps`` equal steps (see :func:`integrate`)."""
    return integrate(velocity, z, time_grid(steps, t_start, t_end), "heun", return_trajectory)
