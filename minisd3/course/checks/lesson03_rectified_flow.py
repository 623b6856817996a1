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
    _require_generator,
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


# ---------------------------------------------------------------------------------------------
# reflow_loss (a whole piece: the new pairs and the loss on them)
# ---------------------------------------------------------------------------------------------

def _reflow_loss_reference(teacher: Callable, student: Callable, noise: torch.Tensor, steps: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """The reflow pairs (ε, x̂0) with x̂0 the teacher's Euler sample from ε in ``steps`` steps
    (:func:`minisd3.rectified_flow.reflow_pairs` with Euler), then the rectified-flow loss of the student on them with
    one t ~ U(0, 1) per pair from ``generator`` (:func:`minisd3.rectified_flow.rf_loss` with the pair's own ε)."""
    eps, x0_hat = rectified_flow.reflow_pairs(teacher, noise, steps, method="euler")
    t = torch.rand(noise.shape[0], generator=generator)
    return rectified_flow.rf_loss(student, x0_hat, eps=eps, t=t)


def _student_field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A second smooth field, for the student (so that the teacher's and the student's outputs differ)."""
    tt = expand_time(t, z)
    return 0.7 * torch.tanh(z + 0.3) - 0.4 * z * tt + 0.2


_REFLOW_FORMULA = "mean of (v̂_student(z_t, t) − (ε − x̂0))², z_t = (1 − t)·x̂0 + t·ε"
_REFLOW_HOW = "t = torch.rand(B, generator=generator), one time per pair"


def _reflow_run(reflow_loss: Callable, noise: torch.Tensor, steps: int, seed: int):
    """Call the learner's reflow_loss with recording teacher and student; return (loss, teacher, student, scale),
    ``scale`` the student's one parameter (the gradient must reach it)."""
    scale = torch.ones((), requires_grad=True)
    teacher = _Recorder(_curved_field, "teacher")
    student = _Recorder(lambda z, t: scale * _student_field(z, t), "student")
    got = _call(reflow_loss, "reflow_loss", teacher, student, noise, steps, make_generator(seed))
    return got, teacher, student, scale


@_check("reflow_loss", "the student's rectified-flow loss on the teacher's own pairs (ε, x̂0), x̂0 its Euler sample from ε")
def check_reflow_loss(reflow_loss: Callable) -> None:
    """Check ``reflow_loss(teacher, student, noise, steps, generator)`` → one loss (a tensor that reaches the student's
    weights): the teacher sampled from ``noise`` with Euler in ``steps`` steps (its calls read from a recording
    field), the student's inputs z_t = (1 − t)·x̂0 + t·ε with the same ε and one t ~ U(0, 1) per pair (read back from
    a recording student), the value against the mean of (v̂ − (ε − x̂0))² at the learner's own t, the gradient, and
    the generator. t is judged by what the student got, so any way of drawing it from the generator passes."""
    batch, steps = 4096, 4
    noise = randn((batch, 2), make_generator(330))
    got, teacher, student, scale = _reflow_run(reflow_loss, noise, steps, 7)
    if not student.calls:
        raise Mistake("never called the student: the loss is the student's error v̂_student(z_t, t) − (ε − x̂0) on the "
                      "teacher's pairs", "student_not_called")
    if len(teacher.calls) == steps + 1:
        raise Mistake(f"called the teacher {steps + 1} times: once per Euler step ({steps}) makes the pairs, and then the "
                      "target should be the straight velocity ε − x̂0 of the pair, not the teacher's v̂(z_t, t) "
                      "(that would copy the curved flow, not straighten it)", "teacher_as_target")
    if not teacher.calls:
        raise Mistake("never called the teacher: reflow's pairs are (ε, x̂0) with x̂0 the teacher's own Euler sample "
                      "from ε (the coupling is what straightens the new flow)", "teacher_not_sampled")
    _check_sampler_times(teacher, steps, per_step=1)
    z = torch.cat([c[0] for c in student.calls]).double()
    t = torch.cat([c[1] for c in student.calls]).double()
    if z.shape[0] != batch:
        raise Mistake(f"the student saw {z.shape[0]} samples for {batch} pairs: evaluate it once on each pair's z_t")
    if float(t.max() - t.min()) < 1e-9:
        raise Mistake(f"every pair got the same t = {float(t[0]):.3g}: draw one time per pair, {_REFLOW_HOW}",
                      "one_time_for_batch")
    if t.min() < 0 or t.max() > 1 or abs(float(t.mean()) - 0.5) > 0.03 or abs(float(t.std()) - 12**-0.5) > 0.02:
        raise Mistake(f"the student's t have mean {float(t.mean()):.3f} and standard deviation {float(t.std()):.3f}; "
                      f"t ~ U(0, 1) has 0.5 and {12**-0.5:.3f}: {_REFLOW_HOW}", "time_not_uniform")
    x0_hat = rectified_flow.sample(_curved_field, noise, steps).double()
    eps = noise.double()
    tb = t[:, None]
    if not torch.allclose(z, (1 - tb) * x0_hat + tb * eps, rtol=1e-4, atol=1e-4):
        if torch.allclose(z, tb * x0_hat + (1 - tb) * eps, rtol=1e-4, atol=1e-4):
            raise Mistake("x̂0 and ε swapped in z_t (time running backwards): z_t = (1 − t)·x̂0 + t·ε, so t = 0 is the "
                          "teacher's sample and t = 1 its noise", "time_reversed")
        keep = (t > 0.2).squeeze()
        other = (z[keep] - (1 - tb[keep]) * x0_hat[keep]) / tb[keep]
        if abs(float(other.mean())) < 0.1 and abs(float(other.std()) - 1) < 0.1:
            raise Mistake("z_t uses fresh noise: reflow keeps each pair's own ε, the noise the teacher started from, "
                          "z_t = (1 − t)·x̂0 + t·ε; with new noise the pairs are independent again and nothing "
                          "straightens", "fresh_noise")
        raise Mistake("the student's input is not z_t = (1 − t)·x̂0 + t·ε, with x̂0 the teacher's Euler sample from ε "
                      f"in {steps} steps and ε the noise you were given")
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,):
        raise Mistake(f"returned one loss per pair, shape ({batch},); return their mean, one number", "not_averaged")
    if not isinstance(got, torch.Tensor):
        raise Mistake(f"should return the loss as a torch.Tensor that keeps its gradient, got {type(got).__name__} "
                      "(no .item() or float())", "no_gradient")

    def loss(target: torch.Tensor, reduce=lambda d: (d**2).mean()) -> torch.Tensor:
        return reduce(_student_field(z, t) - target)

    want = loss(eps - x0_hat)
    _compare(got.detach().reshape(()) if got.numel() == 1 else got.detach(), want, [
        ("target_sign_flipped", "the velocity target has the wrong sign: v = ε − x̂0 (t = 0 data, t = 1 noise)",
         loss(x0_hat - eps)),
        ("epsilon_target", "the target is the noise ε alone: the velocity of the straight pair is ε − x̂0", loss(eps)),
        ("sum_not_mean", "summed the squared errors: the loss is their mean over every element of every pair",
         loss(eps - x0_hat, lambda d: (d**2).sum())),
        ("missing_square", "missing the square: the loss is the mean of (v̂ − (ε − x̂0))², not of |v̂ − (ε − x̂0)|",
         loss(eps - x0_hat, lambda d: d.abs().mean())),
    ], formula=_REFLOW_FORMULA, shape_hint="the loss is one number, shape ()")
    if got.grad_fn is None:
        raise Mistake("the loss does not keep its gradient (computed under torch.no_grad() or detached): the student "
                      "is trained with loss.backward()", "no_gradient")
    got.backward()
    if scale.grad is None or float(scale.grad.abs()) == 0:
        raise Mistake("the loss's gradient does not reach the student's weights: compute v̂_student(z_t, t) with "
                      "gradients on (only the teacher's sampling may run under torch.no_grad())", "no_gradient")
    values = [_as_number(_reflow_run(reflow_loss, noise[:256], 2, seed)[0], "reflow_loss") for seed in (331, 331, 332)]
    _require_generator(values[0] == values[1], values[0] != values[2], "times", _REFLOW_HOW)
