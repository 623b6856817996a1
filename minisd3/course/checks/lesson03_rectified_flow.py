"""Lesson 03 (rectified flow): the checks of the straight path (``interpolate``), its velocity
(``velocity_target``), the Euler sampler (``euler_sample``) and the straightness score (``straightness``)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ... import ode, rectified_flow
from ...seeding import make_generator, randn
from ...validation import expand_time
from .core import (
    _NOT_FINAL,
    Mistake,
    _as_number,
    _call,
    _check,
    _check_sampler_times,
    _compare,
    _curved_field,
    _near,
    _Recorder,
    _simulate,
)

_TIME_HINT = ("t may be a Python float or a (B,) tensor: turn a float into a tensor (torch.as_tensor(t)) and "
              "reshape a (B,) tensor to (B, 1, …) so it broadcasts against x0")


@_check("interpolate", "matches minisd3.rectified_flow.interpolate")
def check_interpolate(interpolate: Callable) -> None:
    """Check ``interpolate(x0, eps, t)`` → z_t = (1 − t)·x0 + t·ε, with t a float or a (B,) tensor."""
    gen = make_generator(301)
    for shape, as_float in (((16, 2), False), ((6, 1, 8, 8), False), ((16, 2), True)):
        x0, eps = randn(shape, gen), randn(shape, gen)
        t_batch = torch.rand(shape[0], generator=gen)
        t = 0.3 if as_float else t_batch
        got = _call(interpolate, "interpolate", x0, eps, t, hint=_TIME_HINT)
        tt = torch.tensor(0.3) if as_float else expand_time(t_batch, x0)
        _compare(got, rectified_flow.interpolate(x0, eps, t), [
            ("time_reversed", "t and 1 − t swapped (time running backwards): z_0 must be the data x0 and z_1 the noise ε",
             tt * x0 + (1 - tt) * eps),
            ("variance_preserving", "square roots: √(1 − t)·x0 + √t·ε is a variance-preserving (DDPM-like) path; "
             "the rectified-flow path is the straight line (1 − t)·x0 + t·ε",
             (1 - tt).sqrt() * x0 + tt.sqrt() * eps),
            ("data_not_faded", "the data term must fade out as t grows: (1 − t)·x0, not x0", x0 + tt * eps),
            ("noise_sign_flipped", "the noise term has the wrong sign: + t·ε", (1 - tt) * x0 - tt * eps),
            ("noise_not_scaled", "the noise must fade in as t grows: t·ε, not ε", (1 - tt) * x0 + eps),
        ], formula="(1 − t)·x0 + t·ε", shape_hint=_TIME_HINT)


@_check("velocity_target", "matches minisd3.rectified_flow.velocity_target")
def check_velocity_target(velocity_target: Callable) -> None:
    """Check ``velocity_target(x0, eps)`` → v = dz_t/dt = ε − x0."""
    gen = make_generator(302)
    for shape in ((16, 2), (4, 1, 8, 8)):
        x0, eps = randn(shape, gen), randn(shape, gen)
        got = _call(velocity_target, "velocity_target", x0, eps)
        _compare(got, rectified_flow.velocity_target(x0, eps), [
            ("sign_flipped", "sign flipped: v = dz_t/dt = ε − x0 points from the data (t = 0) to the noise (t = 1); "
             "the rectified-flow paper runs time the other way and writes x1 − x0 = data − noise, "
             "which is −v here", x0 - eps),
            ("missing_x0", "forgot to subtract x0: v = ε − x0", eps),
            ("missing_noise", "forgot the noise: v = ε − x0", -x0),
            ("sum_not_difference", "v is a difference, ε − x0, not a sum", eps + x0),
        ], formula="ε − x0")


@_check("euler_sample", "matches minisd3.rectified_flow.sample (Euler)")
def check_euler_sample(euler_sample: Callable) -> None:
    """Check ``euler_sample(model, noise, steps)``: Euler from t = 1 to t = 0, z ← z − Δ·v̂(z, t) with
    Δ = 1/steps; returns the final samples (a simpler form of :func:`minisd3.rectified_flow.sample`)."""
    gen = make_generator(303)
    for steps, shape in ((3, (32, 2)), (1, (32, 2)), (8, (8, 1, 4, 4))):
        noise = randn(shape, gen)
        recorder = _Recorder(_curved_field, "model")
        got = _call(euler_sample, "euler_sample", recorder, noise, steps)
        _check_sampler_times(recorder, steps, per_step=1)

        def variant(scale):
            return _simulate(_curved_field, noise, steps, lambda v, z, t, t_next: z + scale(t_next[0] - t[0]) * v(z, t))

        _compare(got, rectified_flow.sample(_curved_field, noise, steps), [
            ("sign_flipped", "sign flipped: going from t to t − Δ means z ← z − Δ·v̂(z, t)", variant(lambda h: -h)),
            ("missing_step_size",
             f"forgot the step size: z ← z − Δ·v̂ with Δ = 1/steps (here 1/{steps})", variant(lambda h: -1.0)),
        ], formula="Euler's z − Δ·v̂(z, t) from t = 1 down to 0", shape_hint=_NOT_FINAL)


@_check("straightness", "matches minisd3.rectified_flow.straightness")
def check_straightness(straightness: Callable) -> None:
    """Check ``straightness(trajectory)`` → S = Σ_i |h_i| · mean_b ‖(z_1 − z_0) − v_i‖², on an uneven
    time grid, a straight path (S = 0) and image-shaped samples."""
    gen = make_generator(304)
    drift = randn((16, 2), gen)
    cases = [
        ("an uneven time grid", rectified_flow.sample(_curved_field, randn((32, 2), gen), 8, shift=3.0,
                                                      return_trajectory=True)),
        ("a straight path", rectified_flow.sample(lambda z, t: drift, randn((16, 2), gen), 5, return_trajectory=True)),
        ("image-shaped samples (B, 1, 4, 4)", ode.heun(_curved_field, randn((8, 1, 4, 4), gen), 6,
                                                       return_trajectory=True)),
    ]
    for what, trajectory in cases:
        value = _as_number(_call(straightness, "straightness", trajectory), "straightness")
        want = rectified_flow.straightness(trajectory)
        if _near(value, want):
            continue
        h = trajectory.times[1:] - trajectory.times[:-1]  # negative: time runs 1 → 0
        start, end, velocities = trajectory.start, trajectory.end, trajectory.velocities

        def score(displacement=None, weights=h.abs(), reduce=lambda d: (d**2).flatten(2).sum(2).mean(1)):
            d = (start - end if displacement is None else displacement)[None] - velocities
            return float((weights * reduce(d)).sum())

        wrong = [
            ("negative_weights",
             "negative: weight by |h_i|; h_i = t_{i+1} − t_i is negative when time runs 1 → 0", score(weights=h)),
            ("missing_step_size",
             "missing the step size: S is an integral over t, so weight each step by |h_i| = |t_{i+1} − t_i|",
             score(weights=torch.ones_like(h))),
            ("mean_over_steps", "averaged over steps: on an uneven time grid weight each step by its length |h_i|",
             score(weights=torch.full_like(h, 1 / h.numel()))),
            ("displacement_reversed", "the straight-line velocity is z_1 − z_0 = start − end (noise minus data), which v̂ equals "
             "along a straight path; you used end − start", score(displacement=end - start)),
            ("mean_over_coordinates", "averaged ‖·‖² over coordinates; the squared norm sums the squares over every coordinate",
             score(reduce=lambda d: (d**2).flatten(2).mean(2).mean(1))),
            ("missing_square", "missing the square: S averages ‖·‖², not ‖·‖",
             score(reduce=lambda d: d.flatten(2).norm(dim=2).mean(1))),
            ("sum_over_batch", "summed over the batch; take the mean over samples",
             score(reduce=lambda d: (d**2).flatten(2).sum(2).sum(1))),
            ("last_axis_only", "for samples with more than one axis (images) the squared norm sums over all of them: "
             "use .flatten(2).sum(2), not .sum(-1)", score(reduce=lambda d: (d**2).sum(-1).flatten(1).mean(1))),
        ]
        for mistake, message, number in wrong:
            if _near(value, number):
                raise Mistake(message, mistake)
        raise Mistake(f"on {what} your S = {value:.5g}, expected {want:.5g}; S = Σ_i |h_i| · mean over samples of "
                      "‖(z_1 − z_0) − v_i‖²")
