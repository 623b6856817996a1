"""Lesson 11 (data, preferences and scale): the checks of the caption mixer (``mix_captions``), the
Diffusion-DPO loss from the four velocity errors (``dpo_objective``), those errors with one t and one ε
shared by winner, loser, model and reference (``dpo_errors``) and SD3's validation loss
(``validation_loss``), with their references and the wrong variants the checks name.

The drawing exercises (``mix_captions``, ``dpo_errors``, ``validation_loss``) are checked by what they
did, not by equal draws: rates counted over many captions, and the t and ε read back from what the
recorded model was given (z_t = (1 − t)·x + t·ε), so any drawing order that follows the rule passes.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ... import preference
from ...rectified_flow import interpolate, velocity_target
from ...seeding import make_generator, rand, randn
from ...validation_loss import validation_times
from .core import Mistake, _as_number, _call, _check, _compare, _curved_field, _near, _Recorder, _require_generator

# ---------------------------------------------------------------------------------------------
# mix_captions
# ---------------------------------------------------------------------------------------------


def _mix_captions_reference(full: Sequence[str], alt: Sequence[str], generator: torch.Generator,
                            synthetic_fraction: float = 0.5) -> list[str]:
    """Each full caption kept with probability ``synthetic_fraction``, else its alt-text, one coin per caption
    from ``generator``: the choice :func:`minisd3.recaption.mix_captions` makes (it writes the alt-text too)."""
    keep = (torch.rand(len(full), generator=generator) < synthetic_fraction).tolist()
    return [f if k else a for f, a, k in zip(full, alt, keep)]


def _captions(n: int) -> tuple[list[str], list[str]]:
    """n distinct (full caption, alt-text) pairs, so that every output can be traced to its position."""
    return [f"full caption {i}" for i in range(n)], [f"alt-text {i}" for i in range(n)]


_MIX_HOW = "torch.rand(len(full), generator=generator) < synthetic_fraction, one coin per caption"


def _choices(mix_captions: Callable, n: int, fraction: float, seed: int) -> torch.Tensor:
    """Call the learner's mixer on n captions; return the (n,) bool tensor 'kept the full caption'."""
    full, alt = _captions(n)
    got = _call(mix_captions, "mix_captions", list(full), list(alt), make_generator(seed), fraction)
    if isinstance(got, torch.Tensor):
        raise Mistake(f"returned a tensor of shape {tuple(got.shape)}; return the list of captions, full[i] where the "
                      "coin says keep and alt[i] elsewhere", "returned_mask")
    if isinstance(got, str) or not isinstance(got, (list, tuple)):
        raise Mistake(f"should return a list of {n} captions, got {type(got).__name__}")
    if len(got) != n:
        raise Mistake(f"returned {len(got)} captions for {n}; return one caption per image, in the order given")
    if not all(isinstance(c, str) for c in got):
        kinds = sorted({type(c).__name__ for c in got if not isinstance(c, str)})
        raise Mistake(f"should return strings (the captions), got {', '.join(kinds)}")
    kept = torch.tensor([c == f for c, f in zip(got, full)])
    replaced = torch.tensor([c == a for c, a in zip(got, alt)])
    if not (kept | replaced).all():
        i = int((~(kept | replaced)).nonzero()[0])
        raise Mistake(f"position {i} got {got[i]!r}; each position keeps its own image's caption, full[{i}] or "
                      f"alt[{i}], never another image's (do not shuffle or sort)", "wrong_position")
    return kept


@_check("mix_captions", "keeps each full caption with probability synthetic_fraction, one coin per caption, "
        "drawn from the generator")
def check_mix_captions(mix_captions: Callable) -> None:
    """Check ``mix_captions(full, alt, generator, synthetic_fraction=0.5)`` → a list with full[i] (the synthetic
    caption) with probability ``synthetic_fraction`` and alt[i] (the original alt-text) otherwise, independently
    per caption: the rates counted over 20 000 captions, independence of neighbours, 0 and 1, and the generator
    (the same seed gives the same captions, another seed others)."""
    n = 20_000
    for fraction in (0.2, 0.5, 0.9):
        kept = _choices(mix_captions, n, fraction, 1101)
        rate = kept.double().mean().item()
        if kept.all() or not kept.any():
            which = "the full caption" if kept.all() else "the alt-text"
            raise Mistake(f"every caption of the batch got {which} (synthetic_fraction = {fraction}): one coin for the "
                          f"whole batch; flip one coin per caption, {_MIX_HOW}", "one_coin_for_batch")
        same_as_next = (kept[1:] == kept[:-1]).double().mean().item()
        independent = rate**2 + (1 - rate) ** 2
        if abs(same_as_next - independent) > 0.02:
            pattern = "".join("F" if k else "a" for k in kept[:12].tolist())
            raise Mistake(f"the choices follow a pattern, not a coin per caption (the first twelve: {pattern}…, F = full, "
                          f"a = alt-text; two neighbours agree for {same_as_next:.2f} of the captions, independent coins "
                          f"give r² + (1 − r)² = {independent:.2f} at your rate r = {rate:.2f}): a model would see the same "
                          f"kind of caption for the same images every epoch; draw the coins from the generator, "
                          f"{_MIX_HOW}", "deterministic_pattern")
        if abs(rate - (1 - fraction)) < 0.02 and abs(fraction - 0.5) > 0.1:
            raise Mistake(f"kept the full caption for {rate:.3f} of the captions, about 1 − synthetic_fraction = "
                          f"{1 - fraction:.1f}: the fraction is inverted; keep the full (synthetic) caption when the "
                          f"coin falls below synthetic_fraction, {_MIX_HOW}", "fraction_inverted")
        if abs(rate - 0.5) < 0.02 and abs(fraction - 0.5) > 0.1:
            raise Mistake(f"kept the full caption for {rate:.3f} of the captions whatever synthetic_fraction is "
                          f"(here {fraction}): compare the coin with synthetic_fraction, {_MIX_HOW}", "fraction_ignored")
        if abs(rate - fraction) > 0.02:
            raise Mistake(f"kept the full caption for {rate:.3f} of the captions; it should be synthetic_fraction = "
                          f"{fraction} ({_MIX_HOW})")
    for fraction in (0.0, 1.0):
        kept = _choices(mix_captions, 200, fraction, 1102)
        if not (kept == bool(fraction)).all():
            raise Mistake(f"with synthetic_fraction = {fraction:g} {'every' if fraction else 'no'} full caption should "
                          f"be kept; yours kept {int(kept.sum())} of 200 ({_MIX_HOW})")
    first, second, other = (_choices(mix_captions, 256, 0.5, seed) for seed in (1103, 1103, 1104))
    _require_generator(torch.equal(first, second), not torch.equal(first, other), "captions", _MIX_HOW)


# ---------------------------------------------------------------------------------------------
# dpo_objective
# ---------------------------------------------------------------------------------------------

def _dpo_objective_reference(model_winner: torch.Tensor, model_loser: torch.Tensor, reference_winner: torch.Tensor,
                             reference_loser: torch.Tensor, beta: float) -> torch.Tensor:
    """L of :func:`minisd3.preference.dpo_objective` (which also returns the margins m)."""
    return preference.dpo_objective(model_winner, model_loser, reference_winner, reference_loser, beta)[0]


_DPO_FORMULA = "L = mean of −log σ(m), m = −β·[(e_θ(x_w) − e_ref(x_w)) − (e_θ(x_l) − e_ref(x_l))]"

_OBJECTIVE_CASES = ((64, 3.0), (48, 0.7))
"""(pairs B, β): β ≠ 1 and β ≠ 2, so that a missing, halved, dividing or misplaced β each give another number."""


@_check("dpo_objective", "matches minisd3.preference.dpo_objective: L = mean −log σ(−β·Δ)")
def check_dpo_objective(dpo_objective: Callable) -> None:
    """Check ``dpo_objective(model_winner, model_loser, reference_winner, reference_loser, beta)`` → L, a scalar
    tensor: the four (B,) velocity errors combined as Wallace et al.'s Diffusion-DPO loss with the paper's
    margin m = −β·Δ (COURSE.md), on errors of moderate size (|m| up to about 8, where every equal form of
    −log σ is accurate in float32)."""
    gen = make_generator(1110)
    for batch, beta in _OBJECTIVE_CASES:
        e = [0.2 + 1.6 * rand((batch,), gen) for _ in range(4)]
        mw, ml, rw, rl = (x.double() for x in e)
        got = _call(dpo_objective, "dpo_objective", *e, beta)
        delta = (mw - rw) - (ml - rl)
        m = -beta * delta
        per_pair = -F.logsigmoid(m)
        if isinstance(got, (tuple, list)):
            raise Mistake(f"returned a {type(got).__name__} of {len(got)}; return only the loss L, one scalar tensor "
                          "(the package's dpo_objective also returns the margins m)", "returned_tuple")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,):
            if torch.allclose(got.detach().double(), per_pair, rtol=1e-4, atol=1e-5):
                raise Mistake(f"returned one loss per pair, shape ({batch},); average them over the pairs: L is the "
                              "mean of −log σ(m)", "not_averaged")
            raise Mistake(f"returned shape ({batch},); L is one number, the mean over the pairs of −log σ(m)")
        mutations = [
            ("winner_loser_swapped", "the sign of Δ is flipped: your loss rewards the loser (winner and loser, or "
             "model and reference, swapped); m = −β·[(e_θ(x_w) − e_ref(x_w)) − (e_θ(x_l) − e_ref(x_l))], positive "
             "when the model fits the winner better than the reference does", -F.logsigmoid(-m).mean()),
            ("missing_reference", "the reference is missing: m = −β·[(e_θ(x_w) − e_ref(x_w)) − (e_θ(x_l) − e_ref(x_l))]; "
             "without e_ref the loss asks for a low winner error at any price, not for an improvement over the frozen "
             "reference (which is what keeps the model near it)", -F.logsigmoid(-beta * (mw - ml)).mean()),
            ("reference_added", "the reference errors are added: subtract them, e_θ(x) − e_ref(x), the model's "
             "improvement over the reference", -F.logsigmoid(-beta * ((mw + rw) - (ml + rl))).mean()),
            ("beta_outside_logsigmoid", "β is outside the log-sigmoid: it scales the margin inside it, "
             "L = mean −log σ(−β·Δ), not −β·log σ(−Δ)", -beta * F.logsigmoid(-delta).mean()),
            ("beta_divides", "divided by β: the margin is m = −β·Δ, β multiplies", -F.logsigmoid(-delta / beta).mean()),
            ("missing_beta", f"β is missing: m = −β·Δ (here β = {beta:g})", -F.logsigmoid(-delta).mean()),
            ("diffusers_half_beta", "m = −β/2·Δ: that is diffusers' β_dpo/2 convention (the authors' train.py and "
             "examples/research_projects/diffusion_dpo); this course uses the paper's −β·Δ (so our β is half their "
             "--beta_dpo)", -F.logsigmoid(-0.5 * beta * delta).mean()),
            ("missing_minus", "the minus in front of log σ is missing: log σ(m) is never positive, so mean log σ(m) "
             "would be maximised; the loss is L = mean of −log σ(m) (≥ 0, log 2 when model = reference)",
             F.logsigmoid(m).mean()),
            ("missing_log", "missing the log: L = mean of −log σ(m), not −σ(m)", -torch.sigmoid(m).mean()),
            ("sum_not_mean", "summed over the pairs: L is the mean of −log σ(m) (log 2 when model = reference, "
             "whatever the batch size)", per_pair.sum()),
            ("mean_inside_logsigmoid", "averaged the margins inside the log-sigmoid: take −log σ(m) per pair, then "
             "the mean over the pairs", -F.logsigmoid(m.mean())),
        ]
        _compare(got, per_pair.mean(), mutations, formula=_DPO_FORMULA, shape_hint="L is one number, shape ()")


# ---------------------------------------------------------------------------------------------
# dpo_errors
# ---------------------------------------------------------------------------------------------

def _dpo_errors_reference(model: Callable, reference: Callable, x_w: torch.Tensor, x_l: torch.Tensor,
                          generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(e_θ(x_w), e_θ(x_l), e_ref(x_w), e_ref(x_l)), each (B,): one t ~ U(0, 1) and one ε ~ N(0, I) per pair from
    ``generator``, shared by all four; e(x) = mean over elements of (v̂(z_t, t) − (ε − x))², z_t = (1 − t)·x + t·ε
    (:func:`minisd3.preference.velocity_error` for velocity fields v̂(z, t) without captions)."""
    t = torch.rand(x_w.shape[0], generator=generator)
    eps = torch.randn(x_w.shape, generator=generator)

    def error(net: Callable, x: torch.Tensor) -> torch.Tensor:
        return ((net(interpolate(x, eps, t), t) - velocity_target(x, eps)) ** 2).flatten(1).mean(1)

    with torch.no_grad():
        reference_winner, reference_loser = error(reference, x_w), error(reference, x_l)
    return error(model, x_w), error(model, x_l), reference_winner, reference_loser


def _reference_field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Another smooth test field, for the frozen reference (so model and reference errors differ)."""
    tt = t.reshape(-1, *[1] * (z.ndim - 1))
    return 0.8 * torch.tanh(z) - 0.3 * z * tt + 0.4 * tt - 0.2


def _rows(recorder: _Recorder) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (z, t) row the recorder saw, in call order: (N, …) and (N,), float64."""
    if not recorder.calls:
        return torch.empty(0), torch.empty(0)
    return (torch.cat([z for z, _ in recorder.calls]).double(), torch.cat([t for _, t in recorder.calls]).double())


def _split_pairs(batch: int) -> list[torch.Tensor]:
    """The row orders a learner's calls can have, as index tensors (2, B): the B winners then the B losers
    (two calls, or one on the concatenated batch), or winner and loser pair by pair (a loop)."""
    halves = torch.arange(2 * batch).reshape(2, batch)
    pairwise = torch.arange(2 * batch).reshape(batch, 2).T
    return [halves, pairwise]


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *[1] * (like.ndim - 1))


def _standard_normal(x: torch.Tensor) -> bool:
    return abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.08


_DPO_ERRORS_HOW = ("t = torch.rand(B, generator=generator), eps = torch.randn(x_w.shape, generator=generator), drawn "
                   "once and used for all four errors")


def _errors_tuple(got, batch: int) -> list[torch.Tensor]:
    """The learner's four errors after checking that they are four (B,) tensors."""
    if isinstance(got, torch.Tensor) or not isinstance(got, (tuple, list)):
        raise Mistake(f"should return four tensors (model_winner, model_loser, reference_winner, reference_loser), "
                      f"got {type(got).__name__}")
    if len(got) != 4 or not all(isinstance(g, torch.Tensor) for g in got):
        raise Mistake(f"returned {len(got)} values; return the four errors (model_winner, model_loser, "
                      "reference_winner, reference_loser), each a (B,) tensor, in the order dpo_objective takes them")
    shapes = [tuple(g.shape) for g in got]
    if all(s == () for s in shapes):
        raise Mistake(f"returned one number per error, not one per pair: return shape (B,) = ({batch},), the mean over "
                      "the elements of each sample only (.flatten(1).mean(1)); dpo_objective averages over the pairs "
                      "after the log-sigmoid", "batch_averaged")
    if any(s != (batch,) for s in shapes):
        raise Mistake(f"returned shapes {shapes}; each error is one number per pair, shape (B,) = ({batch},): average "
                      "over every element of a sample, e.g. ((v̂ − v) ** 2).flatten(1).mean(1)", "not_per_pair")
    return [g.detach().cpu().double() for g in got]


@_check("dpo_errors", "one t ~ U(0, 1) and one ε ~ N(0, I) per pair, shared by winner, loser, model and reference; "
        "the four velocity errors match")
def check_dpo_errors(dpo_errors: Callable) -> None:
    """Check ``dpo_errors(model, reference, x_w, x_l, generator)`` → (e_θ(x_w), e_θ(x_l), e_ref(x_w), e_ref(x_l)),
    each (B,), with model and reference known velocity fields v̂(z, t) that record what they are given. From the
    recorded z_t and t the check reads back the t and ε each of the four errors used: one t per pair, uniform on
    (0, 1), one ε per pair, standard normal, shared by all four; then the errors themselves (mean over the elements of
    (v̂(z_t, t) − (ε − x))²), and the generator (the same seed gives the same errors, another seed others)."""
    gen = make_generator(1120)
    batch, shape = 2000, (1, 2, 2)
    x_w, x_l = 1.0 + randn((batch, *shape), gen), randn((batch, *shape), gen) - 1.0

    def run(seed: int, b: int = batch):
        model, reference = _Recorder(_curved_field, "model"), _Recorder(_reference_field, "reference")
        got = _call(dpo_errors, "dpo_errors", model, reference, x_w[:b].clone(), x_l[:b].clone(), make_generator(seed))
        return _errors_tuple(got, b), model, reference

    got, model, reference = run(7)
    z_m, t_m = _rows(model)
    z_r, t_r = _rows(reference)
    if t_r.numel() == 0:
        raise Mistake("the reference was never called: e_ref(x) = mean (ref(z_t, t) − (ε − x))² comes from the frozen "
                      "reference on the same z_t and t as the model", "reference_never_called")
    if t_m.numel() != 2 * batch:
        raise Mistake(f"the model was evaluated on {t_m.numel()} samples for B = {batch} pairs; it needs each pair's "
                      f"winner and loser, 2B = {2 * batch} in all (one call on torch.cat([z_w, z_l]) or two calls)",
                      "model_calls")
    if t_r.numel() != 2 * batch:
        raise Mistake(f"the reference was evaluated on {t_r.numel()} samples; it needs each pair's winner and loser, "
                      f"2B = {2 * batch}, the same z_t and t as the model", "reference_calls")
    if (t_m == t_m[0]).all():
        raise Mistake(f"every pair got the same t = {t_m[0].item():.3f}: draw one t per pair, "
                      f"torch.rand(B, generator=generator)", "one_time_for_batch")
    orders = _split_pairs(batch)
    order = next((o for o in orders if torch.equal(t_m[o[0]], t_m[o[1]])), None)
    if order is None:
        raise Mistake("winner and loser got different t: a pair's two samples must be noised to the same t (and with the "
                      "same ε), so that they differ only in the image and the comparison measures the image, not the "
                      f"noise level; {_DPO_ERRORS_HOW}", "fresh_time_for_loser")
    t = t_m[order[0]]
    if t.min() < 0 or t.max() > 1 or abs(t.mean().item() - 0.5) > 0.03 or any(
            abs((t < q).double().mean().item() - q) > 0.03 for q in (0.25, 0.75)):
        raise Mistake(f"t should be uniform on (0, 1), one per pair (Wallace et al.'s t ~ U(0, T)); yours ranged over "
                      f"[{t.min().item():.3g}, {t.max().item():.3g}] with mean {t.mean().item():.3f} and "
                      f"{(t < 0.25).double().mean().item():.2f} of the pairs below 0.25 (uniform: 0.50 and 0.25); "
                      "draw it with torch.rand(B, generator=generator)", "time_not_uniform")
    tb = _bcast(t, x_w)
    step = z_m[order[0]] - z_m[order[1]]
    swapped = False
    if torch.allclose(step, (1 - tb) * (x_w - x_l), rtol=1e-4, atol=1e-4):
        pass
    elif torch.allclose(step, (1 - tb) * (x_l - x_w), rtol=1e-4, atol=1e-4):
        swapped = True  # losers first: fine
    elif torch.allclose(step.abs(), (tb * (x_w - x_l)).abs(), rtol=1e-4, atol=1e-4):
        raise Mistake("time runs backwards in z_t: here t = 0 is data and t = 1 noise, z_t = (1 − t)·x + t·ε "
                      "(the rectified-flow paper writes it the other way)", "time_reversed")
    else:
        raise Mistake("winner and loser were noised with different ε: a pair's two samples share one ε (and one t), so "
                      "that they differ only in the image and the difference of their errors measures the image, not "
                      f"the noise; {_DPO_ERRORS_HOW}", "fresh_noise_for_loser")
    winners, losers = (order[1], order[0]) if swapped else (order[0], order[1])
    eps = (z_m[winners] - (1 - tb) * x_w) / tb
    sure = t > 0.05  # read ε back only where t is not tiny (float32 rounding of z_t is divided by t)
    if not _standard_normal(eps[sure]):
        if _standard_normal((eps * tb)[sure]):
            raise Mistake("the noise is not scaled by t: z_t = (1 − t)·x + t·ε", "noise_not_scaled")
        values = eps[sure]
        if abs(values.mean().item() - 0.5) < 0.05 and abs(values.std().item() - 12**-0.5) < 0.03:
            raise Mistake("ε is uniform on [0, 1): draw it from N(0, I), torch.randn(x_w.shape, generator=generator)",
                          "noise_not_normal")
        raise Mistake("the model's input is not z_t = (1 − t)·x + t·ε with ε ~ N(0, I) at the t it was given; "
                      f"{_DPO_ERRORS_HOW}")
    if t_r.shape != t_m.shape or not (torch.equal(t_r, t_m) and torch.allclose(z_r, z_m, rtol=1e-6, atol=1e-6)):
        raise Mistake("the reference saw other noisy inputs than the model: Δ compares the model's improvement over the "
                      "reference on the same z_t and t, so draw t and ε once and give the reference exactly what the "
                      "model gets", "reference_not_shared")
    z_w, z_l = interpolate(x_w.double(), eps, t), interpolate(x_l.double(), eps, t)

    def errors(target: Callable[[torch.Tensor], torch.Tensor], reduce=lambda d: (d**2).flatten(1).mean(1)):
        return torch.stack([reduce(net(z, t) - target(x)) for net in (_curved_field, _reference_field)
                            for z, x in ((z_w, x_w.double()), (z_l, x_l.double()))])

    want = errors(lambda x: eps - x)
    mutations = [
        ("target_sign_flipped", "the velocity target has the wrong sign: v = dz_t/dt = ε − x (t = 0 data, t = 1 noise), "
         "not x − ε", errors(lambda x: x - eps)),
        ("epsilon_target", "compared v̂ with ε: the model predicts the velocity, the target is v = ε − x "
         "(Diffusion-DPO's ε error becomes the velocity error for a flow)", errors(lambda x: eps)),
        ("sum_over_elements", "summed over the elements of a sample: e(x) is the mean over the elements, "
         ".flatten(1).mean(1), as the training loss is", errors(lambda x: eps - x, lambda d: (d**2).flatten(1).sum(1))),
        ("missing_square", "missing the square: e(x) is the mean of (v̂ − v)², not of |v̂ − v|",
         errors(lambda x: eps - x, lambda d: d.abs().flatten(1).mean(1))),
        ("norm_not_squared", "took the norm ‖v̂ − v‖: e(x) is the mean of the squared differences (no square root)",
         errors(lambda x: eps - x, lambda d: d.flatten(1).norm(dim=1))),
        ("winner_loser_swapped", "winner and loser are swapped in what you return: the order is (model_winner, "
         "model_loser, reference_winner, reference_loser)", want[[1, 0, 3, 2]]),
        ("model_reference_swapped", "model and reference are swapped in what you return: the order is (model_winner, "
         "model_loser, reference_winner, reference_loser); the model's errors come from model(z_t, t)",
         want[[2, 3, 0, 1]]),
    ]
    _compare(torch.stack(got)[:, sure], want[:, sure], [(m, msg, w[:, sure]) for m, msg, w in mutations],
             formula="e(x) = mean over elements of (v̂(z_t, t) − (ε − x))²")
    first, second, other = (run(seed, 64)[0][0] for seed in (1121, 1121, 1122))
    _require_generator(torch.equal(first, second), not torch.equal(first, other), "t and ε", _DPO_ERRORS_HOW)


# ---------------------------------------------------------------------------------------------
# validation_loss
# ---------------------------------------------------------------------------------------------

def _validation_loss_reference(model: Callable, x0: torch.Tensor, generator: torch.Generator) -> float:
    """SD3's validation loss of a velocity field v̂(z, t): ε drawn once from ``generator``, the RF loss at the eight
    levels t = i/7 with that ε, averaged over all levels but t = 1, as :func:`minisd3.validation_loss.validation_loss`
    computes it for a text-to-image model."""
    eps = torch.randn(x0.shape, generator=generator)
    per_level = []
    with torch.no_grad():
        for t in validation_times().tolist():
            t_batch = torch.full((x0.shape[0],), t)
            v_hat = model(interpolate(x0, eps, t_batch), t_batch)
            per_level.append(((v_hat - velocity_target(x0, eps)) ** 2).mean().item())
    return sum(per_level[:-1]) / (len(per_level) - 1)


_LEVELS = [i / 7 for i in range(8)]
_LEVEL_MISTAKES = [
    # (mistake, message, the times a learner evaluates)
    ("levels_over_8", "the levels i/8, i = 0 … 7, never reach t = 1 and are not SD3's: eight equally spaced levels "
     "from 0 to 1 are t_i = i/7 (torch.linspace(0, 1, 8))", [i / 8 for i in range(8)]),
    ("midpoint_levels", "the midpoints (i + 0.5)/8 are not SD3's levels: eight equally spaced levels from 0 to 1, "
     "t_i = i/7 (torch.linspace(0, 1, 8)), t = 0 and t = 1 included", [(i + 0.5) / 8 for i in range(8)]),
    ("levels_exclude_zero", "the levels i/8, i = 1 … 8, leave out t = 0: the eight levels are t_i = i/7, i = 0 … 7 "
     "(torch.linspace(0, 1, 8)); only t = 1 is left out of the average", [i / 8 for i in range(1, 9)]),
    ("nine_levels", "nine levels (torch.linspace(0, 1, 9)): SD3 uses eight, t_i = i/7 (torch.linspace(0, 1, 8))",
     [i / 8 for i in range(9)]),
    ("dropped_t0_not_t1", "left out t = 0 instead of t = 1: average the levels t = 0, 1/7, …, 6/7; at t = 1 the input is "
     "pure noise and says nothing about the data", [i / 7 for i in range(1, 8)]),
    ("level_index_as_time", "the model got the level index i, not the time t = i/7", list(range(8))),
]


def _same_levels(found: list[float], levels: list[float]) -> bool:
    return len(found) == len(levels) and all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(found, levels))


def _row_samples(rows: int, batch: int) -> list[torch.Tensor]:
    """Which sample each recorded row is, for the two orders a learner's calls can have: level by level (one call per
    level, or one call on the levels concatenated) or sample by sample."""
    levels = rows // batch
    return [torch.arange(rows) % batch, torch.arange(rows) // levels]


_VAL_HOW = "eps = torch.randn(x0.shape, generator=generator), drawn once before the loop over the levels"


@_check("validation_loss", "the RF loss at t = i/7 (i = 0 … 7) with one fixed ε, averaged over all levels but t = 1")
def check_validation_loss(validation_loss: Callable) -> None:
    """Check ``validation_loss(model, x0, generator)`` → L_val, one number: the model (a known velocity field that
    records its inputs) must be evaluated at the levels t = i/7, i = 0 … 7 (t = 1 may be skipped), on
    z_t = (1 − t)·x0 + t·ε with one ε ~ N(0, I) from the generator shared by every level; L_val is the mean over the
    levels but t = 1 of the mean over every element of (v̂(z_t, t) − (ε − x0))². Then the generator: the same seed
    gives the same number, another seed another."""
    gen = make_generator(1130)
    batch, shape = 512, (1, 2, 2)
    x0 = 0.5 + randn((batch, *shape), gen)

    def run(seed: int, b: int = batch):
        model = _Recorder(_curved_field, "model")
        got = _call(validation_loss, "validation_loss", model, x0[:b].clone(), make_generator(seed))
        return got, model

    got, model = run(7)
    if isinstance(got, torch.Tensor) and got.numel() in (7, 8, 9):
        raise Mistake(f"returned {got.numel()} numbers, one per level; return one number, the mean over the levels "
                      "but t = 1", "per_level_not_averaged")
    if isinstance(got, (list, tuple)) and len(got) in (7, 8, 9):
        raise Mistake(f"returned a {type(got).__name__} of {len(got)} numbers, one per level; return one number, the mean "
                      "over the levels but t = 1", "per_level_not_averaged")
    value = _as_number(got, "validation_loss")
    z, t = _rows(model)
    if t.numel() == 0:
        raise Mistake("never called the model: the validation loss is the error of v̂(z_t, t) at fixed t levels",
                      "model_not_called")
    found = sorted({round(v, 6) for v in t.tolist()})
    if len(found) > 10:
        raise Mistake(f"the model got {len(found)} different t: the validation loss uses eight fixed levels "
                      "t_i = i/7 (torch.linspace(0, 1, 8)), not random times — fixed levels and fixed noise make two "
                      "evaluations comparable", "random_time")
    if not (_same_levels(found, _LEVELS) or _same_levels(found, _LEVELS[:-1])):
        for mistake, message, levels in _LEVEL_MISTAKES:
            if _same_levels(found, levels) or _same_levels(found, levels[:-1]):
                raise Mistake(message, mistake)
        gaps = [b - a for a, b in zip(found, found[1:])]
        if len(gaps) > 1 and max(gaps) - min(gaps) > 1e-3:
            raise Mistake(f"the model got t = {[round(v, 3) for v in found]}, not equally spaced: the validation loss "
                          "uses eight fixed levels t_i = i/7 (torch.linspace(0, 1, 8)), not random times — fixed levels "
                          "and fixed noise make two evaluations comparable", "random_time")
        raise Mistake(f"the model got t = {[round(v, 4) for v in found]}; the levels are t_i = i/7, i = 0 … 7 "
                      "(torch.linspace(0, 1, 8))")
    if t.numel() % batch:
        raise Mistake(f"the model saw {t.numel()} samples in all, not a multiple of B = {batch}: evaluate every held-out "
                      "sample at every level")
    x0_d = x0.double()
    at_zero, at_one = t == 0, t == 1
    mapping = next((idx for idx in _row_samples(t.numel(), batch)
                    if torch.allclose(z[at_zero], x0_d[idx[at_zero]], atol=1e-6)), None)
    if mapping is None:
        if at_one.any() and any(torch.allclose(z[at_one], x0_d[idx[at_one]], atol=1e-6)
                                for idx in _row_samples(t.numel(), batch)):
            raise Mistake("time runs backwards in z_t: here t = 0 is data and t = 1 noise, z_t = (1 − t)·x0 + t·ε, so at "
                          "t = 0 the model sees x0 itself", "time_reversed")
        if any(_standard_normal(z[at_zero] - x0_d[idx[at_zero]]) for idx in _row_samples(t.numel(), batch)):
            raise Mistake("the noise is not scaled by t: z_t = (1 − t)·x0 + t·ε, so at t = 0 the model sees x0 itself",
                          "noise_not_scaled")
        raise Mistake("at t = 0 the model's input should be the held-out data x0 itself (z_0 = x0), in the order given")
    noisy = t > 0
    tb = _bcast(t, z)
    read = (z - (1 - tb) * x0_d[mapping]) / tb.clamp(min=1e-12)
    eps = torch.zeros_like(x0_d)
    eps[mapping[noisy]] = read[noisy]
    if not torch.allclose(read[noisy], eps[mapping[noisy]], rtol=1e-4, atol=1e-4):
        scaled = read * tb
        first_scaled = torch.zeros_like(x0_d)
        first_scaled[mapping[noisy]] = scaled[noisy]
        if torch.allclose(scaled[noisy], first_scaled[mapping[noisy]], rtol=1e-4, atol=1e-4):
            raise Mistake("the noise is not scaled by t: z_t = (1 − t)·x0 + t·ε", "noise_not_scaled")
        raise Mistake("each level got its own noise: draw ε once and use it at every level, so that the levels, and two "
                      f"evaluations of the same model, differ only in t; {_VAL_HOW}", "fresh_noise_per_level")
    if not _standard_normal(eps):
        if abs(eps.mean().item() - 0.5) < 0.05 and abs(eps.std().item() - 12**-0.5) < 0.03:
            raise Mistake("ε is uniform on [0, 1): draw it from N(0, I), torch.randn(x0.shape, generator=generator)",
                          "noise_not_normal")
        raise Mistake(f"the model's input is not z_t = (1 − t)·x0 + t·ε with ε ~ N(0, I); {_VAL_HOW}")

    def per_level(target: torch.Tensor, reduce=lambda d: (d**2).mean()) -> list[float]:
        losses = []
        for level in _LEVELS:
            tt = torch.full((batch,), level, dtype=torch.float64)
            losses.append(float(reduce(_curved_field(interpolate(x0_d, eps, tt), tt) - target)))
        return losses

    right = per_level(eps - x0_d)
    want = sum(right[:-1]) / 7
    elements = math.prod(shape)
    mutations = [
        ("t1_included", "averaged all eight levels: leave t = 1 out of the mean (there the input is pure noise and the "
         "loss says nothing about the data), L_val = mean over t = 0, 1/7, …, 6/7", sum(right) / 8),
        ("dropped_t0_not_t1", "left t = 0 out of the mean instead of t = 1: average the levels t = 0, 1/7, …, 6/7; "
         "at t = 1 the input is pure noise and says nothing about the data", sum(right[1:]) / 7),
        ("divided_by_eight", "summed the seven levels but divided by 8: L_val is their mean, the sum over t = 0 … 6/7 "
         "divided by 7", sum(right[:-1]) / 8),
        ("sum_not_mean", "summed over the levels: L_val is their mean (divide by 7)", sum(right[:-1])),
        ("sum_over_elements", "summed over the elements of a sample: each level's loss is the mean over every element "
         "of every sample", want * elements),
        ("sum_over_samples", "summed over the samples: each level's loss is the mean over every element of every "
         "sample", want * batch),
        ("target_sign_flipped", "the velocity target has the wrong sign: v = ε − x0 (t = 0 data, t = 1 noise)",
         sum(per_level(x0_d - eps)[:-1]) / 7),
        ("epsilon_target", "compared v̂ with ε: the target is the velocity v = ε − x0", sum(per_level(eps)[:-1]) / 7),
        ("missing_square", "missing the square: the loss is the mean of (v̂ − v)², not of |v̂ − v|",
         sum(per_level(eps - x0_d, lambda d: d.abs().mean())[:-1]) / 7),
    ]
    if not _near(value, want):
        close = [(abs(value - number), mistake, message) for mistake, message, number in mutations
                 if _near(value, number)]
        if close:
            _, mistake, message = min(close)
            raise Mistake(message, mistake)
        raise Mistake(f"the loss is {value:.5g}, but the mean over t = 0, 1/7, …, 6/7 of the mean of (v̂(z_t, t) − (ε − x0))²"
                      f" for the ε your z_t contain is {want:.5g}; compare your code with the formula term by term")
    values = [_as_number(run(seed, 64)[0], "validation_loss") for seed in (1131, 1131, 1132)]
    _require_generator(values[0] == values[1], values[0] != values[2], "noise", _VAL_HOW)
