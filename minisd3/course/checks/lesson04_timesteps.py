"""Lesson 04 (timestep sampling): the checks of logit-normal time sampling (``sample_logit_normal``)
and the resolution-dependent time shift (``shift_time``)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import timesteps
from ...seeding import make_generator
from .core import Mistake, _call, _check, _compare, _require_generator


def _same_draws(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


@_check("sample_logit_normal",
        "logit(t) is N(m, s²), t has shape (n,), the same seed gives the same t and another seed other t")
def check_sample_logit_normal(sample_logit_normal: Callable) -> None:
    """Check ``sample_logit_normal(n, m=0.0, s=1.0, generator=None, device=None)`` → t = sigmoid(m + s·n),
    n ~ N(0, 1): shape, range, the mean, spread and normality of logit(t), and the generator (the same seed
    gives the same draws, another seed other draws)."""
    n = 100_000
    probes = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    normal_quantiles = math.sqrt(2) * torch.erfinv(2 * probes - 1)
    for m, s in ((0.5, 2.0), (-1.0, 0.5)):
        t = _call(sample_logit_normal, "sample_logit_normal", n, m=m, s=s, generator=make_generator(401))
        if not isinstance(t, torch.Tensor):
            raise Mistake(f"should return a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != (n,):
            raise Mistake(f"wrong shape: expected ({n},) for n = {n}, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise Mistake(f"expected floating-point times, got dtype {t.dtype}")
        t = t.detach().double()
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            if torch.isfinite(t).all() and (t - m).min() >= 0 and (t - m).max() <= 1:
                raise Mistake("added m outside the sigmoid: m shifts the normal before the squashing, "
                              "t = sigmoid(m + s·n)", "location_outside_sigmoid")
            raise Mistake(f"values outside [0, 1] (from {t.min():.3g} to {t.max():.3g}): t = sigmoid(m + s·n) — "
                          "did you forget the sigmoid?", "missing_sigmoid")
        logit = torch.logit(t.clamp(1e-12, 1 - 1e-12))
        mean, std = logit.mean().item(), logit.std().item()
        if not math.isclose(mean, m, abs_tol=0.05):
            if math.isclose(mean, -m, abs_tol=0.05):
                raise Mistake("m has the wrong sign (or you returned 1 − t): t = sigmoid(m + s·n), "
                              "so m > 0 pushes t towards 1, the noise end", "location_sign_flipped")
            if math.isclose(mean, m * s, abs_tol=0.05):
                raise Mistake("the location is m, not m·s: t = sigmoid(m + s·n), scale only n", "location_scaled")
            if math.isclose(mean, m + s / 2, abs_tol=0.05) and math.isclose(std, s / math.sqrt(12), rel_tol=0.05):
                raise Mistake("n is uniform on [0, 1): draw n from N(0, 1) with torch.randn(n, generator=generator), "
                              "not torch.rand", "not_normal")
            raise Mistake(f"logit(t) should have mean m = {m}, yours has mean {mean:.3f}")
        if not math.isclose(std, s, rel_tol=0.05):
            if math.isclose(std, s**2, rel_tol=0.05):
                raise Mistake("s is a standard deviation: multiply n by s, not by s²", "scale_squared")
            if math.isclose(std, math.sqrt(s), rel_tol=0.05):
                raise Mistake("s is a standard deviation: multiply n by s, not by √s", "scale_sqrt")
            raise Mistake(f"logit(t) should have standard deviation s = {s}, yours has {std:.3f}")
        quantiles = torch.quantile(logit, probes)
        if not torch.allclose(quantiles, m + s * normal_quantiles, atol=0.05 * s):
            raise Mistake("logit(t) has the right mean and spread but is not normal: draw n from N(0, 1) "
                          "(torch.randn), not from U(0, 1)", "not_normal")
    first = _call(sample_logit_normal, "sample_logit_normal", 64, generator=make_generator(402))
    second = _call(sample_logit_normal, "sample_logit_normal", 64, generator=make_generator(402))
    other = _call(sample_logit_normal, "sample_logit_normal", 64, generator=make_generator(404))
    _require_generator(_same_draws(first, second), not _same_draws(first, other), "times t",
                       "torch.randn(n, generator=generator)")
    default = _call(sample_logit_normal, "sample_logit_normal", 20_000, generator=make_generator(403))
    logit = torch.logit(default.double().clamp(1e-12, 1 - 1e-12))
    if abs(logit.mean().item()) > 0.05 or abs(logit.std().item() - 1) > 0.05:
        raise Mistake("the defaults should be SD3's choice m = 0, s = 1", "wrong_defaults")


@_check("shift_time", "matches minisd3.timesteps.shift_time")
def check_shift_time(shift_time: Callable) -> None:
    """Check ``shift_time(t, alpha)`` → t′ = α·t / (1 + (α − 1)·t) for α = 3, 0.5 and 1."""
    t = torch.linspace(0.0, 1.0, 101)
    for alpha in (3.0, 0.5, 1.0):
        got = _call(shift_time, "shift_time", t, alpha)
        _compare(got, timesteps.shift_time(t, alpha), [
            ("shift_reversed", "the shift goes the wrong way: α > 1 must move t towards 1 (more noise), "
             "t′ = α·t/(1 + (α − 1)·t); yours is the shift for the opposite time direction (t = 0 noise)",
             timesteps.shift_time(t, 1 / alpha)),
            ("shift_twice",
             "applied the shift twice; apply it once", timesteps.shift_time(timesteps.shift_time(t, alpha), alpha)),
            ("missing_denominator", "missing the denominator 1 + (α − 1)·t: without it t′ leaves [0, 1]", alpha * t),
            ("wrong_denominator",
             "the denominator is 1 + (α − 1)·t, not 1 + α·t (t = 1 must stay at 1)", alpha * t / (1 + alpha * t)),
            ("denominator_sign", "the denominator is 1 + (α − 1)·t, not 1 − (α − 1)·t (with a minus it reaches 0 inside "
             "[0, 1] for α > 1, and t = 1 no longer stays at 1)", alpha * t / (1 - (alpha - 1) * t)),
            ("missing_alpha_numerator", "missing α in the numerator: t′ = α·t / (1 + (α − 1)·t)",
             t / (1 + (alpha - 1) * t)),
            ("sqrt_alpha", "used √α; α itself is the shift (α = √(m/n) is already a square root of the pixel ratio)",
             timesteps.shift_time(t, math.sqrt(alpha))),
        ], formula="α·t / (1 + (α − 1)·t)")
