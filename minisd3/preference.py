"""Preference tuning by Diffusion-DPO (Wallace et al. 2023), written for rectified flow (lesson 11).

A judge prefers one of two samples of a prompt: the winner x_w over the loser x_l. DPO (Rafailov
et al. 2023) fits a model to such pairs without a reward model: it moves the model θ away from a
frozen reference so that the winner gains likelihood relative to the loser. Diffusion-DPO puts the
ELBO in place of the intractable likelihood; per noise level the ELBO is the denoising error, and
for a flow that is the velocity error:

    e_θ(x) = mean over the elements of (v̂_θ(z_t, t, c) − (ε − x))²,   z_t = (1 − t)·x + t·ε
    e_ref(x)   the same with the frozen reference (no gradient)
    Δ   = [e_θ(x_w) − e_ref(x_w)] − [e_θ(x_l) − e_ref(x_l)]        one t and one ε shared by the pair
    m   = −β · Δ                                                    the implicit reward margin
    L   = −E log σ(m)                                               averaged over pairs

Source: Wallace et al., "Diffusion Model Alignment Using Direct Preference Optimization" (2023,
arXiv:2311.12908), eq. (14):  L = −E log σ(−β·T·ω(λ_t)·Δ_ε), with Δ_ε the same difference of
ε-prediction errors ‖ε − ε_θ(x_t, t)‖² and t ~ U(0, T). What we take from it and what we change:

- the velocity error replaces the ε error (our models predict v = ε − x0; COURSE.md's table);
- T·ω(λ_t) is folded into β, as in the authors' train.py and diffusers'
  examples/research_projects/diffusion_dpo; t is drawn from the training density π(t)
  (logit-normal for the course model) instead of U(0, 1), the same per-t weighting as its training;
- as in both scripts the error is a *mean* over elements; their margin is −0.5·β_dpo·Δ, ours the paper's
  −β·Δ (COURSE.md's table), so our β is half their ``--beta_dpo`` (the authors' launchers: 5000 for SD1.5
  and SDXL; diffusers' defaults: 2500 for SD1.5, 5000 for SDXL). Their mean runs over ε errors of
  4·64·64 latent elements (SD1.5), ours over velocity errors of 8·8·8, so β does not carry over:
  benchmarks/dpo.py measures it again.

Reading the numbers: when θ = ref, Δ = 0 and L = log 2 ≈ 0.693 whatever the pairs. The implicit
reward accuracy is the fraction of pairs with m > 0 (Δ < 0: the model fits the winner better,
relative to the loser, than the reference does; a tie counts one half, as in diffusers). β sets how
far from the reference the model may go before the sigmoid saturates: |m| ≈ 5 at |Δ| = 5/β.

Pairs come from the model itself (:func:`preference_pairs`; "learning from AI feedback" in Wallace et al.):
k samples per prompt, judged by the detector of :mod:`minisd3.adherence` (how many of the prompt's
attributes it reads right), best against worst; prompts whose k samples all tie teach nothing and
are dropped. :func:`finetune` tunes on them with DPO or, as baselines at equal compute, with the
ordinary rectified-flow loss on the winners only (supervised fine-tuning, "SFT" in the paper) or on fresh
training data (more of the model's ordinary training).
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .adherence import score_prompt
from .env import progress_bar
from .files import atomic_file
from .rectified_flow import interpolate, velocity_target
from .seeding import randn
from .text_to_image import TextToImage
from .timesteps import TimeSampler, make_time_sampler, shift_time
from .validation import check_positive_int, check_tensor, check_time

OBJECTIVES = ("dpo", "winners", "ordinary")
"""What :func:`finetune` can optimise: Diffusion-DPO on the pairs, the rectified-flow loss on the winners, or
more of the model's ordinary training (fresh data from a source)."""

Scorer = Callable[[torch.Tensor, str], float]
"""score(image (3, S, S) in [−1, 1], prompt) → a number; higher is better."""


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ValueError(f"beta: expected a positive finite number (the DPO temperature), got {beta!r}")
    return float(beta)


def check_reference(model: TextToImage, reference) -> None:
    """Raise a ValueError naming ``reference`` unless it is a separate model of ``model``'s configuration:
    a :class:`TextToImage` with the same MM-DiT config and the same parameter names and shapes."""
    if not isinstance(reference, TextToImage):
        raise ValueError(f"reference: expected a TextToImage (a frozen copy of the model), got {type(reference).__name__}")
    if reference is model:
        raise ValueError("reference: expected a separate frozen copy of the model (copy.deepcopy(model)), "
                         "got the model itself")
    if reference.mmdit.config != model.mmdit.config:
        raise ValueError(f"reference: expected the model's MM-DiT configuration {model.mmdit.config}, "
                         f"got {reference.mmdit.config}")
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if mine != theirs:
        differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        shown = ", ".join(f"{k} {theirs.get(k, 'absent')} vs {mine.get(k, 'absent')}" for k in differing[:3])
        raise ValueError(f"reference: expected the model's parameter names and shapes, got {len(differing)} "
                         f"differing (reference vs model): {shown}")


def velocity_error(model: TextToImage, x0: torch.Tensor, captions: Sequence[str], t: torch.Tensor,
                   eps: torch.Tensor) -> torch.Tensor:
    """e(x0) = mean over elements of (v̂(z_t, t, c) − (ε − x0))², one number per sample: shape (B,).

    ``x0`` and ``eps`` (B, C, H, W) in the model's space (latents for a latent model), ``t`` (B,) in
    [0, 1] (t = 0 data, t = 1 noise), ``captions`` B strings; z_t = (1 − t)·x0 + t·ε. The ordinary
    rectified-flow loss is the mean of this over the batch.
    """
    context, pooled = model.encode(captions)
    prediction = model.mmdit(interpolate(x0, eps, t), t, context, pooled)
    return ((prediction - velocity_target(x0, eps)) ** 2).flatten(1).mean(1)


@dataclass(frozen=True)
class DPOStats:
    """Diagnostics of one :func:`dpo_loss` (means over the pairs; errors per element).

    accuracy          fraction of pairs with margin m > 0 (ties count ½): the implicit reward accuracy
    margin            mean m = −β·Δ; 0 when model = reference
    model_winner, model_loser           mean e_θ(x_w), e_θ(x_l)
    reference_winner, reference_loser   mean e_ref(x_w), e_ref(x_l)
    """

    accuracy: float
    margin: float
    model_winner: float
    model_loser: float
    reference_winner: float
    reference_loser: float


def dpo_objective(model_winner: torch.Tensor, model_loser: torch.Tensor, reference_winner: torch.Tensor,
                  reference_loser: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, m) from per-pair errors, each (B,): m = −β·[(e_θ(x_w) − e_ref(x_w)) − (e_θ(x_l) − e_ref(x_l))],
    L = mean of −log σ(m) (module docstring; Wallace et al. 2023 eq. 14). Raises a ValueError for
    β ≤ 0 or errors of different shapes."""
    beta = _check_beta(beta)
    for name, value in (("model_loser", model_loser), ("reference_winner", reference_winner),
                        ("reference_loser", reference_loser)):
        if value.shape != model_winner.shape:
            raise ValueError(f"{name}: expected the shape of model_winner {tuple(model_winner.shape)}, "
                             f"got {tuple(value.shape)}")
    margin = -beta * ((model_winner - reference_winner) - (model_loser - reference_loser))
    return -F.logsigmoid(margin).mean(), margin


def dpo_loss(model: TextToImage, reference: TextToImage, x_w: torch.Tensor, x_l: torch.Tensor,
             captions: Sequence[str], t: torch.Tensor, eps: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, DPOStats]:
    """The Diffusion-DPO loss of B preference pairs, and its diagnostics (module docstring).

    ``x_w``, ``x_l`` (B, C, H, W): winner and loser samples in the model's space; ``captions`` B
    prompts (one per pair); ``t`` (B,) in [0, 1] and ``eps`` (B, C, H, W): one time and one noise per
    pair, shared by its winner and loser (so the pair differs only in the sample). ``reference`` is
    a frozen copy of the starting model, evaluated without gradient; ``beta`` > 0.

    Returns (L, :class:`DPOStats`), L a scalar tensor that back-propagates into ``model`` only.
    Raises a ValueError naming ``beta`` (≤ 0), ``reference`` (the model itself, or another
    configuration), ``x_l`` (a shape other than x_w's), ``captions``, ``t`` or ``eps``.
    """
    _check_beta(beta)
    check_reference(model, reference)
    check_tensor(x_w, "x_w", ndim=4)
    check_tensor(x_l, "x_l", ndim=4)
    if x_l.shape != x_w.shape:
        raise ValueError(f"x_l: expected the shape of x_w {tuple(x_w.shape)}, got {tuple(x_l.shape)}")
    batch = x_w.shape[0]
    if isinstance(captions, str) or len(captions) != batch:
        raise ValueError(f"captions: expected {batch} captions (one per pair), got "
                         f"{'a single string' if isinstance(captions, str) else len(captions)}")
    check_time(t, "t", batch=batch)
    check_tensor(eps, "eps")
    if eps.shape != x_w.shape:
        raise ValueError(f"eps: expected the shape of x_w {tuple(x_w.shape)} (one noise per pair), "
                         f"got {tuple(eps.shape)}")
    both, captions2, t2, eps2 = torch.cat([x_w, x_l]), list(captions) * 2, t.repeat(2), eps.repeat(2, 1, 1, 1)
    model_winner, model_loser = velocity_error(model, both, captions2, t2, eps2).chunk(2)
    with torch.no_grad():
        reference_winner, reference_loser = velocity_error(reference, both, captions2, t2, eps2).chunk(2)
    loss, margin = dpo_objective(model_winner, model_loser, reference_winner, reference_loser, beta)
    margin = margin.detach()
    stats = DPOStats(accuracy=float((margin > 0).float().mean() + 0.5 * (margin == 0).float().mean()),
                     margin=float(margin.mean()),
                     model_winner=float(model_winner.detach().mean()), model_loser=float(model_loser.detach().mean()),
                     reference_winner=float(reference_winner.mean()), reference_loser=float(reference_loser.mean()))
    return loss, stats


def attributes_right(image: torch.Tensor, prompt: str) -> float:
    """How many of the prompt's attributes the detector reads right in a (3, S, S) image in [−1, 1]:
    0 … 4 (colour, shape, count, size), 0 … 5 with a relation (:func:`minisd3.adherence.score_prompt`)."""
    scores = score_prompt(image, prompt)
    return float(sum(v for k, v in scores.items() if k != "overall"))


@dataclass
class PreferencePairs:
    """Winner and loser samples of the prompts that did not tie, from :func:`preference_pairs`.

    winners, losers   (N, C, H, W) on the CPU, in the model's own space (latents for a latent model)
    captions          N prompts, one per pair
    winner_scores, loser_scores   (N,) the judge's scores; winner_scores > loser_scores everywhere
    scores            (P, k) every score of every prompt asked, in sampling order
    kept              (P,) bool: which of the P prompts gave a pair (False: all k samples tied)
    """

    winners: torch.Tensor
    losers: torch.Tensor
    captions: list[str]
    winner_scores: torch.Tensor
    loser_scores: torch.Tensor
    scores: torch.Tensor
    kept: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def save(self, path: str | Path) -> Path:
        """Write the pairs to one safetensors file (captions in its metadata), atomically; returns the path."""
        from safetensors.torch import save_file

        tensors = {f.name: getattr(self, f.name).contiguous() for f in fields(self) if f.name != "captions"}
        with atomic_file(Path(path)) as tmp:
            save_file(tensors, tmp, metadata={"captions": json.dumps(self.captions)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "PreferencePairs":
        """Pairs written by :meth:`save`. Raises FileNotFoundError naming ``path`` when there is none."""
        from safetensors import safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"path: no preference pairs at {path}")
        with safe_open(str(path), "pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            captions = json.loads(handle.metadata()["captions"])
        return cls(captions=captions, **tensors)


@torch.no_grad()
def preference_pairs(model: TextToImage, prompts: Sequence[str], k: int, score: Scorer | None = None,
                     to_images: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 20,
                     cfg: float = 3.0, shift: float = 1.0, generator: torch.Generator | None = None,
                     batch: int = 64, progress: bool = False) -> PreferencePairs:
    """Sample ``k`` images per prompt with ``model``, judge each, keep the best as winner and the worst as loser.

    Samples are drawn prompt by prompt (prompt 0's k samples, then prompt 1's, …), ``batch`` at a
    time, by ``model.sample`` (``steps`` Euler steps, guidance ``cfg``, resolution ``shift``, noise
    from ``generator``). Each sample is decoded by ``to_images`` (default: none, pixel models; a
    latent model's decoder, e.g. ``source.to_images``), clamped to [−1, 1] and scored by
    ``score(image, prompt)`` in the same order (default :func:`attributes_right`). The first best
    and first worst of a prompt's k samples form its pair; a prompt whose k scores all tie is dropped.

    Raises a ValueError naming ``k`` (not an int ≥ 2), ``prompts`` (none, or a single string),
    ``steps`` or ``batch`` (not positive ints).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k: expected an int ≥ 2 (samples per prompt to pick a winner and a loser from), got {k!r}")
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts: expected a non-empty list of captions, got "
                         f"{'a single string' if isinstance(prompts, str) else 'an empty list'}")
    check_positive_int(steps, "steps")
    check_positive_int(batch, "batch")
    score = score or attributes_right
    decode = to_images or (lambda x: x)
    asked = [p for p in prompts for _ in range(k)]
    samples, values = [], []
    for lo in progress_bar(range(0, len(asked), batch), desc="sampling and judging", disable=not progress):
        chunk = asked[lo:lo + batch]
        drawn = model.sample(chunk, steps=steps, cfg=cfg, shift=shift, generator=generator)
        images = decode(drawn).float().clamp(-1, 1).cpu()
        samples.append(drawn.float().cpu())
        values += [float(score(image, prompt)) for image, prompt in zip(images, chunk)]
    samples = torch.cat(samples).reshape(len(prompts), k, *samples[0].shape[1:])
    scores = torch.tensor(values).reshape(len(prompts), k)
    best, worst = scores.argmax(1), scores.argmin(1)  # the first maximum and the first minimum
    kept = scores.max(1).values > scores.min(1).values
    rows = torch.nonzero(kept).flatten()
    return PreferencePairs(winners=samples[rows, best[rows]], losers=samples[rows, worst[rows]],
                           captions=[prompts[int(i)] for i in rows], winner_scores=scores[rows, best[rows]],
                           loser_scores=scores[rows, worst[rows]], scores=scores, kept=kept)


def _pair_order(n: int, steps: int, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """(steps, batch) pair indices: the pairs in a fresh random order each pass, passes back to back."""
    passes = math.ceil(steps * batch / n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:steps * batch].reshape(steps, batch)


def finetune(model: TextToImage, pairs: PreferencePairs, steps: int, lr: float = 1e-4, batch: int = 16,
             objective: str = "dpo", beta: float = 500.0, reference: TextToImage | None = None,
             generator: torch.Generator | None = None, time_sampler: str | TimeSampler = "lognorm(0,1)",
             shift: float = 1.0, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
             progress: bool = False, source=None, p_uncond: float = 0.1) -> list[dict[str, float]]:
    """Fine-tune every parameter of ``model`` in place on preference pairs; returns one dict per step.

    objective "dpo"      :func:`dpo_loss` against ``reference`` (default: a frozen deepcopy of
                         ``model`` as it is when called), temperature ``beta``
    objective "winners"  the rectified-flow loss mean e_θ(x_w) on the winners alone (supervised
                         fine-tuning; ``beta`` and ``reference`` are not used)
    objective "ordinary" more of the model's own training: the rectified-flow loss on fresh batches of
                         ``source`` (:mod:`minisd3.engine.sources`: its training data with their captions),
                         captions dropped with probability ``p_uncond``; ``pairs`` are not used

    Equal compute per step: DPO backpropagates ``batch`` winners and ``batch`` losers, so "winners" and
    "ordinary" take 2·``batch`` images per step (the reference's forward passes, about a third of a DPO
    step, are the only extra).

    Each step takes ``batch`` pairs (the pairs in a fresh random order each pass), one time per pair
    t = α·u/(1 + (α − 1)·u), u ~ ``time_sampler`` (a name for :func:`make_time_sampler` or a
    sampler), α = ``shift``, and one noise ε per pair shared by winner and loser, all from
    ``generator``; then one AdamW step (``lr``, ``weight_decay``, gradient norm clipped to
    ``grad_clip``; constant learning rate). Both objectives take the same pairs, times and noise at
    the same step, so they differ only in the loss. A DPO step costs about two "winners" steps
    (winner and loser through the model with backward, both through the reference without; on the
    course model, 16 pairs, one CPU thread: 0.2 s against 0.11 s).
    Captions are never dropped: the unconditional prediction that guidance subtracts is not
    trained directly. Float32 throughout; the model is left in eval mode.

    All 2.4 M parameters of the course model (MM-DiT and text encoder) are tuned: the frozen
    reference costs one more copy of 10 MB, so a LoRA adapter (peft) would save nothing worth its
    extra machinery here; on SDXL it is what makes DPO fit in memory.

    Each step's dict: ``loss``, and for DPO the fields of :class:`DPOStats`. Raises a ValueError
    naming ``objective``, ``pairs`` (empty), ``steps``, ``batch``, ``lr``, ``beta`` or ``reference``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    if objective == "ordinary":
        if source is None:
            raise ValueError("source: the objective 'ordinary' trains on fresh data; expected a source, got None")
    elif not isinstance(pairs, PreferencePairs) or len(pairs) == 0:
        raise ValueError(f"pairs: expected PreferencePairs with at least one pair, got "
                         f"{'none' if isinstance(pairs, PreferencePairs) else type(pairs).__name__}")
    check_positive_int(steps, "steps")
    check_positive_int(batch, "batch")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr: expected a positive finite learning rate, got {lr!r}")
    sampler = make_time_sampler(time_sampler) if isinstance(time_sampler, str) else time_sampler
    if objective == "dpo":
        _check_beta(beta)
        if reference is None:
            reference = copy.deepcopy(model)
        check_reference(model, reference)
        # frozen, and in train mode like the model: nothing in it behaves differently in train mode (no
        # dropout, no batch norm), and eval mode would take PyTorch's fused transformer fast path, whose
        # last bits differ, so that Δ would not be exactly 0 (accuracy not exactly ½) at the start
        reference.requires_grad_(False).train()
    device = next(model.parameters()).device
    size = batch if objective == "dpo" else 2 * batch
    order = _pair_order(len(pairs), steps, size, generator) if objective != "ordinary" else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    history = []
    for step in progress_bar(range(steps), desc=f"fine-tuning ({objective})", disable=not progress):
        if objective == "ordinary":
            x_w, captions = source.batch(step, size, generator)
            x_w = x_w.to(device)
        else:
            index = order[step]
            x_w = pairs.winners[index].to(device)
            captions = [pairs.captions[int(i)] for i in index]
        t = sampler(size, generator=generator)
        t = (t if shift == 1.0 else shift_time(t, shift)).to(device)
        eps = randn(x_w.shape, generator, device)
        if objective == "dpo":
            loss, stats = dpo_loss(model, reference, x_w, pairs.losers[index].to(device), captions, t, eps, beta)
            record = {"loss": float(loss.detach()), **asdict(stats)}
        elif objective == "winners":
            loss = velocity_error(model, x_w, captions, t, eps).mean()
            record = {"loss": float(loss.detach())}
        else:
            loss = model.loss(x_w, captions, p_uncond=p_uncond, eps=eps, t=t, generator=generator)
            record = {"loss": float(loss.detach())}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        history.append(record)
    model.eval()
    if reference is not None:
        reference.eval()
    return history
