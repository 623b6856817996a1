"""Benchmark: seconds for lesson 03's 2-D rectified flow (8-Gaussians → two moons) to reach a
sliced-Wasserstein threshold on the CPU.

The network and settings are ``minisd3.training.RECIPES["2d"]``; training is
``train_rectified_flow(..., sample_source=sample_8gaussians)`` planned for the recipe's full number
of steps, scoring the raw weights: the recipe's moving average of the weights (``RECIPES["2d"].ema``,
which lesson 03 now samples) is not used here; ``benchmarks/flows_2d_convergence.py`` measures the
recipe with it. Every ``--eval-every`` steps the model is sampled with 16 Euler steps from 2000 fresh
8-Gaussians points and compared with 2000 fresh two-moons points (SW₂,
:func:`minisd3.metrics.sliced_wasserstein`); the run stops at the first evaluation at or under
the threshold. Evaluation time is measured apart and not counted.

    python benchmarks/rf_2d_speed.py [--threshold 0.15] [--threads N] [--eval-every 100] [--curve]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from minisd3.metrics import sliced_wasserstein
from minisd3.rectified_flow import sample
from minisd3.seeding import make_generator
from minisd3.toy2d import sample_8gaussians, sample_two_moons
from minisd3.training import RECIPES, train_rectified_flow

EVAL_POINTS = 2000
EVAL_STEPS = 16


class ThresholdReached(Exception):
    """Raised from inside the training loop to stop it at the first good-enough evaluation."""


class EvaluatingSampler:
    """The two-moons data sampler of the training run, evaluating the model every ``every`` steps.

    ``train`` draws one batch at the start of every step, so the k-th call comes after k − 1 Adam
    steps. Evaluation uses its own fixed noise and reference set, never the training generator.
    """

    def __init__(self, model, threshold: float, every: int, verbose: bool):
        self.model, self.threshold, self.every, self.verbose = model, threshold, every, verbose
        self.calls, self.eval_seconds, self.eval_cpu, self.history = 0, 0.0, 0.0, []
        self.noise = sample_8gaussians(EVAL_POINTS, make_generator(1000))
        self.reference = sample_two_moons(EVAL_POINTS, make_generator(1001))

    def evaluate(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            generated = sample(self.model, self.noise, EVAL_STEPS)
        sw = sliced_wasserstein(generated, self.reference)
        self.eval_seconds += time.perf_counter() - wall
        self.eval_cpu += time.process_time() - cpu
        return sw

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        steps_done, self.calls = self.calls, self.calls + 1
        if steps_done and steps_done % self.every == 0:
            sw = self.evaluate()
            self.history.append((steps_done, sw))
            if self.verbose:
                print(f"  step {steps_done:5d}  SW {sw:.4f}", flush=True)
            if sw <= self.threshold:
                raise ThresholdReached
        return sample_two_moons(n, generator)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} CPUs{load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=0.15, help="SW₂ to reach (default 0.15)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curve", action="store_true", help="print every evaluation")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    recipe = RECIPES["2d"]
    torch.manual_seed(args.seed)
    model = recipe.make_model((2,))
    watch = EvaluatingSampler(model, args.threshold, args.eval_every, args.curve)
    floor = sliced_wasserstein(sample_two_moons(EVAL_POINTS, make_generator(1002)), watch.reference)

    wall, cpu = time.perf_counter(), time.process_time()
    reached = False
    try:
        train_rectified_flow(model, watch, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr,
                             sample_source=sample_8gaussians, seed=args.seed, progress=False)
    except ThresholdReached:
        reached = True
    train_wall = time.perf_counter() - wall - watch.eval_seconds
    train_cpu = time.process_time() - cpu - watch.eval_cpu
    if not reached:  # the recipe's last step is evaluated too
        watch.history.append((recipe.steps, watch.evaluate()))
    steps, sw = watch.history[-1]

    print(f"recipe 2d        : hidden {recipe.hidden}, depth {recipe.depth}, batch {recipe.batch_size}, "
          f"lr {recipe.lr}, planned steps {recipe.steps}")
    print(f"threshold        : SW₂ ≤ {args.threshold} ({EVAL_STEPS}-step Euler, {EVAL_POINTS} points; "
          f"two-moons against itself: {floor:.4f})")
    print(f"reached          : {'yes' if reached else 'no'}, at step {steps} with SW₂ {sw:.4f}")
    print(f"training seconds : {train_wall:.1f} wall, {train_cpu:.1f} CPU "
          f"(evaluations, not counted: {watch.eval_seconds:.1f} s wall)")
    print(f"torch threads    : {torch.get_num_threads()}")
    print(f"machine          : {machine()}, torch {torch.__version__}")
    return 0 if reached else 1


if __name__ == "__main__":
    raise SystemExit(main())
