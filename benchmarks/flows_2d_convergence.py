"""Benchmark: CPU-seconds for lesson 03's 2-D flow (8-Gaussians → two moons) to come within 1.5×, 2× and
3× of the sliced-Wasserstein noise floor (issue 12, item 7).

The floor is the metric's own noise: SW₁ over 256 directions between the 4000-point two-moons reference
set and another independent 4000-point draw of two moons, over ``--floor-draws`` draws (mean and
spread). The flow is ``minisd3.training.RECIPES["2d"]`` trained exactly as lesson 03 trains it
(``train_rectified_flow(..., sample_source=sample_8gaussians, ema=recipe.ema)``, planned for the
recipe's full number of steps) on one thread. Every ``--eval-every`` CPU-seconds of training the weights
a sampler would use (the EMA) are sampled with 100 Euler steps from 4000 fixed 8-Gaussians points and
scored against the reference set with the same metric; the evaluation's CPU time is not counted as
training. The run stops after ``--budget`` training CPU-seconds or at the recipe's last step.

    OMP_NUM_THREADS=1 python benchmarks/flows_2d_convergence.py [--seeds 0 1 2] [--budget 40] \\
        [--eval-every 2] [--p 1] [--set lr=3e-3 --set steps=2000 ...] [--curve]

``--set`` overrides fields of the recipe (hidden, depth, batch_size, lr, steps, ema; ``ema=none`` trains
without the average) to measure a change; ``--p 2`` uses SW₂, the lessons' default metric, instead of SW₁.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from rf_2d_speed import machine  # the sibling benchmark's one-line machine description

from minisd3.metrics import sliced_wasserstein
from minisd3.rectified_flow import sample
from minisd3.seeding import make_generator
from minisd3.toy2d import sample_8gaussians, sample_two_moons
from minisd3.training import RECIPES, train_rectified_flow

EVAL_POINTS = 4000
EVAL_STEPS = 100
PROJECTIONS = 256
REFERENCE_SEED, SOURCE_SEED, FLOOR_SEED = 1001, 1000, 2000
RATIOS = (3.0, 2.0, 1.5)


def noise_floor(reference: torch.Tensor, draws: int, p: int) -> list[float]:
    """SW_p between ``reference`` and ``draws`` independent two-moons sets of the same size."""
    return [sliced_wasserstein(sample_two_moons(reference.shape[0], make_generator(FLOOR_SEED + i)), reference,
                               PROJECTIONS, p=p) for i in range(draws)]


class BudgetSpent(Exception):
    """Raised from inside the training loop once the training steps have used the budget."""


class Watch:
    """The training run's callback: scores the weights to sample every ``every`` training CPU-seconds
    and at the last step, and stops the run once ``budget`` is spent.

    Evaluation uses its own fixed source points and reference set, never the training generator, and
    its CPU time is kept apart.
    """

    def __init__(self, reference: torch.Tensor, every: float, budget: float, last_step: int, p: int, verbose: bool):
        self.reference, self.every, self.budget, self.last_step, self.p = reference, every, budget, last_step, p
        self.verbose = verbose
        self.source = sample_8gaussians(EVAL_POINTS, make_generator(SOURCE_SEED))
        self.eval_cpu, self.next_eval, self.history = 0.0, every, []
        self.start = time.process_time()

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        spent = time.process_time() - self.start - self.eval_cpu
        if spent < self.next_eval and step < self.last_step:
            return
        cpu = time.process_time()
        with torch.no_grad():
            generated = sample(model, self.source, EVAL_STEPS)
        sw = sliced_wasserstein(generated, self.reference, PROJECTIONS, p=self.p)
        self.eval_cpu += time.process_time() - cpu
        self.history.append((step, spent, sw))
        self.next_eval += self.every
        if self.verbose:
            print(f"    step {step:5d}  {spent:6.1f} CPU-s  SW {sw:.4f}", flush=True)
        if spent >= self.budget:
            raise BudgetSpent


def run(recipe, seed: int, reference: torch.Tensor, args) -> list[tuple[int, float, float]]:
    """Train one seed; returns its evaluations (step, training CPU-s, SW)."""
    torch.manual_seed(seed)
    model = recipe.make_model((2,))
    watch = Watch(reference, args.eval_every, args.budget, recipe.steps, args.p, args.curve)
    try:
        train_rectified_flow(model, sample_two_moons, steps=recipe.steps, batch_size=recipe.batch_size,
                             lr=recipe.lr, sample_source=sample_8gaussians, seed=seed, progress=False,
                             ema=recipe.ema, callback=watch)
    except BudgetSpent:
        pass
    return watch.history


def first_below(history, threshold: float) -> float | None:
    return next((cpu for _, cpu, sw in history if sw <= threshold), None)


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def parse_sets(items: list[str], recipe):
    fields = [f.name for f in dataclasses.fields(recipe)]
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set: expected one of {fields}, got {key!r}")
        if key == "ema":
            changes[key] = None if value.lower() in ("", "none") else float(value)
        else:
            changes[key] = type(getattr(recipe, key))(value)
    return dataclasses.replace(recipe, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=40.0, help="training CPU-seconds per seed (default 40)")
    parser.add_argument("--eval-every", type=float, default=2.0, help="training CPU-seconds between evaluations")
    parser.add_argument("--p", type=int, default=1, choices=(1, 2), help="SW₁ (default, the issue's) or SW₂")
    parser.add_argument("--floor-draws", type=int, default=8, help="independent draws for the floor")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override the recipe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--curve", action="store_true", help="print every evaluation")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = parse_sets(args.set, RECIPES["2d"])

    reference = sample_two_moons(EVAL_POINTS, make_generator(REFERENCE_SEED))
    floors = noise_floor(reference, args.floor_draws, args.p)
    floor = statistics.fmean(floors)
    metric = f"SW{'₁' if args.p == 1 else '₂'}"
    print(f"recipe   : {recipe}")
    print(f"metric   : {metric}, {PROJECTIONS} directions, {EVAL_POINTS} points, {EVAL_STEPS} Euler steps")
    print(f"floor    : {floor:.4f} ± {statistics.stdev(floors):.4f} (two-moons against itself, "
          f"{args.floor_draws} draws; min {min(floors):.4f}, max {max(floors):.4f})")
    print(f"machine  : {machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")

    header = " | ".join(f"CPU-s to {r:g}× floor" for r in RATIOS)
    rows = [f"| seed | {header} | best {metric} (× floor) at CPU-s | last {metric} (× floor) | steps |",
            "|---|" + "---|" * (len(RATIOS) + 3)]
    reached: dict[float, list[float]] = {r: [] for r in RATIOS}
    bests, lasts = [], []
    for seed in args.seeds:
        if args.curve:
            print(f"  seed {seed}:")
        history = run(recipe, seed, reference, args)
        cells = []
        for r in RATIOS:
            cpu = first_below(history, r * floor)
            cells.append("not reached" if cpu is None else f"{cpu:.1f}")
            if cpu is not None:
                reached[r].append(cpu)
        step, best_cpu, best = min(history, key=lambda h: h[2])
        last_step, _, last = history[-1]
        bests.append(best / floor)
        lasts.append(last / floor)
        rows.append(f"| {seed} | " + " | ".join(cells) + f" | {best:.4f} ({best / floor:.2f}×) at {best_cpu:.1f} "
                    f"| {last:.4f} ({last / floor:.2f}×) | {last_step} |")
    summary = [f"{spread(reached[r])} ({len(reached[r])}/{len(args.seeds)})" for r in RATIOS]
    rows.append("| mean ± sd (seeds reaching) | " + " | ".join(summary)
                + f" | {statistics.fmean(bests):.2f}× | {statistics.fmean(lasts):.2f}× | |")
    print("\n".join(rows))
    return 0 if len(reached[1.5]) == len(args.seeds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
