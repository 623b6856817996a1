"""Lesson 02 (DDPM): the checks of the forward noising (``q_sample``), the ε-prediction loss
(``eps_loss``) and one reverse step (``ancestral_step``)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ... import ddpm
from ...seeding import make_generator, randn
from ...validation import expand_time
from .core import Mistake, _as_number, _call, _check, _compare, _near, _Recorder, _require_generator

_PREVIOUS_STEP = ("used ᾱ_{k−1} where ᾱ_k belongs: step k uses ᾱ_k = α_0·α_1·…·α_k, the product up to and "
                  "including step k")

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
        ab_prev_wrapped = at(schedule.alpha_bars.roll(1))  # alpha_bars[k - 1]: k = 0 wraps round to ᾱ_{T−1}
        ab_prev_one = at(torch.cat([torch.ones(1), schedule.alpha_bars[:-1]]))  # ᾱ_{−1} = 1
        _compare(got, ddpm.q_sample(x0, k, eps, schedule), [
            ("missing_sqrt", "missing square roots: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε; "
             "you used ᾱ_k and 1 − ᾱ_k without the √",
             ab * x0 + (1 - ab) * eps),
            ("missing_sqrt_noise", "missing the square root on the noise scale: multiply ε by √(1 − ᾱ_k), its standard deviation",
             ab.sqrt() * x0 + (1 - ab) * eps),
            ("missing_sqrt_signal",
             "missing the square root on the signal scale: multiply x0 by √ᾱ_k", ab * x0 + (1 - ab).sqrt() * eps),
            ("time_reversed", "x0 and ε swapped (time running backwards): ᾱ_k is near 1 at k = 0, "
             "so x_0 must be almost the clean data",
             (1 - ab).sqrt() * x0 + ab.sqrt() * eps),
            ("alpha_not_cumulative", "used α_k = 1 − β_k of one step; q(x_k | x0) needs the cumulative product "
             "ᾱ_k = α_0·α_1·…·α_k "
             "(schedule.alpha_bars)", a.sqrt() * x0 + (1 - a).sqrt() * eps),
            ("used_beta", "used β_k where ᾱ_k belongs (schedule.alpha_bars)", b.sqrt() * x0 + (1 - b).sqrt() * eps),
            ("noise_sign_flipped", "the noise term has the wrong sign: add √(1 − ᾱ_k)·ε", ab.sqrt() * x0 - (1 - ab).sqrt() * eps),
            ("index_off_by_one", "index off by one: use ᾱ at index k (schedule.alpha_bars[k])",
             ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps),
            ("alpha_bar_previous_step", _PREVIOUS_STEP + " (schedule.alpha_bars[k])",
             ab_prev_wrapped.sqrt() * x0 + (1 - ab_prev_wrapped).sqrt() * eps),
            ("alpha_bar_previous_step", _PREVIOUS_STEP + " (schedule.alpha_bars[k])",
             ab_prev_one.sqrt() * x0 + (1 - ab_prev_one).sqrt() * eps),
            ("noise_scale_one_minus_sqrt", "the noise scale is √(1 − ᾱ_k), the square root of the noise variance, "
             "not 1 − √ᾱ_k", ab.sqrt() * x0 + (1 - ab.sqrt()) * eps),
        ], formula="√ᾱ_k·x0 + √(1 − ᾱ_k)·ε", shape_hint=_BROADCAST_HINT)


def _standard_normal(eps: torch.Tensor) -> bool:
    """Whether draws look like N(0, 1): finite, mean within 0.1 of 0 and standard deviation within 0.1 of 1."""
    return bool(torch.isfinite(eps).all()) and abs(eps.mean().item()) <= 0.1 and abs(eps.std().item() - 1) <= 0.1


def _loss_value(loss) -> float | None:
    """The learner's loss as a float when it is one number (a tensor or a Python number), else None."""
    if isinstance(loss, torch.Tensor):
        return float(loss.detach()) if loss.numel() == 1 else None
    return float(loss) if isinstance(loss, (int, float)) else None


@_check("eps_loss", "the loss is the mean of (ε̂(x_k, t_k) − ε)² over a uniform k with x_k from q(x_k | x0)")
def check_eps_loss(eps_loss: Callable) -> None:
    """Check ``eps_loss(model, x0, schedule, generator=None)`` like :func:`minisd3.ddpm.eps_loss`.

    The learner draws k and ε, so the check hands in a recording model and reads back what it was
    given: t must be (k + 1)/T for integer k spread over 0 … T − 1, the input must be
    √ᾱ_k·x0 + √(1 − ᾱ_k)·ε with ε standard normal, and the loss the mean of (ε̂ − ε)² for that ε.
    The same seed must give the same draws and another seed other draws (the generator is used).
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

    def run(seed: int):
        model = RecordingModel()
        return _call(eps_loss, "eps_loss", model, x0, schedule, generator=make_generator(seed)), model.recorder.calls

    loss, calls = run(7)
    if not calls:
        raise Mistake("never called the model: the loss compares the model's prediction ε̂(x_k, t) with ε",
                      "model_not_called")
    if len(calls) > 1:
        raise Mistake(f"called the model {len(calls)} times; call it once on the whole noised batch x_k",
                      "model_called_repeatedly")
    x_in, t_in = calls[0]
    if x_in.shape != x0.shape:
        raise Mistake(f"the model got x of shape {tuple(x_in.shape)}; give it the noised batch x_k, shaped like x0 "
                      f"{tuple(x0.shape)}", "model_input_wrong_shape")
    if not t_in.is_floating_point() or t_in.max() > 1:
        raise Mistake("the model got the step index k; give it the continuous time t = schedule.model_time(k) "
                      "= (k + 1)/T", "model_got_step_index")
    k_float = t_in.double() * steps - 1
    k = k_float.round().long()
    if torch.allclose(k_float, k.double(), atol=1e-2) and k.min() == -1:
        raise Mistake("the model got t = k/T; give it t = schedule.model_time(k) = (k + 1)/T, so that the last step "
                      "k = T − 1 is t = 1 (pure noise)", "time_k_over_T")
    if not torch.allclose(k_float, k.double(), atol=1e-2) or k.min() < 0:
        raise Mistake("the model's time is not t = (k + 1)/T for an integer step k: draw k with "
                      "torch.randint(0, T, …) and pass schedule.model_time(k)", "time_not_model_time")
    if k.unique().numel() == 1:
        raise Mistake("every sample got the same step k; draw one k per sample", "same_step_for_all")
    if k.min() > steps // 10 or k.max() < steps - steps // 10:
        raise Mistake(f"k ranged over {int(k.min())} … {int(k.max())}; "
                      "draw it uniformly from all steps 0 … T − 1", "steps_not_uniform")
    if torch.allclose(x_in, x0):
        raise Mistake("the model saw the clean data x0; noise it first: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε",
                      "clean_input")
    x_d, x0_d = x_in.double(), x0.double()
    pred = 0.5 * x_d
    value = _loss_value(loss)

    def noise_in_input(signal: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
        """The ε that x_k = signal·x0 + noise_scale·ε holds."""
        return (x_d - signal * x0_d) / noise_scale

    def at(values: torch.Tensor) -> torch.Tensor:
        return values.double()[k][:, None]

    ab, a = at(schedule.alpha_bars), at(schedule.alphas)
    eps = noise_in_input(ab.sqrt(), (1 - ab).sqrt())
    expected = ((pred - eps) ** 2).mean().item()
    if value is None or not _near(value, expected):
        ab_prev = at(schedule.alpha_bars.roll(1))  # alpha_bars[k - 1], as a learner indexes it
        other_inputs = [
            ("alpha_bar_previous_step", _PREVIOUS_STEP + "; noise x0 with schedule.alpha_bars[k] for the same k you "
             "turn into t", noise_in_input(ab_prev.sqrt(), (1 - ab_prev).sqrt())),
            ("alpha_not_cumulative", "noised with α_k = 1 − β_k of one step; q(x_k | x0) needs the cumulative product "
             "ᾱ_k (schedule.alpha_bars[k])", noise_in_input(a.sqrt(), (1 - a).sqrt())),
            ("missing_sqrt", "missing square roots in the noising: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε",
             noise_in_input(ab, 1 - ab)),
            ("time_reversed", "x0 and ε swapped in the noising: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε, almost the clean data "
             "at k = 0", noise_in_input((1 - ab).sqrt(), ab.sqrt())),
        ]
        for mistake, message, other_eps in other_inputs:
            if (value is not None and _standard_normal(other_eps)
                    and _near(value, ((pred - other_eps) ** 2).mean().item())):
                raise Mistake(message, mistake)
    if not _standard_normal(eps):
        if abs(eps.mean().item() - 0.5) < 0.05 and abs(eps.std().item() - 12**-0.5) < 0.03:
            raise Mistake("ε is uniform on [0, 1): draw the noise from N(0, I) with torch.randn(x0.shape, "
                          "generator=generator), not torch.rand", "noise_not_normal")
        raise Mistake("the model's input is not √ᾱ_k·x0 + √(1 − ᾱ_k)·ε with ε ~ N(0, I) at the k of "
                      "its time; noise x0 with q_sample(x0, k, eps, schedule) and the same k you turn into t",
                      "input_not_q_sample")
    if not isinstance(loss, torch.Tensor):
        raise Mistake("should return the loss as a tensor that carries its gradient (no .item()), "
                      f"got {type(loss).__name__}", "loss_not_tensor")
    if loss.numel() != 1:
        raise Mistake(f"should return one number, the mean over every element; got shape {tuple(loss.shape)}",
                      "loss_not_scalar")
    if not loss.requires_grad:
        raise Mistake("the loss carries no gradient: don't use .item(), .detach() or torch.no_grad() inside the loss",
                      "loss_detached")
    value = float(loss.detach())
    if not _near(value, expected):
        wrong = [
            ("target_x0", "regressed onto x0; ε-prediction's target is the noise ε that was added", ((pred - x0) ** 2).mean()),
            ("target_noised_input", "regressed onto the noised input x_k; the target is the noise ε that was added",
             ((pred - x_in) ** 2).mean()),
            ("sum_not_mean", "summed instead of averaged: take the mean over every element", ((pred - eps) ** 2).sum()),
            ("sum_over_coordinates", "summed over coordinates: take the mean over every element, as minisd3.ddpm.eps_loss does",
             ((pred - eps) ** 2).sum(1).mean()),
            ("missing_square", "missing the square: use (ε̂ − ε)², not |ε̂ − ε|", (pred - eps).abs().mean()),
            ("rmse", "took a square root (an RMSE); the loss is the mean squared error", ((pred - eps) ** 2).mean().sqrt()),
        ]
        for mistake, message, number in wrong:
            if _near(value, float(number)):
                raise Mistake(message, mistake)
        raise Mistake(f"the loss is {value:.5g}, but the mean of (ε̂ − ε)² for the ε your x_k contains is "
                      f"{expected:.5g}")
    again, calls_again = run(7)
    _, calls_other = run(8)

    def same_inputs(other: list) -> bool:
        return len(other) == 1 and all(torch.equal(u, v) for u, v in zip(calls[0], other[0]))

    _require_generator(same_inputs(calls_again) and _near(value, _as_number(again, "eps_loss")),
                       not same_inputs(calls_other), "k and ε",
                       "torch.randint(0, T, (B,), generator=generator) and torch.randn(x0.shape, generator=generator) "
                       "(torch.randn_like takes no generator)")


_ANCESTRAL_CASES = ((999, (24, 2)), (500, (24, 2)), (1, (6, 1, 8, 8)), (0, (24, 2)))
"""The steps k and the shapes of x ``check_ancestral_step`` tries, in order."""


def _float32_slack(schedule: ddpm.NoiseSchedule, k: int) -> float:
    """How far float32 rounding lets algebraically equal forms of the step at k drift apart, relative:
    the largest relative float32 error of 1 − ᾱ_j (j = k − 1, k) and of β_k written as 1 − ᾱ_k/ᾱ_{k−1}.

    In float32 1 − ᾱ_0 is not β_0 (off by about 1.7e-4 of it), so the posterior-mean form
    √ᾱ_{k−1}·β_k/(1 − ᾱ_k)·x̂0 + √α_k·(1 − ᾱ_{k−1})/(1 − ᾱ_k)·x_k differs from the ε form by that much.
    """
    exact = torch.cumprod(1 - schedule.betas.double(), dim=0)
    rounded = schedule.alpha_bars
    errors = [abs(float(1 - rounded[j]) - float(1 - exact[j])) / float(1 - exact[j]) for j in (k - 1, k) if j >= 0]
    if k > 0:
        beta = float(schedule.betas[k])
        errors.append(abs(float(1 - rounded[k] / rounded[k - 1]) - beta) / beta)
    return max(errors)


def _own_noise(got, want: torch.Tensor, noise: torch.Tensor, variance: float, rtol: float) -> bool:
    """Whether ``got`` is the right mean plus noise of the right size that is not the ``noise`` handed in."""
    if not (isinstance(got, torch.Tensor) and got.shape == want.shape and got.is_floating_point()):
        return False
    got = got.detach().double()
    if not torch.isfinite(got).all() or torch.allclose(got, want, rtol=rtol, atol=1e-5):
        return False
    drawn = (got - (want - variance**0.5 * noise.double())) / variance**0.5
    correlation = torch.corrcoef(torch.stack([drawn.flatten(), noise.double().flatten()]))[0, 1].item()
    return 0.5 < drawn.std().item() < 2 and abs(drawn.mean().item()) < 0.5 and abs(correlation) < 0.5


@_check("ancestral_step", "matches minisd3.ddpm.ancestral_step")
def check_ancestral_step(ancestral_step: Callable) -> None:
    """Check ``ancestral_step(model, x, k, schedule, noise)``: one reverse step x_k → x_{k−1},
    x_{k−1} = 1/√α_k · (x_k − β_k/√(1 − ᾱ_k) · ε̂) + √β̃_k·n, no noise at k = 0.

    Every algebraically equal form passes, the posterior-mean form with x̂0 included: the reference is
    computed in float64 and the tolerance allows for the float32 rounding of the schedule at k."""
    gen = make_generator(203)
    schedule = ddpm.linear_schedule()
    exact_schedule = ddpm.NoiseSchedule(schedule.betas.double())
    alpha_bars = schedule.alpha_bars

    def eps_model(x, t):
        return torch.tanh(x) * (0.5 + expand_time(t, x))

    for k, shape in _ANCESTRAL_CASES:
        x, noise = randn(shape, gen), randn(shape, gen)
        recorder = _Recorder(eps_model, "model", allow_integer_t=True)
        got = _call(ancestral_step, "ancestral_step", recorder, x, k, schedule, noise)
        if not recorder.calls:
            raise Mistake("never called the model: the step needs the predicted noise ε̂(x_k, t)", "model_not_called")
        t_in = recorder.calls[0][1]
        if not t_in.is_floating_point() or t_in.max() > 1:
            raise Mistake("the model got the step index k; give it the continuous time t = schedule.model_time(k) "
                          "= (k + 1)/T for every sample", "model_got_step_index")
        expected_t = (k + 1) / schedule.num_steps
        if not torch.allclose(t_in.double(), torch.full_like(t_in.double(), expected_t), atol=1e-6):
            raise Mistake(f"the model got t = {float(t_in[0]):.4g} at k = {k}; it must see t = schedule.model_time(k) "
                          f"= (k + 1)/T = {expected_t:.4g}", "wrong_model_time")
        beta, alpha, ab = schedule.betas[k], schedule.alphas[k], alpha_bars[k]
        ab_prev = alpha_bars[k - 1] if k > 0 else torch.tensor(1.0)
        posterior_var = (1 - ab_prev) / (1 - ab) * beta
        eps_hat = eps_model(x, schedule.model_time(torch.full((shape[0],), k)))
        mean = (x - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()
        noise_term = posterior_var.sqrt() * noise
        x0_hat = (x - (1 - ab).sqrt() * eps_hat) / ab.sqrt()

        def posterior_mean(x0_pred, ab_before=ab_prev):
            return ab_before.sqrt() * beta / (1 - ab) * x0_pred + alpha.sqrt() * (1 - ab_before) / (1 - ab) * x

        # alpha_bars[k - 1] for ᾱ_k (and alpha_bars[k - 2] for ᾱ_{k−1}), wrapping round as Python indexes
        ab_shifted = alpha_bars[k - 1]
        mean_shifted = (x - beta / (1 - ab_shifted).sqrt() * eps_hat) / alpha.sqrt()
        mutations = [
            ("sign_flipped", "sign flipped: subtract the predicted noise, x_k − β_k/√(1 − ᾱ_k)·ε̂",
             (x + beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt() + noise_term),
            ("missing_alpha_division", "forgot to divide by √α_k: x_{k−1} = 1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + σ_k·n",
             x - beta / (1 - ab).sqrt() * eps_hat + noise_term),
            ("missing_sqrt_alpha", "divided by α_k; divide by its square root √α_k",
             (x - beta / (1 - ab).sqrt() * eps_hat) / alpha + noise_term),
            ("divided_by_alpha_bar", "divided by √ᾱ_k; the reverse step divides by √α_k of this one step (schedule.alphas[k])",
             (x - beta / (1 - ab).sqrt() * eps_hat) / ab.sqrt() + noise_term),
            ("missing_sqrt_eps_coefficient", "missing square root in the noise coefficient: β_k/√(1 − ᾱ_k), not β_k/(1 − ᾱ_k)",
             (x - beta / (1 - ab) * eps_hat) / alpha.sqrt() + noise_term),
            ("eps_coefficient_sqrt_one_minus_alpha_bar", "the ε̂ coefficient of the step is β_k/√(1 − ᾱ_k); "
             "√(1 − ᾱ_k) is the one in x̂0 = (x_k − √(1 − ᾱ_k)·ε̂)/√ᾱ_k",
             (x - (1 - ab).sqrt() * eps_hat) / alpha.sqrt() + noise_term),
            ("clipped_x0", "clipped x̂0 to [−1, 1] (diffusers' clip_sample); this course's step does not clip: "
             "use x̂0 = (x_k − √(1 − ᾱ_k)·ε̂)/√ᾱ_k as it is", posterior_mean(x0_hat.clamp(-1, 1)) + noise_term),
        ]
        if k == 0:
            ab_wrapped = alpha_bars[-1]
            wrapped_noise = ((1 - ab_wrapped) / (1 - ab) * beta).sqrt() * noise
            mutations += [
                ("noise_at_last_step", "added noise at the last step: at k = 0 return the mean only", mean + beta.sqrt() * noise),
                ("noise_at_last_step", "added noise at the last step: at k = 0 return the mean only "
                 "(ᾱ_{k−1} wrapped round to ᾱ_{T−1})", mean + wrapped_noise),
                ("alpha_bar_prev_wrapped", "at k = 0 there is no ᾱ_{k−1}: schedule.alpha_bars[k − 1] wraps round to "
                 "ᾱ_{T−1}; take ᾱ_{−1} = 1 (so β̃_0 = 0: no noise at the last step)", posterior_mean(x0_hat, ab_wrapped)),
                ("alpha_bar_prev_wrapped", "at k = 0 there is no ᾱ_{k−1}: schedule.alpha_bars[k − 1] wraps round to "
                 "ᾱ_{T−1}; take ᾱ_{−1} = 1 and add no noise at the last step",
                 posterior_mean(x0_hat, ab_wrapped) + wrapped_noise),
                ("alpha_bar_previous_step", _PREVIOUS_STEP + " (schedule.alpha_bars[k]; at k = 0, alpha_bars[k − 1] "
                 "wraps round to ᾱ_{T−1})", mean_shifted),
            ]
        else:
            shifted_noise = ((1 - alpha_bars[k - 2]) / (1 - ab_shifted) * beta).sqrt() * noise
            mutations += [
                ("missing_sqrt_noise", "missing square root on the noise: add √β̃_k·n (a standard deviation), not β̃_k·n",
                 mean + posterior_var * noise),
                ("noise_scale_beta", "noise scale σ_k = √β_k; this course uses the posterior variance "
                 "β̃_k = (1 − ᾱ_{k−1})/(1 − ᾱ_k)·β_k", mean + beta.sqrt() * noise),
                ("missing_noise", "forgot to add the noise σ_k·n (only the last step, k = 0, has none)", mean),
                ("returned_x0_hat", "returned the clean-data estimate x̂0 = (x_k − √(1 − ᾱ_k)·ε̂)/√ᾱ_k; one step goes "
                 "only from x_k to x_{k−1}: 1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + √β̃_k·n", x0_hat),
                ("alpha_bar_previous_step", _PREVIOUS_STEP + " (schedule.alpha_bars[k] in β_k/√(1 − ᾱ_k), "
                 "schedule.alpha_bars[k − 1] for ᾱ_{k−1} in β̃_k)", mean_shifted + noise_term),
                ("alpha_bar_previous_step", _PREVIOUS_STEP + " (schedule.alpha_bars[k] in β_k/√(1 − ᾱ_k), "
                 "schedule.alpha_bars[k − 1] for ᾱ_{k−1} in β̃_k)", mean_shifted + shifted_noise),
            ]
        want = ddpm.ancestral_step(eps_model, x.double(), k, exact_schedule, noise.double())
        rtol = 1e-4 + 4 * _float32_slack(schedule, k)
        if k > 0 and _own_noise(got, want, noise, float(posterior_var), rtol):
            raise Mistake("added noise of your own (torch.randn_like?); add the noise you are given, √β̃_k·noise, "
                          "so that a seeded sampler is reproducible", "ignored_noise_argument")
        _compare(got, want, mutations, formula="1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + √β̃_k·n",
                 shape_hint="return x_{k−1}, shaped like x", rtol=rtol)


# ---------------------------------------------------------------------------------------------
# ddim_sample (a whole sampler)
# ---------------------------------------------------------------------------------------------

_DDIM_GRID = "ks = torch.linspace(T − 1, 0, steps).round().long() (minisd3.ddpm.ddim_timesteps)"


def _ddim_variant(model: Callable, x: torch.Tensor, schedule: ddpm.NoiseSchedule, steps: int, *, roots: bool = True,
                  cumulative: bool = True, sign: float = 1.0, next_alpha: str = "grid", last: str = "data") -> torch.Tensor:
    """DDIM (η = 0) with one knob turned (the defaults are :func:`minisd3.ddpm.ddim_sample`), for the wrong variants:
    ``next_alpha`` "grid" (ᾱ of the next DDIM step), "same" (ᾱ_k again) or "ddpm" (ᾱ_{k−1}, the next DDPM step);
    ``last`` "data" (the last step goes to ᾱ = 1, x̂0) or "k0" (it stays at ᾱ_0, so x at k = 0 is returned)."""
    ks = ddpm.ddim_timesteps(schedule, steps)
    ab_all = schedule.alpha_bars if cumulative else schedule.alphas
    x = x.double()
    for i in range(len(ks)):
        k = ks[i]
        ab = ab_all[k].double()
        eps = model(x, schedule.model_time(k.expand(x.shape[0]))).double()
        x0_hat = (x - sign * ((1 - ab).sqrt() if roots else 1 - ab) * eps) / (ab.sqrt() if roots else ab)
        if next_alpha == "same":
            ab_next = ab
        elif next_alpha == "ddpm":
            ab_next = ab_all[k - 1].double() if k > 0 else torch.ones((), dtype=torch.float64)
        else:
            final = torch.ones((), dtype=torch.float64) if last == "data" else ab_all[0].double()
            ab_next = ab_all[ks[i + 1]].double() if i + 1 < len(ks) else final
        x = (ab_next.sqrt() if roots else ab_next) * x0_hat + ((1 - ab_next).sqrt() if roots else 1 - ab_next) * eps
    return x


def _ddim_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth ε-model that depends on x and t, of moderate size (so that x̂0 = (x − √(1 − ᾱ)·ε̂)/√ᾱ stays finite)."""
    tt = expand_time(t, x)
    return 0.6 * torch.tanh(x) * (0.5 + tt) + 0.3 * tt - 0.1


@_check("ddim_sample", "matches minisd3.ddpm.ddim_sample: deterministic DDIM (η = 0) from k = T − 1 down to x̂0")
def check_ddim_sample(ddim_sample: Callable) -> None:
    """Check ``ddim_sample(model, x_T, schedule, steps)`` → the final x (shape of x_T) against
    :func:`minisd3.ddpm.ddim_sample`: where the model was evaluated (``steps`` calls at t = (k + 1)/T on the grid
    k = T − 1 … 0, read from a recording model), then the result (points and 8×8 images; schedules whose grids are
    whole numbers, so rounding, truncating or an integer range all give the same k)."""
    gen = make_generator(230)
    for kind, num_steps, steps, shape in (("linear", 100, 12, (16, 2)), ("cosine", 50, 8, (3, 1, 8, 8))):
        schedule = ddpm.make_schedule(kind, num_steps)
        x_T = randn(shape, gen)
        model = _Recorder(_ddim_field, "ε-model")
        got = _call(ddim_sample, "ddim_sample", model, x_T, schedule, steps)
        ks = ddpm.ddim_timesteps(schedule, steps)
        want_times = schedule.model_time(ks).tolist()
        times = model.times
        if len(times) != steps:
            if len(times) == steps - 1:
                raise Mistake(f"called the model {len(times)} times for steps = {steps}: the last step, from k = 0, "
                              "is missing — it goes to ᾱ = 1 and returns x̂0 (the clean estimate), not x at k = 0",
                              "stops_before_data")
            if len(times) == num_steps:
                raise Mistake(f"called the model {num_steps} times, once per DDPM step: DDIM skips steps, evaluating "
                              f"the model only at the {steps} indices {_DDIM_GRID}", "every_ddpm_step")
            raise Mistake(f"called the model {len(times)} times for steps = {steps}; DDIM evaluates it once per step, "
                          f"at the {steps} indices {_DDIM_GRID}", "wrong_evaluation_count")
        if times[-1] > times[0]:
            raise Mistake("time running backwards: DDIM starts from pure noise at k = T − 1 (t = 1) and steps down to "
                          "k = 0", "time_reversed")
        if all(abs(a - (b - 1 / num_steps)) < 1e-5 for a, b in zip(times, want_times)):
            raise Mistake("the model got t = k/T: the network time of step k is t = (k + 1)/T, "
                          "schedule.model_time(k)", "model_time_off_by_one")
        if not all(abs(a - b) < 1e-5 for a, b in zip(times, want_times)):
            seen = [round(v * num_steps) - 1 for v in times]
            raise Mistake(f"the model was evaluated at k = {seen[:5]}…; expected k = {ks.tolist()[:5]}… "
                          f"(equally spaced from T − 1 down to 0: {_DDIM_GRID})", "wrong_timesteps")

        def variant(**knobs) -> torch.Tensor:
            return _ddim_variant(_ddim_field, x_T, schedule, steps, **knobs)

        _compare(got, variant(), [
            ("missing_sqrt", "missing square roots: x̂0 = (x − √(1 − ᾱ_k)·ε̂)/√ᾱ_k and x_next = √ᾱ_next·x̂0 + "
             "√(1 − ᾱ_next)·ε̂", variant(roots=False)),
            ("alpha_not_cumulative", "used α_k = 1 − β_k of one step; DDIM needs the cumulative ᾱ_k "
             "(schedule.alpha_bars)", variant(cumulative=False)),
            ("eps_sign_flipped", "the noise is added, not removed: x̂0 = (x − √(1 − ᾱ_k)·ε̂)/√ᾱ_k", variant(sign=-1.0)),
            ("same_alpha_bar", "x_next uses ᾱ_k again, so nothing moves: re-noise x̂0 to the next DDIM step, "
             "x_next = √ᾱ_next·x̂0 + √(1 − ᾱ_next)·ε̂ with ᾱ_next = ᾱ at ks[i + 1] (1 after the last step)",
             variant(next_alpha="same")),
            ("next_ddpm_step", "x_next uses ᾱ_{k−1}, the next DDPM step; DDIM jumps to the next index of its own "
             "grid, ᾱ_next = ᾱ at ks[i + 1] (1 after the last step)", variant(next_alpha="ddpm")),
            ("stops_before_data", "the last step stays at ᾱ_0 and returns x at k = 0: after the last step ᾱ_next = 1, "
             "so it returns x̂0, the clean estimate", variant(last="k0")),
        ], formula="DDIM: x̂0 = (x − √(1 − ᾱ_k)·ε̂)/√ᾱ_k, x_next = √ᾱ_next·x̂0 + √(1 − ᾱ_next)·ε̂",
            shape_hint="return only the final samples (shape of x_T), not the whole path")
