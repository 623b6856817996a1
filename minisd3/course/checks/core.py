"""What every check shares: :class:`Mistake`, the registry
(:data:`CHECKS`, :data:`LESSON_CHECKS` and the :func:`_check` decorator) and the machinery the
lessons' checks are written with: calling the learner's function (:func:`_call`), comparing its
output with the reference and the catalogued wrong variants (:func:`_compare`, :func:`_close`,
:func:`_near`), recording models and velocity fields (:class:`_Recorder`) and diagnosing a
sampler's time grid. The checks themselves live in the ``lessonNN_*`` modules beside this one; the
result type they return, :class:`~minisd3.course.results.CheckResult`, is shared with the grader.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Sequence

import torch

from ...validation import expand_time
from ..results import CheckResult


class Mistake(Exception):
    """Raised inside a check at the first problem found: its text is the learner's message and
    ``mistake`` the identifier of the wrong variant it names (``None`` when it names none)."""

    def __init__(self, message: str, mistake: str | None = None):
        super().__init__(message)
        self.mistake = mistake


CHECKS: dict[str, Callable[[Callable], CheckResult]] = {}
"""Every check by the name of the function it checks (the name in its result)."""

LESSON_CHECKS: dict[str, tuple[str, ...]] = {
    "01_flows_2d": ("heun", "gaussian_velocity"),
    "02_ddpm": ("q_sample", "eps_loss", "ancestral_step", "ddim_sample"),
    "03_rectified_flow": ("interpolate", "velocity_target", "euler_sample", "straightness", "reflow_loss"),
    "04_timestep_sampling": ("sample_logit_normal", "shift_time"),
    "05_sinusoidal_embeddings": ("timestep_embedding", "sincos_2d_positions"),
    "06_patchify_dit": ("patchify", "unpatchify", "modulate", "cfg_combine", "guided_sample"),
    "07_mmdit_qknorm": ("joint_attention", "rms_norm", "joint_block_forward"),
    "08_latent_space": ("latent_scale_shift", "encode_for_diffusion", "psnr", "sample_and_kl", "latent_tokens"),
    "09_scaling_up": ("ema_over_steps", "learning_rate", "batch_indices", "rank_slice", "mfu"),
    "10_spelling": ("char_tokenize", "encoder_drop_mask", "build_context"),
    "11_data_preferences_scale": ("mix_captions", "validation_loss", "dpo_objective", "dpo_errors"),
}
"""The checks each lesson's practice notebook must pass, in notebook order."""


NBGRADER_EXECUTION = "NBGRADER_EXECUTION"
"""The variable nbgrader sets in the kernel while it autogrades or validates a notebook."""


def _check(name: str, passed_message: str):
    """Register a check body under ``name``: it raises :class:`Mistake`, the wrapper shows and returns.

    Under nbgrader (:data:`NBGRADER_EXECUTION` set), a check that fails also raises AssertionError with its
    line, because nbgrader scores an autograded test cell by whether it raised.
    """

    def register(body: Callable[[Callable], None]) -> Callable[[Callable], CheckResult]:
        @functools.wraps(body)
        def check(fn: Callable) -> CheckResult:
            try:
                if not callable(fn):
                    raise Mistake(f"expected your function {name}, got {type(fn).__name__} {fn!r}")
                body(fn)
                result = CheckResult(name, True, None, passed_message)
            except Mistake as mistake:
                result = CheckResult(name, False, mistake.mistake, str(mistake))
            result.show()
            if not result.passed and os.environ.get(NBGRADER_EXECUTION):
                raise AssertionError(result.line)
            return result

        CHECKS[name] = check
        return check

    return register


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
        # a size mismatch where the check's hint says which shapes to line up is that slip, named
        mistake = "shapes_do_not_line_up" if hint and _SIZE_MISMATCH.search(str(err)) else None
        raise Mistake(message + (f" — {hint}" if hint else ""), mistake) from err
    for original, tensor in zip(originals, tensors):
        if tensor.shape != original.shape or not torch.equal(tensor.detach(), original):
            raise Mistake(f"{name} changed one of its input tensors in place; compute a new tensor instead "
                          "(write z = z + h * v, not z += h * v)", "in_place")
    return out


_SIZE_MISMATCH = re.compile(r"must match the size|Sizes of tensors must match|shapes cannot be multiplied|"
                            r"not broadcastable|size mismatch")
"""PyTorch's wording for tensors whose shapes do not line up (broadcasting, concatenation, matmul)."""


def _shape_slip(got: tuple[int, ...], want: tuple[int, ...]) -> tuple[str, str] | None:
    """A recognisable wrong shape, as ``(mistake, what to say)``: two axes swapped, everything reduced to
    one number, the whole path stacked in front of the result, or an axis of size 1 too many or too few."""
    if len(got) == len(want) and sorted(got) == sorted(want):
        swaps = [(i, j) for i in range(len(got)) for j in range(i + 1, len(got))
                 if got[:i] + (got[j],) + got[i + 1:j] + (got[i],) + got[j + 1:] == want]
        if swaps:
            i, j = swaps[0]
            return "axes_swapped", f"axes {i} and {j} are swapped"
    if got == () and want != ():
        return "reduced_to_a_number", "reduced to one number: keep one value per element"
    if len(got) == len(want) + 1 and got[1:] == want:
        return "returned_trajectory", f"a leading axis of {got[0]} too many, as if every step were stacked"
    if len(got) == len(want) + 1 and got[:-1] == want and got[-1] == 1:
        return "extra_axis", "a trailing axis of size 1 too many"
    if len(got) + 1 == len(want) and 1 in want and got == tuple(size for size in want if size != 1)[:len(got)]:
        return "missing_axis", "an axis of size 1 is missing (keepdim=True, or [:, None])"
    return None


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def _compare(got, want: torch.Tensor, mutations: Sequence[tuple[str, str, torch.Tensor]], *, formula: str,
             shape_hint: str = "", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Pass when ``got`` equals ``want``; otherwise name the mutation it equals (the closest, when several are
    within tolerance), or say how far off it is.

    ``mutations`` are the catalogued wrong variants, ``(mistake, message, wrong)``: the identifier the
    result carries, the learner's message and the variant's output on the same inputs.
    ``atol`` is the absolute tolerance (loosen it where float32 rounding of large arguments shows) and
    ``rtol`` the relative one (loosen it where algebraically equal forms round differently in float32).
    """
    if not isinstance(got, torch.Tensor):
        raise Mistake(f"should return a torch.Tensor, got {type(got).__name__}", "not_a_tensor")
    if tuple(got.shape) != tuple(want.shape):
        slip = _shape_slip(tuple(got.shape), tuple(want.shape))
        raise Mistake(f"wrong shape: expected {tuple(want.shape)}, got {tuple(got.shape)}"
                      + (f" ({slip[1]})" if slip else "") + (f" — {shape_hint}" if shape_hint else ""),
                      slip[0] if slip else None)
    if not got.is_floating_point():
        raise Mistake(f"expected floating-point values, got dtype {got.dtype}")
    got = got.detach().cpu().double()
    if not torch.isfinite(got).all():  # a catalogued variant that divides by zero where it goes wrong is still named
        _name_variant(got, mutations, atol, rtol, equal_nan=True)
        raise Mistake("the result contains NaN or inf; look for a division by zero or a log of 0")
    if _close(got, want, atol, rtol):
        return
    _name_variant(got, mutations, atol, rtol)
    worst = (got - want.double()).abs().max().item()
    raise Mistake(f"values differ from {formula} by up to {worst:.3g}, and not in one of the usual ways; "
                  "compare your code with the formula term by term")


def _name_variant(got: torch.Tensor, mutations: Sequence[tuple[str, str, torch.Tensor]], atol: float, rtol: float,
                  equal_nan: bool = False) -> None:
    """Raise the :class:`Mistake` of the catalogued variant ``got`` equals, if any: the closest (the first of
    equally close ones), since near-by variants can both be within tolerance."""
    matches = []
    for index, (_, _, wrong) in enumerate(mutations):
        wrong = wrong.double()
        if wrong.shape == got.shape and torch.allclose(got, wrong, rtol=rtol, atol=atol, equal_nan=equal_nan):
            finite = torch.isfinite(got) & torch.isfinite(wrong)
            matches.append((float((got - wrong)[finite].abs().max()) if finite.any() else 0.0, index))
    if matches:
        mistake, message, _ = mutations[min(matches)[1]]
        raise Mistake(message, mistake)


def _require_generator(same_seed_same: bool, other_seed_differs: bool, what: str, how: str) -> None:
    """Fail with ``ignores_generator`` unless two calls with equally seeded generators drew the same
    ``what`` and a call with a differently seeded one drew different ``what``; ``how`` says how to draw."""
    if not same_seed_same:
        raise Mistake(f"ignores the generator: two calls with the same seed drew different {what}; draw them with "
                      f"the generator you are given: {how}", "ignores_generator")
    if not other_seed_differs:
        raise Mistake(f"ignores the generator: two different seeds drew the same {what}, so your draws do not "
                      "come from the generator you are given (torch.manual_seed or a generator of your own inside "
                      f"the function fixes them); draw them with it: {how}", "ignores_generator")


def _as_number(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Mistake(f"{name} should return one number, got a tensor of shape {tuple(value.shape)} "
                          "(reduce it to one value)", "not_one_number")
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Mistake(f"{name} should return one number, got {type(value).__name__}", "not_one_number") from None


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
                          f"({batch},), one time per sample, e.g. torch.full(({batch},), t)", "time_not_a_tensor")
        if tuple(t.shape) != (batch,):
            raise Mistake(f"the {self.what} got t of shape {tuple(t.shape)}; give it shape ({batch},), "
                          f"one time per sample, e.g. t.expand({batch}) or torch.full(({batch},), t)", "time_wrong_shape")
        if not (t.is_floating_point() or self.allow_integer_t):
            raise Mistake(f"the {self.what} got integer times (dtype {t.dtype}); t is a float in [0, 1]", "integer_time")
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
                          "the Euler-predicted point z̃ = z + h·v(z, t) at t + h and averages the two", "euler_not_heun")
        raise Mistake(f"called the velocity {len(times)} times for steps = {steps}; {method} needs "
                      f"{per_step} evaluation{'s' if per_step > 1 else ''} per step ({per_step * steps})",
                      "wrong_evaluation_count")
    if times and (times[0] < 0.5 or times[-1] > times[0]):
        raise Mistake("time running backwards: sampling starts at t = 1 (noise) and steps down to t = 0 (data)",
                      "time_reversed")
    grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
    expected = [t for i in range(steps) for t in (grid[i], grid[i + 1])[:per_step]]
    if all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times, expected)):
        return
    if per_step == 1 and all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times, grid[1:])):
        raise Mistake("evaluated the velocity at the end of each step (t − Δ); Euler uses the velocity at "
                      "the start of the step, v̂(z_t, t)", "velocity_at_step_end")
    if per_step == 2 and all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(times[1::2], grid[:-1])):
        raise Mistake("the second velocity is taken at the start time t; evaluate it at the end of the step, "
                      "t_next = t + h, where the predicted point z̃ lives", "corrector_at_start_time")
    raise Mistake(f"the velocity was evaluated at t = {[round(t, 4) for t in times[:6]]}…; expected "
                  f"{[round(t, 4) for t in expected[:6]]}… (equal steps from 1 down to 0)")


def _simulate(velocity, z: torch.Tensor, steps: int, step) -> torch.Tensor:
    """Run ``step(velocity, z, t, t_next)`` over the equal grid 1 → 0 (for computing wrong variants)."""
    grid = torch.linspace(1.0, 0.0, steps + 1)
    for t, t_next in zip(grid[:-1], grid[1:]):
        z = step(velocity, z, t.expand(z.shape[0]), t_next.expand(z.shape[0]))
    return z


_NOT_FINAL = "return only the final samples z_0 (shape like the noise), not the whole path"
