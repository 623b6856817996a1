"""Lesson 09 (scaling up): the checks of the engine's three schedules, each a pure function of the step so that
a resumed run continues exactly: the EMA of the weights with its warm-up (``ema_over_steps``), the learning
rate (``learning_rate``) and the resume-safe order of the data (``batch_indices``), with their references
(the engine's own: :func:`minisd3.training.ema_decay_at`, :func:`minisd3.engine.loop.learning_rate`,
:meth:`minisd3.engine.sources.TensorSource.indices`) and the wrong variants the checks name.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...engine.loop import learning_rate as _engine_learning_rate
from ...engine.sources import TensorSource
from ...seeding import make_generator, randn
from ...training import ema_decay_at
from .core import Mistake, _as_number, _call, _check, _compare, _near, error_summary

# ---------------------------------------------------------------------------------------------
# ema_over_steps
# ---------------------------------------------------------------------------------------------


def _ema_over_steps_reference(ema: torch.Tensor, weights: torch.Tensor, ema_decay: float, first_step: int = 0) -> torch.Tensor:
    """θ_ema after steps first_step … first_step + S − 1: θ_ema ← d_s·θ_ema + (1 − d_s)·θ_s,
    d_s = min(ema_decay, (1 + s)/(10 + s)) (:func:`minisd3.training.ema_decay_at`, as the engine's loop)."""
    out = ema.clone()
    for i, theta in enumerate(weights):
        d = ema_decay_at(first_step + i, ema_decay)
        out = d * out + (1 - d) * theta
    return out


def _ema_with(decay: Callable[[int, float], float], swap: bool = False) -> Callable:
    def run(ema, weights, ema_decay, first_step):
        out = ema.double().clone()
        for i, theta in enumerate(weights.double()):
            d = decay(first_step + i, ema_decay)
            out = (1 - d) * out + d * theta if swap else d * out + (1 - d) * theta
        return out
    return run


_EMA_CASES = (
    # (ema_decay, first_step, steps): the warm-up below the cap, crossing it, and a resumed run well past it
    (0.999, 0, 12),
    (0.5, 3, 10),
    (0.95, 150, 25),
)

_EMA_FORMULA = "θ_ema ← d_s·θ_ema + (1 − d_s)·θ_s, d_s = min(ema_decay, (1 + s)/(10 + s)) for s = first_step, …"


@_check("ema_over_steps", "θ_ema ← d_s·θ_ema + (1 − d_s)·θ_s with d_s = min(ema_decay, (1 + s)/(10 + s)), as the engine")
def check_ema_over_steps(ema_over_steps: Callable) -> None:
    """Check ``ema_over_steps(ema, weights, ema_decay, first_step)`` → the (P,) EMA after applying the engine's
    update for each row of ``weights`` (S, P), the weights after steps first_step … first_step + S − 1, with the
    warm-up d_s = min(ema_decay, (1 + s)/(10 + s)); at the start of a run, across the cap and resumed late."""
    gen = make_generator(901)
    for ema_decay, first_step, steps in _EMA_CASES:
        ema = randn((7,), gen)
        weights = randn((steps, 7), gen) + torch.linspace(0, 3, steps)[:, None]  # weights that drift, as training's do
        got = _call(ema_over_steps, "ema_over_steps", ema.clone(), weights.clone(), ema_decay, first_step)
        want = _ema_over_steps_reference(ema.double(), weights.double(), ema_decay, first_step)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (steps, 7):
            raise Mistake(f"returned the EMA after every step, shape ({steps}, 7): return only the EMA after the last "
                          "step, shape (P,)", "returned_every_step")
        args = (ema, weights, ema_decay, first_step)
        mutations = [
            ("no_warmup", "no warm-up: the decay is d_s = min(ema_decay, (1 + s)/(10 + s)), not ema_decay from the first "
             "step (a fixed 0.999 would keep 37 % of the random initial weights after 1000 steps)",
             _ema_with(lambda s, d: d)(*args)),
            ("warmup_off_by_one", "the warm-up is d_s = (1 + s)/(10 + s): with s/(10 + s) the first update (s = 0) throws "
             "the EMA away", _ema_with(lambda s, d: min(d, s / (10 + s)))(*args)),
            ("step_counted_from_one", "counted the steps from 1: the first step of a run is s = 0, d_0 = 1/10",
             _ema_with(lambda s, d: min(d, (2 + s) / (11 + s)))(*args)),
            ("missing_cap", "the warm-up is not capped: d_s = min(ema_decay, (1 + s)/(10 + s)), the decay never goes "
             "above ema_decay", _ema_with(lambda s, d: (1 + s) / (10 + s))(*args)),
            ("weights_swapped", "the weights are swapped: θ_ema ← d·θ_ema + (1 − d)·θ, the old average keeps the "
             "large share d", _ema_with(ema_decay_at, swap=True)(*args)),
            ("ignores_first_step", "ignored first_step: the warm-up depends on the step of the run, s = first_step + i, "
             "so a resumed run continues with the decay it had reached",
             _ema_with(lambda s, d: ema_decay_at(s - first_step, d))(*args)),
            ("skipped_first_row", "skipped the first row of weights: each row is the weights after one step, and each "
             "updates the EMA once", _ema_with(ema_decay_at)(ema, weights[1:], ema_decay, first_step + 1)),
        ]
        _compare(got, want, mutations, formula=_EMA_FORMULA, shape_hint="return the EMA after the last step, like ema")


# ---------------------------------------------------------------------------------------------
# learning_rate
# ---------------------------------------------------------------------------------------------

def _learning_rate_reference(step: int, lr: float, warmup_steps: int, max_steps: int) -> float:
    """:func:`minisd3.engine.loop.learning_rate`: lr·(s + 1)/warmup during the warm-up, then a cosine to 10 % of lr."""
    return _engine_learning_rate(step, lr, warmup_steps, max_steps)


def _cosine(step, lr, warmup, max_steps, floor=0.1, offset=True, clamp=True, form="blend"):
    progress = (step - warmup) / max(1, max_steps - warmup) if offset else step / max_steps
    if clamp:
        progress = min(1.0, progress)
    c = 0.5 * (1 + math.cos(math.pi * progress))
    if form == "blend":
        return lr * (floor + (1 - floor) * c)
    if form == "added":
        return lr * (floor + c)
    if form == "clipped":
        return lr * max(floor, c)
    return lr * (floor + (1 - floor) * (1 - min(1.0, progress)))  # linear


_LR_CASES = ((3e-3, 10, 60), (1e-4, 0, 40), (2e-3, 25, 100))
_LR_FORMULA = ("lr·(s + 1)/warmup_steps for s < warmup_steps, then lr·(0.1 + 0.9·½(1 + cos(π·p))), "
               "p = min(1, (s − warmup_steps)/(max_steps − warmup_steps))")


@_check("learning_rate", "linear warm-up to lr, then a cosine to 10 % of lr at max_steps, as the engine")
def check_learning_rate(learning_rate: Callable) -> None:
    """Check ``learning_rate(step, lr, warmup_steps, max_steps)`` → one number at every step from 0 to a few steps past
    ``max_steps``, against the engine's schedule, with and without a warm-up."""
    for lr, warmup, max_steps in _LR_CASES:
        steps = list(range(0, max_steps + 6))
        hint = (f"here warmup_steps = {warmup} and max_steps = {max_steps}"
                + (": warmup_steps = 0 means no warm-up, so test step < warmup_steps before dividing by it"
                   if warmup == 0 else ""))
        got = torch.tensor([_as_number(_call(learning_rate, "learning_rate", s, lr, warmup, max_steps, hint=hint),
                                       "learning_rate") for s in steps], dtype=torch.float64)
        want = torch.tensor([_learning_rate_reference(s, lr, warmup, max_steps) for s in steps], dtype=torch.float64)

        def schedule(warm: Callable[[int], float] | None = None, **cosine) -> torch.Tensor:
            warm = warm or (lambda s: lr * (s + 1) / warmup)
            return torch.tensor([warm(s) if s < warmup else _cosine(s, lr, warmup, max_steps, **cosine) for s in steps],
                                dtype=torch.float64)

        mutations = [
            ("warmup_starts_at_zero", "the warm-up starts at 0: lr·(s + 1)/warmup_steps, so step 0 already learns and "
             "the warm-up ends at lr exactly", schedule(lambda s: lr * s / warmup)),
            ("no_floor", "the cosine decays to 0: the engine decays to 10 % of lr, lr·(0.1 + 0.9·½(1 + cos(π·p)))",
             schedule(floor=0.0)),
            ("floor_not_blended", "the floor is added on top: lr·(0.1 + 0.9·½(1 + cos(π·p))), so that the schedule starts "
             "at lr and ends at 0.1·lr (yours starts at 1.1·lr)", schedule(form="added")),
            ("floor_clipped", "the cosine is clipped at 10 %: the engine blends, lr·(0.1 + 0.9·½(1 + cos(π·p)))",
             schedule(form="clipped")),
            ("progress_not_offset", "the cosine's progress counts from step 0: p = (s − warmup_steps)/(max_steps − "
             "warmup_steps), so the cosine starts where the warm-up ends", schedule(offset=False)),
            ("no_clamp", "past max_steps the cosine comes back up: p = min(1, …), the rate stays at 10 % of lr",
             schedule(clamp=False)),
            ("linear_decay", "a linear decay: after the warm-up the engine follows a cosine, ½(1 + cos(π·p))",
             schedule(form="linear")),
            ("no_warmup", "no warm-up: for s < warmup_steps the rate rises linearly, lr·(s + 1)/warmup_steps",
             schedule(lambda s: _cosine(s, lr, warmup, max_steps))),
        ]
        _compare(got, want, mutations, formula=_LR_FORMULA, rtol=1e-5, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# batch_indices
# ---------------------------------------------------------------------------------------------

def _epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=make_generator(seed * 1_000_003 + epoch))


def _batch_indices_reference(seed: int, step: int, batch_size: int, n: int) -> torch.Tensor:
    """Positions step·B … (step + 1)·B − 1 of the epoch-wise permuted order, epoch e's permutation drawn with
    make_generator(seed·1_000_003 + e) (:meth:`minisd3.engine.sources.TensorSource.indices`)."""
    return TensorSource(torch.zeros(n, 1, 1, 1), torch.zeros(n, dtype=torch.long), ("x",), seed).indices(step, batch_size)


def _indices_with(seed: int, step: int, batch_size: int, n: int, epoch_of=lambda p, step, b, n: p // n,
                  seed_of=lambda seed, epoch: seed * 1_000_003 + epoch, first=None) -> torch.Tensor:
    start = step * batch_size if first is None else first
    out = []
    for p in range(start, start + batch_size):
        perm = torch.randperm(n, generator=make_generator(seed_of(seed, epoch_of(p, step, batch_size, n))))
        out.append(perm[p % n])
    return torch.stack(out)


_BATCH_CASES = ((3, 12, 4, 10), (3, 0, 4, 10), (3, 2, 4, 10), (7, 5, 8, 37), (11, 9, 6, 13))
"""(seed, step, batch size, n): first a late step whose batch crosses from epoch 4 to epoch 5 (so that each wrong order
shows there and differs from the others), then the first steps and other sizes."""

_ORDER = ("positions step·B … (step + 1)·B − 1 of the epoch-wise order; position p is in epoch e = p // n at place "
          "p % n of torch.randperm(n, generator=make_generator(seed * 1_000_003 + e))")


def _as_indices(got, batch_size: int) -> torch.Tensor:
    if isinstance(got, (list, tuple)) and all(isinstance(i, int) for i in got):
        got = torch.tensor(got)
    if not isinstance(got, torch.Tensor):
        raise Mistake(f"should return a tensor of {batch_size} indices, got {type(got).__name__}")
    if tuple(got.shape) != (batch_size,):
        raise Mistake(f"wrong shape: expected ({batch_size},), one index per sample of the batch, got {tuple(got.shape)}")
    if got.is_floating_point():
        if not torch.equal(got, got.round()):
            raise Mistake(f"expected whole-number indices, got {got[:4].tolist()}…")
    return got.long().cpu()


@_check("batch_indices", "batch s is positions s·B … (s + 1)·B − 1 of a fresh permutation per epoch seeded by (seed, epoch)")
def check_batch_indices(batch_indices: Callable) -> None:
    """Check ``batch_indices(seed, step, batch_size, n)`` → the (B,) indices of step ``step``'s batch, computed from
    (seed, step) alone as the engine's :meth:`~minisd3.engine.sources.TensorSource.indices`: the same on every
    call, every image once per epoch, and equal to the engine's order, batches crossing an epoch boundary included."""
    for seed, step, batch_size, n in _BATCH_CASES:
        got = _as_indices(_call(batch_indices, "batch_indices", seed, step, batch_size, n), batch_size)
        again = _as_indices(_call(batch_indices, "batch_indices", seed, step, batch_size, n), batch_size)
        if not torch.equal(got, again):
            raise Mistake("two calls for the same (seed, step) gave different batches: a resumed run would see other data; "
                          "draw with a generator made from the seed and the epoch, make_generator(seed * 1_000_003 + e), "
                          "never with the global random state", "not_reproducible")
        if got.min() < 0 or got.max() >= n:
            raise Mistake(f"indices out of range: expected 0 … {n - 1} for n = {n}, got {got.min()} … {got.max()}")
        want = _batch_indices_reference(seed, step, batch_size, n)
        if torch.equal(got, want):
            continue
        variants = [
            ("same_permutation_every_epoch", "every epoch uses the same permutation: seed each epoch's own, "
             "make_generator(seed * 1_000_003 + e) with e = p // n, so the order changes from epoch to epoch",
             _indices_with(seed, step, batch_size, n, seed_of=lambda seed, epoch: seed * 1_000_003)),
            ("ignores_step", "every step gets the same batch: step s takes the positions s·B … (s + 1)·B − 1",
             _indices_with(seed, step, batch_size, n, first=0)),
            ("epoch_of_first_position", "the whole batch takes the permutation of its first position's epoch: a batch "
             "that crosses the end of an epoch continues in the next epoch's permutation, e = p // n for each position p",
             _indices_with(seed, step, batch_size, n, epoch_of=lambda p, s, b, n: (s * b) // n)),
            ("epoch_from_step", "the epoch is p // n, the position's, not the step's: e = (step·B + i) // n",
             _indices_with(seed, step, batch_size, n, epoch_of=lambda p, s, b, n: s // n)),
            ("new_permutation_each_step", "a new permutation every step: one permutation per epoch, so that every image "
             "comes once per epoch; step s takes positions s·B … (s + 1)·B − 1 of it",
             torch.randperm(n, generator=make_generator(seed * 1_000_003 + step))[:batch_size]),
            ("seed_formula", "another seed for the epoch's permutation: the engine draws epoch e's with "
             "make_generator(seed * 1_000_003 + e), so that seeds and epochs never share a stream",
             _indices_with(seed, step, batch_size, n, seed_of=lambda seed, epoch: seed + epoch)),
            ("step_counted_from_one", "counted the steps from 1: step 0 takes positions 0 … B − 1",
             _indices_with(seed, step + 1, batch_size, n)),
        ]
        for mistake, message, wrong in variants:
            if torch.equal(got, wrong.long()):
                raise Mistake(message, mistake)
        drawn = torch.randint(0, n, (batch_size,), generator=make_generator(seed * 1_000_003 + step))
        if torch.equal(got, drawn):
            raise Mistake(f"drew the indices with replacement: an epoch is a permutation, every image once; {_ORDER}",
                          "with_replacement")
        epoch = torch.cat([_as_indices(_call(batch_indices, "batch_indices", seed, s, 1, n), 1) for s in range(n)])
        if torch.unique(epoch).numel() < n:
            raise Mistake(f"one epoch of batches of 1 (steps 0 … {n - 1}) missed {n - torch.unique(epoch).numel()} of the "
                          f"{n} images and repeated others: draw a permutation per epoch, not indices with replacement; "
                          f"{_ORDER}", "with_replacement")
        raise Mistake(f"step {step} (seed {seed}, B = {batch_size}, n = {n}) got {got.tolist()}, the engine's order gives "
                      f"{want.tolist()}: {_ORDER}")



# ---------------------------------------------------------------------------------------------
# rank_slice
# ---------------------------------------------------------------------------------------------

def _rank_slice_reference(batch_size: int, world_size: int, rank: int) -> torch.Tensor:
    """The positions rank·B/W … (rank + 1)·B/W − 1 of the global batch, as :class:`minisd3.engine.loop.Trainer`
    (``per_rank = batch_size // world``, ``lo = rank · per_rank``); ValueError when W does not divide B."""
    per_rank = batch_size // world_size
    if per_rank * world_size != batch_size:
        raise ValueError(f"batch_size: expected a multiple of world_size = {world_size}, got {batch_size}")
    return torch.arange(rank * per_rank, (rank + 1) * per_rank)


_RANK_CASES = ((12, 4), (64, 8), (6, 1), (30, 3))
_RANK_ORDER = "rank r takes the contiguous positions r·B/W … (r + 1)·B/W − 1 of the global batch"


@_check("rank_slice", "rank r takes positions r·B/W … (r + 1)·B/W − 1, the ranks together the whole batch, as the engine")
def check_rank_slice(rank_slice: Callable) -> None:
    """Check ``rank_slice(batch_size, world_size, rank)`` → the (B/W,) positions of the global batch that process
    ``rank`` trains on, for every rank of several (B, W): the engine's contiguous split, whose union over the ranks
    is the global batch with no position twice; and a ValueError naming the batch size when W does not divide B."""
    for batch_size, world in _RANK_CASES:
        per_rank = batch_size // world
        parts = []
        for rank in range(world):
            got = _call(rank_slice, "rank_slice", batch_size, world, rank)
            if isinstance(got, slice):  # a slice of the batch is as good as its positions
                got = torch.arange(batch_size)[got]
            elif isinstance(got, (range, list, tuple)) and all(isinstance(i, int) for i in got):
                got = torch.tensor(list(got), dtype=torch.long)
            if isinstance(got, torch.Tensor) and got.ndim == 1 and got.numel() != per_rank:
                whole = " (the global batch size: each of the W processes takes B/W of it)" if got.numel() == batch_size else ""
                raise Mistake(f"wrong size: rank {rank} of {world} got {got.numel()} positions{whole}; a batch of "
                              f"{batch_size} over {world} processes gives each B/W = {per_rank}", "per_rank_size")
            got = _as_indices(got, per_rank)
            parts.append(got)
            want = _rank_slice_reference(batch_size, world, rank)
            if torch.equal(got, want):
                continue
            variants = [
                ("strided", f"took every W-th position (rank::W): the engine gives each rank a contiguous block; "
                 f"{_RANK_ORDER}", torch.arange(rank, batch_size, world)),
                ("rank_counted_from_one", f"counted the ranks from 1: rank 0 takes positions 0 … B/W − 1; {_RANK_ORDER}",
                 torch.arange((rank + 1) * per_rank, (rank + 2) * per_rank)),
                ("reversed_ranks", f"the ranks in reverse order: rank 0 takes the first block; {_RANK_ORDER}",
                 torch.arange((world - 1 - rank) * per_rank, (world - rank) * per_rank)),
                ("offset_not_scaled", f"the block starts at position r, not r·B/W: {_RANK_ORDER}",
                 torch.arange(rank, rank + per_rank)),
            ]
            for mistake, message, wrong in variants:
                if torch.equal(got, wrong):
                    raise Mistake(message, mistake)
            raise Mistake(f"rank {rank} of {world} (B = {batch_size}) got {got.tolist()}, the engine gives "
                          f"{want.tolist()}: {_RANK_ORDER}")
        union = torch.cat(parts).sort().values
        if not torch.equal(union, torch.arange(batch_size)):
            raise Mistake(f"the ranks together do not cover the global batch of {batch_size} once each")
    for batch_size, world in ((10, 4), (32, 3)):
        try:
            got = rank_slice(batch_size, world, 0)
        except NotImplementedError:
            raise
        except ValueError as err:
            if "batch" not in str(err).lower():
                raise Mistake(f"the ValueError for B = {batch_size} over W = {world} should name 'batch_size', got: "
                              f"{error_summary(err)}", "error_without_name") from None
            continue
        except Exception as err:
            raise Mistake(f"B = {batch_size} over W = {world} processes: raise a ValueError that names batch_size, got "
                          f"{type(err).__name__}: {error_summary(err)}", "wrong_error_type") from None
        raise Mistake(f"B = {batch_size} does not split over W = {world} processes, yet rank 0 got {got!r}: the engine "
                      f"stops with a ValueError (flooring would silently drop {batch_size % world} images a step, and "
                      "the ranks' losses would average unequal shares)", "no_error")


# ---------------------------------------------------------------------------------------------
# mfu
# ---------------------------------------------------------------------------------------------

def _mfu_reference(flops_per_image: float, images_per_second: float, peak_flops: float) -> float:
    """MFU = (FLOPs per image · images/s) / peak FLOP/s, a fraction (:func:`minisd3.engine.benchmark.run_benchmark`)."""
    return flops_per_image * images_per_second / peak_flops


_MFU_CASES = ((3.1e9, 2450.0, 989e12), (8.7e10, 512.5, 312e12), (1.2e8, 40.0, 2.0e11))


@_check("mfu", "MFU = FLOPs per image · images/s ÷ peak FLOP/s, a fraction, as python -m minisd3 bench")
def check_mfu(mfu: Callable) -> None:
    """Check ``mfu(flops_per_image, images_per_second, peak_flops)`` → one number, the fraction of the device's
    peak the training achieves, (FLOPs per image · images/s) / peak, on an H100-like, an A100-like and a small
    device (the FLOPs per image already count forward and backward)."""
    for flops, rate, peak in _MFU_CASES:
        value = _as_number(_call(mfu, "mfu", flops, rate, peak), "mfu")
        want = _mfu_reference(flops, rate, peak)
        if _near(value, want, abs_tol=0.0):
            continue
        variants = [
            ("percent_not_fraction", "returned a percentage: MFU is a fraction, achieved / peak (the benchmark prints "
             "100·MFU with a % sign)", 100 * want),
            ("missing_rate", "left out the images per second: achieved FLOP/s = FLOPs per image · images/s",
             flops / peak),
            ("divided_by_rate", "divided by the images per second: achieved FLOP/s = FLOPs per image · images/s",
             flops / rate / peak),
            ("inverted", "the ratio is upside down: MFU = achieved / peak, at most 1", peak / (flops * rate)),
            ("backward_counted_again", "multiplied by 3 for the backward pass: the FLOPs per image already count "
             "forward and backward", 3 * want),
            ("forward_only", "divided by 3: the FLOPs per image are the training step's (forward and backward), "
             "use them as they are", want / 3),
            ("tera_units", "converted to TFLOP/s on one side only: achieved and peak in the same unit, "
             "MFU = FLOPs per image · images/s / peak", want / 1e12),
        ]
        for mistake, message, wrong in variants:
            if _near(value, wrong, abs_tol=0.0):
                raise Mistake(message, mistake)
        raise Mistake(f"mfu = {value:.5g} for {flops:.3g} FLOPs per image at {rate:g} images/s on a {peak:.3g} FLOP/s "
                      f"device: (FLOPs per image · images/s) / peak gives {want:.5g}")
