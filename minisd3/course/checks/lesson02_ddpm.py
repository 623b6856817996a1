"""Lesson 02 (DDPM): the checks of the forward noising (``q_sample``), the ε-prediction loss
(``eps_loss``) and one reverse step (``ancestral_step``)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ... import ddpm
from ...seeding import make_generator, randn
from ...validation import expand_time
from .core import Mistake, _as_number, _call, _check, _compare, _near, _Recorder

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
    ab = schedule.alpha_bars.double()[k][:, None]
    eps = (x_in.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()
    if abs(eps.mean().item()) > 0.1 or abs(eps.std().item() - 1) > 0.1:
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
    pred = 0.5 * x_in.double()
    value = float(loss.detach())
    expected = ((pred - eps) ** 2).mean().item()
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
    again = _call(eps_loss, "eps_loss", RecordingModel(), x0, schedule, generator=make_generator(7))
    if not _near(value, _as_number(again, "eps_loss")):
        raise Mistake("ignores the generator: two calls with the same seed gave different losses; draw k and ε "
                      "with generator=generator (torch.randint(…, generator=generator), "
                      "torch.randn(…, generator=generator))", "ignores_generator")


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
            raise Mistake("never called the model: the step needs the predicted noise ε̂(x_k, t)", "model_not_called")
        t_in = recorder.calls[0][1]
        if not t_in.is_floating_point() or t_in.max() > 1:
            raise Mistake("the model got the step index k; give it the continuous time t = schedule.model_time(k) "
                          "= (k + 1)/T for every sample", "model_got_step_index")
        expected_t = (k + 1) / schedule.num_steps
        if not torch.allclose(t_in.double(), torch.full_like(t_in.double(), expected_t), atol=1e-6):
            raise Mistake(f"the model got t = {float(t_in[0]):.4g} at k = {k}; it must see t = schedule.model_time(k) "
                          f"= (k + 1)/T = {expected_t:.4g}", "wrong_model_time")
        beta, alpha, ab = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        ab_prev = schedule.alpha_bars[k - 1] if k > 0 else torch.tensor(1.0)
        posterior_var = (1 - ab_prev) / (1 - ab) * beta
        eps_hat = eps_model(x, schedule.model_time(torch.full((shape[0],), k)))
        mean = (x - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()
        noise_term = posterior_var.sqrt() * noise
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
        ]
        if k == 0:
            mutations += [
                ("noise_at_last_step", "added noise at the last step: at k = 0 return the mean only", mean + beta.sqrt() * noise),
                ("noise_at_last_step", "added noise at the last step: at k = 0 return the mean only "
                 "(ᾱ_{k−1} wrapped round to ᾱ_{T−1})",
                 mean + ((1 - schedule.alpha_bars[-1]) / (1 - ab) * beta).sqrt() * noise),
            ]
        else:
            mutations += [
                ("missing_sqrt_noise", "missing square root on the noise: add √β̃_k·n (a standard deviation), not β̃_k·n",
                 mean + posterior_var * noise),
                ("noise_scale_beta", "noise scale σ_k = √β_k; this course uses the posterior variance "
                 "β̃_k = (1 − ᾱ_{k−1})/(1 − ᾱ_k)·β_k", mean + beta.sqrt() * noise),
                ("missing_noise", "forgot to add the noise σ_k·n (only the last step, k = 0, has none)", mean),
            ]
        _compare(got, ddpm.ancestral_step(eps_model, x, k, schedule, noise), mutations,
                 formula="1/√α_k · (x_k − β_k/√(1 − ᾱ_k)·ε̂) + √β̃_k·n",
                 shape_hint="return x_{k−1}, shaped like x")
