"""Benchmark: CPU seconds of one training step of the `shapes` preset, by precision, attention path and data.

What the main job's step costs on this machine, and what each choice buys (docs/text_to_image_recipe.md):

- float32, or bf16 autocast with attention in float32 (what ``AttentionCore`` does on the CPU), or
  bf16 autocast with PyTorch's CPU flash kernel in bf16 (what it did before);
- the batch drawn in the training process, or by a worker process (``data_workers=1``): the wall
  time per step then excludes rendering and encoding, which run on another core.

    OMP_NUM_THREADS=1 python benchmarks/cpu_step.py --steps 40

Each variant trains ``--steps`` steps of the engine's own training step (``Trainer.train_step``) after 5
warm-up steps on fresh draws of the same stream; the model step (forward, backward, clipping, AdamW,
EMA) is timed in process CPU seconds, the data draw
separately, and the wall time of the whole step with the draw in a worker.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import minisd3.attention as attention
from minisd3.engine.config import apply_overrides, preset_config
from minisd3.engine.loop import Distributed, Trainer
from minisd3.env import use_threads


@contextlib.contextmanager
def bf16_flash_attention():
    """AttentionCore as it was: SDPA on the autocast's bfloat16 inputs (the CPU flash kernel in bf16)."""
    original = attention.AttentionCore.forward
    attention.AttentionCore.forward = lambda self, q, k, v: F.scaled_dot_product_attention(q, k, v)
    try:
        yield
    finally:
        attention.AttentionCore.forward = original


def measure(config, steps: int, workers: int) -> dict:
    config.data_workers = workers
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, Path(out), Distributed("cpu"))  # the engine's step: forward, backward, AdamW, EMA
        model_cpu = draw_cpu = 0.0
        wall = None
        for i, drawn in enumerate(trainer.draws.iterate(0, steps + 5)):
            if i == 5:
                wall, model_cpu, draw_cpu = time.perf_counter(), 0.0, 0.0
            start = time.process_time()
            trainer.train_step(i, drawn)
            model_cpu += time.process_time() - start
            worker_cpu = drawn[-1]
            if worker_cpu is None:  # drawn in this process: time a fresh draw of the same size
                start = time.process_time()
                trainer.draws.draw(i)
                draw_cpu += time.process_time() - start
            else:
                draw_cpu += worker_cpu
        wall = time.perf_counter() - wall
    return {"model ms": 1000 * model_cpu / steps, "draw ms": 1000 * draw_cpu / steps,
            "wall ms": 1000 * wall / steps if workers else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    use_threads(args.threads)
    base = preset_config("shapes")
    variants = [("float32", ["bf16=false"], False, 0), ("bf16, attention in float32", ["bf16=true"], False, 0),
                ("bf16, attention in bf16 (flash)", ["bf16=true"], True, 0),
                ("bf16, attention in float32, draws in a worker", ["bf16=true"], False, 1)]
    print(f"shapes preset: batch {base.batch_size}, width {base.heads * base.head_dim}, depth {base.depth}; "
          f"{args.steps} steps, {torch.get_num_threads()} thread(s); torch {torch.__version__}")
    for name, overrides, flash, workers in variants:
        config = apply_overrides(preset_config("shapes"), overrides)
        with bf16_flash_attention() if flash else contextlib.nullcontext():
            result = measure(config, args.steps, workers)
        cells = "  ".join(f"{k} {v:6.1f}" for k, v in result.items() if v is not None)
        print(f"{name:48s} {cells}")


if __name__ == "__main__":
    main()
