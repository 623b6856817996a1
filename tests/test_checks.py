"""The practice checks: each passes the package's own implementation and names the mistake in
plausible wrong ones (the message must contain the keyword a learner needs)."""
from __future__ import annotations

import ast
import json
import math
import random
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minisd3 import blocks, ddpm, embeddings, guidance, multi_text, ode, patches, rectified_flow, timesteps
from minisd3.autoencoder import fit_latent_statistics
from minisd3.course import checks
from minisd3.course.checks import (
    CHECKS,
    LESSON_CHECKS,
    CheckResult,
    core,
    lesson01_flows,
    lesson02_ddpm,
    lesson03_rectified_flow,
    lesson05_embeddings,
    lesson06_dit,
    lesson07_mmdit,
    lesson08_latent_space,
    lesson09_scaling_up,
    lesson10_spelling,
    lesson11_data_preferences_scale,
)
from minisd3.course.results import parse_results, take_results
from minisd3.seeding import make_generator
from minisd3.training import ema_decay_at
from minisd3.validation import expand_time

REFERENCES = {
    "heun": ode.heun,
    "gaussian_velocity": lesson01_flows._gaussian_velocity_reference,
    "q_sample": ddpm.q_sample,
    "eps_loss": ddpm.eps_loss,
    "ancestral_step": ddpm.ancestral_step,
    "ddim_sample": ddpm.ddim_sample,
    "interpolate": rectified_flow.interpolate,
    "velocity_target": rectified_flow.velocity_target,
    "euler_sample": rectified_flow.sample,
    "straightness": rectified_flow.straightness,
    "reflow_loss": lesson03_rectified_flow._reflow_loss_reference,
    "sample_logit_normal": timesteps.sample_logit_normal,
    "shift_time": timesteps.shift_time,
    "timestep_embedding": embeddings.timestep_embedding,
    "sincos_2d_positions": embeddings.sincos_2d_positions,
    "patchify": patches.patchify,
    "unpatchify": patches.unpatchify,
    "modulate": blocks.modulate,
    "cfg_combine": guidance.cfg_combine,
    "guided_sample": lesson06_dit._guided_sample_reference,
    "joint_attention": lesson07_mmdit._joint_attention_reference,
    "rms_norm": lesson07_mmdit._rms_norm_reference,
    "joint_block_forward": lesson07_mmdit._joint_block_reference,
    "latent_scale_shift": lesson08_latent_space._latent_scale_shift_reference,
    "encode_for_diffusion": lesson08_latent_space._encode_for_diffusion_reference,
    "psnr": lesson08_latent_space._psnr_reference,
    "sample_and_kl": lesson08_latent_space._sample_and_kl_reference,
    "latent_tokens": lesson08_latent_space._latent_tokens_reference,
    "ema_over_steps": lesson09_scaling_up._ema_over_steps_reference,
    "learning_rate": lesson09_scaling_up._learning_rate_reference,
    "batch_indices": lesson09_scaling_up._batch_indices_reference,
    "rank_slice": lesson09_scaling_up._rank_slice_reference,
    "mfu": lesson09_scaling_up._mfu_reference,
    "char_tokenize": lesson10_spelling._char_tokenize_reference,
    "encoder_drop_mask": multi_text.encoder_drop_mask,
    "build_context": lesson10_spelling._build_context_reference,
    "mix_captions": lesson11_data_preferences_scale._mix_captions_reference,
    "validation_loss": lesson11_data_preferences_scale._validation_loss_reference,
    "dpo_objective": lesson11_data_preferences_scale._dpo_objective_reference,
    "dpo_errors": lesson11_data_preferences_scale._dpo_errors_reference,
}


def run_check(name, fn, capsys) -> CheckResult:
    result = CHECKS[name](fn)
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == result.line
    return result


# ----------------------------------------------------------------------------- registry and protocol

def test_every_lesson_check_exists_and_has_a_reference():
    listed = [name for names in LESSON_CHECKS.values() for name in names]
    assert sorted(listed) == sorted(CHECKS) == sorted(REFERENCES)
    for name, check in CHECKS.items():
        assert check.__name__ == f"check_{name}" and getattr(checks, check.__name__) is check
        assert check.__name__ in checks.__all__


def test_each_check_lives_in_its_lessons_module():
    for lesson, names in LESSON_CHECKS.items():
        for name in names:
            module = CHECKS[name].__module__
            assert module.startswith(f"minisd3.course.checks.lesson{lesson[:2]}_"), (name, module)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    result = run_check(name, REFERENCES[name], capsys)
    assert result.passed, result.message
    assert result.mistake is None
    assert result.line == f"[check] {name}: PASS"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_unfinished_stub_propagates(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("implement me")

    with pytest.raises(NotImplementedError, match="implement me"):
        CHECKS[name](stub)
    assert capsys.readouterr().out == ""


def test_failure_line_and_other_errors(capsys):
    def crashes(x0, k, eps, schedule):
        raise KeyError("oops")

    result = run_check("q_sample", crashes, capsys)
    assert not result.passed
    assert result.line.startswith("[check] q_sample: FAIL — ")
    assert "raised KeyError" in result.message
    assert not run_check("q_sample", 3.0, capsys).passed


def test_in_place_change_is_reported(capsys):
    def in_place(x0, eps):
        eps -= x0
        return eps

    assert "in place" in run_check("velocity_target", in_place, capsys).message


def assert_rejects(name, fn, keyword, capsys):
    result = run_check(name, fn, capsys)
    assert not result.passed
    assert keyword.lower() in result.message.lower(), result.message
    assert result.mistake is None or re.fullmatch(r"[a-z][a-z0-9_]*", result.mistake), result.mistake


# ----------------------------------------------------------------------------- lesson 01

def heun_euler(velocity, z, steps):
    times = torch.linspace(1, 0, steps + 1)
    for t, t_next in zip(times[:-1], times[1:]):
        z = z + (t_next - t) * velocity(z, t.expand(z.shape[0]))
    return z


def heun_variant(corrector_time_is_start=False, half=0.5, reverse=False):
    def heun(velocity, z, steps):
        times = torch.linspace(0, 1, steps + 1) if reverse else torch.linspace(1, 0, steps + 1)
        batch = z.shape[0]
        for t, t_next in zip(times[:-1], times[1:]):
            h = t_next - t
            v = velocity(z, t.expand(batch))
            v2 = velocity(z + h * v, (t if corrector_time_is_start else t_next).expand(batch))
            z = z + h * half * (v + v2)
        return z
    return heun


HEUN_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (heun_euler, "Euler"),
    (heun_variant(half=1.0), "½"),
    (heun_variant(corrector_time_is_start=True), "end of the step"),
    (heun_variant(reverse=True), "backwards"),
    (lambda velocity, z, steps: ode.heun(velocity, z, steps, return_trajectory=True).states, "final"),
    (lambda velocity, z, steps: ode.heun(lambda zz, t: velocity(zz, float(t[0])), z, steps), "shape"),
]


@pytest.mark.parametrize("fn, keyword", HEUN_SLIPS)
def test_heun_mistakes(fn, keyword, capsys):
    assert_rejects("heun", fn, keyword, capsys)


def gaussian_variant(sign=1.0, swap=False, drop_mean=False, squares=True):
    def velocity(z, t, mean, std):
        t = (1 - t if swap else t)[:, None]
        var = (1 - t) ** 2 * std**2 + t**2 if squares else (1 - t) * std**2 + t
        v = (t - (1 - t) * std**2) / var * (z - (1 - t) * mean) - (0 if drop_mean else mean)
        return sign * v
    return velocity


GAUSSIAN_VELOCITY_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (gaussian_variant(sign=-1.0), "sign"),
    (gaussian_variant(swap=True), "swapped"),
    (gaussian_variant(drop_mean=True), "− μ"),
    (gaussian_variant(squares=False), "squared"),
    (lambda z, t, mean, std: gaussian_variant()(z, t, mean, std)[:1], "shape"),
]


@pytest.mark.parametrize("fn, keyword", GAUSSIAN_VELOCITY_SLIPS)
def test_gaussian_velocity_mistakes(fn, keyword, capsys):
    assert_rejects("gaussian_velocity", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 02

def q_sample_variant(root=True, swap=False, use_alphas=False, broadcast=True):
    def q_sample(x0, k, eps, schedule):
        a = (schedule.alphas if use_alphas else schedule.alpha_bars)[k]
        a = a.reshape(-1, *[1] * (x0.ndim - 1)) if broadcast else a[:, None]
        signal, noise = (a.sqrt(), (1 - a).sqrt()) if root else (a, 1 - a)
        return noise * x0 + signal * eps if swap else signal * x0 + noise * eps
    return q_sample


Q_SAMPLE_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (q_sample_variant(root=False), "square root"),
    (q_sample_variant(swap=True), "swapped"),
    (q_sample_variant(use_alphas=True), "cumulative"),
    (q_sample_variant(broadcast=False), "reshape"),
]


@pytest.mark.parametrize("fn, keyword", Q_SAMPLE_SLIPS)
def test_q_sample_mistakes(fn, keyword, capsys):
    assert_rejects("q_sample", fn, keyword, capsys)


def eps_loss_variant(target="eps", time="t", noised=True, reduce="mean", use_generator=True):
    def eps_loss(model, x0, schedule, generator=None):
        gen = generator if use_generator else None
        k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_k = ddpm.q_sample(x0, k, eps, schedule) if noised else x0
        t = {"t": schedule.model_time(k), "k": k, "k/T": k.float() / schedule.num_steps}[time]
        pred = model(x_k, t)
        err = (pred - (eps if target == "eps" else x0)) ** 2
        return err.mean() if reduce == "mean" else err.sum()
    return eps_loss


EPS_LOSS_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (eps_loss_variant(target="x0"), "target"),
    (eps_loss_variant(time="k"), "model_time"),
    (eps_loss_variant(noised=False), "clean"),
    (eps_loss_variant(reduce="sum"), "mean"),
    (eps_loss_variant(use_generator=False), "generator"),
    (lambda model, x0, schedule, generator=None: ddpm.eps_loss(model, x0, schedule, generator).item(), "gradient"),
]


@pytest.mark.parametrize("fn, keyword", EPS_LOSS_SLIPS)
def test_eps_loss_mistakes(fn, keyword, capsys):
    assert_rejects("eps_loss", fn, keyword, capsys)


def ancestral_variant(sign=-1.0, noise_at_zero=False, root_sigma=True, pass_k=False, divide=True):
    def ancestral_step(model, x, k, schedule, noise):
        beta, alpha, ab = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        t = torch.full((x.shape[0],), k) if pass_k else schedule.model_time(torch.full((x.shape[0],), k))
        mean = x + sign * beta / (1 - ab).sqrt() * model(x, t)
        mean = mean / alpha.sqrt() if divide else mean
        if k == 0 and not noise_at_zero:
            return mean
        var = (1 - schedule.alpha_bars[k - 1]) / (1 - ab) * beta
        return mean + (var.sqrt() if root_sigma else var) * noise
    return ancestral_step


ANCESTRAL_STEP_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (ancestral_variant(sign=1.0), "sign"),
    (ancestral_variant(noise_at_zero=True), "k = 0"),
    (ancestral_variant(root_sigma=False), "square root"),
    (ancestral_variant(pass_k=True), "model_time"),
    (ancestral_variant(divide=False), "√α_k"),
]


@pytest.mark.parametrize("fn, keyword", ANCESTRAL_STEP_SLIPS)
def test_ancestral_step_mistakes(fn, keyword, capsys):
    assert_rejects("ancestral_step", fn, keyword, capsys)


def ddim_variant(grid="linspace", time="model_time", roots=True, cumulative=True, sign=1.0, next_alpha="grid",
                 last="data", reverse=False, trajectory=False, form="x0_hat"):
    """A DDIM (η = 0) sampler as a learner writes it, with one knob turned (the defaults, and ``grid="arange"`` or
    ``form="ratio"``, are right)."""
    def ddim_sample(model, x_T, schedule, steps):
        T = schedule.num_steps
        if grid == "arange":
            ks = list(range(T - 1, -1, -((T - 1) // (steps - 1))))
        elif grid == "every":
            ks = list(range(T - 1, -1, -1))
        elif grid == "stride":
            ks = list(range(T - 1, -1, -(T // steps)))[:steps]
        else:
            ks = torch.linspace(T - 1, 0, steps).round().long().tolist()
        if reverse:
            ks = ks[::-1]
        ab_all = schedule.alpha_bars if cumulative else schedule.alphas
        x, path = x_T, [x_T]
        for i, k in enumerate(ks if last != "stop" else ks[:-1]):
            t = {"model_time": (k + 1) / T, "k_over_T": k / T}.get(time, 0.0)
            eps = model(x, torch.full((x.shape[0],), float(t)) if time != "int" else torch.full((x.shape[0],), k))
            ab = ab_all[k]
            if next_alpha == "same":
                ab_next = ab
            elif next_alpha == "ddpm":
                ab_next = ab_all[k - 1] if k > 0 else torch.tensor(1.0)
            else:
                ab_next = ab_all[ks[i + 1]] if i + 1 < len(ks) else (torch.tensor(1.0) if last == "data" else ab_all[0])
            if form == "ratio":  # x_next = √(ᾱ_next/ᾱ)·x + (√(1 − ᾱ_next) − √(ᾱ_next(1 − ᾱ)/ᾱ))·ε̂
                x = (ab_next / ab).sqrt() * x + ((1 - ab_next).sqrt() - (ab_next * (1 - ab) / ab).sqrt()) * eps
            else:
                root = (lambda a: a.sqrt()) if roots else (lambda a: a)
                x0_hat = (x - sign * root(1 - ab) * eps) / root(ab)
                x = root(ab_next) * x0_hat + root(1 - ab_next) * eps
            path.append(x)
        return torch.stack(path) if trajectory else x
    return ddim_sample


DDIM_SAMPLE_WRONG = [
    ("square roots missing", ddim_variant(roots=False), "missing_sqrt", "square roots"),
    ("α instead of ᾱ", ddim_variant(cumulative=False), "alpha_not_cumulative", "cumulative"),
    ("noise added, not removed", ddim_variant(sign=-1.0), "eps_sign_flipped", "removed"),
    ("re-noised to ᾱ_k again", ddim_variant(next_alpha="same"), "same_alpha_bar", "next DDIM step"),
    ("next DDPM step ᾱ_{k−1}", ddim_variant(next_alpha="ddpm"), "next_ddpm_step", "ks[i + 1]"),
    ("last step stays at ᾱ_0", ddim_variant(last="k0"), "stops_before_data", "x̂0"),
    ("last step missing", ddim_variant(last="stop"), "stops_before_data", "x̂0"),
    ("time reversed", ddim_variant(reverse=True), "time_reversed", "backwards"),
    ("model time k/T", ddim_variant(time="k_over_T"), "model_time_off_by_one", "(k + 1)/T"),
    ("integer k to the model", ddim_variant(time="int"), "integer_time", "integer"),
    ("every DDPM step", ddim_variant(grid="every"), "every_ddpm_step", "skips"),
    ("stride T // steps, not reaching 0", ddim_variant(grid="stride"), "wrong_timesteps", "T − 1 down to 0"),
    ("whole path returned", ddim_variant(trajectory=True), "returned_trajectory", "final samples"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", DDIM_SAMPLE_WRONG, ids=[w[0] for w in DDIM_SAMPLE_WRONG])
def test_ddim_sample_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("ddim_sample", fn, keyword, capsys)
    assert run_check("ddim_sample", fn, capsys).mistake == mistake


@pytest.mark.parametrize("knobs", [{"grid": "arange"}, {"form": "ratio"}, {}])
def test_ddim_sample_accepts_other_correct_forms(knobs, capsys):
    assert run_check("ddim_sample", ddim_variant(**knobs), capsys).passed


# ----------------------------------------------------------------------------- lesson 03

def interpolate_variant(swap=False, roots=False, broadcast=True):
    def interpolate(x0, eps, t):
        if isinstance(t, torch.Tensor):
            t = expand_time(t, x0) if broadcast else t[:, None]
        t = torch.as_tensor(t)
        a, b = (t, 1 - t) if swap else (1 - t, t)
        return (a.sqrt() * x0 + b.sqrt() * eps) if roots else a * x0 + b * eps
    return interpolate


INTERPOLATE_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (interpolate_variant(swap=True), "swapped"),
    (interpolate_variant(roots=True), "square roots"),
    (interpolate_variant(broadcast=False), "broadcast"),
    (lambda x0, eps, t: (1 - expand_time(t, x0)) * x0 + expand_time(t, x0) * eps, "float"),
    (lambda x0, eps, t: x0 + expand_time(torch.as_tensor(t), x0) * eps, "fade out"),
    (lambda x0, eps, t: (1 - expand_time(torch.as_tensor(t), x0)) * (x0 + eps), "not in one of the usual ways"),
]


@pytest.mark.parametrize("fn, keyword", INTERPOLATE_SLIPS)
def test_interpolate_mistakes(fn, keyword, capsys):
    assert_rejects("interpolate", fn, keyword, capsys)


VELOCITY_TARGET_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (lambda x0, eps: x0 - eps, "sign"),
    (lambda x0, eps: eps, "subtract x0"),
    (lambda x0, eps: eps + x0, "difference"),
    (lambda x0, eps: (eps - x0).mean(), "one number"),
    (lambda x0, eps: -eps - x0, "not in one of the usual ways"),
]


@pytest.mark.parametrize("fn, keyword", VELOCITY_TARGET_SLIPS)
def test_velocity_target_mistakes(fn, keyword, capsys):
    assert_rejects("velocity_target", fn, keyword, capsys)


def euler_variant(sign=-1.0, step_size=True, at_end=False, reverse=False, scalar_t=False):
    def euler_sample(model, noise, steps):
        z, dt = noise, 1.0 / steps
        times = torch.linspace(0, 1, steps + 1) if reverse else torch.linspace(1, 0, steps + 1)
        for t, t_next in zip(times[:-1], times[1:]):
            when = t_next if at_end else t
            v = model(z, when if scalar_t else when.expand(z.shape[0]))
            z = z + sign * (dt if step_size else 1.0) * v
        return z
    return euler_sample


EULER_SAMPLE_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (euler_variant(sign=1.0), "sign"),
    (euler_variant(step_size=False), "step size"),
    (euler_variant(at_end=True), "start of the step"),
    (euler_variant(reverse=True), "backwards"),
    (euler_variant(scalar_t=True), "shape"),
    (lambda model, noise, steps: rectified_flow.sample(model, noise, steps, return_trajectory=True).states, "final"),
]


@pytest.mark.parametrize("fn, keyword", EULER_SAMPLE_SLIPS)
def test_euler_sample_mistakes(fn, keyword, capsys):
    assert_rejects("euler_sample", fn, keyword, capsys)


def straightness_variant(weight="abs", flip=False, reduce="sum", square=True):
    def straightness(trajectory):
        displacement = trajectory.end - trajectory.start if flip else trajectory.start - trajectory.end
        diff = (displacement[None] - trajectory.velocities).flatten(2)
        per_step = (diff**2).sum(2) if reduce == "sum" else (diff**2).mean(2)
        per_step = per_step if square else diff.norm(dim=2)
        h = trajectory.times[1:] - trajectory.times[:-1]
        weights = {"abs": h.abs(), "none": torch.ones_like(h), "signed": h}[weight]
        return float((weights * per_step.mean(1)).sum())
    return straightness


STRAIGHTNESS_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (straightness_variant(weight="none"), "step size"),
    (straightness_variant(weight="signed"), "|h_i|"),
    (straightness_variant(flip=True), "start − end"),
    (straightness_variant(reduce="mean"), "sums"),
    (straightness_variant(square=False), "square"),
    (lambda trajectory: torch.zeros(3), "one number"),
]


@pytest.mark.parametrize("fn, keyword", STRAIGHTNESS_SLIPS)
def test_straightness_mistakes(fn, keyword, capsys):
    assert_rejects("straightness", fn, keyword, capsys)


def reflow_variant(noise="paired", time="uniform", order="right", target="velocity", reduce="mean", sampler="euler",
                   grad=True, use_generator=True, teacher_target=False, call_student=True):
    """Reflow's loss as a learner writes it, with one knob turned (the defaults, ``sampler="package"`` and
    ``time="bernoulli_free"`` are right)."""
    def reflow_loss(teacher, student, noise_in, steps, generator=None):
        g = generator if use_generator else None
        batch = noise_in.shape[0]
        if sampler == "package":
            x0_hat = rectified_flow.sample(teacher, noise_in, steps)
        elif sampler == "heun":
            x0_hat = rectified_flow.sample(teacher, noise_in, steps, method="heun")
        else:
            z = noise_in
            with torch.no_grad():
                for i in range(steps):
                    tt = torch.full((batch,), 1 - i / steps)
                    z = z + (1 / steps if sampler == "forward" else -1 / steps) * teacher(z, tt)
            x0_hat = z
        if time == "one":
            t = torch.rand((), generator=g).expand(batch)
        elif time == "logit_normal":
            t = torch.sigmoid(torch.randn(batch, generator=g))
        elif time == "bernoulli_free":
            t = 1 - torch.rand(batch, generator=g)
        else:
            t = torch.rand(batch, generator=g)
        eps = torch.randn(noise_in.shape, generator=g) if noise == "fresh" else noise_in
        tb = t[:, None]
        z_t = tb * x0_hat + (1 - tb) * eps if order == "reversed" else (1 - tb) * x0_hat + tb * eps
        v = {"velocity": eps - x0_hat, "flipped": x0_hat - eps, "eps": eps}[target]
        if teacher_target:
            v = teacher(z_t, t)
        if not call_student:
            return ((teacher(z_t, t) - v) ** 2).mean()
        err = (student(z_t, t) - v) ** 2
        out = {"mean": err.mean(), "sum": err.sum(), "per_pair": err.mean(1), "abs": (err.sqrt()).mean()}[reduce]
        return out if grad else out.item()
    return reflow_loss


REFLOW_LOSS_WRONG = [
    ("fresh noise in z_t", reflow_variant(noise="fresh"), "fresh_noise", "own ε"),
    ("x̂0 and ε swapped", reflow_variant(order="reversed"), "time_reversed", "swapped"),
    ("target sign flipped", reflow_variant(target="flipped"), "target_sign_flipped", "sign"),
    ("target ε", reflow_variant(target="eps"), "epsilon_target", "ε − x̂0"),
    ("teacher's velocity as the target", reflow_variant(teacher_target=True), "teacher_as_target", "straight"),
    ("teacher used as the student", reflow_variant(call_student=False), "student_not_called", "student"),
    ("summed, not averaged", reflow_variant(reduce="sum"), "sum_not_mean", "mean"),
    ("one loss per pair", reflow_variant(reduce="per_pair"), "not_averaged", "mean"),
    ("|error|, not squared", reflow_variant(reduce="abs"), "missing_square", "square"),
    ("a float, no gradient", reflow_variant(grad=False), "no_gradient", "gradient"),
    ("one t for the batch", reflow_variant(time="one"), "one_time_for_batch", "one time per pair"),
    ("logit-normal t", reflow_variant(time="logit_normal"), "time_not_uniform", "U(0, 1)"),
    ("global RNG", reflow_variant(use_generator=False), "ignores_generator", "generator"),
    ("teacher integrated forwards", reflow_variant(sampler="forward"), None, "not z_t"),
    ("Heun for the pairs", reflow_variant(sampler="heun"), "wrong_evaluation_count", "Euler"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", REFLOW_LOSS_WRONG, ids=[w[0] for w in REFLOW_LOSS_WRONG])
def test_reflow_loss_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("reflow_loss", fn, keyword, capsys)
    assert run_check("reflow_loss", fn, capsys).mistake == mistake


@pytest.mark.parametrize("knobs", [{"sampler": "package"}, {"time": "bernoulli_free"}, {}])
def test_reflow_loss_accepts_other_correct_forms(knobs, capsys):
    assert run_check("reflow_loss", reflow_variant(**knobs), capsys).passed


# ----------------------------------------------------------------------------- lesson 04

def logit_normal_variant(sigmoid=True, scale="s", uniform=False, sign=1.0, use_generator=True):
    def sample_logit_normal(n, m=0.0, s=1.0, generator=None, device=None):
        gen = generator if use_generator else None
        draw = torch.rand(n, generator=gen) * math.sqrt(12) - math.sqrt(3) if uniform else torch.randn(n, generator=gen)
        x = sign * m + {"s": s, "s2": s**2}[scale] * draw
        return torch.sigmoid(x) if sigmoid else x
    return sample_logit_normal


SAMPLE_LOGIT_NORMAL_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (logit_normal_variant(sigmoid=False), "sigmoid"),
    (logit_normal_variant(scale="s2"), "s²"),
    (logit_normal_variant(uniform=True), "N(0, 1)"),
    (logit_normal_variant(sign=-1.0), "sign"),
    (logit_normal_variant(use_generator=False), "generator"),
    (lambda n, m=0.0, s=1.0, generator=None, device=None: torch.sigmoid(m + s * torch.randn(n, 1, generator=generator)),
     "shape"),
]


@pytest.mark.parametrize("fn, keyword", SAMPLE_LOGIT_NORMAL_SLIPS)
def test_sample_logit_normal_mistakes(fn, keyword, capsys):
    assert_rejects("sample_logit_normal", fn, keyword, capsys)


SHIFT_TIME_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (lambda t, alpha: t / (alpha - (alpha - 1) * t), "wrong way"),
    (lambda t, alpha: timesteps.shift_time(timesteps.shift_time(t, alpha), alpha), "twice"),
    (lambda t, alpha: alpha * t, "denominator"),
    (lambda t, alpha: alpha * t / (1 + alpha * t), "1 + (α − 1)·t"),
    (lambda t, alpha: alpha * t / (1 - (alpha - 1) * t), "not 1 − (α − 1)·t"),
    (lambda t, alpha: t**alpha, "not in one of the usual ways"),
    (lambda t, alpha: (alpha * t).clamp(max=1.0), "not in one of the usual ways"),
]


@pytest.mark.parametrize("fn, keyword", SHIFT_TIME_SLIPS)
def test_shift_time_mistakes(fn, keyword, capsys):
    assert_rejects("shift_time", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 05

def embedding_variant(scale=1000.0, sin_first=False, divisor=None, sign=-1.0, fixed_half=None, interleave=False):
    def timestep_embedding(t, dim=256):
        half = fixed_half or dim // 2
        freqs = torch.exp(sign * math.log(10000) * torch.arange(half) / (divisor(half) if divisor else half))
        angles = scale * t[:, None] * freqs[None]
        parts = [torch.sin(angles), torch.cos(angles)] if sin_first else [torch.cos(angles), torch.sin(angles)]
        return torch.stack(parts, dim=2).flatten(1) if interleave else torch.cat(parts, dim=1)
    return timestep_embedding


TIMESTEP_EMBEDDING_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (embedding_variant(scale=1.0), "not scaled by 1000"),
    (embedding_variant(sin_first=True), "swapped"),
    (embedding_variant(divisor=lambda half: half - 1), "half − 1"),
    (embedding_variant(sign=1.0), "minus"),
    (embedding_variant(interleave=True), "interleaved"),
    (embedding_variant(fixed_half=128), "wrong shape"),
    (lambda t, dim=256: embeddings.timestep_embedding(t, dim).T, "wrong shape"),
]


@pytest.mark.parametrize("fn, keyword", TIMESTEP_EMBEDDING_SLIPS)
def test_timestep_embedding_mistakes(fn, keyword, capsys):
    assert_rejects("timestep_embedding", fn, keyword, capsys)


def positions_variant(**knobs):
    return lambda dim, rows, cols: lesson05_embeddings._positions_2d(dim, rows, cols, **knobs).float()


SINCOS_2D_POSITIONS_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (positions_variant(columns_first=False), "row (y) half comes first"),
    (positions_variant(row_major=False), "column-major"),
    (positions_variant(sin_first=False), "cosines before sines"),
    (lambda dim, rows, cols: lesson05_embeddings._positions_2d(dim, rows, cols, divisor=dim // 2).float(), "divide i by k"),
    (lambda dim, rows, cols: embeddings.sincos_2d_positions(dim, rows, cols).T, "wrong shape"),
    (lambda dim, rows, cols: embeddings.sincos_2d_positions(dim, rows, cols) * 2, "not in one of the usual ways"),
]


@pytest.mark.parametrize("fn, keyword", SINCOS_2D_POSITIONS_SLIPS)
def test_sincos_2d_positions_mistakes(fn, keyword, capsys):
    assert_rejects("sincos_2d_positions", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 06

def patchify_variant(pattern):
    return lambda x, p: rearrange(x, f"b c (h p) (w q) -> {pattern}", p=p, q=p)


PATCHIFY_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (patchify_variant("b (w h) (p q c)"), "column-major"),
    (patchify_variant("b (h w) (c p q)"), "channel-first"),
    (lambda x, p: rearrange(x, "b c (p h) (q w) -> b (h w) (p q c)", p=p, q=p), "pixels p apart"),
    (patchify_variant("b (h w) (q p c)"), "column by column"),
    (lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]), "plain reshape"),
    (lambda x, p: patches.patchify(x, p).transpose(1, 2), "wrong shape"),
]


@pytest.mark.parametrize("fn, keyword", PATCHIFY_SLIPS)
def test_patchify_mistakes(fn, keyword, capsys):
    assert_rejects("patchify", fn, keyword, capsys)


def unpatchify_variant(pattern, swap_grid=False):
    def unpatchify(tokens, p, grid):
        h, w = grid[::-1] if swap_grid else grid
        return rearrange(tokens, f"{pattern} -> b c (h p) (w q)", h=h, w=w, p=p, q=p)
    return unpatchify


UNPATCHIFY_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (unpatchify_variant("b (w h) (p q c)"), "column-major"),
    (unpatchify_variant("b (h w) (c p q)"), "channel-first"),
    (lambda tokens, p, grid: rearrange(tokens, "b (h w) (p q c) -> b c (p h) (q w)", h=grid[0], w=grid[1], p=p, q=p),
     "pixels p apart"),
    (unpatchify_variant("b (h w) (q p c)"), "column by column"),
    (unpatchify_variant("b (h w) (p q c)", swap_grid=True), "first entry of grid"),
    (lambda tokens, p, grid: tokens.reshape(tokens.shape[0], -1, grid[0] * p, grid[1] * p), "not the inverse"),
]


@pytest.mark.parametrize("fn, keyword", UNPATCHIFY_SLIPS)
def test_unpatchify_mistakes(fn, keyword, capsys):
    assert_rejects("unpatchify", fn, keyword, capsys)


MODULATE_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (lambda x, shift, scale: x * scale[:, None] + shift[:, None], "1 +"),
    (lambda x, shift, scale: x * (1 + shift[:, None]) + scale[:, None], "swapped"),
    (lambda x, shift, scale: (x + shift[:, None]) * (1 + scale[:, None]), "before scaling"),
    (lambda x, shift, scale: (x + shift[:, None]) * scale[:, None], "not in one of the usual ways"),
    (lambda x, shift, scale: x * (1 + scale) + shift, "broadcast"),
    (lambda x, shift, scale: x * (1 + scale[None]) + shift[None] if x.shape[0] == x.shape[1]
     else blocks.modulate(x, shift, scale), "no broadcasting over tokens"),
]


@pytest.mark.parametrize("fn, keyword", MODULATE_SLIPS)
def test_modulate_mistakes(fn, keyword, capsys):
    assert_rejects("modulate", fn, keyword, capsys)


CFG_COMBINE_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (lambda v_u, v_c, w: v_u + w * v_c, "v_cond only"),
    (lambda v_u, v_c, w: w * v_c, "v_cond only"),
    (lambda v_u, v_c, w: w * v_c - (1 - w) * v_u, "v_cond only"),
    (lambda v_u, v_c, w: v_u - w * (v_c - v_u), "sign"),
    (lambda v_u, v_c, w: v_c + w * (v_u - v_c), "swapped"),
    (lambda v_u, v_c, w: v_c + w * (v_c - v_u), "w + 1"),
    (lambda v_u, v_c, w: w * (v_c - v_u), "add v_uncond back"),
    (lambda v_u, v_c, w: (v_u + v_c) / 2, "not in one of the usual ways"),
]


@pytest.mark.parametrize("fn, keyword", CFG_COMBINE_SLIPS)
def test_cfg_combine_mistakes(fn, keyword, capsys):
    assert_rejects("cfg_combine", fn, keyword, capsys)


def guided_variant(combine="right", null="null", sign=-1.0, at_end=False, step_size=True, reverse=False, calls="two",
                   trajectory=False, pass_labels=True, scalar_t=False):
    """A class-conditional Euler sampler with classifier-free guidance as a learner writes it, one knob turned (the
    defaults and ``calls="batched"`` are right)."""
    def guided_sample(model, noise, labels, null_label, w, steps):
        null_labels = {"null": torch.full_like(labels, null_label), "zero": torch.zeros_like(labels),
                       "cond": labels}[null]
        times = torch.linspace(0, 1, steps + 1) if reverse else torch.linspace(1, 0, steps + 1)
        z, path = noise, [noise]
        for t, t_next in zip(times[:-1], times[1:]):
            when = t_next if at_end else t
            tt = when if scalar_t else when.expand(z.shape[0])
            if calls == "batched":
                both = model(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([null_labels, labels]))
                v_u, v_c = both.chunk(2)
            elif not pass_labels:
                v_u, v_c = model(z, tt), model(z, tt)
            else:
                v_u, v_c = model(z, tt, null_labels), model(z, tt, labels)
            v = {"right": v_u + w * (v_c - v_u), "swapped": v_c + w * (v_u - v_c), "cond": v_c,
                 "no_difference": v_u + w * v_c, "plus_one": v_c + w * (v_c - v_u)}[combine]
            z = z + sign * (1.0 / steps if step_size else 1.0) * v
            path.append(z)
        return torch.stack(path) if trajectory else z
    return guided_sample


GUIDED_SAMPLE_WRONG = [
    ("v_y and v_∅ swapped", guided_variant(combine="swapped"), "cond_uncond_swapped", "swapped"),
    ("w ignored (conditional only)", guided_variant(combine="cond"), "w_ignored", "w is ignored"),
    ("v_∅ + w·v_y", guided_variant(combine="no_difference"), "missing_difference", "difference"),
    ("(1 + w) convention", guided_variant(combine="plus_one"), "w_plus_one_convention", "(1 + w)"),
    ("null class 0", guided_variant(null="zero"), "wrong_null_label", "null_label"),
    ("labels for both predictions", guided_variant(null="cond"), "no_unconditional", "null class"),
    ("no labels passed", guided_variant(pass_labels=False), "labels_missing", "labels"),
    ("Euler sign flipped", guided_variant(sign=1.0), "sign_flipped", "sign"),
    ("velocity at the step's end", guided_variant(at_end=True), "velocity_at_step_end", "start of the step"),
    ("no step size", guided_variant(step_size=False), "missing_step_size", "step size"),
    ("time reversed", guided_variant(reverse=True), "time_reversed", "backwards"),
    ("scalar t", guided_variant(scalar_t=True), "time_wrong_shape", "shape"),
    ("whole path returned", guided_variant(trajectory=True), "returned_trajectory", "final samples"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", GUIDED_SAMPLE_WRONG, ids=[w[0] for w in GUIDED_SAMPLE_WRONG])
def test_guided_sample_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("guided_sample", fn, keyword, capsys)
    assert run_check("guided_sample", fn, capsys).mistake == mistake


@pytest.mark.parametrize("calls", ["two", "batched"])
def test_guided_sample_accepts_other_correct_forms(calls, capsys):
    assert run_check("guided_sample", guided_variant(calls=calls), capsys).passed


# ----------------------------------------------------------------------------- lesson 07

def joint_variant(separate=False, cat_dim=2, reverse_cat=False, reverse_out=False, merge=True, equal_split=False):
    def joint_attention(streams):
        if separate:
            return [rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)") for q, k, v in streams]
        lengths = [q.shape[2] for q, _, _ in streams]
        ordered = streams[::-1] if reverse_cat else streams
        q, k, v = (torch.cat(parts, dim=cat_dim) for parts in zip(*ordered))
        out = F.scaled_dot_product_attention(q, k, v)
        if not merge:
            outs = list(out.split(lengths, dim=2))
        else:
            out = rearrange(out, "b h l d -> b l (h d)")
            total = sum(lengths)
            outs = list(out.split([total // 2, total - total // 2] if equal_split else lengths, dim=1))
        return outs[::-1] if reverse_out else outs
    return joint_attention


JOINT_ATTENTION_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (joint_variant(separate=True), "no cross-talk"),
    (joint_variant(cat_dim=1), "sequence axis"),
    (joint_variant(cat_dim=3), "sequence axis"),
    (joint_variant(reverse_cat=True), "split order"),
    (joint_variant(reverse_out=True), "reversed order"),
    (joint_variant(equal_split=True), "split lengths"),
    (joint_variant(merge=False), "merge the heads"),
    (lambda streams: torch.cat(lesson07_mmdit._joint_attention_reference(streams), dim=1), "one output per stream"),
    (lambda streams: lesson07_mmdit._joint_attention_reference([(q.div_(2), k, v) for q, k, v in streams]), "in place"),
]


@pytest.mark.parametrize("fn, keyword", JOINT_ATTENTION_SLIPS)
def test_joint_attention_mistakes(fn, keyword, capsys):
    assert_rejects("joint_attention", fn, keyword, capsys)


def rms_variant(centre=False, dim=-1, gain=True, eps_inside=True, use_eps=True, root=True):
    def rms_norm(u, g, eps=1e-6):
        x = u - u.mean(-1, keepdim=True) if centre else u
        mean_square = (x**2).mean(dim, keepdim=True)
        e = eps if use_eps else 0.0
        denominator = (mean_square + e).sqrt() if eps_inside else mean_square.sqrt() + e
        out = x / (denominator if root else mean_square + e)
        return out * g if gain else out
    return rms_norm


RMS_NORM_SLIPS = [
    # (their function, a keyword of the message that names the slip)
    (rms_variant(centre=True), "LayerNorm"),
    (rms_variant(dim=2), "sequence"),
    (rms_variant(dim=1), "heads"),
    (rms_variant(gain=False), "gain"),
    (rms_variant(use_eps=False), "missing ε"),
    (rms_variant(eps_inside=False), "inside the square root"),
    (rms_variant(root=False), "square root"),
    (lambda u, g, eps=1e-6: rms_variant()(u, g), "eps argument"),
    (lambda u, g, eps=1e-6: (u / (u**2).mean(-1).add(eps).sqrt() * g), "keepdim"),
]


@pytest.mark.parametrize("fn, keyword", RMS_NORM_SLIPS)
def test_rms_norm_mistakes(fn, keyword, capsys):
    assert_rejects("rms_norm", fn, keyword, capsys)


def block_forward_variant(joint_attention=lesson07_mmdit._joint_attention_reference, order="ctx_first", **knobs):
    """JointBlock.forward assembled from its parts as a learner writes it; ``knobs`` turn one thing of
    ``lesson07_mmdit._block_variant`` (its defaults are right), ``order="image_first"`` concatenates [image; context]
    (also right: attention does not care about the order of the keys)."""
    def joint_block_forward(block, x, ctx, c_vec):
        if knobs:
            both = lesson07_mmdit._block_variant(block, x, ctx, c_vec, **knobs)
            return both[:, :x.shape[1]], both[:, x.shape[1]:]
        mods = {name: getattr(block, name).modulation(c_vec) for name in ("context", "image")}
        qkv = {}
        for name, tokens in (("context", ctx), ("image", x)):
            stream, (shift_a, scale_a, *_) = getattr(block, name), mods[name]
            qkv[name] = stream.qkv(blocks.modulate(stream.norm1(tokens), shift_a, scale_a))
        names = ["image", "context"] if order == "image_first" else ["context", "image"]
        attended = dict(zip(names, joint_attention([qkv[n] for n in names])))
        outs = {}
        for name, tokens in (("context", ctx), ("image", x)):
            stream, (_, _, gate_a, shift_m, scale_m, gate_m) = getattr(block, name), mods[name]
            tokens = tokens + gate_a[:, None] * stream.out(attended[name])
            outs[name] = tokens + gate_m[:, None] * stream.mlp(blocks.modulate(stream.norm2(tokens), shift_m, scale_m))
        return outs["image"], outs["context"]
    return joint_block_forward


JOINT_BLOCK_WRONG = [
    ("separate attention per stream", block_forward_variant(joint=False), "separate_attention", "attend once"),
    ("streams' weights swapped", block_forward_variant(swap_streams=True), "streams_swapped", "block.image"),
    ("shift and scale swapped", block_forward_variant(chunk_order=(1, 0, 2, 4, 3, 5)), "shift_scale_swapped", "swapped"),
    ("attention and MLP chunks swapped", block_forward_variant(chunk_order=(3, 4, 5, 0, 1, 2)), "chunks_misread",
     "wrong order"),
    ("no gates", block_forward_variant(gate=False), "missing_gate", "gate"),
    ("no residual", block_forward_variant(residual=False), "missing_residual", "residual"),
    ("MLP with the attention's modulation", block_forward_variant(mlp_mods="attention"), "mlp_uses_attention_modulation",
     "shift_m"),
    ("MLP in parallel", block_forward_variant(sequential=False), "parallel_mlp", "after the attention"),
    ("u·scale + shift", block_forward_variant(one_plus=False), "modulate_without_one", "1 + scale"),
    ("no LayerNorm", block_forward_variant(layer_norm=False), "missing_layer_norm", "norm1"),
    ("no output projection", block_forward_variant(out_projection=False), "missing_out_projection", "out("),
    ("QK-norm twice", block_forward_variant(qk_norm_twice=True), "qk_norm_twice", "twice"),
    ("(ctx, x) returned", lambda block, x, ctx, c_vec: block_forward_variant()(block, x, ctx, c_vec)[::-1],
     "outputs_swapped", "(x, ctx)"),
    ("the block's own forward", lambda block, x, ctx, c_vec: block(x, ctx, c_vec), "used_finished_method", "parts"),
    ("pre_attention and post_attention", lambda block, x, ctx, c_vec: (block.image.pre_attention(x, c_vec), ctx),
     "used_finished_method", "parts"),
    ("x alone returned", lambda block, x, ctx, c_vec: block_forward_variant()(block, x, ctx, c_vec)[0], None, "(x, ctx)"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", JOINT_BLOCK_WRONG, ids=[w[0] for w in JOINT_BLOCK_WRONG])
def test_joint_block_forward_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("joint_block_forward", fn, keyword, capsys)
    assert run_check("joint_block_forward", fn, capsys).mistake == mistake


@pytest.mark.parametrize("order", ["ctx_first", "image_first"])
def test_joint_block_forward_accepts_other_correct_forms(order, capsys):
    assert run_check("joint_block_forward", block_forward_variant(order=order), capsys).passed


def test_joint_block_forward_check_leaves_the_global_rng_alone(capsys):
    state = torch.random.get_rng_state()
    assert run_check("joint_block_forward", block_forward_variant(), capsys).passed
    assert torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------------------- lesson 10

def char_tokenize_variant(bos="start", unknown="unk", first=3, pad=0, mask="lengths", limit="raise", single="raise",
                          lower=False, sort=False, pad_to="max", ids_dtype=torch.long):
    """A character tokenizer as a learner writes it, with one knob turned (the defaults are right)."""
    def char_tokenize(captions, alphabet, max_length):
        if single == "raise" and isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got a single string")
        stoi = {c: first + i for i, c in enumerate(sorted(alphabet) if sort else alphabet)}
        rows = []
        for caption in captions:
            if {"raise": len(caption) + 1 > max_length, "off_by_one": len(caption) > max_length,
                    "strict": len(caption) + 1 >= max_length}.get(limit, False):
                raise ValueError(f"captions: expected at most {max_length - 1} characters")
            tokens = []
            for char in caption.lower() if lower else caption:
                if char in stoi:
                    tokens.append(stoi[char])
                elif unknown == "raise":
                    raise ValueError(f"captions: unknown character {char!r}")
                elif unknown != "drop":
                    tokens.append({"unk": 2, "pad": 0, "minus": -1, "after": first + len(alphabet)}[unknown])
            tokens = {"start": [1, *tokens], "end": [*tokens, 1], "none": tokens}[bos]
            rows.append(tokens[:max_length] if limit == "truncate" else tokens)
        length = max_length if pad_to == "max" else max(len(row) for row in rows)
        ids = torch.full((len(rows), length), pad, dtype=ids_dtype)
        lengths = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=ids_dtype)  # a row that is too long fails here
            lengths[i, :len(row)] = True
        if mask == "none":
            return ids
        first_column = torch.arange(length)[None] == 0
        return ids, {"lengths": lengths, "ids": ids != 0, "no_bos": lengths & ~first_column,
                     "all": torch.ones_like(lengths), "inverted": ~lengths, "no_unk": lengths & (ids != 2),
                     "int": lengths.long()}[mask]
    return char_tokenize


def char_tokenize_bytes(captions, alphabet, max_length):
    """ids from the characters' code points (ByT5 takes bytes), not from the alphabet."""
    ids = torch.zeros(len(captions), max_length, dtype=torch.long)
    for row, caption in enumerate(captions):
        ids[row, :len(caption) + 1] = torch.tensor([1] + [ord(c) + 3 for c in caption])
    return ids, ids != 0


CHAR_TOKENIZE_WRONG = [
    # (what the student did, their function, the mistake the check names, a keyword of its message)
    ("no [BOS]", char_tokenize_variant(bos="none"), "no_bos", "[BOS]"),
    ("[BOS] at the end", char_tokenize_variant(bos="end"), "bos_at_end", "position 0"),
    ("unknown characters dropped", char_tokenize_variant(unknown="drop"), "unknown_dropped", "[UNK]"),
    ("unknown → [PAD]", char_tokenize_variant(unknown="pad"), "unknown_as_pad", "[UNK]"),
    ("unknown → −1", char_tokenize_variant(unknown="minus"), "unknown_not_unk", "[UNK] = 2"),
    ("unknown → an id after the alphabet", char_tokenize_variant(unknown="after"), "unknown_not_unk", "[UNK] = 2"),
    ("unknown characters refused", char_tokenize_variant(unknown="raise"), "unknown_raises", "[UNK] = 2"),
    ("characters from id 2", char_tokenize_variant(first=2), "ids_off_by_one", "3 + i"),
    ("characters from id 4", char_tokenize_variant(first=4), "ids_off_by_one", "3 + i"),
    ("characters from id 0 (alphabet.index)", char_tokenize_variant(first=0), "ids_offset", "3 + i"),
    ("alphabet sorted", char_tokenize_variant(sort=True), "alphabet_sorted", "order given"),
    ("caption lower-cased", char_tokenize_variant(lower=True), "lowercased", "lower-cased"),
    ("padding with [BOS]", char_tokenize_variant(pad=1), "pad_not_zero", "[PAD] = 0"),
    ("padding with −1", char_tokenize_variant(pad=-1), "pad_not_zero", "[PAD] = 0"),
    ("mask False on [BOS]", char_tokenize_variant(mask="no_bos"), "mask_false_on_bos", "[BOS]"),
    ("mask True on padding", char_tokenize_variant(mask="all"), "mask_true_on_padding", "padding"),
    ("mask inverted (key_padding_mask)", char_tokenize_variant(mask="inverted"), "mask_inverted", "inverted"),
    ("mask False on [UNK]", char_tokenize_variant(mask="no_unk"), "mask_false_on_unknown", "[UNK]"),
    ("mask of 0/1 integers", char_tokenize_variant(mask="int"), "mask_not_bool", "bool"),
    ("too long: truncated silently", char_tokenize_variant(limit="truncate"), "truncated_silently", "ValueError"),
    ("too long: no length check", char_tokenize_variant(limit="none"), "no_length_check", "ValueError"),
    ("length limit len > max_length", char_tokenize_variant(limit="off_by_one"), "length_limit_off_by_one",
     "max_length − 1"),
    ("length limit len + 1 >= max_length", char_tokenize_variant(limit="strict"), "length_limit_off_by_one", "fits"),
    ("a single string taken as a batch", char_tokenize_variant(single="accept"), "single_string_accepted", "str"),
    ("padded to the longest caption", char_tokenize_variant(pad_to="longest"), "padded_to_longest", "max_length"),
    ("float ids", char_tokenize_variant(ids_dtype=torch.float32), "ids_not_integer", "torch.long"),
    ("ids only, no mask", char_tokenize_variant(mask="none"), "not_a_pair", "(ids, mask)"),
    ("code points instead of the alphabet", char_tokenize_bytes, None, "not in one of the usual ways"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", CHAR_TOKENIZE_WRONG, ids=[w[0] for w in CHAR_TOKENIZE_WRONG])
def test_char_tokenize_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("char_tokenize", fn, keyword, capsys)
    assert run_check("char_tokenize", fn, capsys).mistake == mistake


def test_char_tokenize_accepts_another_correct_form(capsys):
    def with_find(captions, alphabet, max_length):  # str.find gives −1 for an unknown character: −1 + 3 = [UNK]
        if isinstance(captions, str):
            raise ValueError("captions: one string")
        ids = torch.zeros(len(captions), max_length, dtype=torch.long)
        for row, caption in enumerate(captions):
            if len(caption) >= max_length:
                raise ValueError("captions: too long")
            ids[row, 0] = 1
            for col, char in enumerate(caption, start=1):
                ids[row, col] = alphabet.find(char) + 3
        return ids, ids > 0
    assert run_check("char_tokenize", with_find, capsys).passed


def drop_variant(kind):
    """An encoder drop mask as a learner writes it (``"right"`` and ``"bernoulli"`` are correct)."""
    def encoder_drop_mask(batch, encoders, p, generator):
        draws = {"transposed": (encoders, batch), "per_sample": (batch,), "per_encoder": (encoders,),
                 "shared": (batch, 1)}.get(kind, (batch, encoders))
        if kind == "global_seed":
            torch.manual_seed(0)
        gen = {"global_seed": None, "global_rng": None, "own": torch.Generator().manual_seed(7)}.get(kind, generator)
        u = torch.rand(draws, generator=gen)
        if kind == "bernoulli":
            return torch.bernoulli(torch.full((batch, encoders), p), generator=generator).bool()
        if kind == "keep":
            return u >= p
        if kind == "float":
            return (u < p).float()
        if kind == "draws":
            return u
        if kind in ("shared", "per_encoder"):
            return (u < p).expand(batch, encoders)
        if kind in ("one_per_row", "at_most_one"):
            one = torch.nn.functional.one_hot(torch.randint(encoders, (batch,), generator=generator), encoders).bool()
            return one & (u[:, :1] < p) if kind == "at_most_one" else one
        if kind == "p_over_e":
            return u < p / encoders
        return u < p
    return encoder_drop_mask


ENCODER_DROP_WRONG = [
    ("one mask shared by all encoders", drop_variant("shared"), "shared_mask", "p² ="),
    ("True = keep", drop_variant("keep"), "keep_not_drop", "1 − p"),
    ("exactly one encoder dropped per row", drop_variant("one_per_row"), "one_per_row", "independently"),
    ("at most one encoder dropped per row", drop_variant("at_most_one"), "one_per_row", "independently"),
    ("global RNG", drop_variant("global_rng"), "ignores_generator", "generator=generator"),
    ("torch.manual_seed inside", drop_variant("global_seed"), "ignores_generator", "generator=generator"),
    ("a generator of its own", drop_variant("own"), "ignores_generator", "generator=generator"),
    ("shape (E, B)", drop_variant("transposed"), "transposed", "(B, E)"),
    ("float 0/1 mask", drop_variant("float"), "not_bool", "bool"),
    ("the uniform draws themselves", drop_variant("draws"), "returned_draws", "< p"),
    ("one flag per sample", drop_variant("per_sample"), "one_flag_per_sample", "(B, E)"),
    ("one mask for the whole batch", drop_variant("per_encoder"), "shared_across_batch", "same mask"),
    ("probability p/E per entry", drop_variant("p_over_e"), None, "probability p"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", ENCODER_DROP_WRONG, ids=[w[0] for w in ENCODER_DROP_WRONG])
def test_encoder_drop_mask_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("encoder_drop_mask", fn, keyword, capsys)
    assert run_check("encoder_drop_mask", fn, capsys).mistake == mistake


def test_encoder_drop_mask_teaches_p_squared(capsys):
    message = run_check("encoder_drop_mask", drop_variant("shared"), capsys).message
    assert re.search(r"no text at all should happen with probability p² = 0\.090, here 0\.(29|30)\d ≈ p = 0\.3", message), message
    assert run_check("encoder_drop_mask", drop_variant("bernoulli"), capsys).passed


def context_variant(order=1, zero="after", swap=False, cat_dim=1, stack=False, in_place=False, reshape_keep=True):
    """c_ctxt as a learner writes it, with one knob turned (the defaults are right)."""
    def build_context(sequences, projections, keep):
        parts = []
        for e, tokens in enumerate(sequences):
            k = keep[:, e, None, None] if reshape_keep else keep[:, e]
            k = ~k if zero == "inverted" else k
            if zero == "before":
                if in_place:
                    tokens *= k
                else:
                    tokens = tokens * k
            projected = projections[len(sequences) - 1 - e if swap else e](tokens)
            parts.append(projected * k if zero in ("after", "inverted") else projected)
        parts = parts[::order]
        if cat_dim is None:
            return parts
        return torch.stack(parts, dim=1) if stack else torch.cat(parts, dim=cat_dim)
    return build_context


BUILD_CONTEXT_WRONG = [
    ("concatenated along channels", context_variant(cat_dim=2), "channel_concat", "sequence axis"),
    ("concatenated along the batch", context_variant(cat_dim=0), "batch_concat", "sequence axis"),
    ("stacked into a new axis", context_variant(stack=True), "stacked_not_concatenated", "dim=1"),
    ("a list of parts, not concatenated", context_variant(cat_dim=None), "not_concatenated", "torch.cat"),
    ("order reversed", context_variant(order=-1), "order_reversed", "reverse order"),
    ("zeroed before the projection", context_variant(zero="before"), "zeroed_before_projection", "bias"),
    ("dropped encoders not zeroed", context_variant(zero="never"), "not_zeroed", "keep"),
    ("keep inverted", context_variant(zero="inverted"), "keep_inverted", "inverted"),
    ("projections swapped", context_variant(swap=True), "projections_swapped", "own projection"),
    ("tokens zeroed in place", context_variant(zero="before", in_place=True), "in_place", "in place"),
    ("keep[:, e] not reshaped", context_variant(reshape_keep=False), "shapes_do_not_line_up", "(B, 1, 1)"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", BUILD_CONTEXT_WRONG, ids=[w[0] for w in BUILD_CONTEXT_WRONG])
def test_build_context_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("build_context", fn, keyword, capsys)
    assert run_check("build_context", fn, capsys).mistake == mistake


def test_build_context_accepts_other_correct_forms(capsys):
    def with_where(sequences, projections, keep):
        return torch.cat([torch.where(keep[:, e, None, None], projection(tokens), 0.0)
                          for e, (tokens, projection) in enumerate(zip(sequences, projections))], dim=1)
    assert run_check("build_context", with_where, capsys).passed
    assert run_check("build_context", context_variant(), capsys).passed


def test_lesson10_checks_leave_the_global_rng_alone(capsys):
    state = torch.random.get_rng_state()
    for name in LESSON_CHECKS["10_spelling"]:
        assert run_check(name, REFERENCES[name], capsys).passed
    assert torch.equal(torch.random.get_rng_state(), state)


def test_most_lesson10_wrong_answers_are_named():
    wrong = CHAR_TOKENIZE_WRONG + ENCODER_DROP_WRONG + BUILD_CONTEXT_WRONG
    named = [mistake for _, _, mistake, _ in wrong if mistake is not None]
    assert len(wrong) >= 45 and len(named) >= 0.9 * len(wrong), (len(named), len(wrong))


# ----------------------------------------------------------------------------- lesson 11

def mix_variant(kind="right"):
    """A caption mixer as a learner writes it (``right``, ``bernoulli``, ``loop``, ``above`` and ``exact_count``
    are correct)."""
    def mix_captions(full, alt, generator, synthetic_fraction=0.5):
        n, f = len(full), synthetic_fraction
        if kind == "bernoulli":
            keep = torch.bernoulli(torch.full((n,), float(f)), generator=generator).bool().tolist()
        elif kind == "loop":
            keep = [float(torch.rand((), generator=generator)) < f for _ in range(n)]
        elif kind == "above":
            keep = (torch.rand(n, generator=generator) >= 1 - f).tolist()
        elif kind == "exact_count":
            chosen = set(torch.randperm(n, generator=generator)[:round(f * n)].tolist())
            keep = [i in chosen for i in range(n)]
        elif kind == "inverted":
            keep = (torch.rand(n, generator=generator) >= f).tolist()
        elif kind == "global_rng":
            keep = (torch.rand(n) < f).tolist()
        elif kind == "python_random":
            keep = [random.random() < f for _ in range(n)]
        elif kind == "own_generator":
            keep = (torch.rand(n, generator=torch.Generator().manual_seed(0)) < f).tolist()
        elif kind == "one_coin":
            keep = [float(torch.rand((), generator=generator)) < f] * n
        elif kind == "alternate":
            keep = [i % 2 == 0 for i in range(n)]
        elif kind == "every_kth":
            keep = [f > 0 and i % round(1 / f) == 0 for i in range(n)]
        elif kind == "first_part":
            keep = [i < f * n for i in range(n)]
        elif kind == "ignores_fraction":
            keep = torch.randint(0, 2, (n,), generator=generator).bool().tolist()
        else:
            keep = (torch.rand(n, generator=generator) < f).tolist()
        if kind == "mask":
            return torch.tensor(keep)
        out = [a if k else b for a, b, k in zip(full, alt, keep)]
        if kind == "shuffled":
            out = [out[i] for i in torch.randperm(n, generator=generator).tolist()]
        return out
    return mix_captions


MIX_CAPTIONS_WRONG = [
    ("fraction inverted (keeps the alt-text with p)", mix_variant("inverted"), "fraction_inverted", "inverted"),
    ("global RNG", mix_variant("global_rng"), "ignores_generator", "generator=generator"),
    ("Python's random.random", mix_variant("python_random"), "ignores_generator", "generator"),
    ("a generator of its own", mix_variant("own_generator"), "ignores_generator", "generator"),
    ("one coin for the whole batch", mix_variant("one_coin"), "one_coin_for_batch", "one coin per caption"),
    ("deterministic alternation", mix_variant("alternate"), "deterministic_pattern", "pattern"),
    ("every k-th caption full", mix_variant("every_kth"), "deterministic_pattern", "pattern"),
    ("the first fraction of the batch full", mix_variant("first_part"), "deterministic_pattern", "pattern"),
    ("a fair coin whatever the fraction", mix_variant("ignores_fraction"), "fraction_ignored", "synthetic_fraction"),
    ("captions shuffled", mix_variant("shuffled"), "wrong_position", "full["),
    ("returned the mask", mix_variant("mask"), "returned_mask", "list of captions"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", MIX_CAPTIONS_WRONG, ids=[w[0] for w in MIX_CAPTIONS_WRONG])
def test_mix_captions_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("mix_captions", fn, keyword, capsys)
    assert run_check("mix_captions", fn, capsys).mistake == mistake


@pytest.mark.parametrize("kind", ["bernoulli", "loop", "above", "exact_count"])
def test_mix_captions_accepts_other_correct_forms(kind, capsys):
    assert run_check("mix_captions", mix_variant(kind), capsys).passed


def dpo_objective_variant(sign=1.0, reference=1.0, beta_at="inside", reduce="mean", log="logsigmoid"):
    """The DPO loss from the four errors as a learner writes it, with one knob turned (the defaults are right)."""
    def dpo_objective(model_winner, model_loser, reference_winner, reference_loser, beta):
        delta = sign * ((model_winner - reference * reference_winner) - (model_loser - reference * reference_loser))
        scale = {"inside": beta, "divide": 1 / beta, "none": 1.0, "half": beta / 2, "outside": 1.0}[beta_at]
        m = -scale * delta
        if log == "softplus":
            per_pair = F.softplus(-m)
        elif log == "log_sigmoid":
            per_pair = -torch.log(torch.sigmoid(m))
        elif log == "log1p":
            per_pair = torch.log1p(torch.exp(-m))
        elif log == "no_minus":
            per_pair = F.logsigmoid(m)
        elif log == "no_log":
            per_pair = -torch.sigmoid(m)
        else:
            per_pair = -F.logsigmoid(m)
        if beta_at == "outside":
            per_pair = beta * per_pair
        if reduce == "inside":
            return -F.logsigmoid(m.mean())
        return {"mean": per_pair.mean(), "sum": per_pair.sum(), "none": per_pair,
                "pair": (per_pair.mean(), m)}[reduce]
    return dpo_objective


DPO_OBJECTIVE_WRONG = [
    ("winner and loser swapped", dpo_objective_variant(sign=-1.0), "winner_loser_swapped", "loser"),
    ("reference term missing", dpo_objective_variant(reference=0.0), "missing_reference", "reference"),
    ("reference errors added", dpo_objective_variant(reference=-1.0), "reference_added", "subtract"),
    ("β outside the log-sigmoid", dpo_objective_variant(beta_at="outside"), "beta_outside_logsigmoid", "inside"),
    ("divided by β", dpo_objective_variant(beta_at="divide"), "beta_divides", "β multiplies"),
    ("β missing", dpo_objective_variant(beta_at="none"), "missing_beta", "β is missing"),
    ("−β/2 (diffusers)", dpo_objective_variant(beta_at="half"), "diffusers_half_beta", "diffusers' β_dpo/2 convention"),
    ("log σ without the minus", dpo_objective_variant(log="no_minus"), "missing_minus", "minus"),
    ("σ without the log", dpo_objective_variant(log="no_log"), "missing_log", "log"),
    ("summed over the pairs", dpo_objective_variant(reduce="sum"), "sum_not_mean", "mean"),
    ("margins averaged inside the log-sigmoid", dpo_objective_variant(reduce="inside"), "mean_inside_logsigmoid",
     "per pair"),
    ("one loss per pair", dpo_objective_variant(reduce="none"), "not_averaged", "average"),
    ("(L, m) returned", dpo_objective_variant(reduce="pair"), "returned_tuple", "only the loss"),
    ("a plain float", lambda mw, ml, rw, rl, beta: float(dpo_objective_variant()(mw, ml, rw, rl, beta)), "not_a_tensor",
     "torch.Tensor"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", DPO_OBJECTIVE_WRONG, ids=[w[0] for w in DPO_OBJECTIVE_WRONG])
def test_dpo_objective_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("dpo_objective", fn, keyword, capsys)
    assert run_check("dpo_objective", fn, capsys).mistake == mistake


@pytest.mark.parametrize("log", ["softplus", "log_sigmoid", "log1p"])
def test_dpo_objective_accepts_other_correct_forms(log, capsys):
    assert run_check("dpo_objective", dpo_objective_variant(log=log), capsys).passed

    def regrouped(model_winner, model_loser, reference_winner, reference_loser, beta):  # (θ_w − θ_l) − (ref_w − ref_l)
        return F.softplus(beta * ((model_winner - model_loser) - (reference_winner - reference_loser))).mean()
    assert run_check("dpo_objective", regrouped, capsys).passed


def dpo_errors_variant(noise="shared", time="shared", ref="shared", target="velocity", reduce="mean", order="wl",
                       returned="mw ml rw rl", path="rf", t_draw="uniform", eps_draw="normal", calls="cat",
                       use_generator=True, eps_first=False):
    """The four DPO velocity errors as a learner writes them, with one knob turned (the defaults are right)."""
    def dpo_errors(model, reference, x_w, x_l, generator):
        g = generator if use_generator else None
        batch = x_w.shape[0]

        def draw_t():
            if t_draw == "logit_normal":
                return torch.sigmoid(torch.randn(batch, generator=g))
            if t_draw == "one":
                return torch.rand((), generator=g).expand(batch)
            return torch.rand(batch, generator=g)

        def draw_eps():
            return torch.rand(x_w.shape, generator=g) if eps_draw == "uniform" else torch.randn(x_w.shape, generator=g)

        eps = draw_eps() if eps_first else None
        t = draw_t()
        eps = draw_eps() if eps is None else eps
        t_l = draw_t() if time == "fresh" else t
        eps_l = draw_eps() if noise == "fresh" else eps

        def noised(x, tt, e):
            tt = tt.reshape(-1, *[1] * (x.ndim - 1))
            return {"rf": (1 - tt) * x + tt * e, "reversed": tt * x + (1 - tt) * e, "unscaled": (1 - tt) * x + e}[path]

        def errors(net, t_w, e_w, t_l2, e_l2):
            z_w, z_l = noised(x_w, t_w, e_w), noised(x_l, t_l2, e_l2)
            if calls == "cat":
                pairs = [(z_w, z_l, t_w, t_l2)] if order == "wl" else [(z_l, z_w, t_l2, t_w)]
                a, b, ta, tb = pairs[0]
                va, vb = net(torch.cat([a, b]), torch.cat([ta, tb])).chunk(2)
                v_w, v_l = (va, vb) if order == "wl" else (vb, va)
            elif calls == "two":
                v_w, v_l = net(z_w, t_w), net(z_l, t_l2)
            else:  # pair by pair
                outs = [(net(z_w[i:i + 1], t_w[i:i + 1]), net(z_l[i:i + 1], t_l2[i:i + 1])) for i in range(batch)]
                v_w, v_l = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            out = []
            for v, x, e in ((v_w, x_w, e_w), (v_l, x_l, e_l2)):
                goal = {"velocity": e - x, "flipped": x - e, "eps": e}[target]
                d = (v - goal).flatten(1)
                out.append({"mean": (d**2).mean(1), "sum": (d**2).sum(1), "abs": d.abs().mean(1),
                            "norm": d.norm(dim=1), "batch": (d**2).mean()}[reduce])
            return out

        mw, ml = errors(model, t, eps, t_l, eps_l)
        if ref == "model":
            rw, rl = errors(model, t, eps, t_l, eps_l)
        elif ref == "fresh":
            t_r, eps_r = draw_t(), draw_eps()
            rw, rl = errors(reference, t_r, eps_r, t_r, eps_r)
        else:
            with torch.no_grad():
                rw, rl = errors(reference, t, eps, t_l, eps_l)
        named = {"mw": mw, "ml": ml, "rw": rw, "rl": rl}
        return tuple(named[key] for key in returned.split())
    return dpo_errors


DPO_ERRORS_WRONG = [
    ("fresh noise for the loser", dpo_errors_variant(noise="fresh"), "fresh_noise_for_loser", "share one ε"),
    ("a different t for the loser", dpo_errors_variant(time="fresh"), "fresh_time_for_loser", "same t"),
    ("fresh t and ε for the reference", dpo_errors_variant(ref="fresh"), "reference_not_shared", "same z_t and t"),
    ("the model as its own reference", dpo_errors_variant(ref="model"), "reference_never_called", "frozen reference"),
    ("target x − ε", dpo_errors_variant(target="flipped"), "target_sign_flipped", "ε − x"),
    ("target ε", dpo_errors_variant(target="eps"), "epsilon_target", "v = ε − x"),
    ("summed over the elements", dpo_errors_variant(reduce="sum"), "sum_over_elements", "mean over the elements"),
    ("|v̂ − v|", dpo_errors_variant(reduce="abs"), "missing_square", "square"),
    ("‖v̂ − v‖", dpo_errors_variant(reduce="norm"), "norm_not_squared", "square root"),
    ("averaged over the batch", dpo_errors_variant(reduce="batch"), "batch_averaged", "(B,)"),
    ("winner and loser swapped", dpo_errors_variant(returned="ml mw rl rw"), "winner_loser_swapped", "order"),
    ("model and reference swapped", dpo_errors_variant(returned="rw rl mw ml"), "model_reference_swapped", "order"),
    ("z_t = t·x + (1 − t)·ε", dpo_errors_variant(path="reversed"), "time_reversed", "t = 0 is data"),
    ("noise not scaled by t", dpo_errors_variant(path="unscaled"), "noise_not_scaled", "scaled by t"),
    ("logit-normal t", dpo_errors_variant(t_draw="logit_normal"), "time_not_uniform", "uniform"),
    ("one t for the batch", dpo_errors_variant(t_draw="one"), "one_time_for_batch", "one t per pair"),
    ("uniform noise", dpo_errors_variant(eps_draw="uniform"), "noise_not_normal", "N(0, I)"),
    ("global RNG", dpo_errors_variant(use_generator=False), "ignores_generator", "generator=generator"),
    ("only the model's two errors", dpo_errors_variant(returned="mw ml"), None, "four errors"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", DPO_ERRORS_WRONG, ids=[w[0] for w in DPO_ERRORS_WRONG])
def test_dpo_errors_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("dpo_errors", fn, keyword, capsys)
    assert run_check("dpo_errors", fn, capsys).mistake == mistake


@pytest.mark.parametrize("knobs", [dict(calls="two"), dict(calls="loop"), dict(order="lw"), dict(eps_first=True)],
                         ids=["two calls", "pair by pair", "losers first", "ε drawn before t"])
def test_dpo_errors_accepts_other_correct_forms(knobs, capsys):
    assert run_check("dpo_errors", dpo_errors_variant(**knobs), capsys).passed


def validation_variant(levels="i/7", noise="once", average="all_but_last", skip_last=False, calls="per_level",
                       target="velocity", reduce="mean", path="rf"):
    """SD3's validation loss as a learner writes it, with one knob turned (the defaults are right)."""
    grids = {"i/7": torch.linspace(0, 1, 8), "i/8": torch.arange(8) / 8, "mid": (torch.arange(8) + 0.5) / 8,
             "no_zero": torch.linspace(0, 1, 9)[1:], "nine": torch.linspace(0, 1, 9), "index": torch.arange(8.0),
             "t0_dropped": torch.linspace(0, 1, 8)[1:]}

    def validation_loss(model, x0, generator):
        batch = x0.shape[0]

        def draw():
            if noise == "global":
                return torch.randn_like(x0)
            if noise == "uniform":
                return torch.rand(x0.shape, generator=generator)
            return torch.randn(x0.shape, generator=generator)

        eps = draw()
        if levels == "random":
            times = [torch.rand(batch, generator=generator) for _ in range(8)]
        elif levels == "random_levels":
            times = [torch.full((batch,), float(u)) for u in torch.rand(8, generator=generator)]
        else:
            times = [torch.full((batch,), float(t)) for t in grids[levels]]
        if skip_last:
            times = times[:-1]
        epses = [draw() if noise == "per_level" else eps for _ in times]

        def noised(tt, e):
            tt = tt.reshape(-1, *[1] * (x0.ndim - 1))
            return {"rf": (1 - tt) * x0 + tt * e, "reversed": tt * x0 + (1 - tt) * e, "unscaled": (1 - tt) * x0 + e}[path]

        if calls == "cat":
            v = model(torch.cat([noised(tt, e) for tt, e in zip(times, epses)]), torch.cat(times)).chunk(len(times))
        else:
            v = [model(noised(tt, e), tt) for tt, e in zip(times, epses)]
        losses = []
        for v_hat, e in zip(v, epses):
            goal = {"velocity": e - x0, "flipped": x0 - e, "eps": e}[target]
            d = v_hat - goal
            losses.append({"mean": (d**2).mean(), "sum": (d**2).flatten(1).sum(1).mean(), "abs": d.abs().mean(),
                           "batch": (d**2).flatten(1).mean(1).sum()}[reduce])
        losses = torch.stack(losses)
        kept = losses if skip_last or levels == "t0_dropped" else losses[:-1]
        return {"all_but_last": kept.mean(), "all": losses.mean(), "div8": kept.sum() / 8, "sum": kept.sum(),
                "first_dropped": losses[1:].mean(), "none": losses}[average].item() if average != "none" else losses
    return validation_loss


VALIDATION_LOSS_WRONG = [
    ("t = 1 included in the mean", validation_variant(average="all"), "t1_included", "leave t = 1 out"),
    ("levels i/8", validation_variant(levels="i/8"), "levels_over_8", "i/7"),
    ("levels (i + 0.5)/8", validation_variant(levels="mid"), "midpoint_levels", "i/7"),
    ("linspace(0, 1, 9) without 0", validation_variant(levels="no_zero"), "levels_exclude_zero", "t = 0"),
    ("nine levels", validation_variant(levels="nine"), "nine_levels", "eight"),
    ("t = 0 left out instead of t = 1 (not evaluated)", validation_variant(levels="t0_dropped"), "dropped_t0_not_t1",
     "instead of t = 1"),
    ("t = 0 left out of the mean instead of t = 1", validation_variant(average="first_dropped"), "dropped_t0_not_t1",
     "instead of t = 1"),
    ("fresh noise per level", validation_variant(noise="per_level"), "fresh_noise_per_level", "once"),
    ("a random t per sample", validation_variant(levels="random"), "random_time", "fixed"),
    ("a random t per level", validation_variant(levels="random_levels"), "random_time", "fixed"),
    ("the level index as t", validation_variant(levels="index"), "level_index_as_time", "i/7"),
    ("summed over the levels", validation_variant(average="sum"), "sum_not_mean", "mean"),
    ("seven levels divided by 8", validation_variant(average="div8"), "divided_by_eight", "divided by 7"),
    ("summed over the elements", validation_variant(reduce="sum"), "sum_over_elements", "mean over every element"),
    ("summed over the samples", validation_variant(reduce="batch"), "sum_over_samples", "mean over every element"),
    ("target x0 − ε", validation_variant(target="flipped"), "target_sign_flipped", "ε − x0"),
    ("target ε", validation_variant(target="eps"), "epsilon_target", "ε − x0"),
    ("|v̂ − v|", validation_variant(reduce="abs"), "missing_square", "square"),
    ("z_t = t·x0 + (1 − t)·ε", validation_variant(path="reversed"), "time_reversed", "t = 0 is data"),
    ("noise not scaled by t", validation_variant(path="unscaled"), "noise_not_scaled", "scaled by t"),
    ("uniform noise", validation_variant(noise="uniform"), "noise_not_normal", "N(0, I)"),
    ("global RNG (randn_like)", validation_variant(noise="global"), "ignores_generator", "generator=generator"),
    ("the per-level losses", validation_variant(average="none"), "per_level_not_averaged", "one number"),
]


@pytest.mark.parametrize("what, fn, mistake, keyword", VALIDATION_LOSS_WRONG, ids=[w[0] for w in VALIDATION_LOSS_WRONG])
def test_validation_loss_mistakes(what, fn, mistake, keyword, capsys):
    assert_rejects("validation_loss", fn, keyword, capsys)
    assert run_check("validation_loss", fn, capsys).mistake == mistake


@pytest.mark.parametrize("knobs", [dict(skip_last=True), dict(calls="cat"), dict(calls="cat", skip_last=True)],
                         ids=["t = 1 not evaluated", "one call on all levels", "one call, t = 1 not evaluated"])
def test_validation_loss_accepts_other_correct_forms(knobs, capsys):
    assert run_check("validation_loss", validation_variant(**knobs), capsys).passed


def test_lesson11_checks_leave_the_global_rng_alone(capsys):
    state = torch.random.get_rng_state()
    for name in LESSON_CHECKS["11_data_preferences_scale"]:
        assert run_check(name, REFERENCES[name], capsys).passed
    assert torch.equal(torch.random.get_rng_state(), state)


def test_most_lesson11_wrong_answers_are_named():
    lists = (MIX_CAPTIONS_WRONG, DPO_OBJECTIVE_WRONG, DPO_ERRORS_WRONG, VALIDATION_LOSS_WRONG)
    assert all(len(wrong) >= 3 for wrong in lists)
    for wrong in lists:  # no two wrong answers of a check are the same function
        assert len({id(fn) for _, fn, _, _ in wrong}) == len(wrong)
    wrong = [w for ws in lists for w in ws]
    named = [mistake for _, _, mistake, _ in wrong if mistake is not None]
    assert len(named) >= 0.8 * len(wrong), (len(named), len(wrong))


# ----------------------------------------------------------------------------- structured results

def crashes(x0, k, eps, schedule):
    raise KeyError("oops")


def in_place_velocity(x0, eps):
    eps -= x0
    return eps


@pytest.mark.parametrize("name, fn, mistake", [
    ("q_sample", q_sample_variant(root=False), "missing_sqrt"),
    ("velocity_target", lambda x0, eps: x0 - eps, "sign_flipped"),
    ("shift_time", lambda t, alpha: timesteps.shift_time(timesteps.shift_time(t, alpha), alpha), "shift_twice"),
    ("eps_loss", eps_loss_variant(reduce="sum"), "sum_not_mean"),
    ("rms_norm", rms_variant(use_eps=False), "missing_eps"),
    ("joint_attention", joint_variant(separate=True), "separate_attention"),
    ("heun", heun_euler, "euler_not_heun"),
    ("velocity_target", in_place_velocity, "in_place"),
    # failures that are not one of the catalogued variants carry no identifier
    ("q_sample", crashes, None),
    ("timestep_embedding", lambda t, dim=256: embeddings.timestep_embedding(t, dim).T, "axes_swapped"),
    ("sincos_2d_positions", lambda dim, rows, cols: embeddings.sincos_2d_positions(dim, rows, cols) * 2, None),
])
def test_mistake_identifier(name, fn, mistake, capsys):
    result = run_check(name, fn, capsys)
    assert not result.passed
    assert result.mistake == mistake, result


def test_result_fields_round_trip_through_json():
    result = CheckResult("q_sample", False, "missing_sqrt", "missing square roots: …")
    data = json.loads(json.dumps(result.to_dict()))
    assert data == {"name": "q_sample", "passed": False, "mistake": "missing_sqrt", "message": "missing square roots: …"}
    assert CheckResult.from_dict(data) == result
    for bad in (None, "[check] q_sample: PASS", {"name": "q_sample"},
                {"name": "q_sample", "passed": "yes", "mistake": None, "message": ""},
                {"name": "q_sample", "passed": True, "mistake": 3, "message": ""}):
        with pytest.raises(ValueError):
            CheckResult.from_dict(bad)


def test_a_check_prints_its_line_and_logs_its_result_for_the_grader(capsys):
    take_results()
    result = CHECKS["velocity_target"](lambda x0, eps: x0 - eps)
    assert capsys.readouterr().out == result.line + "\n"
    assert result.mistake == "sign_flipped" and not result.passed
    assert parse_results(take_results()) == [result]


# ----------------------------------------------------------------------------- the solutions pass

SOLUTION_NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "solutions").glob("*.ipynb"))


def solution_functions() -> dict:
    """Each checked function as the solution notebooks define it (only its ``def``, with the notebook's imports)."""
    found = {}
    for path in SOLUTION_NOTEBOOKS:
        cells = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        namespace: dict = {}
        imports = [line for source in cells for line in source.splitlines()
                   if line.startswith(("import ", "from ")) and "env_report" not in line]
        exec("\n".join(imports), namespace)
        for source in cells:
            if not any(f"def {name}(" in source for name in CHECKS):
                continue
            for node in ast.parse(source).body:
                if isinstance(node, ast.FunctionDef) and node.name in CHECKS:
                    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
                    found[node.name] = namespace[node.name]
    return found


def test_solution_notebooks_functions_pass(capsys):
    functions = solution_functions()
    assert sorted(functions) == sorted(CHECKS)
    for name, fn in functions.items():
        result = run_check(name, fn, capsys)
        assert result.passed, (name, result.message)


# ----------------------------------------------------------------------------- a correct answer never fails

def posterior_mean_step(beta_from_ratio=False, clip=None, guard_k0=True, variance_floor=0.0, noise_at_k0=False):
    """The ancestral step in Ho et al.'s posterior-mean form (eq. 7, as diffusers' DDPMScheduler writes it),
    x̂0 from ε̂, in float32 with the package's schedule, as a student writes it; ``beta_from_ratio`` takes
    β_k = 1 − ᾱ_k/ᾱ_{k−1} as diffusers does, ``clip`` clamps x̂0, ``guard_k0=False`` forgets that
    ᾱ_{−1} = 1 (alpha_bars[k − 1] wraps round), ``variance_floor`` clamps β̃ from below (diffusers' 1e-20),
    ``noise_at_k0`` adds √β̃_0·n at k = 0 too (zero, or 1e-10·n with the floor, when ᾱ_{−1} = 1)."""
    def ancestral_step(model, x, k, schedule, noise):
        alpha_bar = schedule.alpha_bars[k]
        alpha_bar_prev = schedule.alpha_bars[k - 1] if k > 0 or not guard_k0 else torch.tensor(1.0)
        if beta_from_ratio:
            alpha = alpha_bar / alpha_bar_prev
            beta = 1 - alpha
        else:
            alpha, beta = schedule.alphas[k], schedule.betas[k]
        eps_hat = model(x, schedule.model_time(torch.full((x.shape[0],), k)))
        x0_hat = (x - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt()
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        mean = (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0_hat
                + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x)
        variance = ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta).clamp(min=variance_floor)
        if k == 0 and guard_k0 and not noise_at_k0:
            return mean
        return mean + variance.sqrt() * noise
    return ancestral_step


def test_float32_rounding_of_the_schedule_is_what_made_the_posterior_form_fail():
    schedule = ddpm.linear_schedule()
    beta0, one_minus_alpha_bar0 = schedule.betas[0], 1 - schedule.alpha_bars[0]
    assert 1e-4 < abs(float(one_minus_alpha_bar0 - beta0)) / float(beta0) < 3e-4   # not equal in float32
    assert lesson02_ddpm._float32_slack(schedule, 0) == pytest.approx(abs(float(one_minus_alpha_bar0 - beta0))
                                                                       / float(beta0), rel=1e-3)


@pytest.mark.parametrize("fn", [
    ancestral_variant(),
    posterior_mean_step(),
    posterior_mean_step(beta_from_ratio=True),
    posterior_mean_step(beta_from_ratio=True, variance_floor=1e-20, noise_at_k0=True),
    posterior_mean_step(noise_at_k0=True),
], ids=["eps_form", "posterior_mean", "posterior_mean_diffusers_beta", "posterior_mean_variance_floor_noise_at_0",
        "posterior_mean_zero_noise_at_0"])
def test_every_equal_form_of_the_ancestral_step_passes_at_every_k(fn, monkeypatch, capsys):
    assert run_check("ancestral_step", fn, capsys).passed
    monkeypatch.setattr(lesson02_ddpm, "_ANCESTRAL_CASES", tuple((k, (16, 2)) for k in range(1000)))
    result = run_check("ancestral_step", fn, capsys)
    assert result.passed, result.message


def ancestral_with(divide_by=lambda alpha, alpha_bar: alpha.sqrt(),
                   eps_coefficient=lambda beta, alpha_bar: beta / (1 - alpha_bar).sqrt()):
    """The ε form with its divisor or its ε̂ coefficient replaced (the correct noise, none at k = 0)."""
    def ancestral_step(model, x, k, schedule, noise):
        beta, alpha, alpha_bar = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        eps_hat = model(x, schedule.model_time(torch.full((x.shape[0],), k)))
        mean = (x - eps_coefficient(beta, alpha_bar) * eps_hat) / divide_by(alpha, alpha_bar)
        if k == 0:
            return mean
        return mean + ((1 - schedule.alpha_bars[k - 1]) / (1 - alpha_bar) * beta).sqrt() * noise
    return ancestral_step


def ancestral_previous_alpha_bar(model, x, k, schedule, noise):
    """ᾱ_{k−1} for ᾱ_k (alpha_bars[k − 1]) and ᾱ_{k−2} for ᾱ_{k−1}, as an off-by-one student indexes them."""
    beta, alpha, alpha_bar = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k - 1]
    eps_hat = model(x, schedule.model_time(torch.full((x.shape[0],), k)))
    mean = (x - beta / (1 - alpha_bar).sqrt() * eps_hat) / alpha.sqrt()
    if k == 0:
        return mean
    return mean + ((1 - schedule.alpha_bars[k - 2]) / (1 - alpha_bar) * beta).sqrt() * noise


ancestral_eps_coefficient = ancestral_with(eps_coefficient=lambda beta, alpha_bar: (1 - alpha_bar).sqrt())


def ancestral_sigma_beta(model, x, k, schedule, noise):
    beta, alpha, alpha_bar = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
    mean = (x - beta / (1 - alpha_bar).sqrt() * model(x, schedule.model_time(torch.full((x.shape[0],), k))))
    mean = mean / alpha.sqrt()
    return mean if k == 0 else mean + beta.sqrt() * noise


ANCESTRAL_STEP_NAMED = [
    # the wrong variants named before this change, in the ε form …
    (ancestral_variant(sign=1.0), "sign_flipped"),
    (ancestral_variant(noise_at_zero=True), "noise_at_last_step"),
    (ancestral_variant(root_sigma=False), "missing_sqrt_noise"),
    (ancestral_variant(pass_k=True), "model_got_step_index"),
    (ancestral_variant(divide=False), "missing_alpha_division"),
    (ancestral_sigma_beta, "noise_scale_beta"),
    (lambda model, x, k, schedule, noise: ancestral_variant()(model, x, k, schedule, 0 * noise), "missing_noise"),
    (ancestral_with(divide_by=lambda alpha, alpha_bar: alpha), "missing_sqrt_alpha"),
    (ancestral_with(divide_by=lambda alpha, alpha_bar: alpha_bar.sqrt()), "divided_by_alpha_bar"),
    (ancestral_with(eps_coefficient=lambda beta, alpha_bar: beta / (1 - alpha_bar)), "missing_sqrt_eps_coefficient"),
    # … the new ones …
    (ancestral_previous_alpha_bar, "alpha_bar_previous_step"),
    (ancestral_eps_coefficient, "eps_coefficient_sqrt_one_minus_alpha_bar"),
    (posterior_mean_step(clip=1.0), "clipped_x0"),
    (posterior_mean_step(beta_from_ratio=True, clip=1.0), "clipped_x0"),
    (posterior_mean_step(guard_k0=False), "alpha_bar_prev_wrapped"),
    # … and the usual slips written in the posterior-mean form, named all the same
    (lambda model, x, k, schedule, noise: posterior_mean_step()(model, x, k, schedule, noise)
     + (schedule.betas[0].sqrt() * noise if k == 0 else 0), "noise_at_last_step"),
    (lambda model, x, k, schedule, noise: posterior_mean_step()(model, x, k, schedule, 0 * noise), "missing_noise"),
]


@pytest.mark.parametrize("fn, mistake", ANCESTRAL_STEP_NAMED)
def test_ancestral_step_wrong_variants_stay_named(fn, mistake, capsys):
    result = run_check("ancestral_step", fn, capsys)
    assert not result.passed
    assert result.mistake == mistake, result


# ----------------------------------------------------------------------------- a wrong answer never passes

def logit_normal_global_seed(n, m=0.0, s=1.0, generator=None, device=None):
    torch.manual_seed(0)
    return torch.sigmoid(m + s * torch.randn(n))


def logit_normal_global_rng(n, m=0.0, s=1.0, generator=None, device=None):
    return torch.sigmoid(m + s * torch.randn(n))


def logit_normal_reseeds_generator(n, m=0.0, s=1.0, generator=None, device=None):
    generator.manual_seed(0)
    return torch.sigmoid(m + s * torch.randn(n, generator=generator))


def eps_loss_global_seed(model, x0, schedule, generator=None):
    torch.manual_seed(0)
    k = torch.randint(0, schedule.num_steps, (x0.shape[0],))
    eps = torch.randn(x0.shape)
    return ((model(ddpm.q_sample(x0, k, eps, schedule), schedule.model_time(k)) - eps) ** 2).mean()


def eps_loss_randn_like(model, x0, schedule, generator=None):
    k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator)
    eps = torch.randn_like(x0)
    return ((model(ddpm.q_sample(x0, k, eps, schedule), schedule.model_time(k)) - eps) ** 2).mean()


def eps_loss_own_generator(model, x0, schedule, generator=None):
    own = torch.Generator().manual_seed(1234)
    k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=own)
    eps = torch.randn(x0.shape, generator=own)
    return ((model(ddpm.q_sample(x0, k, eps, schedule), schedule.model_time(k)) - eps) ** 2).mean()


GLOBAL_RNG_WRONG = [
    ("sample_logit_normal", logit_normal_global_seed),
    ("sample_logit_normal", logit_normal_global_rng),
    ("sample_logit_normal", logit_normal_reseeds_generator),
    ("sample_logit_normal", logit_normal_variant(use_generator=False)),
    ("eps_loss", eps_loss_global_seed),
    ("eps_loss", eps_loss_randn_like),
    ("eps_loss", eps_loss_own_generator),
    ("eps_loss", eps_loss_variant(use_generator=False)),
    ("encoder_drop_mask", drop_variant("global_seed")),
    ("encoder_drop_mask", drop_variant("global_rng")),
    ("encoder_drop_mask", drop_variant("own")),
]


@pytest.mark.parametrize("name, fn", GLOBAL_RNG_WRONG)
def test_global_rng_is_named(name, fn, capsys):
    result = run_check(name, fn, capsys)
    assert not result.passed
    assert result.mistake == "ignores_generator", result
    assert "generator=generator" in result.message


def test_only_the_drawing_exercises_take_a_generator():
    """The checks that hand the learner a generator are those above; the others pass no randomness in."""
    import inspect

    takes = {name for name, fn in REFERENCES.items() if "generator" in inspect.signature(fn).parameters}
    assert takes == {"eps_loss", "sample_logit_normal", "encoder_drop_mask", "mix_captions", "validation_loss",
                     "dpo_errors", "reflow_loss"}


# ----------------------------------------------------------------------------- the message names the mistake

def _q_sample_with(index_shift=0, signal=lambda ab: ab.sqrt(), noise=lambda ab: (1 - ab).sqrt(), table="alpha_bars"):
    def q_sample(x0, k, eps, schedule):
        ab = getattr(schedule, table)[k + index_shift].reshape(-1, *[1] * (x0.ndim - 1))
        return signal(ab) * x0 + noise(ab) * eps
    return q_sample


def _eps_loss_with(draw_eps=torch.randn, alpha_bar_shift=0, time=lambda k, s: s.model_time(k), reduce=F.mse_loss,
                   target="eps"):
    def eps_loss(model, x0, schedule, generator=None):
        k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator)
        eps = draw_eps(x0.shape, generator=generator)
        ab = schedule.alpha_bars[k + alpha_bar_shift][:, None]
        x_k = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return reduce(model(x_k, time(k, schedule)), eps if target == "eps" else x0)
    return eps_loss


def _embedding_with(log=math.log, divisor=lambda dim: dim // 2, scale=1000.0, first=0, sin_first=False):
    def timestep_embedding(t, dim=256):
        half = dim // 2
        omega = torch.exp(-log(10000) * torch.arange(first, half + first, dtype=torch.float32) / divisor(dim))
        angles = scale * t[:, None] * omega[None]
        parts = [torch.sin(angles), torch.cos(angles)] if sin_first else [torch.cos(angles), torch.sin(angles)]
        return torch.cat(parts, dim=1)
    return timestep_embedding


def _joint_with(merge="transpose", scale=lambda d: math.sqrt(d), separate=False, split_first=False):
    def joint_attention(streams):
        lengths = [q.shape[2] for q, _, _ in streams]
        groups = [[s] for s in streams] if separate else [streams]
        outs = []
        for group in groups:
            q, k, v = (torch.cat(parts, dim=2) for parts in zip(*group))
            logits = q @ k.transpose(-2, -1)
            out = (logits / scale(q.shape[-1]) if scale else logits).softmax(-1) @ v
            b, h, n, d = out.shape
            parts = out.split(lengths, dim=2) if split_first and not separate else [out]
            for part in parts:
                merged = (part.transpose(1, 2).reshape(b, part.shape[2], h * d) if merge == "transpose"
                          else part.reshape(b, part.shape[2], h * d))
                outs.extend([merged] if separate or split_first else list(merged.split(lengths, dim=1)))
        return outs
    return joint_attention


def _rms_with(denominator, gain=True, default_eps=1e-6):
    def rms_norm(u, g, eps=default_eps):
        out = u / denominator(u, eps)
        return out * g if gain else out
    return rms_norm


def _heun_with(predict_h=True, half=0.5, corrector_at_start=False, first_weight=1.0):
    def heun(velocity, z, steps):
        grid = torch.linspace(1, 0, steps + 1)
        for t, t_next in zip(grid[:-1], grid[1:]):
            h = t_next - t
            v1 = velocity(z, t.expand(z.shape[0]))
            z_pred = z + (h if predict_h else 1.0) * v1
            v2 = velocity(z_pred, (t if corrector_at_start else t_next).expand(z.shape[0]))
            z = z + h * half * (first_weight * v1 + v2)
        return z
    return heun


def eps_loss_no_schedule(model, x0, schedule, generator=None):
    k = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    return ((model(x0 + eps, schedule.model_time(k)) - eps) ** 2).mean()


def euler_one_step_too_many(model, noise, steps):
    z, dt = noise, 1.0 / steps
    for i in range(steps + 1):
        z = z - dt * model(z, torch.full((z.shape[0],), 1 - i * dt))
    return z


def positions_xy_meshgrid(dim, rows, cols):
    k = dim // 4
    omega = 10000.0 ** (-torch.arange(k, dtype=torch.float64) / k)
    i, j = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="xy")

    def sc(p):
        angles = p.flatten()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([sc(j), sc(i)], dim=1).float()


def _straightness_with(batch="mean", weights="abs"):
    def straightness(trajectory):
        h = trajectory.times[1:] - trajectory.times[:-1]
        d = (trajectory.start - trajectory.end)[None] - trajectory.velocities
        per = (d**2).flatten(2).sum(2)
        per = per.mean(1) if batch == "mean" else per.sum(1)
        w = {"abs": h.abs(), "none": torch.ones_like(h)}[weights]
        return float((w * per).sum())
    return straightness


WRONG_ANSWERS = [
    # (check, what the student did, their function, the mistake the check should name or None)
    ("heun", "Euler instead of Heun", heun_euler, "euler_not_heun"),
    ("heun", "prediction without the step size", _heun_with(predict_h=False), "prediction_missing_step_size"),
    ("heun", "no ½ in the average", _heun_with(half=1.0), "missing_half"),
    ("heun", "corrector at the start time", _heun_with(corrector_at_start=True), "corrector_at_start_time"),
    ("gaussian_velocity", "forgot − μ", gaussian_variant(drop_mean=True), "missing_minus_mean"),
    ("gaussian_velocity", "variance weights not squared", gaussian_variant(squares=False), "variance_not_squared"),
    ("gaussian_velocity", "sign flipped", gaussian_variant(sign=-1.0), "sign_flipped"),
    ("q_sample", "ᾱ_{k−1} (alpha_bars[k - 1])", _q_sample_with(index_shift=-1), "alpha_bar_previous_step"),
    ("q_sample", "no square roots", _q_sample_with(signal=lambda ab: ab, noise=lambda ab: 1 - ab), "missing_sqrt"),
    ("q_sample", "α_k instead of ᾱ_k", _q_sample_with(table="alphas"), "alpha_not_cumulative"),
    ("q_sample", "noise scale 1 − √ᾱ", _q_sample_with(noise=lambda ab: 1 - ab.sqrt()), "noise_scale_one_minus_sqrt"),
    ("eps_loss", "ᾱ_{k−1} in the noising", _eps_loss_with(alpha_bar_shift=-1), "alpha_bar_previous_step"),
    ("eps_loss", "t = k/T", _eps_loss_with(time=lambda k, s: k.float() / s.num_steps), "time_k_over_T"),
    ("eps_loss", "t = k (the index)", _eps_loss_with(time=lambda k, s: k), "model_got_step_index"),
    ("eps_loss", "uniform noise", _eps_loss_with(draw_eps=torch.rand), "noise_not_normal"),
    ("eps_loss", "target x0", _eps_loss_with(target="x0"), "target_x0"),
    ("eps_loss", "L1 loss", _eps_loss_with(reduce=F.l1_loss), "missing_square"),
    ("eps_loss", "summed loss", _eps_loss_with(reduce=lambda a, b: ((a - b) ** 2).sum()), "sum_not_mean"),
    ("eps_loss", "torch.manual_seed inside", eps_loss_global_seed, "ignores_generator"),
    ("eps_loss", "torch.randn_like for ε", eps_loss_randn_like, "ignores_generator"),
    ("ancestral_step", "ᾱ_{k−1} for ᾱ_k", ancestral_previous_alpha_bar, "alpha_bar_previous_step"),
    ("ancestral_step", "√(1 − ᾱ_k) as the ε̂ coefficient", ancestral_eps_coefficient,
     "eps_coefficient_sqrt_one_minus_alpha_bar"),
    ("ancestral_step", "x̂0 clipped like diffusers", posterior_mean_step(clip=1.0), "clipped_x0"),
    ("ancestral_step", "posterior form without the k = 0 case", posterior_mean_step(guard_k0=False),
     "alpha_bar_prev_wrapped"),
    ("ancestral_step", "σ_k = √β_k", ancestral_sigma_beta, "noise_scale_beta"),
    ("ancestral_step", "noise also at k = 0", ancestral_variant(noise_at_zero=True), "noise_at_last_step"),
    ("interpolate", "noise not scaled by t", lambda x0, eps, t: (1 - expand_time(torch.as_tensor(t), x0)) * x0 + eps,
     "noise_not_scaled"),
    ("interpolate", "t and 1 − t swapped", interpolate_variant(swap=True), "time_reversed"),
    ("velocity_target", "x0 − ε (the paper's direction)", lambda x0, eps: x0 - eps, "sign_flipped"),
    ("euler_sample", "z + Δ·v", euler_variant(sign=1.0), "sign_flipped"),
    ("euler_sample", "velocity at the end of the step", euler_variant(at_end=True), "velocity_at_step_end"),
    ("straightness", "summed over the batch", _straightness_with(batch="sum"), "sum_over_batch"),
    ("straightness", "no step weights", _straightness_with(weights="none"), "missing_step_size"),
    ("sample_logit_normal", "torch.manual_seed inside", logit_normal_global_seed, "ignores_generator"),
    ("sample_logit_normal", "global RNG", logit_normal_global_rng, "ignores_generator"),
    ("sample_logit_normal", "torch.rand for n",
     lambda n, m=0.0, s=1.0, generator=None, device=None: torch.sigmoid(m + s * torch.rand(n, generator=generator)),
     "not_normal"),
    ("sample_logit_normal", "m outside the sigmoid",
     lambda n, m=0.0, s=1.0, generator=None, device=None: m + torch.sigmoid(s * torch.randn(n, generator=generator)),
     "location_outside_sigmoid"),
    ("sample_logit_normal", "1 − t", lambda n, m=0.0, s=1.0, generator=None, device=None:
     1 - torch.sigmoid(m + s * torch.randn(n, generator=generator)), "location_sign_flipped"),
    ("shift_time", "denominator 1 + α·t", lambda t, alpha: alpha * t / (1 + alpha * t), "wrong_denominator"),
    ("shift_time", "α missing from the numerator", lambda t, alpha: t / (1 + (alpha - 1) * t), "missing_alpha_numerator"),
    ("shift_time", "shift the other way", lambda t, alpha: t / (alpha - (alpha - 1) * t), "shift_reversed"),
    ("timestep_embedding", "math.log10(10000)", _embedding_with(log=math.log10), "log10"),
    ("timestep_embedding", "divided by dim", _embedding_with(divisor=lambda dim: dim), "divisor_dim"),
    ("timestep_embedding", "t not scaled", _embedding_with(scale=1.0), "time_not_scaled"),
    ("timestep_embedding", "sin first", _embedding_with(sin_first=True), "sin_cos_swapped"),
    ("timestep_embedding", "i from 1", _embedding_with(first=1), "index_from_one"),
    ("sincos_2d_positions", "rows first", positions_variant(columns_first=False), "rows_first"),
    ("sincos_2d_positions", "divided by dim",
     lambda dim, rows, cols: lesson05_embeddings._positions_2d(dim, rows, cols, divisor=dim).float(), "divisor_dim"),
    ("patchify", "plain reshape", lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]), "plain_reshape"),
    ("patchify", "channel first", patchify_variant("b (h w) (c p q)"), "channel_first"),
    ("unpatchify", "plain reshape", lambda tokens, p, grid: tokens.reshape(tokens.shape[0], -1, grid[0] * p, grid[1] * p),
     "plain_reshape"),
    ("modulate", "x·(1 − scale)", lambda x, shift, scale: x * (1 - scale[:, None]) + shift[:, None], "one_minus_scale"),
    ("modulate", "no 1 +", lambda x, shift, scale: x * scale[:, None] + shift[:, None], "missing_one_plus"),
    ("modulate", "no shift", lambda x, shift, scale: x * (1 + scale[:, None]), "missing_shift"),
    ("cfg_combine", "started from v_cond", lambda v_u, v_c, w: (1 + w) * v_c - w * v_u, "started_from_cond"),
    ("cfg_combine", "w on v_cond only", lambda v_u, v_c, w: v_u + w * v_c, "w_on_cond_only"),
    ("joint_attention", "heads merged by reshape", _joint_with(merge="reshape"), "heads_merged_by_reshape"),
    ("joint_attention", "split, then heads merged by reshape", _joint_with(merge="reshape", split_first=True),
     "heads_merged_by_reshape"),
    ("joint_attention", "scale 1/d", _joint_with(scale=lambda d: d), "scale_by_d"),
    ("joint_attention", "no scale", _joint_with(scale=None), "missing_scale"),
    ("joint_attention", "separate attention", _joint_with(separate=True), "separate_attention"),
    ("rms_norm", "variance", _rms_with(lambda u, eps: (u.var(-1, keepdim=True) + eps).sqrt()), "variance_not_mean_square"),
    ("rms_norm", "std + ε", _rms_with(lambda u, eps: u.std(-1, keepdim=True) + eps), "variance_not_mean_square"),
    ("rms_norm", "LayerNorm", lambda u, g, eps=1e-6: F.layer_norm(u, u.shape[-1:], weight=g, eps=eps), "subtracted_mean"),
    ("rms_norm", "ε outside the root", _rms_with(lambda u, eps: u.pow(2).mean(-1, keepdim=True).sqrt() + eps),
     "eps_outside_sqrt"),
    ("rms_norm", "F.normalize", lambda u, g, eps=1e-6: F.normalize(u, dim=-1) * g, "l2_norm"),
    ("rms_norm", "default ε 1e-5", _rms_with(lambda u, eps: (u.pow(2).mean(-1, keepdim=True) + eps).sqrt(), default_eps=1e-5),
     "wrong_default_eps"),
    ("rms_norm", "no gain", _rms_with(lambda u, eps: (u.pow(2).mean(-1, keepdim=True) + eps).sqrt(), gain=False),
     "missing_gain"),
    ("heun", "second velocity only", _heun_with(half=1.0, first_weight=0.0), "corrector_only"),
    ("eps_loss", "x0 + ε, no schedule", eps_loss_no_schedule, "input_not_q_sample"),
    ("ancestral_step", "noise of its own", lambda model, x, k, schedule, noise:
     ddpm.ancestral_step(model, x, k, schedule, torch.randn_like(x)), "ignored_noise_argument"),
    ("euler_sample", "steps + 1 evaluations", euler_one_step_too_many, "wrong_evaluation_count"),
    ("straightness", "signed step weights", straightness_variant(weight="signed"), "negative_weights"),
    ("sincos_2d_positions", "meshgrid indexing='xy'", positions_xy_meshgrid, "column_major"),
    ("patchify", "unfold, channels first", lambda x, p: x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
     .reshape(x.shape[0], -1, x.shape[1] * p * p), "channel_first"),
    ("unpatchify", "grid read as (cols, rows)", unpatchify_variant("b (h w) (p q c)", swap_grid=True), "grid_swapped"),
    ("cfg_combine", "difference the wrong way round", lambda v_u, v_c, w: v_u + w * (v_u - v_c), "sign_flipped"),
    ("rms_norm", "mean |u|", _rms_with(lambda u, eps: u.abs().mean(-1, keepdim=True) + eps), "mean_abs_not_rms"),
    # plausible slips no variant is catalogued for (the check still fails them, without a name)
    ("q_sample", "ᾱ_k not reshaped", lambda x0, k, eps, schedule: schedule.alpha_bars[k].sqrt() * x0
     + (1 - schedule.alpha_bars[k]).sqrt() * eps, None),
    ("gaussian_velocity", "t not broadcast", lambda z, t, mean, std: (t - (1 - t) * std**2) / ((1 - t) ** 2 * std**2 + t**2)
     * (z - (1 - t) * mean) - mean, None),
    ("timestep_embedding", "halves stacked along the batch", lambda t, dim=256: torch.cat(
        embedding_variant()(t, dim).split(dim // 2, dim=1), dim=0), None),
    ("modulate", "scale broadcast over the batch", lambda x, shift, scale: x * (1 + scale[None]) + shift[None], None),
    ("rms_norm", "mean without keepdim", lambda u, g, eps=1e-6: u / (u.pow(2).mean(-1) + eps).sqrt()[..., None, :] * g,
     None),
    ("timestep_embedding", "a fixed 128 frequencies", embedding_variant(fixed_half=128), None),
]


def test_most_wrong_answers_are_named_and_all_fail(capsys):
    assert len(WRONG_ANSWERS) >= 40
    results = [(name, what, run_check(name, fn, capsys), expected) for name, what, fn, expected in WRONG_ANSWERS]
    passed = [f"{name}: {what}" for name, what, result, _ in results if result.passed]
    unnamed = [f"{name}: {what} — {result.message}" for name, what, result, _ in results
               if not result.passed and result.mistake is None]
    misnamed = [f"{name}: {what}: expected {expected}, got {result.mistake} — {result.message}"
                for name, what, result, expected in results if expected is not None and result.mistake != expected]
    assert not passed, passed
    named = len(results) - len(unnamed)
    assert named >= 0.8 * len(results), f"{named}/{len(results)} named; unnamed:\n" + "\n".join(unnamed)
    assert not misnamed, "\n".join(misnamed)


# ----------------------------------------------------------------------------- lessons 08 and 09

def encode_variant(encode="right", decode="right", ret="right"):
    """encode_for_diffusion as a learner writes it, with one part wrong (the defaults are right)."""
    def encode_for_diffusion(autoencoder, images):
        with torch.no_grad():
            if encode == "sampled":
                mean, logvar = autoencoder.moments(images)
                mu = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            else:
                mu = autoencoder.encode(images)
        shift, scale = mu.mean(), 1 / mu.std()
        if encode == "not_normalized":
            latents = mu
        elif encode == "stored":
            latents = autoencoder.normalize(mu)
        elif encode == "scale_is_std":
            latents = (mu - shift) / scale**2 * scale  # (μ − mean)·std
        elif encode == "shift_after_scale":
            latents = mu * scale - shift
        elif encode == "per_channel":
            latents = (mu - mu.mean((0, 2, 3), keepdim=True)) / mu.std((0, 2, 3), keepdim=True)
        elif encode == "image_statistics":
            latents = (mu - images.mean()) / images.std()
        else:
            latents = (mu - shift) * scale
        inverse = {"right": lambda z: z / scale + shift, "multiplies": lambda z: z * scale + shift,
                   "wrong_order": lambda z: (z + shift) / scale, "shift_sign": lambda z: z / scale - shift,
                   "none": lambda z: z, "again": lambda z: (z - shift) * scale}[decode]

        def decode_from_diffusion(z):
            with torch.no_grad():
                return autoencoder.decode(inverse(z))

        if ret == "swapped":
            return decode_from_diffusion, latents
        if ret == "statistics":
            return latents, shift, scale
        return latents, decode_from_diffusion
    return encode_for_diffusion


def encode_with_package(autoencoder, images):
    """Another correct form: the package's fit_latent_statistics, images_to_latents and latents_to_images."""
    fit_latent_statistics(autoencoder, images)
    return autoencoder.images_to_latents(images), autoencoder.latents_to_images


def ema_variant(decay=lambda s, d: min(d, (1 + s) / (10 + s)), swap=False, every=False, in_place=False, offset=0):
    def ema_over_steps(ema, weights, ema_decay, first_step):
        out, seen = (ema if in_place else ema.clone()), []
        for i, theta in enumerate(weights):
            d = decay(first_step + offset + i, ema_decay)
            if in_place:
                out.mul_(d).add_((1 - d) * theta)
            else:
                out = (1 - d) * out + d * theta if swap else d * out + (1 - d) * theta
            seen.append(out)
        return torch.stack(seen) if every else out
    return ema_over_steps


def lr_variant(warm="right", floor=0.1, form="blend", offset=True, clamp=True):
    def learning_rate(step, lr, warmup_steps, max_steps):
        if step < warmup_steps and warm != "none":
            return lr * (step if warm == "zero" else step + 1) / warmup_steps
        p = (step - warmup_steps) / max(1, max_steps - warmup_steps) if offset else step / max_steps
        p = min(1.0, p) if clamp else p
        c = 0.5 * (1 + math.cos(math.pi * p))
        if form == "added":
            return lr * (floor + c)
        if form == "clipped":
            return lr * max(floor, c)
        if form == "linear":
            return lr * (floor + (1 - floor) * (1 - p))
        return lr * (floor + (1 - floor) * c)
    return learning_rate


def batch_variant(kind="right"):
    """batch_indices as a learner writes it (``right``, ``divmod`` and ``vectorised`` are correct)."""
    def batch_indices(seed, step, batch_size, n):
        if kind == "global_rng":
            return torch.randperm(n)[:batch_size]
        if kind == "with_replacement":
            return torch.randint(0, n, (batch_size,), generator=make_generator(seed * 1_000_003 + step))
        if kind == "permutation_per_step":
            return torch.randperm(n, generator=make_generator(seed * 1_000_003 + step))[:batch_size]
        if kind == "vectorised":
            p = torch.arange(step * batch_size, (step + 1) * batch_size)
            perms = {int(e): torch.randperm(n, generator=make_generator(seed * 1_000_003 + int(e))) for e in p // n}
            return torch.stack([perms[int(q) // n][int(q) % n] for q in p])
        out = []
        first = 0 if kind == "ignores_step" else (step + 1 if kind == "from_one" else step) * batch_size
        for p in range(first, first + batch_size):
            epoch = {"same_permutation": 0, "first_position": first // n, "epoch_from_step": step // n,
                     "manual_seed": 0}.get(kind, p // n)
            key = seed + epoch if kind == "seed_plus_epoch" else seed * 1_000_003 + epoch
            if kind == "manual_seed":
                key = seed
            out.append(torch.randperm(n, generator=make_generator(key))[p % n])
        return torch.stack(out)
    return batch_indices


LESSON08_09_WRONG = [
    # (check, what the student did, their function, the mistake it should name or None, a keyword of the message)
    ("latent_scale_shift", "scale = std", lambda z: (z.mean(), z.std()), "scale_is_std", "1/std"),
    ("latent_scale_shift", "statistics per channel", lambda z: (z.mean((0, 2, 3)), 1 / z.std((0, 2, 3))),
     "per_channel", "one shift"),
    ("latent_scale_shift", "(scale, shift)", lambda z: (1 / z.std(), z.mean()), "order_swapped", "order"),
    ("latent_scale_shift", "1/variance", lambda z: (z.mean(), 1 / z.var()), "variance_not_std", "square root"),
    ("latent_scale_shift", "spread around 0", lambda z: (z.mean(), 1 / z.pow(2).mean().sqrt()), "rms_not_std",
     "around the mean"),
    ("latent_scale_shift", "1/max |z|", lambda z: (z.mean(), 1 / z.abs().max()), "max_not_std", "max"),
    ("latent_scale_shift", "no shift", lambda z: (0.0, 1 / z.std()), "missing_shift", "mean"),
    ("latent_scale_shift", "median as the shift", lambda z: (z.median(), 1 / z.std()), None, "shift"),
    ("encode_for_diffusion", "a posterior sample", encode_variant(encode="sampled"), "sampled_not_mean", "mean μ"),
    ("encode_for_diffusion", "not normalised", encode_variant(encode="not_normalized"), "not_normalized", "normalised"),
    ("encode_for_diffusion", "the autoencoder's stale factors", encode_variant(encode="stored"), "stored_factors",
     "latent_scale_shift"),
    ("encode_for_diffusion", "multiplied by std", encode_variant(encode="scale_is_std"), "scale_is_std", "1/std"),
    ("encode_for_diffusion", "shift after scale", encode_variant(encode="shift_after_scale"), "shift_after_scale",
     "subtracted first"),
    ("encode_for_diffusion", "per-channel statistics", encode_variant(encode="per_channel"), "per_channel", "channel"),
    ("encode_for_diffusion", "statistics of the images", encode_variant(encode="image_statistics"),
     "statistics_of_images", "images"),
    ("encode_for_diffusion", "inverse multiplies", encode_variant(decode="multiplies"), "inverse_multiplies", "dividing"),
    ("encode_for_diffusion", "inverse adds first", encode_variant(decode="wrong_order"), "inverse_wrong_order",
     "divide first"),
    ("encode_for_diffusion", "inverse subtracts the shift", encode_variant(decode="shift_sign"), "inverse_shift_sign",
     "+ shift"),
    ("encode_for_diffusion", "decoded without inverting", encode_variant(decode="none"), "not_denormalized",
     "decoder expects"),
    ("encode_for_diffusion", "normalised again", encode_variant(decode="again"), "normalized_again", "not (z′ − shift)"),
    ("encode_for_diffusion", "(decode, latents)", encode_variant(ret="swapped"), "order_swapped", "order"),
    ("encode_for_diffusion", "returned the statistics, no function", encode_variant(ret="statistics"), None, "two things"),
    ("psnr", "L = 1", lambda x, y: 10 * torch.log10(1 / ((x - y) ** 2).flatten(1).mean(1)), "peak_one", "L = 2"),
    ("psnr", "L = 255", lambda x, y: 10 * torch.log10(255**2 / ((x - y) ** 2).flatten(1).mean(1)), "peak_255", "255"),
    ("psnr", "L not squared", lambda x, y: 10 * torch.log10(2 / ((x - y) ** 2).flatten(1).mean(1)), "peak_not_squared",
     "squared"),
    ("psnr", "20·log10(L²/MSE)", lambda x, y: 20 * torch.log10(4 / ((x - y) ** 2).flatten(1).mean(1)), "twenty_log",
     "10·log10"),
    ("psnr", "natural log", lambda x, y: 10 * torch.log(4 / ((x - y) ** 2).flatten(1).mean(1)), "natural_log", "log10"),
    ("psnr", "RMSE for MSE", lambda x, y: 10 * torch.log10(4 / ((x - y) ** 2).flatten(1).mean(1).sqrt()), "rmse_not_mse",
     "root"),
    ("psnr", "summed errors", lambda x, y: 10 * torch.log10(4 / ((x - y) ** 2).flatten(1).sum(1)), "sum_not_mean", "mean"),
    ("psnr", "ratio upside down", lambda x, y: 10 * torch.log10(((x - y) ** 2).flatten(1).mean(1) / 4), "inverted_ratio",
     "upside down"),
    ("psnr", "one MSE for the batch", lambda x, y: 10 * torch.log10(4 / ((x - y) ** 2).mean()), "batch_mse", "per image"),
    ("psnr", "per-image PSNR averaged", lambda x, y: (10 * torch.log10(4 / ((x - y) ** 2).flatten(1).mean(1))).mean(),
     "averaged_over_batch", "one value per image"),
    ("psnr", "MSE over the last axis only", lambda x, y: 10 * torch.log10(4 / ((x - y) ** 2).mean(-1)), None, "shape"),
    ("ema_over_steps", "no warm-up", ema_variant(decay=lambda s, d: d), "no_warmup", "warm-up"),
    ("ema_over_steps", "s/(10 + s)", ema_variant(decay=lambda s, d: min(d, s / (10 + s))), "warmup_off_by_one",
     "(1 + s)/(10 + s)"),
    ("ema_over_steps", "steps from 1", ema_variant(offset=1), "step_counted_from_one", "s = 0"),
    ("ema_over_steps", "no cap", ema_variant(decay=lambda s, d: (1 + s) / (10 + s)), "missing_cap", "ema_decay"),
    ("ema_over_steps", "weights swapped", ema_variant(swap=True), "weights_swapped", "large share"),
    ("ema_over_steps", "first_step ignored",
     lambda ema, weights, ema_decay, first_step: ema_variant()(ema, weights, ema_decay, 0), "ignores_first_step",
     "first_step"),
    ("ema_over_steps", "first row skipped",
     lambda ema, weights, ema_decay, first_step: ema_variant()(ema, weights[1:], ema_decay, first_step + 1),
     "skipped_first_row", "first row"),
    ("ema_over_steps", "EMA after every step", ema_variant(every=True), "returned_every_step", "last step"),
    ("ema_over_steps", "ema changed in place", ema_variant(in_place=True), "in_place", "in place"),
    ("ema_over_steps", "decay·warm-up", ema_variant(decay=lambda s, d: d * (1 + s) / (10 + s)), None, "formula"),
    ("learning_rate", "warm-up from 0", lr_variant(warm="zero"), "warmup_starts_at_zero", "(s + 1)"),
    ("learning_rate", "cosine to 0", lr_variant(floor=0.0), "no_floor", "10 %"),
    ("learning_rate", "floor added on top", lr_variant(form="added"), "floor_not_blended", "1.1·lr"),
    ("learning_rate", "cosine clipped at 10 %", lr_variant(form="clipped"), "floor_clipped", "blends"),
    ("learning_rate", "progress from step 0", lr_variant(offset=False), "progress_not_offset", "warm-up ends"),
    ("learning_rate", "no clamp past max_steps", lr_variant(clamp=False), "no_clamp", "min(1"),
    ("learning_rate", "linear decay", lr_variant(form="linear"), "linear_decay", "cosine"),
    ("learning_rate", "no warm-up", lr_variant(warm="none"), "no_warmup", "rises linearly"),
    ("learning_rate", "cos without π", lambda s, lr, w, m: lr_variant()(s, lr, w, m) if s < w else
     lr * (0.1 + 0.45 * (1 + math.cos(min(1.0, (s - w) / max(1, m - w))))), None, "formula"),
    ("batch_indices", "the global random state", batch_variant("global_rng"), "not_reproducible", "global random state"),
    ("batch_indices", "indices with replacement", batch_variant("with_replacement"), "with_replacement", "permutation"),
    ("batch_indices", "a new permutation each step", batch_variant("permutation_per_step"), "new_permutation_each_step",
     "once per epoch"),
    ("batch_indices", "one permutation for all epochs", batch_variant("same_permutation"), "same_permutation_every_epoch",
     "epoch"),
    ("batch_indices", "the step ignored", batch_variant("ignores_step"), "ignores_step", "same batch"),
    ("batch_indices", "the batch's first epoch for all", batch_variant("first_position"), "epoch_of_first_position",
     "crosses"),
    ("batch_indices", "epoch = step // n", batch_variant("epoch_from_step"), "epoch_from_step", "p // n"),
    ("batch_indices", "seed + epoch", batch_variant("seed_plus_epoch"), "seed_formula", "1_000_003"),
    ("batch_indices", "steps from 1", batch_variant("from_one"), "step_counted_from_one", "step 0"),
    ("batch_indices", "make_generator(seed) for every epoch", batch_variant("manual_seed"), None, "engine's order"),
]


def sample_kl_variant(scale="sigma", mean_term=True, kl="mean", order="right"):
    """sample_and_kl as a learner writes it (``sigma`` and ``mean`` are right)."""
    def sample_and_kl(mean, logvar, noise):
        std = {"sigma": torch.exp(0.5 * logvar), "variance": logvar.exp(), "logvar": logvar,
               "own_noise": torch.exp(0.5 * logvar)}[scale]
        drawn = torch.randn_like(mean) if scale == "own_noise" else noise
        z = (mean if mean_term else 0) + std * drawn
        terms = 0.5 * (mean**2 + logvar.exp() - 1 - logvar)
        value = {"mean": terms.mean(), "sum": terms.sum(), "per_image_sum": terms.flatten(1).sum(1).mean(),
                 "no_half": 2 * terms.mean(), "sigma": (0.5 * (mean**2 + (0.5 * logvar).exp() - 1 - logvar)).mean(),
                 "logvar_sign": (0.5 * (mean**2 + logvar.exp() - 1 + logvar)).mean(), "negated": -terms.mean(),
                 "per_image": terms.flatten(1).sum(1),
                 "log_sigma": (0.5 * (mean**2 + logvar.exp() - 1 - 0.5 * logvar)).mean()}[kl]
        return (value, z) if order == "swapped" else (z, value)
    return sample_and_kl


def tokens_variant(shape="right", count="right", error="right"):
    """latent_tokens as a learner writes it."""
    def latent_tokens(height, width, factor, channels, patch):
        if error == "right":
            for name, size in (("height", height), ("width", width)):
                if size % (factor * patch):
                    raise ValueError(f"{name}: expected a multiple of {factor * patch}, got {size}")
        elif error == "factor_only":
            for name, size in (("height", height), ("width", width)):
                if size % factor:
                    raise ValueError(f"{name}: expected a multiple of {factor}, got {size}")
        elif error == "assert":
            assert height % (factor * patch) == 0 and width % (factor * patch) == 0
        elif error == "unnamed":
            if height % (factor * patch) or width % (factor * patch):
                raise ValueError("sizes do not divide")
        h, w = height // factor, width // factor
        out = {"right": (channels, h, w), "channels_last": (h, w, channels), "upsampled": (channels, height * factor,
               width * factor), "swapped": (channels, w, h), "rgb": (3, h, w)}[shape]
        tokens = {"right": (h // patch) * (w // patch), "pixels": (height // patch) * (width // patch), "no_patch": h * w,
                  "patch_once": h * w // patch, "channels": channels * (h // patch) * (w // patch),
                  "sum": (h + w) // patch}[count]
        return out, tokens
    return latent_tokens


def rank_variant(kind="right"):
    """rank_slice as a learner writes it (``right``, ``slice`` and ``tensor_split`` are correct)."""
    def rank_slice(batch_size, world_size, rank):
        per = batch_size // world_size
        if kind in ("right", "slice", "tensor_split") and per * world_size != batch_size:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {world_size}")
        if kind == "assert":
            assert batch_size % world_size == 0
        if kind == "slice":
            return slice(rank * per, (rank + 1) * per)
        if kind == "tensor_split":
            return torch.tensor_split(torch.arange(batch_size), world_size)[rank]
        if kind == "strided":
            return torch.arange(rank, batch_size, world_size)
        if kind == "from_one":
            return torch.arange((rank + 1) * per, (rank + 2) * per)
        if kind == "reversed":
            return torch.arange((world_size - 1 - rank) * per, (world_size - rank) * per)
        if kind == "offset":
            return torch.arange(rank, rank + per)
        if kind == "whole":
            return torch.arange(rank * batch_size, (rank + 1) * batch_size)
        if kind == "shuffled":
            return torch.randperm(batch_size, generator=make_generator(0))[rank * per:(rank + 1) * per]
        return torch.arange(rank * per, (rank + 1) * per)  # "floor": no error, drops the remainder
    return rank_slice


LESSON08_09_WRONG += [
    ("sample_and_kl", "σ² for σ", sample_kl_variant(scale="variance"), "std_is_variance", "exp(½·log σ²)"),
    ("sample_and_kl", "log σ² for σ", sample_kl_variant(scale="logvar"), "logvar_as_std", "log σ² itself"),
    ("sample_and_kl", "no mean in z", sample_kl_variant(mean_term=False), "missing_mean", "μ + σ·n"),
    ("sample_and_kl", "its own noise", sample_kl_variant(scale="own_noise"), "ignores_noise", "noise you are given"),
    ("sample_and_kl", "returned (kl, z)", sample_kl_variant(order="swapped"), "order_swapped", "order"),
    ("sample_and_kl", "KL summed", sample_kl_variant(kl="sum"), "kl_sum_not_mean", "mean over every"),
    ("sample_and_kl", "KL summed per image", sample_kl_variant(kl="per_image_sum"), "kl_sum_per_image", "each image"),
    ("sample_and_kl", "KL without ½", sample_kl_variant(kl="no_half"), "kl_missing_half", "½"),
    ("sample_and_kl", "KL with σ for σ²", sample_kl_variant(kl="sigma"), "kl_sigma_not_variance", "σ²"),
    ("sample_and_kl", "KL + log σ²", sample_kl_variant(kl="logvar_sign"), "kl_logvar_sign", "sign"),
    ("sample_and_kl", "KL negated", sample_kl_variant(kl="negated"), "kl_negated", "≥ 0"),
    ("sample_and_kl", "one KL per image", sample_kl_variant(kl="per_image"), "kl_per_image", "one number"),
    ("sample_and_kl", "log σ for log σ² in the KL", sample_kl_variant(kl="log_sigma"), None, "KL"),
    ("latent_tokens", "channels last", tokens_variant(shape="channels_last"), "channels_last", "channels first"),
    ("latent_tokens", "multiplied by f", tokens_variant(shape="upsampled"), "upsampled", "downsamples"),
    ("latent_tokens", "(c, W/f, H/f)", tokens_variant(shape="swapped"), "height_width_swapped", "swapped"),
    ("latent_tokens", "3 channels", tokens_variant(shape="rgb"), "image_channels", "c channels"),
    ("latent_tokens", "patches of the image", tokens_variant(count="pixels"), "tokens_from_pixels", "f times smaller"),
    ("latent_tokens", "no patchify", tokens_variant(count="no_patch"), "no_patchify", "p×p patch"),
    ("latent_tokens", "÷ p, not p²", tokens_variant(count="patch_once"), "patch_not_squared", "p×p"),
    ("latent_tokens", "× channels", tokens_variant(count="channels"), "tokens_times_channels", "all c channels"),
    ("latent_tokens", "no error", tokens_variant(error="none"), "no_error", "ValueError"),
    ("latent_tokens", "only f must divide", tokens_variant(error="factor_only"), "divisible_by_factor_only", "f·p"),
    ("latent_tokens", "assert, not ValueError", tokens_variant(error="assert"), "wrong_error_type", "ValueError"),
    ("latent_tokens", "ValueError without the name", tokens_variant(error="unnamed"), "error_without_name", "name"),
    ("latent_tokens", "H/f + W/f over p", tokens_variant(count="sum"), None, "(H/(f·p))·(W/(f·p))"),
    ("rank_slice", "every W-th position", rank_variant("strided"), "strided", "contiguous"),
    ("rank_slice", "ranks from 1", rank_variant("from_one"), "rank_counted_from_one", "rank 0"),
    ("rank_slice", "ranks reversed", rank_variant("reversed"), "reversed_ranks", "first block"),
    ("rank_slice", "block starts at r", rank_variant("offset"), "offset_not_scaled", "r·B/W"),
    ("rank_slice", "B positions per rank", rank_variant("whole"), "per_rank_size", "B/W"),
    ("rank_slice", "floored, no error", rank_variant("floor"), "no_error", "ValueError"),
    ("rank_slice", "assert, not ValueError", rank_variant("assert"), "wrong_error_type", "ValueError"),
    ("rank_slice", "a shuffled split", rank_variant("shuffled"), None, "contiguous"),
    ("mfu", "a percentage", lambda f, r, p: 100 * f * r / p, "percent_not_fraction", "fraction"),
    ("mfu", "no images/s", lambda f, r, p: f / p, "missing_rate", "images/s"),
    ("mfu", "divided by images/s", lambda f, r, p: f / r / p, "divided_by_rate", "images/s"),
    ("mfu", "peak / achieved", lambda f, r, p: p / (f * r), "inverted", "upside down"),
    ("mfu", "× 3 for backward", lambda f, r, p: 3 * f * r / p, "backward_counted_again", "already count"),
    ("mfu", "÷ 3, forward only", lambda f, r, p: f * r / p / 3, "forward_only", "as they are"),
    ("mfu", "TFLOP/s over FLOP/s", lambda f, r, p: f * r / 1e12 / p, "tera_units", "same unit"),
    ("mfu", "÷ 8 GPUs", lambda f, r, p: f * r / (8 * p), None, "peak gives"),
]


@pytest.mark.parametrize("name, what, fn, mistake, keyword", LESSON08_09_WRONG,
                         ids=[f"{w[0]}: {w[1]}" for w in LESSON08_09_WRONG])
def test_lesson08_09_mistakes(name, what, fn, mistake, keyword, capsys):
    assert_rejects(name, fn, keyword, capsys)
    assert run_check(name, fn, capsys).mistake == mistake


def test_most_lesson08_09_wrong_answers_are_named():
    for name in LESSON_CHECKS["08_latent_space"] + LESSON_CHECKS["09_scaling_up"]:
        wrong = [w for w in LESSON08_09_WRONG if w[0] == name]
        named = [w for w in wrong if w[3] is not None]
        assert len({w[3] for w in named}) >= 3 and len(named) >= 0.8 * len(wrong), name


LESSON08_09_EQUAL_FORMS = [
    ("latent_scale_shift", lambda z: (float(z.mean()), 1 / float(((z - z.mean()) ** 2).mean().sqrt()))),  # ÷ N
    ("latent_scale_shift", lambda z: (z.double().mean(), z.var().rsqrt())),
    ("encode_for_diffusion", encode_with_package),
    ("psnr", lambda x, y: 20 * torch.log10(2 / ((x - y) ** 2).flatten(1).mean(1).sqrt())),
    ("psnr", lambda x, y: 10 * torch.log10(torch.tensor(4.0)) - 10 * torch.log10(F.mse_loss(x, y, reduction="none")
                                                                                  .flatten(1).mean(1))),
    ("ema_over_steps", lambda ema, weights, ema_decay, first_step: _ema_lerp(ema, weights, ema_decay, first_step)),
    ("learning_rate", lambda s, lr, w, m: lr * (0.55 + 0.45 * math.cos(math.pi * min(1.0, (s - w) / max(1, m - w))))
     if s >= w else lr * (s + 1) / w),
    ("batch_indices", batch_variant("vectorised")),
]


@pytest.mark.parametrize("name, fn", LESSON08_09_EQUAL_FORMS)
def test_lesson08_09_accept_other_correct_forms(name, fn, capsys):
    result = run_check(name, fn, capsys)
    assert result.passed, result.message


def _ema_lerp(ema, weights, ema_decay, first_step):
    for i, theta in enumerate(weights):
        ema = torch.lerp(ema, theta, 1 - ema_decay_at(first_step + i, ema_decay))
    return ema


LESSON08_09_NEW_EQUAL_FORMS = [
    ("sample_and_kl", lambda m, lv, n: (m + lv.exp().sqrt() * n,
                                        torch.distributions.kl_divergence(torch.distributions.Normal(m, (0.5 * lv).exp()),
                                                                          torch.distributions.Normal(0.0, 1.0)).mean())),
    ("sample_and_kl", lambda m, lv, n: (torch.addcmul(m, (0.5 * lv).exp(), n),
                                        float(-0.5 * torch.mean(1 + lv - m.pow(2) - lv.exp())))),
    ("latent_tokens", tokens_variant()),
    ("latent_tokens", lambda H, W, f, c, p: (torch.Size([c, H // f, W // f]), H * W // (f * p) ** 2)
     if H % (f * p) == 0 and W % (f * p) == 0 else (_ for _ in ()).throw(
         ValueError(f"height and width: expected multiples of {f * p}, got {H}×{W}"))),
    ("rank_slice", rank_variant("slice")),
    ("rank_slice", rank_variant("tensor_split")),
    ("rank_slice", lambda B, W, r: list(range(r * B // W, (r + 1) * B // W)) if B % W == 0 else
     (_ for _ in ()).throw(ValueError(f"batch_size {B} does not split over {W}"))),
    ("mfu", lambda f, r, p: torch.tensor(f) * r / p),
    ("mfu", lambda f, r, p: (f * r / 1e12) / (p / 1e12)),
]


@pytest.mark.parametrize("name, fn", LESSON08_09_NEW_EQUAL_FORMS)
def test_lesson08_09_new_exercises_accept_other_correct_forms(name, fn, capsys):
    result = run_check(name, fn, capsys)
    assert result.passed, result.message


# ----------------------------------------------------------------------------- the audit over every check

def every_wrong_answer() -> list[tuple[str, str, object]]:
    """Every wrong answer the tests above try, as ``(check, what the student did, their function)``: the
    list a fresh reader's slips are kept in (issue 15, item 3)."""
    slips = {"heun": HEUN_SLIPS, "gaussian_velocity": GAUSSIAN_VELOCITY_SLIPS, "q_sample": Q_SAMPLE_SLIPS,
             "eps_loss": EPS_LOSS_SLIPS, "ancestral_step": ANCESTRAL_STEP_SLIPS, "interpolate": INTERPOLATE_SLIPS,
             "velocity_target": VELOCITY_TARGET_SLIPS, "euler_sample": EULER_SAMPLE_SLIPS,
             "straightness": STRAIGHTNESS_SLIPS, "sample_logit_normal": SAMPLE_LOGIT_NORMAL_SLIPS,
             "shift_time": SHIFT_TIME_SLIPS, "timestep_embedding": TIMESTEP_EMBEDDING_SLIPS,
             "sincos_2d_positions": SINCOS_2D_POSITIONS_SLIPS, "patchify": PATCHIFY_SLIPS,
             "unpatchify": UNPATCHIFY_SLIPS, "modulate": MODULATE_SLIPS, "cfg_combine": CFG_COMBINE_SLIPS,
             "joint_attention": JOINT_ATTENTION_SLIPS, "rms_norm": RMS_NORM_SLIPS}
    tables = {"ddim_sample": DDIM_SAMPLE_WRONG, "reflow_loss": REFLOW_LOSS_WRONG, "guided_sample": GUIDED_SAMPLE_WRONG,
              "joint_block_forward": JOINT_BLOCK_WRONG, "char_tokenize": CHAR_TOKENIZE_WRONG,
              "encoder_drop_mask": ENCODER_DROP_WRONG, "build_context": BUILD_CONTEXT_WRONG,
              "mix_captions": MIX_CAPTIONS_WRONG, "dpo_objective": DPO_OBJECTIVE_WRONG,
              "dpo_errors": DPO_ERRORS_WRONG, "validation_loss": VALIDATION_LOSS_WRONG}
    rows = [(name, f"the slip its message calls {keyword!r}", fn) for name, pairs in slips.items() for fn, keyword in pairs]
    rows += [(name, what, fn) for name, table in tables.items() for what, fn, *_ in table]
    rows += [(name, what, fn) for name, what, fn, *_ in WRONG_ANSWERS + LESSON08_09_WRONG]
    rows += [("ancestral_step", f"a slip named {mistake}", fn) for fn, mistake in ANCESTRAL_STEP_NAMED]
    rows += [(name, f"{getattr(fn, '__name__', 'a variant')} (global RNG)", fn) for name, fn in GLOBAL_RNG_WRONG]
    return rows


@pytest.fixture(scope="module")
def audit():
    """Each check's distinct wrong answers with their results: answers the check cannot tell apart (the same
    mistake and message) count once, as copies of each other."""
    import contextlib
    import io

    seen, distinct = set(), {}
    for name, what, fn in every_wrong_answer():
        with contextlib.redirect_stdout(io.StringIO()):
            result = CHECKS[name](fn)
        key = (name, result.passed, result.mistake, result.message)
        if key not in seen:
            seen.add(key)
            distinct.setdefault(name, []).append((what, result))
    return distinct


def test_every_check_rejects_at_least_three_distinct_wrong_answers(audit):
    assert sorted(audit) == sorted(CHECKS)
    few = {name: len(rows) for name, rows in audit.items() if len(rows) < 3}
    assert not few, f"checks with fewer than three distinct wrong answers in the tests: {few}"
    passed = [f"{name}: {what}" for name, rows in audit.items() for what, result in rows if result.passed]
    assert not passed, passed


def test_most_wrong_answers_are_named_over_every_check(audit):
    """At least 80 % of all the distinct wrong answers are named (the result carries the mistake's identifier,
    not only a generic "wrong value"), and at least half of each check's."""
    rows = [(name, what, result) for name, answers in audit.items() for what, result in answers]
    named = sum(result.mistake is not None for _, _, result in rows)
    unnamed = [f"{name}: {what} — {result.message}" for name, what, result in rows if result.mistake is None]
    assert named >= 0.8 * len(rows), f"{named}/{len(rows)} named; unnamed:\n" + "\n".join(unnamed)
    for name, answers in audit.items():
        assert sum(result.mistake is not None for _, result in answers) >= 0.5 * len(answers), name


# ----------------------------------------------------------------------------- every equal form passes

def heun_own_grid(velocity, z, steps):
    """Heun with its own time grid, t = 1 − i/steps, and the corrector written as a second Euler step averaged."""
    h = -1.0 / steps
    for i in range(steps):
        t = torch.full((z.shape[0],), 1 - i / steps)
        v1 = velocity(z, t)
        v2 = velocity(z + h * v1, t + h)
        z = 0.5 * (z + h * v1) + 0.5 * (z + h * v2)
    return z


def gaussian_velocity_posterior(z, t, mean, std):
    """v = ε̂ − x̂0 from the posterior means of ε and x0 given z_t (the same field, derived another way)."""
    t = t[:, None]
    centred = z - (1 - t) * mean
    var = (1 - t) ** 2 * std**2 + t**2
    return t * centred / var - (mean + (1 - t) * std**2 * centred / var)


def euler_counting_down(model, noise, steps):
    z = noise
    for i in range(steps, 0, -1):
        z = z - model(z, torch.full((z.shape[0],), i / steps)) / steps
    return z


def positions_ij_meshgrid(dim, rows, cols):
    k = dim // 4
    omega = torch.pow(10000.0, -torch.arange(k, dtype=torch.float64) / k)
    i, j = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")

    def sc(p):
        angles = torch.outer(p.reshape(-1), omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([sc(j), sc(i)], dim=1).float()


def patchify_unfold(x, p):
    b, c = x.shape[:2]
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)


def unpatchify_permute(tokens, p, grid):
    b, (h, w) = tokens.shape[0], grid
    c = tokens.shape[2] // (p * p)
    return tokens.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)


EQUAL_FORMS = [
    # (check, how it is written, a correct function written differently from the reference)
    ("heun", "own grid 1 − i/steps, averaged Euler steps", heun_own_grid),
    ("heun", "learner's loop over linspace", heun_variant()),
    ("gaussian_velocity", "ε̂ − x̂0 from posterior means", gaussian_velocity_posterior),
    ("gaussian_velocity", "learner's closed form", gaussian_variant()),
    ("q_sample", "addcmul and ** 0.5", lambda x0, k, eps, schedule: torch.addcmul(
        schedule.alpha_bars[k].view(-1, *[1] * (x0.ndim - 1)) ** 0.5 * x0,
        (1 - schedule.alpha_bars[k]).view(-1, *[1] * (x0.ndim - 1)) ** 0.5, eps)),
    ("q_sample", "learner's reshape", q_sample_variant()),
    ("eps_loss", "F.mse_loss on the package's q_sample", _eps_loss_with()),
    ("eps_loss", "learner's loop", eps_loss_variant()),
    ("ancestral_step", "ε form", ancestral_variant()),
    ("interpolate", "torch.lerp", lambda x0, eps, t: torch.lerp(x0, eps, expand_time(torch.as_tensor(t), x0))),
    ("interpolate", "x0 + t·(ε − x0)", lambda x0, eps, t: x0 + expand_time(torch.as_tensor(t), x0) * (eps - x0)),
    ("velocity_target", "−(x0 − ε)", lambda x0, eps: -(x0 - eps)),
    ("velocity_target", "torch.sub", lambda x0, eps: torch.sub(eps, x0)),
    ("euler_sample", "counting i down from steps", euler_counting_down),
    ("euler_sample", "learner's loop over linspace", euler_variant()),
    ("straightness", "learner's weights and sums", straightness_variant()),
    ("straightness", "batch mean after the step sum", _straightness_with()),
    ("sample_logit_normal", "1/(1 + e^−x)", lambda n, m=0.0, s=1.0, generator=None, device=None:
     1 / (1 + torch.exp(-(m + s * torch.randn(n, generator=generator))))),
    ("sample_logit_normal", "learner's sigmoid", logit_normal_variant()),
    ("shift_time", "α·t/(α·t + 1 − t)", lambda t, alpha: alpha * t / (alpha * t + 1 - t)),
    ("shift_time", "(α·t)/(1 − t + α·t) with torch.div", lambda t, alpha: torch.div(alpha * t, 1 - t + alpha * t)),
    ("timestep_embedding", "learner's exp(−log 10000·i/half)", embedding_variant()),
    ("timestep_embedding", "10000^(−i/half) by torch.pow", lambda t, dim=256: torch.cat(
        [f(1000 * torch.outer(t, torch.pow(10000.0, -torch.arange(dim // 2) / (dim // 2)))) for f in (torch.cos, torch.sin)],
        dim=-1)),
    ("sincos_2d_positions", "meshgrid indexing='ij', torch.outer", positions_ij_meshgrid),
    ("patchify", "unfold and permute", patchify_unfold),
    ("patchify", "einops", patchify_variant("b (h w) (p q c)")),
    ("unpatchify", "reshape and permute", unpatchify_permute),
    ("unpatchify", "einops", unpatchify_variant("b (h w) (p q c)")),
    ("modulate", "addcmul", lambda x, shift, scale: torch.addcmul(shift[:, None], x, 1 + scale[:, None])),
    ("modulate", "x + x·scale + shift", lambda x, shift, scale: x + x * scale.unsqueeze(1) + shift.unsqueeze(1)),
    ("cfg_combine", "(1 − w)·v_∅ + w·v_y", lambda v_u, v_c, w: (1 - w) * v_u + w * v_c),
    ("cfg_combine", "torch.lerp", lambda v_u, v_c, w: torch.lerp(v_u, v_c, w)),
    ("joint_attention", "softmax(QKᵀ/√d)V by hand", _joint_with()),
    ("joint_attention", "split before merging the heads", _joint_with(split_first=True)),
    ("joint_attention", "learner's SDPA", joint_variant()),
    ("rms_norm", "rsqrt", lambda u, g, eps=1e-6: u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + eps) * g),
    ("rms_norm", "learner's form", rms_variant()),
    ("encoder_drop_mask", "torch.bernoulli", drop_variant("bernoulli")),
    ("encoder_drop_mask", "learner's u < p", drop_variant("right")),
]


@pytest.mark.parametrize("name, how, fn", EQUAL_FORMS, ids=[f"{name}: {how}" for name, how, _ in EQUAL_FORMS])
def test_equal_forms_pass(name, how, fn, capsys):
    result = run_check(name, fn, capsys)
    assert result.passed, result.message


def test_every_check_has_other_correct_forms_tested():
    """Each check passes at least one correct answer written differently from the package's reference: in
    EQUAL_FORMS or in the check's own ``test_…_accept…`` / ``test_every_equal_form_of_the_…`` test."""
    import inspect

    covered = {name for name, _, _ in EQUAL_FORMS}
    tests = [name for name, fn in globals().items() if name.startswith("test_") and inspect.isfunction(fn)]
    for check in CHECKS:
        if any(test.startswith((f"test_{check}_accepts", f"test_every_equal_form_of_the_{check}")) for test in tests):
            covered.add(check)
    covered |= {name for name, _ in LESSON08_09_EQUAL_FORMS + LESSON08_09_NEW_EQUAL_FORMS}
    assert covered == set(CHECKS), sorted(set(CHECKS) - covered)


def test_shape_slips_are_named():
    assert core._shape_slip((256, 32), (32, 256))[0] == "axes_swapped"
    assert core._shape_slip((2, 12, 24), (2, 24, 12)) == ("axes_swapped", "axes 1 and 2 are swapped")
    assert core._shape_slip((5, 32, 2), (32, 2))[0] == "returned_trajectory"
    assert core._shape_slip((100, 1), (100,))[0] == "extra_axis"
    assert core._shape_slip((4, 8), (4, 8, 1))[0] == "missing_axis"
    assert core._shape_slip((6, 3, 8), (6,)) is None and core._shape_slip((32, 256), (32, 16)) is None
