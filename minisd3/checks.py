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

from . import ddpm, ode, rectified_flow, timesteps
from .marginal_field import marginal_velocity
from .seeding import make_generator, randn
from .toy2d import GaussianMixture
from .validation import expand_time


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


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)


def _compare(got, want: torch.Tensor, mutations: Sequence[tuple[str, torch.Tensor]], *, formula: str,
             shape_hint: str = "") -> None:
    """Pass when ``got`` equals ``want``; otherwise name the first mutation it equals, or say how far off it is."""
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
    if _close(got, want):
        return
    for message, wrong in mutations:
        if wrong.shape == got.shape and _close(got, wrong):
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
