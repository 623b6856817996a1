"""The practice checks: each passes the package's own implementation and names the mistake in
plausible wrong ones (the message must contain the keyword a learner needs)."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minisd3 import blocks, ddpm, embeddings, guidance, ode, patches, rectified_flow, timesteps
from minisd3.course import checks
from minisd3.course.checks import CHECKS, LESSON_CHECKS, CheckResult, core, lesson01_flows, lesson05_embeddings, lesson07_mmdit
from minisd3.validation import expand_time

REFERENCES = {
    "heun": ode.heun,
    "gaussian_velocity": lesson01_flows._gaussian_velocity_reference,
    "q_sample": ddpm.q_sample,
    "eps_loss": ddpm.eps_loss,
    "ancestral_step": ddpm.ancestral_step,
    "interpolate": rectified_flow.interpolate,
    "velocity_target": rectified_flow.velocity_target,
    "euler_sample": rectified_flow.sample,
    "straightness": rectified_flow.straightness,
    "sample_logit_normal": timesteps.sample_logit_normal,
    "shift_time": timesteps.shift_time,
    "timestep_embedding": embeddings.timestep_embedding,
    "sincos_2d_positions": embeddings.sincos_2d_positions,
    "patchify": patches.patchify,
    "unpatchify": patches.unpatchify,
    "modulate": blocks.modulate,
    "cfg_combine": guidance.cfg_combine,
    "joint_attention": lesson07_mmdit._joint_attention_reference,
    "rms_norm": lesson07_mmdit._rms_norm_reference,
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


@pytest.mark.parametrize("fn, keyword", [
    (heun_euler, "Euler"),
    (heun_variant(half=1.0), "½"),
    (heun_variant(corrector_time_is_start=True), "end of the step"),
    (heun_variant(reverse=True), "backwards"),
    (lambda velocity, z, steps: ode.heun(velocity, z, steps, return_trajectory=True).states, "final"),
    (lambda velocity, z, steps: ode.heun(lambda zz, t: velocity(zz, float(t[0])), z, steps), "shape"),
])
def test_heun_mistakes(fn, keyword, capsys):
    assert_rejects("heun", fn, keyword, capsys)


def gaussian_variant(sign=1.0, swap=False, drop_mean=False, squares=True):
    def velocity(z, t, mean, std):
        t = (1 - t if swap else t)[:, None]
        var = (1 - t) ** 2 * std**2 + t**2 if squares else (1 - t) * std**2 + t
        v = (t - (1 - t) * std**2) / var * (z - (1 - t) * mean) - (0 if drop_mean else mean)
        return sign * v
    return velocity


@pytest.mark.parametrize("fn, keyword", [
    (gaussian_variant(sign=-1.0), "sign"),
    (gaussian_variant(swap=True), "swapped"),
    (gaussian_variant(drop_mean=True), "− μ"),
    (gaussian_variant(squares=False), "squared"),
    (lambda z, t, mean, std: gaussian_variant()(z, t, mean, std)[:1], "shape"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (q_sample_variant(root=False), "square root"),
    (q_sample_variant(swap=True), "swapped"),
    (q_sample_variant(use_alphas=True), "cumulative"),
    (q_sample_variant(broadcast=False), "reshape"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (eps_loss_variant(target="x0"), "target"),
    (eps_loss_variant(time="k"), "model_time"),
    (eps_loss_variant(noised=False), "clean"),
    (eps_loss_variant(reduce="sum"), "mean"),
    (eps_loss_variant(use_generator=False), "generator"),
    (lambda model, x0, schedule, generator=None: ddpm.eps_loss(model, x0, schedule, generator).item(), "gradient"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (ancestral_variant(sign=1.0), "sign"),
    (ancestral_variant(noise_at_zero=True), "k = 0"),
    (ancestral_variant(root_sigma=False), "square root"),
    (ancestral_variant(pass_k=True), "model_time"),
    (ancestral_variant(divide=False), "√α_k"),
])
def test_ancestral_step_mistakes(fn, keyword, capsys):
    assert_rejects("ancestral_step", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 03

def interpolate_variant(swap=False, roots=False, broadcast=True):
    def interpolate(x0, eps, t):
        if isinstance(t, torch.Tensor):
            t = expand_time(t, x0) if broadcast else t[:, None]
        t = torch.as_tensor(t)
        a, b = (t, 1 - t) if swap else (1 - t, t)
        return (a.sqrt() * x0 + b.sqrt() * eps) if roots else a * x0 + b * eps
    return interpolate


@pytest.mark.parametrize("fn, keyword", [
    (interpolate_variant(swap=True), "swapped"),
    (interpolate_variant(roots=True), "square roots"),
    (interpolate_variant(broadcast=False), "broadcast"),
    (lambda x0, eps, t: (1 - expand_time(t, x0)) * x0 + expand_time(t, x0) * eps, "float"),
])
def test_interpolate_mistakes(fn, keyword, capsys):
    assert_rejects("interpolate", fn, keyword, capsys)


@pytest.mark.parametrize("fn, keyword", [
    (lambda x0, eps: x0 - eps, "sign"),
    (lambda x0, eps: eps, "subtract x0"),
    (lambda x0, eps: eps + x0, "difference"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (euler_variant(sign=1.0), "sign"),
    (euler_variant(step_size=False), "step size"),
    (euler_variant(at_end=True), "start of the step"),
    (euler_variant(reverse=True), "backwards"),
    (euler_variant(scalar_t=True), "shape"),
    (lambda model, noise, steps: rectified_flow.sample(model, noise, steps, return_trajectory=True).states, "final"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (straightness_variant(weight="none"), "step size"),
    (straightness_variant(weight="signed"), "|h_i|"),
    (straightness_variant(flip=True), "start − end"),
    (straightness_variant(reduce="mean"), "sums"),
    (straightness_variant(square=False), "square"),
    (lambda trajectory: torch.zeros(3), "one number"),
])
def test_straightness_mistakes(fn, keyword, capsys):
    assert_rejects("straightness", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 04

def logit_normal_variant(sigmoid=True, scale="s", uniform=False, sign=1.0, use_generator=True):
    def sample_logit_normal(n, m=0.0, s=1.0, generator=None, device=None):
        gen = generator if use_generator else None
        draw = torch.rand(n, generator=gen) * math.sqrt(12) - math.sqrt(3) if uniform else torch.randn(n, generator=gen)
        x = sign * m + {"s": s, "s2": s**2}[scale] * draw
        return torch.sigmoid(x) if sigmoid else x
    return sample_logit_normal


@pytest.mark.parametrize("fn, keyword", [
    (logit_normal_variant(sigmoid=False), "sigmoid"),
    (logit_normal_variant(scale="s2"), "s²"),
    (logit_normal_variant(uniform=True), "N(0, 1)"),
    (logit_normal_variant(sign=-1.0), "sign"),
    (logit_normal_variant(use_generator=False), "generator"),
    (lambda n, m=0.0, s=1.0, generator=None, device=None: torch.sigmoid(m + s * torch.randn(n, 1, generator=generator)),
     "shape"),
])
def test_sample_logit_normal_mistakes(fn, keyword, capsys):
    assert_rejects("sample_logit_normal", fn, keyword, capsys)


@pytest.mark.parametrize("fn, keyword", [
    (lambda t, alpha: t / (alpha - (alpha - 1) * t), "wrong way"),
    (lambda t, alpha: timesteps.shift_time(timesteps.shift_time(t, alpha), alpha), "twice"),
    (lambda t, alpha: alpha * t, "denominator"),
    (lambda t, alpha: alpha * t / (1 + alpha * t), "1 + (α − 1)·t"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (embedding_variant(scale=1.0), "not scaled by 1000"),
    (embedding_variant(sin_first=True), "swapped"),
    (embedding_variant(divisor=lambda half: half - 1), "half − 1"),
    (embedding_variant(sign=1.0), "minus"),
    (embedding_variant(interleave=True), "interleaved"),
    (embedding_variant(fixed_half=128), "wrong shape"),
    (lambda t, dim=256: embeddings.timestep_embedding(t, dim).T, "wrong shape"),
])
def test_timestep_embedding_mistakes(fn, keyword, capsys):
    assert_rejects("timestep_embedding", fn, keyword, capsys)


def positions_variant(**knobs):
    return lambda dim, rows, cols: lesson05_embeddings._positions_2d(dim, rows, cols, **knobs).float()


@pytest.mark.parametrize("fn, keyword", [
    (positions_variant(columns_first=False), "row (y) half comes first"),
    (positions_variant(row_major=False), "column-major"),
    (positions_variant(sin_first=False), "cosines before sines"),
    (lambda dim, rows, cols: lesson05_embeddings._positions_2d(dim, rows, cols, divisor=dim // 2).float(), "divide i by k"),
    (lambda dim, rows, cols: embeddings.sincos_2d_positions(dim, rows, cols).T, "wrong shape"),
    (lambda dim, rows, cols: embeddings.sincos_2d_positions(dim, rows, cols) * 2, "not in one of the usual ways"),
])
def test_sincos_2d_positions_mistakes(fn, keyword, capsys):
    assert_rejects("sincos_2d_positions", fn, keyword, capsys)


# ----------------------------------------------------------------------------- lesson 06

def patchify_variant(pattern):
    return lambda x, p: rearrange(x, f"b c (h p) (w q) -> {pattern}", p=p, q=p)


@pytest.mark.parametrize("fn, keyword", [
    (patchify_variant("b (w h) (p q c)"), "column-major"),
    (patchify_variant("b (h w) (c p q)"), "channel-first"),
    (lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]), "plain reshape"),
    (lambda x, p: patches.patchify(x, p).transpose(1, 2), "wrong shape"),
])
def test_patchify_mistakes(fn, keyword, capsys):
    assert_rejects("patchify", fn, keyword, capsys)


def unpatchify_variant(pattern, swap_grid=False):
    def unpatchify(tokens, p, grid):
        h, w = grid[::-1] if swap_grid else grid
        return rearrange(tokens, f"{pattern} -> b c (h p) (w q)", h=h, w=w, p=p, q=p)
    return unpatchify


@pytest.mark.parametrize("fn, keyword", [
    (unpatchify_variant("b (w h) (p q c)"), "column-major"),
    (unpatchify_variant("b (h w) (c p q)"), "channel-first"),
    (unpatchify_variant("b (h w) (p q c)", swap_grid=True), "first entry of grid"),
    (lambda tokens, p, grid: tokens.reshape(tokens.shape[0], -1, grid[0] * p, grid[1] * p), "not the inverse"),
])
def test_unpatchify_mistakes(fn, keyword, capsys):
    assert_rejects("unpatchify", fn, keyword, capsys)


@pytest.mark.parametrize("fn, keyword", [
    (lambda x, shift, scale: x * scale[:, None] + shift[:, None], "1 +"),
    (lambda x, shift, scale: x * (1 + shift[:, None]) + scale[:, None], "swapped"),
    (lambda x, shift, scale: (x + shift[:, None]) * (1 + scale[:, None]), "before scaling"),
    (lambda x, shift, scale: x * (1 + scale) + shift, "broadcast"),
    (lambda x, shift, scale: x * (1 + scale[None]) + shift[None] if x.shape[0] == x.shape[1]
     else blocks.modulate(x, shift, scale), "no broadcasting over tokens"),
])
def test_modulate_mistakes(fn, keyword, capsys):
    assert_rejects("modulate", fn, keyword, capsys)


@pytest.mark.parametrize("fn, keyword", [
    (lambda v_u, v_c, w: v_u + w * v_c, "v_cond only"),
    (lambda v_u, v_c, w: w * v_c, "v_cond only"),
    (lambda v_u, v_c, w: w * v_c - (1 - w) * v_u, "v_cond only"),
    (lambda v_u, v_c, w: v_u - w * (v_c - v_u), "sign"),
    (lambda v_u, v_c, w: v_c + w * (v_u - v_c), "swapped"),
    (lambda v_u, v_c, w: v_c + w * (v_c - v_u), "w + 1"),
])
def test_cfg_combine_mistakes(fn, keyword, capsys):
    assert_rejects("cfg_combine", fn, keyword, capsys)


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


@pytest.mark.parametrize("fn, keyword", [
    (joint_variant(separate=True), "no cross-talk"),
    (joint_variant(cat_dim=1), "sequence axis"),
    (joint_variant(cat_dim=3), "sequence axis"),
    (joint_variant(reverse_cat=True), "split order"),
    (joint_variant(reverse_out=True), "reversed order"),
    (joint_variant(equal_split=True), "split lengths"),
    (joint_variant(merge=False), "merge the heads"),
    (lambda streams: torch.cat(lesson07_mmdit._joint_attention_reference(streams), dim=1), "one output per stream"),
    (lambda streams: lesson07_mmdit._joint_attention_reference([(q.div_(2), k, v) for q, k, v in streams]), "in place"),
])
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


@pytest.mark.parametrize("fn, keyword", [
    (rms_variant(centre=True), "LayerNorm"),
    (rms_variant(dim=2), "sequence"),
    (rms_variant(dim=1), "heads"),
    (rms_variant(gain=False), "gain"),
    (rms_variant(use_eps=False), "missing ε"),
    (rms_variant(eps_inside=False), "inside the square root"),
    (rms_variant(root=False), "square root"),
    (lambda u, g, eps=1e-6: rms_variant()(u, g), "eps argument"),
    (lambda u, g, eps=1e-6: (u / (u**2).mean(-1).add(eps).sqrt() * g), "keepdim"),
])
def test_rms_norm_mistakes(fn, keyword, capsys):
    assert_rejects("rms_norm", fn, keyword, capsys)


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
    ("timestep_embedding", lambda t, dim=256: embeddings.timestep_embedding(t, dim).T, None),
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


def test_outside_a_kernel_the_line_is_printed(capsys):
    assert not core._in_kernel()
    result = CHECKS["velocity_target"](rectified_flow.velocity_target)
    assert capsys.readouterr().out == result.line + "\n"


def test_in_a_kernel_one_output_carries_the_line_and_the_json(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(core, "_in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kwargs: shown.append((objs, kwargs)))
    result = CHECKS["velocity_target"](lambda x0, eps: x0 - eps)
    assert capsys.readouterr().out == ""
    assert len(shown) == 1
    (bundle,), kwargs = shown[0]
    assert kwargs == {"raw": True}
    assert bundle == {"text/plain": result.line, core.RESULT_MIME: result.to_dict()}
    assert bundle[core.RESULT_MIME]["mistake"] == "sign_flipped" and not bundle[core.RESULT_MIME]["passed"]

