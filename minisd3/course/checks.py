"""Checks for the practice notebooks: each compares a learner's function with the package's
reference on seeded inputs and, when they differ, names the mistake.

A check prints one machine-readable line and returns a :class:`CheckResult`::

    [check] q_sample: PASS
    [check] q_sample: FAIL — missing square roots: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε …

To name a mistake, a check computes the usual wrong variants on the same inputs (sign flipped,
t and 1 − t swapped, a square root dropped, …) and reports the one the learner's output matches.
Models and velocity fields handed to the learner's function are known functions that record how
they were called, so a check can also say "time runs backwards" or "the model got k, not t".
``NotImplementedError`` from an unfinished stub is not caught: the notebook shows where to start.

:data:`LESSON_CHECKS` lists the checks each practice notebook must pass; the grader reads it.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .. import attention, blocks, ddpm, embeddings, guidance, ode, patches, rectified_flow, timesteps
from ..marginal_field import marginal_velocity
from ..seeding import make_generator, randn
from ..toy2d import GaussianMixture
from ..validation import expand_time


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``passed`` and a ``message`` in a learner's words."""

    name: str
    passed: bool
    message: str

    @property
    def line(self) -> str:
        """The printed first line: ``[check] NAME: PASS`` or ``[check] NAME: FAIL — message``."""
        return f"[check] {self.name}: PASS" if self.passed else f"[check] {self.name}: FAIL — {self.message}"


class Mistake(Exception):
    """Raised inside a check at the first problem found; its text is the learner's message."""


CHECKS: dict[str, Callable[[Callable], CheckResult]] = {}
"""Every check by the name of the function it checks (the name printed in its line)."""

LESSON_CHECKS: dict[str, tuple[str, ...]] = {
    "01_flows_2d": ("heun", "gaussian_velocity"),
    "02_ddpm": ("q_sample", "eps_loss", "ancestral_step"),
    "03_rectified_flow": ("interpolate", "velocity_target", "euler_sample", "straightness"),
    "04_timestep_sampling": ("sample_logit_normal", "shift_time"),
    "05_sinusoidal_embeddings": ("timestep_embedding", "sincos_2d_positions"),
    "06_patchify_dit": ("patchify", "unpatchify", "modulate", "cfg_combine"),
    "07_mmdit_qknorm": ("joint_attention", "rms_norm"),
}
"""The checks each lesson's practice notebook must pass, in notebook order."""


def _check(name: str, passed_message: str):
    """Register a check body under ``name``: it raises :class:`Mistake`, the wrapper prints and returns."""

    def register(body: Callable[[Callable], None]) -> Callable[[Callable], CheckResult]:
        @functools.wraps(body)
        def check(fn: Callable) -> CheckResult:
            try:
                if not callable(fn):
                    raise Mistake(f"expected your function {name}, got {type(fn).__name__} {fn!r}")
                body(fn)
                result = CheckResult(name, True, passed_message)
            except Mistake as mistake:
                result = CheckResult(name, False, str(mistake))
            print(result.line)
            return result

        CHECKS[name] = check
        return check

    return register


# ---------------------------------------------------------------------------------------------
# shared machinery
# ---------------------------------------------------------------------------------------------

def error_summary(err: BaseException) -> str:
    """The first line of an exception's message (messages stay one line long)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _call(fn: Callable, name: str, *args, hint: str = "", **kwargs):
    """Call the learner's ``fn``; its errors become a :class:`Mistake`, except NotImplementedError.

    Also fails when ``fn`` changed one of its tensor arguments in place.
    """
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    originals = [a.detach().clone() for a in tensors]
    try:
        out = fn(*args, **kwargs)
    except (NotImplementedError, Mistake):
        raise
    except Exception as err:  # a learner's code can raise anything; say what and where to look
        message = f"calling {name} raised {type(err).__name__}: {error_summary(err)}"
        raise Mistake(message + (f" — {hint}" if hint else "")) from err
    for original, tensor in zip(originals, tensors):
        if tensor.shape != original.shape or not torch.equal(tensor.detach(), original):
            raise Mistake(f"{name} changed one of its input tensors in place; compute a new tensor instead "
                          "(write z = z + h * v, not z += h * v)")
    return out


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=atol)


def _compare(got, want: torch.Tensor, mutations: Sequence[tuple[str, torch.Tensor]], *, formula: str,
             shape_hint: str = "", atol: float = 1e-5) -> None:
    """Pass when ``got`` equals ``want``; otherwise name the first mutation it equals, or say how far off it is.

    ``atol`` is the absolute tolerance (loosen it where float32 rounding of large arguments shows).
    """
    if not isinstance(got, torch.Tensor):
        raise Mistake(f"should return a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise Mistake(f"wrong shape: expected {tuple(want.shape)}, got {tuple(got.shape)}"
                      + (f" — {shape_hint}" if shape_hint else ""))
    if not got.is_floating_point():
        raise Mistake(f"expected floating-point values, got dtype {got.dtype}")
    got = got.detach().cpu().double()
    if not torch.isfinite(got).all():
        raise Mistake("the result contains NaN or inf; look for a division by zero or a log of 0")
    if _close(got, want, atol):
        return
    for message, wrong in mutations:
        if wrong.shape == got.shape and _close(got, wrong, atol):
            raise Mistake(message)
    worst = (got - want.double()).abs().max().item()
    raise Mistake(f"values differ from {formula} by up to {worst:.3g}, and not in one of the usual ways; "
                  "compare your code with the formula term by term")


def _as_number(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Mistake(f"{name} should return one number, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Mistake(f"{name} should return one number, got {type(value).__name__}") from None


def _near(a: float, b: float, rel: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


class _Recorder:
    """A known function f(z, t) standing in for a model or velocity field; it records every call
    and insists on t being a (B,) tensor, one time per sample, as every model in the course does."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], what: str,
                 allow_integer_t: bool = False):
        self.fn, self.what, self.allow_integer_t = fn, what, allow_integer_t
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        batch = z.shape[0]
        if not isinstance(t, torch.Tensor):
            raise Mistake(f"the {self.what} got t = {t!r} ({type(t).__name__}); give it a tensor of shape "
                          f"({batch},), one time per sample, e.g. torch.full(({batch},), t)")
        if tuple(t.shape) != (batch,):
            raise Mistake(f"the {self.what} got t of shape {tuple(t.shape)}; give it shape ({batch},), "
                          f"one time per sample, e.g. t.expand({batch}) or torch.full(({batch},), t)")
        if not (t.is_floating_point() or self.allow_integer_t):
            raise Mistake(f"the {self.what} got integer times (dtype {t.dtype}); t is a float in [0, 1]")
        self.calls.append((z.detach().clone(), t.detach().clone()))
        return self.fn(z, t.to(z.dtype))

    @property
    def times(self) -> list[float]:
        """The (first-sample) time of each call, in call order."""
        return [float(t[0]) for _, t in self.calls]


def _curved_field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth nonlinear test field that depends on both z and t (so every time error shows)."""
    tt = expand_time(t, z)
    return torch.sin(z) * (1 + tt) - 0.5 * z + tt


def _check_sampler_times(recorder: _Recorder, steps: int, per_step: int) -> None:
    """Diagnose the order of the times a 1 → 0 sampler evaluated the field at."""
    times = recorder.times
    method = "Heun" if per_step == 2 else "Euler"
    if len(times) != per_step * steps:
        if per_step == 2 and len(times) == steps:
            raise Mistake("only one velocity evaluation per step — that is Euler; Heun also evaluates v at "
                          "the Euler-predicted point z̃ = z + h·v(z, t) at t + h and averages the two")
        raise Mistake(f"called the velocity {len(times)} times for steps = {steps}; {method} needs "
                      f"{per_step} evaluation{'s' if per_step > 1 else ''} per step ({per_step * steps})")
    if times and (times[0] < 0.5 or times[-1] > times[0]):
        raise Mistake("time running backwards: sampling starts at t = 1 (noise) and steps down to t = 0 (data)")
    grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
    expected = [t for i in range(steps) for t in (grid[i], grid[i + 1])[:per_step]]
    if all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times, expected)):
        return
    if per_step == 1 and all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times, grid[1:])):
        raise Mistake("evaluated the velocity at the end of each step (t − Δ); Euler uses the velocity at "
                      "the start of the step, v̂(z_t, t)")
    if per_step == 2 and all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times[1::2], grid[:-1])):
        raise Mistake("the second velocity is taken at the start time t; evaluate it at the end of the step, "
                      "t_next = t + h, where the predicted point z̃ lives")
    raise Mistake(f"the velocity was evaluated at t = {[round(t, 4) for t in times[:6]]}…; expected "
                  f"{[round(t, 4) for t in expected[:6]]}… (equal steps from 1 down to 0)")


def _simulate(velocity, z: torch.Tensor, steps: int, step) -> torch.Tensor:
    """Run ``step(velocity, z, t, t_next)`` over the equal grid 1 → 0 (for computing wrong variants)."""
    grid = torch.linspace(1.0, 0.0, steps + 1)
    for t, t_next in zip(grid[:-1], grid[1:]):
        z = step(velocity, z, t.expand(z.shape[0]), t_next.expand(z.shape[0]))
    return z


_NOT_FINAL = "return only the final samples z_0 (shape like the noise), not the whole path"


# ---------------------------------------------------------------------------------------------
# lesson 01: flows in 2-D
# ---------------------------------------------------------------------------------------------

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

        def variant(corrector_at_z=False, half=0.5, sign=1.0):
            def step(v, zz, t, t_next):
                h = sign * (t_next[0] - t[0])
                v1 = v(zz, t)
                v2 = v(zz if corrector_at_z else zz + h * v1, t_next)
                return zz + h * half * (v1 + v2)
            return _simulate(_curved_field, z, steps, step)

        _compare(got, ode.heun(_curved_field, z, steps), [
            ("sign flipped: with h = t_next − t < 0, both the prediction and the update are z + h·v "
             "(this moves z towards the data as t goes 1 → 0)", variant(sign=-1.0)),
            ("forgot the ½: Heun averages the two velocities, z ← z + h·½(v(z, t) + v(z̃, t + h))",
             variant(half=1.0)),
            ("the second velocity must be taken at the Euler-predicted point z̃ = z + h·v(z, t), not at z",
             variant(corrector_at_z=True)),
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
            ("sign flipped: v = E[ε − x0 | z_t] points from the data (t = 0) towards the noise (t = 1)", -want),
            ("t and 1 − t swapped (time running backwards): in this course z_t = (1 − t)·x0 + t·ε, "
             "so t = 0 is data",
             _gaussian_velocity_reference(z, 1 - t, mean, std)),
            ("missing the − μ term: v = (t − (1 − t)σ²)/s² · (z − (1 − t)μ) − μ",
             field(numerator, var, centre, False)),
            ("the mean of z_t is (1 − t)·μ, not μ: write z − (1 − t)·μ", field(numerator, var, mean)),
            ("the variance is s² = (1 − t)²σ² + t²: the weights (1 − t) and t enter squared",
             field(numerator, (1 - tt) * std**2 + tt, centre)),
            ("the coefficient is (t − (1 − t)σ²)/s²: E[ε | z] contributes + t/s², "
             "E[x0 | z] contributes − (1 − t)σ²/s²",
             field(tt + (1 - tt) * std**2, var, centre)),
            ("used σ where σ² belongs: the data variance is σ² = std²",
             field(tt - (1 - tt) * std, (1 - tt) ** 2 * std + tt**2, centre)),
        ], formula="(t − (1 − t)σ²)/s² · (z − (1 − t)μ) − μ")


# ---------------------------------------------------------------------------------------------
# lesson 02: DDPM
# ---------------------------------------------------------------------------------------------

_BROADCAST_HINT = ("ᾱ_k has shape (B,): reshape it to (B, 1, …) to broadcast against x0 "
                   "(e.g. .view(-1, *[1] * (x0.ndim - 1)))")


@_check("q_sample", "matches minisd3.ddpm.q_sample")
def check_q_sample(q_sample: Callable) -> None:
    """Check ``q_sample(x0, k, eps, schedule)`` → x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε against
    :func:`minisd3.ddpm.q_sample` (points and 8×8 images, linear and cosine schedules)."""
    gen = make_generator(201)
    for kind, shape in (("linear", (16, 2)), ("cosine", (6, 1, 8, 8))):
        schedule = ddpm.make_schedule(kind)
        x0, eps = randn(shape, gen), randn(shape, gen)
        k = torch.randint(0, schedule.num_steps, (shape[0],), generator=gen)
        k[0], k[1] = 0, schedule.num_steps - 1
        got = _call(q_sample, "q_sample", x0, k, eps, schedule, hint=_BROADCAST_HINT)

        def at(values):
            return expand_time(values[k], x0)

        ab, a, b = at(schedule.alpha_bars), at(schedule.alphas), at(schedule.betas)
        ab_next = at(torch.cat([schedule.alpha_bars[1:], schedule.alpha_bars[-1:]]))
        _compare(got, ddpm.q_sample(x0, k, eps, schedule), [
            ("missing square roots: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε; "
             "you used ᾱ_k and 1 − ᾱ_k without the √",
             ab * x0 + (1 - ab) * eps),
            ("missing the square root on the noise scale: multiply ε by √(1 − ᾱ_k), its standard deviation",
             ab.sqrt() * x0 + (1 - ab) * eps),
            ("missing the square root on the signal scale: multiply x0 by √ᾱ_k", ab * x0 + (1 - ab).sqrt() * eps),
            ("x0 and ε swapped (time running backwards): ᾱ_k is near 1 at k = 0, "
             "so x_0 must be almost the clean data",
             (1 - ab).sqrt() * x0 + ab.sqrt() * eps),
            ("used α_k = 1 − β_k of one step; q(x_k | x0) needs the cumulative product "
             "ᾱ_k = α_0·α_1·…·α_k "
             "(schedule.alpha_bars)", a.sqrt() * x0 + (1 - a).sqrt() * eps),
            ("used β_k where ᾱ_k belongs (schedule.alpha_bars)", b.sqrt() * x0 + (1 - b).sqrt() * eps),
            ("the noise term has the wrong sign: add √(1 − ᾱ_k)·ε", ab.sqrt() * x0 - (1 - ab).sqrt() * eps),
            ("index off by one: use ᾱ at index k (schedule.alpha_bars[k])",
             ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps),
        ], formula="√ᾱ_k·x0 + √(1 − ᾱ_k)·ε", shape_hint=_BROADCAST_HINT)


@_check("eps_loss", "the loss is the mean of (ε̂(x_k, t_k) − ε)² over a uniform k with x_k from q(x_k | x0)")
def check_eps_loss(eps_loss: Callable) -> None:
    """Check ``eps_loss(model, x0, schedule, generator=None)`` like :func:`minisd3.ddpm.eps_loss`.

    The learner draws k and ε, so the check hands in a recording model and reads back what it was
    given: t must be (k + 1)/T for integer k spread over 0 … T − 1, the input must be
    √ᾱ_k·x0 + √(1 − ᾱ_k)·ε with ε standard normal, and the loss the mean of (ε̂ − ε)² for that ε.
    """
    schedule = ddpm.linear_schedule()
    steps = schedule.num_steps
    x0 = 2 + randn((4096, 2), make_generator(202))

    class RecordingModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))
            self.recorder = _Recorder(lambda x, t: x, "model", allow_integer_t=True)

        def forward(self, x, t):
            return self.scale * self.recorder(x, t)

    model = RecordingModel()
    loss = _call(eps_loss, "eps_loss", model, x0, schedule, generator=make_generator(7))
    calls = model.recorder.calls
    if not calls:
        raise Mistake("never called the model: the loss compares the model's prediction ε̂(x_k, t) with ε")
    if len(calls) > 1:
        raise Mistake(f"called the model {len(calls)} times; call it once on the whole noised batch x_k")
    x_in, t_in = calls[0]
    if x_in.shape != x0.shape:
        raise Mistake(f"the model got x of shape {tuple(x_in.shape)}; give it the noised batch x_k, shaped like x0 "
                      f"{tuple(x0.shape)}")
    if not t_in.is_floating_point() or t_in.max() > 1:
        raise Mistake("the model got the step index k; give it the continuous time t = schedule.model_time(k) "
                      "= (k + 1)/T")
    k_float = t_in.double() * steps - 1
    k = k_float.round().long()
    if not torch.allclose(k_float, k.double(), atol=1e-2) or k.min() < 0:
        raise Mistake("the model's time is not t = (k + 1)/T for an integer step k: draw k with "
                      "torch.randint(0, T, …) and pass schedule.model_time(k)")
    if k.unique().numel() == 1:
        raise Mistake("every sample got the same step k; draw one k per sample")
    if k.min() > steps // 10 or k.max() < steps - steps // 10:
        raise Mistake(f"k ranged over {int(k.min())} … {int(k.max())}; "
                      "draw it uniformly from all steps 0 … T − 1")
    if torch.allclose(x_in, x0):
        raise Mistake("the model saw the clean data x0; noise it first: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε")
    ab = schedule.alpha_bars.double()[k][:, None]
    eps = (x_in.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()
    if abs(eps.mean().item()) > 0.1 or abs(eps.std().item() - 1) > 0.1:
        raise Mistake("the model's input is not √ᾱ_k·x0 + √(1 − ᾱ_k)·ε with ε ~ N(0, I) at the k of "
                      "its time; noise x0 with q_sample(x0, k, eps, schedule) and the same k you turn into t")
    if not isinstance(loss, torch.Tensor):
        raise Mistake("should return the loss as a tensor that carries its gradient (no .item()), "
                      f"got {type(loss).__name__}")
    if loss.numel() != 1:
        raise Mistake(f"should return one number, the mean over every element; got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise Mistake("the loss carries no gradient: don't use .item(), .detach() or torch.no_grad() inside the loss")
    pred = 0.5 * x_in.double()
    value = float(loss.detach())
    expected = ((pred - eps) ** 2).mean().item()
    if not _near(value, expected):
        wrong = [
            ("regressed onto x0; ε-prediction's target is the noise ε that was added", ((pred - x0) ** 2).mean()),
            ("regressed onto the noised input x_k; the target is the noise ε that was added",
             ((pred - x_in) ** 2).mean()),
            ("summed instead of averaged: take the mean over every element", ((pred - eps) ** 2).sum()),
            ("summed over coordinates: take the mean over every element, as minisd3.ddpm.eps_loss does",
             ((pred - eps) ** 2).sum(1).mean()),
            ("missing the square: use (ε̂ − ε)², not |ε̂ − ε|", (pred - eps).abs().mean()),
            ("took a square root (an RMSE); the loss is the mean squared error", ((pred - eps) ** 2).mean().sqrt()),
        ]
        for message, number in wrong:
            if _near(value, float(number)):
                raise Mistake(message)
        raise Mistake(f"the loss is {value:.5g}, but the mean of (ε̂ − ε)² for the ε your x_k contains is "
                      f"{expected:.5g}")
    again = _call(eps_loss, "eps_loss", RecordingModel(), x0, schedule, generator=make_generator(7))
    if not _near(value, _as_number(again, "eps_loss")):
        raise Mistake("ignores the generator: two calls with the same seed gave different losses; draw k and ε "
                      "with generator=generator (torch.randint(…, generator=generator), "
                      "torch.randn(…, generator=generator))")


@_check("ancestral_step", "matches minisd3.ddpm.ancestral_step")
def check_ancestral_step(ancestral_step: Callable) -> None:
    """Check ``ancestral_step(model, x, k, schedule, noise)``: one reverse step x_k → x_{k−1},
    x_{k−1} = 1/√α_k · (x_k − β_k/√(1 − ᾱ_k) · ε̂) + √β̃_k·n, no noise at k = 0."""
    gen = make_generator(203)
    schedule = ddpm.linear_schedule()

    def eps_model(x, t):
        return torch.tanh(x) * (0.5 + expand_time(t, x))

    for k, shape in ((999, (24, 2)), (500, (24, 2)), (1, (6, 1, 8, 8)), (0, (24, 2))):
        x, noise = randn(shape, gen), randn(shape, gen)
        recorder = _Recorder(eps_model, "model", allow_integer_t=True)
        got = _call(ancestral_step, "ancestral_step", recorder, x, k, schedule, noise)
        if not recorder.calls:
            raise Mistake("never called the model: the step needs the predicted noise ε̂(x_k, t)")
        t_in = recorder.calls[0][1]
        if not t_in.is_floating_point() or t_in.max() > 1:
            raise Mistake("the model got the step index k; give it the continuous time t = schedule.model_time(k) "
                          "= (k + 1)/T for every sample")
        expected_t = (k + 1) / schedule.num_steps
        if not torch.allclose(t_in.double(), torch.full_like(t_in.double(), expected_t), atol=1e-6):
            raise Mistake(f"the model got t = {float(t_in[0]):.4g} at k = {k}; it must see t = schedule.model_time(k) "
                          f"= (k + 1)/T = {expected_t:.4g}")
        beta, alpha, ab = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        ab_prev = schedule.alpha_bars[k - 1] if k > 0 else torch.tensor(1.0)
        posterior_var = (1 - ab_prev) / (1 - ab) * beta
        eps_hat = eps_model(x, schedule.model_time(torch.full((shape[0],), k)))
        mean = (x - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()
        noise_term = posterior_var.sqrt() * noise
        mutations = [
            ("sign flipped: subtract the predicted noise, x_k − β_k/√(1 − ᾱ_k)·ε̂",
             (x + beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt() + noise_term),
            ("forgot to divide by √α_k: x_{k−1} = 1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + σ_k·n",
             x - beta / (1 - ab).sqrt() * eps_hat + noise_term),
            ("divided by α_k; divide by its square root √α_k",
             (x - beta / (1 - ab).sqrt() * eps_hat) / alpha + noise_term),
            ("divided by √ᾱ_k; the reverse step divides by √α_k of this one step (schedule.alphas[k])",
             (x - beta / (1 - ab).sqrt() * eps_hat) / ab.sqrt() + noise_term),
            ("missing square root in the noise coefficient: β_k/√(1 − ᾱ_k), not β_k/(1 − ᾱ_k)",
             (x - beta / (1 - ab) * eps_hat) / alpha.sqrt() + noise_term),
        ]
        if k == 0:
            mutations += [
                ("added noise at the last step: at k = 0 return the mean only", mean + beta.sqrt() * noise),
                ("added noise at the last step: at k = 0 return the mean only "
                 "(ᾱ_{k−1} wrapped round to ᾱ_{T−1})",
                 mean + ((1 - schedule.alpha_bars[-1]) / (1 - ab) * beta).sqrt() * noise),
            ]
        else:
            mutations += [
                ("missing square root on the noise: add √β̃_k·n (a standard deviation), not β̃_k·n",
                 mean + posterior_var * noise),
                ("noise scale σ_k = √β_k; this course uses the posterior variance "
                 "β̃_k = (1 − ᾱ_{k−1})/(1 − ᾱ_k)·β_k", mean + beta.sqrt() * noise),
                ("forgot to add the noise σ_k·n (only the last step, k = 0, has none)", mean),
            ]
        _compare(got, ddpm.ancestral_step(eps_model, x, k, schedule, noise), mutations,
                 formula="1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + √β̃_k·n",
                 shape_hint="return x_{k−1}, shaped like x")


# ---------------------------------------------------------------------------------------------
# lesson 03: rectified flow
# ---------------------------------------------------------------------------------------------

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
            ("t and 1 − t swapped (time running backwards): z_0 must be the data x0 and z_1 the noise ε",
             tt * x0 + (1 - tt) * eps),
            ("square roots: √(1 − t)·x0 + √t·ε is a variance-preserving (DDPM-like) path; "
             "the rectified-flow path is the straight line (1 − t)·x0 + t·ε",
             (1 - tt).sqrt() * x0 + tt.sqrt() * eps),
            ("the data term must fade out as t grows: (1 − t)·x0, not x0", x0 + tt * eps),
            ("the noise term has the wrong sign: + t·ε", (1 - tt) * x0 - tt * eps),
        ], formula="(1 − t)·x0 + t·ε", shape_hint=_TIME_HINT)


@_check("velocity_target", "matches minisd3.rectified_flow.velocity_target")
def check_velocity_target(velocity_target: Callable) -> None:
    """Check ``velocity_target(x0, eps)`` → v = dz_t/dt = ε − x0."""
    gen = make_generator(302)
    for shape in ((16, 2), (4, 1, 8, 8)):
        x0, eps = randn(shape, gen), randn(shape, gen)
        got = _call(velocity_target, "velocity_target", x0, eps)
        _compare(got, rectified_flow.velocity_target(x0, eps), [
            ("sign flipped: v = dz_t/dt = ε − x0 points from the data (t = 0) to the noise (t = 1); "
             "the rectified-flow paper runs time the other way and writes x1 − x0 = data − noise, "
             "which is −v here", x0 - eps),
            ("forgot to subtract x0: v = ε − x0", eps),
            ("forgot the noise: v = ε − x0", -x0),
            ("v is a difference, ε − x0, not a sum", eps + x0),
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
            ("sign flipped: going from t to t − Δ means z ← z − Δ·v̂(z, t)", variant(lambda h: -h)),
            (f"forgot the step size: z ← z − Δ·v̂ with Δ = 1/steps (here 1/{steps})", variant(lambda h: -1.0)),
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
            ("negative: weight by |h_i|; h_i = t_{i+1} − t_i is negative when time runs 1 → 0", score(weights=h)),
            ("missing the step size: S is an integral over t, so weight each step by |h_i| = |t_{i+1} − t_i|",
             score(weights=torch.ones_like(h))),
            ("averaged over steps: on an uneven time grid weight each step by its length |h_i|",
             score(weights=torch.full_like(h, 1 / h.numel()))),
            ("the straight-line velocity is z_1 − z_0 = start − end (noise minus data), which v̂ equals "
             "along a straight path; you used end − start", score(displacement=end - start)),
            ("averaged ‖·‖² over coordinates; the squared norm sums the squares over every coordinate",
             score(reduce=lambda d: (d**2).flatten(2).mean(2).mean(1))),
            ("missing the square: S averages ‖·‖², not ‖·‖",
             score(reduce=lambda d: d.flatten(2).norm(dim=2).mean(1))),
            ("summed over the batch; take the mean over samples",
             score(reduce=lambda d: (d**2).flatten(2).sum(2).sum(1))),
            ("for samples with more than one axis (images) the squared norm sums over all of them: "
             "use .flatten(2).sum(2), not .sum(-1)", score(reduce=lambda d: (d**2).sum(-1).flatten(1).mean(1))),
        ]
        for message, number in wrong:
            if _near(value, number):
                raise Mistake(message)
        raise Mistake(f"on {what} your S = {value:.5g}, expected {want:.5g}; S = Σ_i |h_i| · mean over samples of "
                      "‖(z_1 − z_0) − v_i‖²")


# ---------------------------------------------------------------------------------------------
# lesson 04: timestep sampling
# ---------------------------------------------------------------------------------------------

@_check("sample_logit_normal", "logit(t) is N(m, s²), t has shape (n,), and the same seed gives the same t")
def check_sample_logit_normal(sample_logit_normal: Callable) -> None:
    """Check ``sample_logit_normal(n, m=0.0, s=1.0, generator=None, device=None)`` → t = sigmoid(m + s·n),
    n ~ N(0, 1): shape, range, the mean, spread and normality of logit(t), and the generator."""
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
            raise Mistake(f"values outside [0, 1] (from {t.min():.3g} to {t.max():.3g}): t = sigmoid(m + s·n) — "
                          "did you forget the sigmoid?")
        logit = torch.logit(t.clamp(1e-12, 1 - 1e-12))
        mean, std = logit.mean().item(), logit.std().item()
        if not math.isclose(mean, m, abs_tol=0.05):
            if math.isclose(mean, -m, abs_tol=0.05):
                raise Mistake("m has the wrong sign (or you returned 1 − t): t = sigmoid(m + s·n), "
                              "so m > 0 pushes t towards 1, the noise end")
            if math.isclose(mean, m * s, abs_tol=0.05):
                raise Mistake("the location is m, not m·s: t = sigmoid(m + s·n), scale only n")
            raise Mistake(f"logit(t) should have mean m = {m}, yours has mean {mean:.3f}")
        if not math.isclose(std, s, rel_tol=0.05):
            if math.isclose(std, s**2, rel_tol=0.05):
                raise Mistake("s is a standard deviation: multiply n by s, not by s²")
            if math.isclose(std, math.sqrt(s), rel_tol=0.05):
                raise Mistake("s is a standard deviation: multiply n by s, not by √s")
            raise Mistake(f"logit(t) should have standard deviation s = {s}, yours has {std:.3f}")
        quantiles = torch.quantile(logit, probes)
        if not torch.allclose(quantiles, m + s * normal_quantiles, atol=0.05 * s):
            raise Mistake("logit(t) has the right mean and spread but is not normal: draw n from N(0, 1) "
                          "(torch.randn), not from U(0, 1)")
    first = _call(sample_logit_normal, "sample_logit_normal", 64, generator=make_generator(402))
    second = _call(sample_logit_normal, "sample_logit_normal", 64, generator=make_generator(402))
    if not torch.equal(first, second):
        raise Mistake("ignores the generator: the same seed must give the same t; pass generator=generator to "
                      "torch.randn")
    default = _call(sample_logit_normal, "sample_logit_normal", 20_000, generator=make_generator(403))
    logit = torch.logit(default.double().clamp(1e-12, 1 - 1e-12))
    if abs(logit.mean().item()) > 0.05 or abs(logit.std().item() - 1) > 0.05:
        raise Mistake("the defaults should be SD3's choice m = 0, s = 1")


@_check("shift_time", "matches minisd3.timesteps.shift_time")
def check_shift_time(shift_time: Callable) -> None:
    """Check ``shift_time(t, alpha)`` → t′ = α·t / (1 + (α − 1)·t) for α = 3, 0.5 and 1."""
    t = torch.linspace(0.0, 1.0, 101)
    for alpha in (3.0, 0.5, 1.0):
        got = _call(shift_time, "shift_time", t, alpha)
        _compare(got, timesteps.shift_time(t, alpha), [
            ("the shift goes the wrong way: α > 1 must move t towards 1 (more noise), "
             "t′ = α·t/(1 + (α − 1)·t); yours is the shift for the opposite time direction (t = 0 noise)",
             timesteps.shift_time(t, 1 / alpha)),
            ("applied the shift twice; apply it once", timesteps.shift_time(timesteps.shift_time(t, alpha), alpha)),
            ("missing the denominator 1 + (α − 1)·t: without it t′ leaves [0, 1]", alpha * t),
            ("the denominator is 1 + (α − 1)·t, not 1 + α·t (t = 1 must stay at 1)", alpha * t / (1 + alpha * t)),
            ("used √α; α itself is the shift (α = √(m/n) is already a square root of the pixel ratio)",
             timesteps.shift_time(t, math.sqrt(alpha))),
        ], formula="α·t / (1 + (α − 1)·t)")


# ---------------------------------------------------------------------------------------------
# lesson 05: sinusoidal embeddings
# ---------------------------------------------------------------------------------------------

def _sinusoid(t: torch.Tensor, dim: int, *, scale: float = embeddings.TIME_SCALE, divisor: int | None = None,
              sign: float = -1.0, log_of_period: float = math.log(embeddings.MAX_PERIOD), cos_first: bool = True,
              interleave: bool = False, two_pi: bool = False) -> torch.Tensor:
    """The timestep embedding in float64 with one knob turned (for the wrong variants):
    angles = scale·t·exp(sign·log_of_period·i/divisor) (·2π), [cos | sin] halves (or sin first, or interleaved)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    freqs = torch.exp(sign * log_of_period * i / (divisor or half))
    angles = scale * t.double()[:, None] * freqs[None] * (2 * math.pi if two_pi else 1.0)
    first, second = (angles.cos(), angles.sin()) if cos_first else (angles.sin(), angles.cos())
    if interleave:
        return torch.stack([first, second], dim=2).flatten(1)
    return torch.cat([first, second], dim=1)


@_check("timestep_embedding", "matches minisd3.embeddings.timestep_embedding")
def check_timestep_embedding(timestep_embedding: Callable) -> None:
    """Check ``timestep_embedding(t, dim)`` → [cos(1000t·ω_i) | sin(1000t·ω_i)], ω_i = exp(−ln(10000)·i/(dim/2)),
    on tiny times (where a frequency without its minus sign is still computable), on t in [0, 1], and for dim 16."""
    gen = make_generator(501)
    tiny = torch.cat([torch.zeros(1), 1e-5 * torch.rand(15, generator=gen)])
    spread = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(30, generator=gen)])
    for t, dim in ((tiny, 256), (spread, 256), (spread, 16)):
        got = _call(timestep_embedding, "timestep_embedding", t, dim)
        half = dim // 2
        _compare(got, embeddings.timestep_embedding(t, dim), [
            ("t not scaled by 1000: the sinusoid takes τ = 1000·t (SD3's timesteps); with t ∈ [0, 1] unscaled "
             "almost every channel stays near cos 0 = 1, sin 0 = 0 and the embedding barely changes with t",
             _sinusoid(t, dim, scale=1.0)),
            ("sin and cos halves swapped: SD3 (flip_sin_to_cos=True) puts the cosine half first, "
             "[cos(τ·ω) | sin(τ·ω)]", _sinusoid(t, dim, cos_first=False)),
            ("t not scaled by 1000 and sin and cos halves swapped: use τ = 1000·t and put the cosine half first",
             _sinusoid(t, dim, scale=1.0, cos_first=False)),
            (f"frequencies off: divide i by half = dim/2 = {half}, not by half − 1 = {half - 1} "
             "(ω_i = exp(−ln(10000)·i/half), diffusers' downscale_freq_shift=0)",
             _sinusoid(t, dim, divisor=half - 1)),
            (f"frequencies off: divide i by half = dim/2 = {half}, not by dim = {dim}",
             _sinusoid(t, dim, divisor=dim)),
            ("frequencies off: the exponent needs its minus sign, ω_i = exp(−ln(10000)·i/half), so the "
             "frequencies fall from 1 to about 1/10000; yours grow to about 10000", _sinusoid(t, dim, sign=1.0)),
            ("frequencies off: use the natural log, exp(−ln(10000)·i/half) = 10000^(−i/half), not log10",
             _sinusoid(t, dim, log_of_period=math.log10(embeddings.MAX_PERIOD))),
            ("an extra 2π: the angles are τ·ω_i, without 2π", _sinusoid(t, dim, two_pi=True)),
            ("cos and sin interleaved channel by channel; SD3 concatenates two halves, all cosines then all sines "
             "(torch.cat([cos, sin], dim=1))", _sinusoid(t, dim, interleave=True)),
        ], formula="[cos(1000t·ω_i) | sin(1000t·ω_i)]", atol=1e-3,
            shape_hint="return (B, dim), one row per time: the dim/2 cosines, then the dim/2 sines "
                       "(half = dim // 2, not a fixed 128)")


def _positions_2d(dim: int, rows: int, cols: int, *, columns_first: bool = True, row_major: bool = True,
                  sin_first: bool = True, divisor: int | None = None) -> torch.Tensor:
    """2-D sin-cos positions in float64 with one knob turned (for the wrong variants): per token
    [sincos(x) | sincos(y)] with x the column and y the row, each sincos(p) = [sin(p·ω_i) | cos(p·ω_i)],
    ω_i = 10000^(−i/divisor), i < k = dim/4 (divisor k by default)."""
    k = dim // 4
    omega = embeddings.MAX_PERIOD ** (-torch.arange(k, dtype=torch.float64) / (divisor or k))
    yy, xx = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                            indexing="ij")
    if not row_major:
        yy, xx = yy.T, xx.T

    def sincos(p: torch.Tensor) -> torch.Tensor:
        angles = p.flatten()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()] if sin_first else [angles.cos(), angles.sin()], dim=1)

    halves = [sincos(xx), sincos(yy)] if columns_first else [sincos(yy), sincos(xx)]
    return torch.cat(halves, dim=1)


@_check("sincos_2d_positions", "matches minisd3.embeddings.sincos_2d_positions")
def check_sincos_2d_positions(sincos_2d_positions: Callable) -> None:
    """Check ``sincos_2d_positions(dim, rows, cols)`` → (rows·cols, dim): tokens in row-major order, each
    [sin(x·ω) | cos(x·ω) | sin(y·ω) | cos(y·ω)] with x the column, y the row and ω_i = 10000^(−i/(dim/4)),
    on grids that are not square (so rows and columns cannot be confused unseen)."""
    for dim, rows, cols in ((16, 3, 5), (8, 4, 2), (32, 6, 7)):
        got = _call(sincos_2d_positions, "sincos_2d_positions", dim, rows, cols)
        k = dim // 4
        _compare(got, embeddings.sincos_2d_positions(dim, rows, cols).double(), [
            ("the row (y) half comes first; SD3 and DiT put the column coordinate x in the first dim/2 channels "
             "and the row coordinate y in the second", _positions_2d(dim, rows, cols, columns_first=False)),
            ("tokens in column-major order: patchify numbers patches row by row, token n = i·cols + j, so use "
             "torch.meshgrid(rows, cols, indexing='ij') and flatten", _positions_2d(dim, rows, cols, row_major=False)),
            ("cosines before sines within each half: positions use [sin | cos] (the timestep embedding is the "
             "one with its cosines first)", _positions_2d(dim, rows, cols, sin_first=False)),
            (f"frequencies off: each 1-D half has k = dim/4 = {k} frequencies, ω_i = 10000^(−i/k); divide i by "
             f"k, not by dim/2 = {2 * k}", _positions_2d(dim, rows, cols, divisor=2 * k)),
            ("row and column halves swapped and cosines first", _positions_2d(dim, rows, cols, columns_first=False,
                                                                              sin_first=False)),
        ], formula="[sincos(column) | sincos(row)]", atol=1e-5,
            shape_hint="return (rows·cols, dim): one row per patch, dim/2 channels for the column, dim/2 for the row")


# ---------------------------------------------------------------------------------------------
# lesson 06: patchify, adaLN-Zero, classifier-free guidance
# ---------------------------------------------------------------------------------------------

_PLAIN_RESHAPE = ("a plain reshape does not cut patches: it groups pixels that are neighbours in memory (runs of a "
                  "row), not p×p squares; split H into (H/p, p) and W into (W/p, p), permute to "
                  "(B, H/p, W/p, p, p, C), then flatten")


@_check("patchify", "matches minisd3.patches.patchify")
def check_patchify(patchify: Callable) -> None:
    """Check ``patchify(x, patch_size)``: (B, C, H, W) → (B, N, p·p·C), N = (H/p)·(W/p) patches in row-major
    order, each patch's features ordered (p_row, p_col, channel), as :func:`minisd3.patches.patchify`."""
    gen = make_generator(601)
    for shape, p in (((2, 3, 8, 12), 2), ((3, 2, 8, 8), 4)):
        x = randn(shape, gen)
        batch, channels = shape[0], shape[1]
        got = _call(patchify, "patchify", x, p)

        def layout(pattern):
            return rearrange(x, f"b c (h p) (w q) -> {pattern}", p=p, q=p)

        _compare(got, patches.patchify(x, p), [
            ("patches in column-major order (a transposed patch grid): number them row by row, token "
             "n = row·(W/p) + col, as einops' `(h w)`, not `(w h)`", layout("b (w h) (p q c)")),
            ("features ordered channel-first (channel, p_row, p_col); the course and SD3 flatten each patch as "
             "(p_row, p_col, channel), channel last", layout("b (h w) (c p q)")),
            ("patches in column-major order and features channel-first: tokens go row by row (`(h w)`) and "
             "each patch flattens as (p_row, p_col, channel)", layout("b (w h) (c p q)")),
            ("each patch read column by column: flatten it as (p_row, p_col, channel), rows outer",
             layout("b (h w) (q p c)")),
            (_PLAIN_RESHAPE, x.reshape(batch, -1, p * p * channels)),
            (_PLAIN_RESHAPE + " (moving the channels last first is not enough)",
             x.permute(0, 2, 3, 1).reshape(batch, -1, p * p * channels)),
        ], formula="the row-major patch tokens",
            shape_hint="(B, C, H, W) becomes (B, N, p·p·C) with N = (H/p)·(W/p) tokens")


@_check("unpatchify", "unpatchify(patchify(x)) gives x back, as minisd3.patches.unpatchify")
def check_unpatchify(unpatchify: Callable) -> None:
    """Check ``unpatchify(tokens, patch_size, grid)``: (B, rows·cols, p·p·C) → (B, C, rows·p, cols·p), the
    inverse of :func:`minisd3.patches.patchify` for ``grid = (rows, cols)``, on a non-square grid."""
    gen = make_generator(602)
    for shape, p in (((2, 3, 8, 12), 2), ((3, 2, 8, 8), 4)):
        x = randn(shape, gen)
        batch, channels, height, width = shape
        grid = (height // p, width // p)
        tokens = patches.patchify(x, p)
        got = _call(unpatchify, "unpatchify", tokens, p, grid)

        def layout(pattern):
            return rearrange(tokens, f"{pattern} -> b c (h p) (w q)", h=grid[0], w=grid[1], p=p, q=p)

        _compare(got, x, [
            ("not the inverse of patchify: you read the tokens in column-major order (`(w h)`); patchify "
             "numbers the patches row by row, token n = row·cols + col", layout("b (w h) (p q c)")),
            ("not the inverse of patchify: you read each token's features channel-first (channel, p_row, p_col); "
             "patchify wrote them (p_row, p_col, channel)", layout("b (h w) (c p q)")),
            ("not the inverse of patchify: you read each patch column by column; its features are "
             "(p_row, p_col, channel), rows outer", layout("b (h w) (q p c)")),
            ("not the inverse of patchify: a plain reshape of the tokens does not put the p×p squares back; "
             "undo patchify's steps in reverse (unflatten, permute back, merge (rows, p) into H)",
             tokens.reshape(batch, channels, height, width)),
        ], formula="x (unpatchify(patchify(x)) must give x back)",
            shape_hint=f"for tokens (B, N, p·p·C) and grid = (rows, cols) = {grid} return (B, C, rows·p, cols·p) "
                       "with C = features/(p·p); rows is the first entry of grid")


_MODULATE_HINT = ("shift and scale are (B, D), one vector per sample: write shift[:, None] and scale[:, None] "
                  "(shape (B, 1, D)) to broadcast them over the L tokens of x (B, L, D)")


@_check("modulate", "matches minisd3.blocks.modulate")
def check_modulate(modulate: Callable) -> None:
    """Check ``modulate(x, shift, scale)`` → x·(1 + scale) + shift, with (B, D) shift and scale broadcast over
    the tokens of x (B, L, D); the second case has B = L, where a missing broadcast still runs."""
    gen = make_generator(603)
    for batch, length, dim in ((3, 5, 8), (4, 4, 6)):
        x = randn((batch, length, dim), gen)
        shift, scale = randn((batch, dim), gen), 0.5 * randn((batch, dim), gen)
        got = _call(modulate, "modulate", x, shift, scale, hint=_MODULATE_HINT)
        b, s = shift[:, None], scale[:, None]
        mutations = [
            ("missing the 1 +: modulate(x) = x·(1 + scale) + shift, so that scale = shift = 0 (adaLN-Zero's "
             "start) leaves x unchanged", x * s + b),
            ("shift and scale swapped: multiply by (1 + scale), then add shift", x * (1 + b) + s),
            ("shift added before scaling: (x + shift)·(1 + scale); add it after, x·(1 + scale) + shift",
             (x + b) * (1 + s)),
        ]
        if batch == length:
            mutations.append((f"no broadcasting over tokens: with B = L = {batch}, (B, D) lines up with the tokens "
                              "(L, D), so token l got sample l's scale; " + _MODULATE_HINT,
                              x * (1 + scale[None]) + shift[None]))
        _compare(got, blocks.modulate(x, shift, scale), mutations, formula="x·(1 + scale) + shift",
                 shape_hint=_MODULATE_HINT)


@_check("cfg_combine", "matches minisd3.guidance.cfg_combine")
def check_cfg_combine(cfg_combine: Callable) -> None:
    """Check ``cfg_combine(v_uncond, v_cond, w)`` → v_∅ + w·(v_c − v_∅) for w = 4, 1.5, 0 and 1."""
    gen = make_generator(604)
    for w, shape in ((4.0, (16, 2)), (1.5, (4, 1, 8, 8)), (0.0, (16, 2)), (1.0, (16, 2))):
        v_u, v_c = randn(shape, gen), randn(shape, gen)
        got = _call(cfg_combine, "cfg_combine", v_u, v_c, w)
        _compare(got, guidance.cfg_combine(v_u, v_c, w), [
            ("conditional and unconditional swapped: v = v_uncond + w·(v_cond − v_uncond), so that w = 0 gives "
             "v_uncond and w = 1 gives v_cond", v_c + w * (v_u - v_c)),
            ("sign flipped: guidance moves from v_uncond towards v_cond and past it, + w·(v_cond − v_uncond)",
             v_u - w * (v_c - v_u)),
            ("w applied to v_cond only: w multiplies the difference, v_uncond + w·(v_cond − v_uncond) "
             "(= w·v_cond + (1 − w)·v_uncond)", v_u + w * v_c),
            ("w applied to v_cond only and v_uncond dropped: v = w·v_cond + (1 − w)·v_uncond", w * v_c),
            ("w applied to v_cond only: the weights of w·v_cond + (1 − w)·v_uncond sum to 1, "
             "the sign of (1 − w) included", w * v_c - (1 - w) * v_u),
            ("forgot to add v_uncond back: v = v_uncond + w·(v_cond − v_uncond)", w * (v_c - v_u)),
            ("started from v_cond: v_cond + w·(v_cond − v_uncond) is guidance with scale w + 1; in this course "
             "w = 1 must give the conditional model, so start from v_uncond", v_c + w * (v_c - v_u)),
        ], formula="v_uncond + w·(v_cond − v_uncond)")


# ---------------------------------------------------------------------------------------------
# lesson 07: MM-DiT joint attention and QK-norm
# ---------------------------------------------------------------------------------------------

def _joint_attention_reference(streams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The package's joint attention (:func:`minisd3.attention.joint_attention` with its SDPA core)."""
    return attention.joint_attention(attention.AttentionCore(), streams)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaled: bool = True,
                       softmax_dim: int = -1) -> torch.Tensor:
    """softmax(QKᵀ/√d)V per head, written out (for the wrong variants: no 1/√d, softmax over the queries)."""
    logits = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5 if scaled else 1.0)
    return logits.softmax(dim=softmax_dim) @ v


def _joint_variant(streams, order=None, scaled=True, softmax_dim=-1, merge="b h l d -> b l (h d)"):
    """Joint attention with one knob turned: concatenation ``order`` (split in the given order regardless),
    no 1/√d, softmax over the queries, or heads merged as (d h)."""
    order = order or list(range(len(streams)))
    q, k, v = (torch.cat([streams[i][j] for i in order], dim=2) for j in range(3))
    out = rearrange(_softmax_attention(q, k, v, scaled, softmax_dim), merge)
    return list(out.split([q_i.shape[2] for q_i, _, _ in streams], dim=1))


def _stream_outputs(got, streams) -> list[torch.Tensor]:
    """The learner's per-stream outputs, after checking the container, their number and their shapes."""
    if not isinstance(got, (list, tuple)):
        described = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise Mistake(f"should return a list with one output per stream, got {described}: split the joint output "
                      "back into the streams")
    if len(got) != len(streams):
        raise Mistake(f"returned {len(got)} outputs for {len(streams)} streams: split the joint output into one "
                      "output per stream, in the order given")
    if not all(isinstance(out, torch.Tensor) for out in got):
        raise Mistake(f"each output should be a torch.Tensor, got {[type(out).__name__ for out in got]}")
    wanted = [(q.shape[0], q.shape[2], q.shape[1] * v.shape[3]) for q, _, v in streams]
    shapes = [tuple(out.shape) for out in got]
    if shapes == wanted:
        return list(got)
    if shapes == wanted[::-1]:
        raise Mistake("returned the outputs in reversed order: give back one output per stream in the order the "
                      "streams came in")
    if shapes == [tuple(v.shape) for _, _, v in streams]:
        raise Mistake("forgot to merge the heads: each output is (B, H, L_i, d); rearrange it to (B, L_i, H·d) "
                      "(minisd3.attention.merge_heads)")
    lengths = [q.shape[2] for q, _, _ in streams]
    raise Mistake(f"wrong split lengths/order: the outputs have shapes {shapes}, expected {wanted} = (B, L_i, H·d); "
                  f"split the joint output along the sequence with the streams' lengths {lengths}, in the order given")


_JOINT_HINT = ("concatenate q, k and v of the streams along the sequence axis, dim 2 of (B, H, L_i, d) — not along "
               "the heads (dim 1) or the features (dim 3)")


@_check("joint_attention", "matches minisd3.attention.joint_attention")
def check_joint_attention(joint_attention: Callable) -> None:
    """Check ``joint_attention(streams)``: streams a list of (q, k, v), each (B, H, L_i, d); concatenate along
    the sequence, one softmax(QKᵀ/√d)V, split back to (B, L_i, H·d) per stream, in order."""
    gen = make_generator(701)
    for batch, heads, lengths, head_dim in ((2, 2, (3, 8), 4), (1, 4, (6, 4), 8)):
        streams = [tuple(randn((batch, heads, length, head_dim), gen) for _ in range(3)) for length in lengths]
        given = [tuple(tensor.clone() for tensor in stream) for stream in streams]
        got = _call(joint_attention, "joint_attention", given, hint=_JOINT_HINT)
        if not all(torch.equal(a, b) for stream, copy in zip(streams, given) for a, b in zip(stream, copy)):
            raise Mistake("joint_attention changed one of the streams' q, k or v in place; compute new tensors instead "
                          "(write q = q / s, not q /= s)")
        got = _stream_outputs(got, streams)
        separate = [rearrange(_softmax_attention(q, k, v), "b h l d -> b l (h d)") for q, k, v in streams]
        mutations = [
            ("separate attention per stream (no cross-talk): concatenate both streams' q, k, v along the sequence "
             "for one attention, so every word sees every patch and every patch every word", separate),
            ("wrong split order: the streams were concatenated in one order and split in another; concatenate in "
             "the order given and split with the lengths in that same order", _joint_variant(streams, order=[1, 0])),
            ("missing the 1/√d scale: softmax(QKᵀ/√d)V, d the head dimension", _joint_variant(streams, scaled=False)),
            ("softmax over the wrong axis: normalise each query's weights over the keys, the last axis of QKᵀ",
             _joint_variant(streams, softmax_dim=-2)),
            ("heads merged in the wrong order: (B, H, L, d) → (B, L, H·d) puts head 0's d features first "
             "(rearrange 'b h l d -> b l (h d)')", _joint_variant(streams, merge="b h l d -> b l (d h)")),
        ]
        _compare(torch.cat(got, dim=1), torch.cat(_joint_attention_reference(streams), dim=1),
                 [(message, torch.cat(outputs, dim=1)) for message, outputs in mutations],
                 formula="softmax(QKᵀ/√d)V over the joint sequence")


def _rms_norm_reference(u: torch.Tensor, gain: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The package's QK-norm layer (``nn.RMSNorm`` over the head dimension, as in :class:`minisd3.attention.QKV`)
    with gain ``gain``: u / √(mean(u²) + ε) · g."""
    norm = nn.RMSNorm(u.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(gain)
        return norm(u)


@_check("rms_norm", "matches the package's QK-norm (torch.nn.RMSNorm over the head dimension)")
def check_rms_norm(rms_norm: Callable) -> None:
    """Check ``rms_norm(u, gain, eps=1e-6)`` → u / √(mean(u²) + ε) · g over the last axis of u (B, H, L, d), g (d,).

    One token is tiny, so that ε matters there; the second case passes eps = 0.01."""
    gen = make_generator(702)
    for shape, eps in (((2, 3, 5, 8), None), ((1, 2, 4, 16), 1e-2)):
        u = 1.5 * randn(shape, gen)
        u[0, 0, 1] = u[0, 0, 1] * 1e-4
        gain = 1 + 0.5 * randn((shape[-1],), gen)
        eps_args = {} if eps is None else {"eps": eps}
        got = _call(rms_norm, "rms_norm", u, gain, **eps_args,
                    hint="normalise over the last axis with keepdim=True so the RMS broadcasts against u")
        e = 1e-6 if eps is None else eps

        def mean_square(dim=-1):
            return (u**2).mean(dim, keepdim=True)

        centred = u - u.mean(-1, keepdim=True)
        mutations = [
            ("subtracted the mean: that is LayerNorm; RMSNorm only divides by the root mean square, "
             "u / √(mean(u²) + ε) · g", centred / ((centred**2).mean(-1, keepdim=True) + e).sqrt() * gain),
            ("normalised over the sequence axis (dim 2); QK-norm normalises each token's d features in each head: "
             "the mean runs over the last axis (head dimension)", u / (mean_square(2) + e).sqrt() * gain),
            ("normalised over the heads axis (dim 1); the mean runs over the last axis, the head dimension d",
             u / (mean_square(1) + e).sqrt() * gain),
            ("missing gain: multiply by the learnable gain g (one number per feature of the head dimension)",
             u / (mean_square() + e).sqrt()),
            ("missing ε: divide by √(mean(u²) + ε); without ε a token whose features are all near 0 is blown up "
             "to full size (or to inf at exactly 0)",
             u / mean_square().sqrt() * gain),
            ("ε belongs inside the square root: √(mean(u²) + ε), not √mean(u²) + ε",
             u / (mean_square().sqrt() + e) * gain),
            ("missing the square root: divide by √(mean(u²) + ε), the root mean square", u / (mean_square() + e) * gain),
            ("summed u² over the head dimension; the RMS takes the mean, √(mean(u²) + ε)",
             u / ((u**2).sum(-1, keepdim=True) + e).sqrt() * gain),
        ]
        if eps is not None:
            mutations.append(("ignored the eps argument: use the ε you are given (default 1e-6)",
                              u / (mean_square() + 1e-6).sqrt() * gain))
        _compare(got, _rms_norm_reference(u, gain, e), mutations, formula="u / √(mean(u²) + ε) · g",
                 shape_hint="return a tensor shaped like u (normalise with keepdim=True)")
