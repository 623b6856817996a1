"""Lesson 01 (flows in 2-D): the checks of Heun's sampler (``heun``) and of the exact velocity
field of one Gaussian (``gaussian_velocity``), with the field's reference."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ... import ode
from ...marginal_field import marginal_velocity
from ...seeding import make_generator, randn
from ...toy2d import GaussianMixture
from .core import _NOT_FINAL, _call, _check, _check_sampler_times, _compare, _curved_field, _Recorder, _simulate


@_check("heun", "matches minisd3.ode.heun")
def check_heun(heun: Callable) -> None:
    """Check ``heun(velocity, z, steps)``: Heun's method from t = 1 to t = 0, the end point
    (a simpler form of :func:`minisd3.ode.heun`)."""
    gen = make_generator(101)
    for steps, shape in ((4, (32, 2)), (1, (32, 2)), (7, (16, 3))):
        z = randn(shape, gen)
        recorder = _Recorder(_curved_field, "velocity")
        got = _call(heun, "heun", recorder, z, steps)
        _check_sampler_times(recorder, steps, per_step=2)

        def variant(corrector_at_z=False, half=0.5, sign=1.0, predict_step=None, first_weight=1.0):
            def step(v, zz, t, t_next):
                h = sign * (t_next[0] - t[0])
                v1 = v(zz, t)
                v2 = v(zz if corrector_at_z else zz + (h if predict_step is None else predict_step) * v1, t_next)
                return zz + h * half * (first_weight * v1 + v2)
            return _simulate(_curved_field, z, steps, step)

        _compare(got, ode.heun(_curved_field, z, steps), [
            ("sign_flipped", "sign flipped: with h = t_next − t < 0, both the prediction and the update are z + h·v "
             "(this moves z towards the data as t goes 1 → 0)", variant(sign=-1.0)),
            ("missing_half", "forgot the ½: Heun averages the two velocities, z ← z + h·½(v(z, t) + v(z̃, t + h))",
             variant(half=1.0)),
            ("corrector_at_z", "the second velocity must be taken at the Euler-predicted point z̃ = z + h·v(z, t), not at z",
             variant(corrector_at_z=True)),
            ("corrector_only", "updated z with the second velocity only; Heun averages both, "
             "z ← z + h·½(v(z, t) + v(z̃, t + h))", variant(half=1.0, first_weight=0.0)),
            ("prediction_missing_step_size", "the Euler prediction needs the step size: z̃ = z + h·v(z, t), not z + v(z, t)",
             variant(predict_step=1.0)),
        ], formula="Heun's update z + h·½(v(z, t) + v(z̃, t + h))", shape_hint=_NOT_FINAL)


def _gaussian_velocity_reference(z: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """The exact field for data N(μ, σ²I): the package's mixture field with one component."""
    mixture = GaussianMixture(means=mean.reshape(1, -1), std=std, weights=torch.ones(1))
    return marginal_velocity(z, t, mixture)


@_check("gaussian_velocity", "matches minisd3.marginal_field.marginal_velocity for one Gaussian")
def check_gaussian_velocity(gaussian_velocity: Callable) -> None:
    """Check ``gaussian_velocity(z, t, mean, std)``: the exact field v(z, t) = E[ε − x0 | z_t = z] for
    x0 ~ N(μ, σ²I), z of shape (B, D), t of shape (B,), mean of shape (D,), std a float."""
    gen = make_generator(102)
    for mean, std in ((torch.tensor([2.0, -1.0]), 0.5), (torch.tensor([-1.0, 0.5, 3.0]), 1.5)):
        batch = 40
        z = 2 * randn((batch, mean.shape[0]), gen)
        t = torch.linspace(0.02, 0.98, batch)[torch.randperm(batch, generator=gen)]
        got = _call(gaussian_velocity, "gaussian_velocity", z, t, mean, std,
                    hint="t has shape (B,): write t[:, None] to broadcast it against z of shape (B, D)")
        tt = t[:, None]

        def field(numerator, var, centre, shift_by_mean=True):
            return numerator / var * (z - centre) - (mean if shift_by_mean else 0)

        var = (1 - tt) ** 2 * std**2 + tt**2
        numerator = tt - (1 - tt) * std**2
        centre = (1 - tt) * mean
        want = _gaussian_velocity_reference(z, t, mean, std)
        _compare(got, want, [
            ("sign_flipped", "sign flipped: v = E[ε − x0 | z_t] points from the data (t = 0) towards the noise (t = 1)", -want),
            ("time_reversed", "t and 1 − t swapped (time running backwards): in this course z_t = (1 − t)·x0 + t·ε, "
             "so t = 0 is data",
             _gaussian_velocity_reference(z, 1 - t, mean, std)),
            ("missing_minus_mean", "missing the − μ term: v = (t − (1 − t)σ²)/s² · (z − (1 − t)μ) − μ",
             field(numerator, var, centre, False)),
            ("mean_not_scaled", "the mean of z_t is (1 − t)·μ, not μ: write z − (1 − t)·μ", field(numerator, var, mean)),
            ("variance_not_squared", "the variance is s² = (1 − t)²σ² + t²: the weights (1 − t) and t enter squared",
             field(numerator, (1 - tt) * std**2 + tt, centre)),
            ("coefficient_sign_flipped", "the coefficient is (t − (1 − t)σ²)/s²: E[ε | z] contributes + t/s², "
             "E[x0 | z] contributes − (1 − t)σ²/s²",
             field(tt + (1 - tt) * std**2, var, centre)),
            ("std_for_variance", "used σ where σ² belongs: the data variance is σ² = std²",
             field(tt - (1 - tt) * std, (1 - tt) ** 2 * std + tt**2, centre)),
        ], formula="(t − (1 − t)σ²)/s² · (z − (1 − t)μ) − μ")
