"""Benchmark: prompt adherence of a text-to-image recipe on the shapes for a fixed CPU budget.

How the `shapes` preset was chosen (docs/text_to_image_recipe.md): each variant trains with the
engine's own training step (``minisd3.engine.loop.Trainer.train_step``: the MM-DiT and its small text
encoder, the engine's data, times, learning-rate and EMA schedules) until its training steps have used
``--budget`` process-CPU seconds (evaluation not counted), then samples the EMA model (20 Euler steps) for
256 prompts of held-out (colour, shape) pairs and 256 of training pairs and prints the adherence
of each attribute beside its chance rate (the same images scored against shuffled prompts).

    python benchmarks/recipe_search.py --budget 300 --set autoencoder=shapes-32 --set lr=3e-3 ...
    OMP_NUM_THREADS=1 python benchmarks/recipe_search.py --budget 300 --set autoencoder= \\
        --set image_size=24 --set patch_size=4          # the pixel-space recipe it replaced

``--set`` takes the keys of :class:`minisd3.engine.config.TrainConfig` on top of the ``shapes`` preset;
``--max-steps`` sets the length of the cosine schedule (pick it so the budget ends near it).
Run variants one per core with ``OMP_NUM_THREADS=1`` so they can be compared by CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from minisd3.adherence import adherence_report, chance_report
from minisd3.engine.config import apply_overrides, preset_config
from minisd3.engine.loop import Distributed, Trainer
from minisd3.seeding import make_generator


def train_for(config, budget: float, log_every: int = 100):
    """Train with the engine's :class:`Trainer` until its steps have used ``budget`` CPU seconds (or
    ``max_steps``); returns (EMA model, source, steps, CPU s)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, Path(out), Distributed(config.device))
        step = 0
        while trainer.cpu.seconds < budget and step < config.max_steps:
            loss, _, _ = trainer.train_step(step)
            step += 1
            if step % log_every == 0:
                print(f"step {step} loss {loss:.4f} cpu {trainer.cpu.seconds:.0f} s", flush=True)
    return trainer.ema, trainer.source, step, trainer.cpu.seconds


@torch.no_grad()
def adherence_table(model, source, n: int, cfgs: list[float], steps: int, shift: float) -> dict:
    """{"held_out w=…" | "training w=…": {"adherence": …, "chance": …}} on n prompts of each kind."""
    table = {}
    for name, captions in (("held_out", source.split.held_out_captions), ("training", source.split.train_captions)):
        prompts = captions(n, make_generator(123), source.image_size)
        for w in cfgs:
            images = torch.cat([source.to_images(model.sample(prompts[i:i + 128], steps=steps, cfg=w, shift=shift,
                                                              generator=make_generator(7 + i)))
                                for i in range(0, n, 128)]).clamp(-1, 1)
            table[f"{name} w={w:g}"] = {"adherence": adherence_report(images, prompts),
                                        "chance": chance_report(images, prompts, make_generator(5))}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300, help="CPU seconds of training steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-steps", type=int, help="length of the lr schedule")
    parser.add_argument("--cfg", type=float, nargs="+", default=[3.0], help="guidance scales to evaluate")
    parser.add_argument("--prompts", type=int, default=256, help="prompts of each kind")
    args = parser.parse_args()
    overrides = args.set + ([f"max_steps={args.max_steps}"] if args.max_steps else [])
    config = apply_overrides(preset_config("shapes"), overrides)
    model, source, steps, cpu = train_for(config, args.budget)
    table = adherence_table(model, source, args.prompts, args.cfg, config.sample_steps, config.shift)
    print(json.dumps({"overrides": overrides, "steps": steps, "train_cpu_s": round(cpu, 1),
                      "threads": torch.get_num_threads(), "results": table}, indent=1))
    for row, reports in table.items():
        cells = "  ".join(f"{k} {v:.2f} ({reports['chance'][k]:.2f})" for k, v in reports["adherence"].items())
        print(f"{row:16s} {cells}    [chance in brackets]")


if __name__ == "__main__":
    main()
