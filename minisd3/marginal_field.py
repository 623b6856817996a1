"""The exact marginal velocity field from N(0, I) to a Gaussian mixture under the straight path.

With x0 ~ Σ_k π_k N(μ_k, σ² I), ε ~ N(0, I) and z_t = (1 − t)·x0 + t·ε, component k gives
z_t | k ~ N(m_k, s² I) with m_k = (1 − t)·μ_k and s² = (1 − t)²σ² + t². Gaussian conditioning:

    E[ε  | z_t, k] = t / s² · (z − m_k)
    E[x0 | z_t, k] = μ_k + (1 − t)σ² / s² · (z − m_k)
    v_k(z, t)      = E[ε − x0 | z_t, k] = (t − (1 − t)σ²) / s² · (z − m_k) − μ_k

and the marginal field is the posterior-weighted average

    v(z, t) = Σ_k w_k(z, t) · v_k(z, t),   w_k ∝ π_k · N(z; m_k, s² I).

This is what a perfectly trained rectified flow learns: the minimiser of E‖v̂(z_t, t) − (ε − x0)‖².
Its trajectories are curved even though each training pair moves on a straight line.
"""
from __future__ import annotations

import math

import torch

from .toy2d import GaussianMixture
from .validation import as_batch_time, check_tensor


def _component_stats(z: torch.Tensor, t: torch.Tensor, mixture: GaussianMixture):
    means = mixture.means.to(z.device, z.dtype)  # (K, D)
    tt = t.to(z.dtype)[:, None]  # (B, 1)
    var = (1 - tt) ** 2 * mixture.std**2 + tt**2  # (B, 1)
    centres = (1 - tt)[:, :, None] * means[None]  # (B, K, D)
    diff = z[:, None, :] - centres  # (B, K, D)
    dim = z.shape[1]
    log_norm = -0.5 * (diff**2).sum(-1) / var - 0.5 * dim * torch.log(2 * math.pi * var)  # (B, K)
    log_joint = log_norm + torch.log(mixture.weights.to(z.device, z.dtype))[None]
    return means, tt, var, diff, log_joint


def marginal_log_density(z: torch.Tensor, t, mixture: GaussianMixture) -> torch.Tensor:
    """log p_t(z) = log Σ_k π_k N(z; (1 − t)μ_k, ((1 − t)²σ² + t²) I), shape (B,)."""
    check_tensor(z, "z", ndim=2, shape=(None, mixture.means.shape[1]))
    t = as_batch_time(t, z.shape[0], z.device, z.dtype)
    return torch.logsumexp(_component_stats(z, t, mixture)[-1], dim=1)


def marginal_velocity(z: torch.Tensor, t, mixture: GaussianMixture) -> torch.Tensor:
    """The exact field v(z, t) = E[ε − x0 | z_t = z] (module docstring), shape like z (B, D)."""
    check_tensor(z, "z", ndim=2, shape=(None, mixture.means.shape[1]))
    t = as_batch_time(t, z.shape[0], z.device, z.dtype)
    means, tt, var, diff, log_joint = _component_stats(z, t, mixture)
    weights = torch.softmax(log_joint, dim=1)  # (B, K)
    coef = (tt - (1 - tt) * mixture.std**2) / var  # (B, 1)
    v_k = coef[:, :, None] * diff - means[None]  # (B, K, D)
    return (weights[:, :, None] * v_k).sum(1)


def marginal_velocity_field(mixture: GaussianMixture):
    """The field as a callable v(z, t) for :mod:`minisd3.ode`."""
    return lambda z, t: marginal_velocity(z, t, mixture)
