"""A scaling sweep: one recipe trained at several model sizes, then compared by validation loss, compute and steps.

SD3 (Esser et al. 2024, §5.3, Fig. 8) scales its MM-DiT by one number, the depth d, with hidden size 64·d and
d attention heads (head width 64), and finds that the validation loss falls smoothly with size and with training
FLOPs, and that larger models need fewer sampling steps (their Table 6). :func:`run_sweep` does the same on any
preset: for each depth it trains ``preset`` with ``depth = heads = d`` and ``head_dim = 64`` in ``OUT/depth-d``
(resuming a run that was interrupted, skipping one that is complete), then measures the finished EMA model:

    flops_per_image    FLOPs of one training step per image (forward + backward, text encoder included,
                       counted by PyTorch's FlopCounterMode; :func:`training_flops_per_image`)
    few_steps          held-out adherence and sliced Wasserstein at each of ``eval_steps`` Euler steps
    path_length        Σ_i ‖v̂_i·Δt_i‖ along the Euler path (the most of ``eval_steps``) of held-out prompts,
                       beside the straight distance ‖z_1 − z_0‖ (:func:`minisd3.rectified_flow.path_length`)

and writes ``OUT/sweep.json`` (every number) and ``OUT/sweep.csv`` (one row per depth). Each run's own
``adherence.csv`` holds the validation loss and adherence at every ``sample_every`` steps, so loss against steps
and FLOPs comes from there. ``store`` copies the small files (no checkpoints) to a folder such as
``data/runs/scaling``.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..files import write_text_atomic
from ..rectified_flow import path_length
from ..seeding import make_generator
from .benchmark import counting_flops
from .checkpoints import load_run
from .config import TrainConfig, build_model
from .evaluation import evaluate, json_safe
from .loop import StepDraws, train_run
from .sources import make_source

HEAD_DIM = 64
"""Width of an attention head in the sweep: hidden = 64·depth with depth heads (SD3 §5.3)."""
SMALL_FILES = ("config.json", "metrics.csv", "adherence.csv", "summary.json")
"""What :func:`run_sweep` stores of each run: everything but checkpoints and sample grids."""


def scaled_config(base: TrainConfig, depth: int) -> TrainConfig:
    """``base`` with depth d, d heads of width 64 (hidden 64·d), SD3's single scaling parameter.

    Raises ValueError for a depth < 1.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"--depths: expected positive whole numbers, got {depth!r}")
    return replace(base, depth=depth, heads=depth, head_dim=HEAD_DIM).validate()


def training_flops_per_image(config: TrainConfig, batch: int = 4) -> float:
    """FLOPs of one training step per image of ``config``'s model on its own data: forward and backward of the
    loss, text encoder included, attention counted as its two matrix products (SDPA's math backend,
    :func:`~minisd3.engine.benchmark.counting_flops`). The optimizer's update (O(parameters)) is not counted."""
    source = make_source(config)
    torch.manual_seed(config.seed)
    model = build_model(config, source.vocabulary, source.channels)
    images, captions, t, eps, drop = StepDraws(source, replace(config, batch_size=batch)).draw(0)
    with counting_flops() as counter:
        model(images, captions, eps=eps, t=t, drop=drop).backward()
    return counter.get_total_flops() / batch


def _complete(run_dir: Path, config: TrainConfig) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("step") == config.max_steps


def measure_size(run_dir: Path, config: TrainConfig, eval_steps: tuple[int, ...], samples: int) -> dict:
    """The finished run's EMA model: parameters, FLOPs per image, few-step quality and path length."""
    model, _, _ = load_run(run_dir)
    source = make_source(config)
    few_steps = {}
    for steps in eval_steps:
        result = evaluate(model, source, samples, steps, config.sample_cfg, config.shift, config.seed)
        few_steps[steps] = {"adherence": result["adherence"]["overall"], "chance": result["chance"]["overall"],
                            "sliced_wasserstein": result["sliced_wasserstein"],
                            "validation_loss": result.get("validation_loss")}
    prompts = source.eval_prompts(samples, make_generator(config.seed + 1))
    trajectory = model.sample(prompts, steps=max(eval_steps), cfg=config.sample_cfg, shift=config.shift,
                              generator=make_generator(config.seed), return_trajectory=True)
    return {"depth": config.depth, "hidden": config.heads * config.head_dim, "heads": config.heads,
            "parameters": sum(p.numel() for p in model.mmdit.parameters()),
            "flops_per_image": training_flops_per_image(config),
            "batch_size": config.batch_size, "steps": config.max_steps,
            "train_cpu_seconds": json.loads((run_dir / "summary.json").read_text())["train_cpu_seconds"],
            "few_steps": few_steps, "path_length": {"steps": max(eval_steps), **path_length(trajectory)}}


def sweep_csv(rows: list[dict]) -> str:
    """One line per depth: size, compute, and quality at each evaluated step count."""
    text = io.StringIO()
    writer = csv.writer(text)
    steps = list(rows[0]["few_steps"]) if rows else []
    writer.writerow(["depth", "hidden", "parameters", "flops_per_image", "training_flops", "train_cpu_s",
                     "validation_loss", "path_length", "straight_length",
                     *(f"adherence_{s}_steps" for s in steps), *(f"sliced_w_{s}_steps" for s in steps)])
    for r in rows:
        last = r["few_steps"][steps[-1]]
        writer.writerow([r["depth"], r["hidden"], r["parameters"], f"{r['flops_per_image']:.4g}",
                         f"{r['flops_per_image'] * r['batch_size'] * r['steps']:.4g}", r["train_cpu_seconds"],
                         f"{last['validation_loss']:.5f}", f"{r['path_length']['length']:.4f}",
                         f"{r['path_length']['straight']:.4f}",
                         *(f"{r['few_steps'][s]['adherence']:.4f}" for s in steps),
                         *(f"{r['few_steps'][s]['sliced_wasserstein']:.5f}" for s in steps)])
    return text.getvalue()


def run_sweep(base: TrainConfig, depths: list[int], out: str | Path, eval_steps: tuple[int, ...] = (1, 2, 4, 8, 20),
              samples: int | None = None, store: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Train ``base`` at each depth in ``OUT/depth-d`` (resumed or skipped when already there), measure each
    (:func:`measure_size`), write ``OUT/sweep.json`` and ``OUT/sweep.csv``, and copy the small files to ``store``.

    Raises ValueError for no depths, a repeated depth, step counts < 1, or data without held-out scenes (the
    sweep scores adherence and the validation loss: shapes only).
    """
    if not depths or len(set(depths)) != len(depths):
        raise ValueError(f"--depths: expected distinct depths, got {depths}")
    if not eval_steps or any(not isinstance(s, int) or s < 1 for s in eval_steps):
        raise ValueError(f"--eval-steps: expected step counts ≥ 1, got {list(eval_steps)}")
    if base.data != "shapes" or base.latents:
        raise ValueError(f"--preset: the sweep scores adherence and validation loss on shapes drawn on the fly; "
                         f"expected data 'shapes' without a latent cache, got data {base.data!r}"
                         + (f" with latents {base.latents!r}" if base.latents else ""))
    configs = [scaled_config(base, d) for d in depths]
    out = Path(out)
    rows = []
    for config in configs:
        run_dir = out / f"depth-{config.depth}"
        if not _complete(run_dir, config):
            resume = run_dir if (run_dir / "checkpoints" / "latest").is_file() else None
            train_run(config, run_dir, resume=resume, progress=progress)
        rows.append(measure_size(run_dir, config, tuple(eval_steps), samples or config.eval_samples))
        write_text_atomic(out / "sweep.json", json.dumps({"base": asdict(base), "sizes": json_safe(rows)}, indent=1))
    write_text_atomic(out / "sweep.csv", sweep_csv(rows))
    if store is not None:
        store = Path(store)
        for config in configs:
            target = store / f"depth-{config.depth}"
            target.mkdir(parents=True, exist_ok=True)
            for name in SMALL_FILES:
                shutil.copy2(out / f"depth-{config.depth}" / name, target / name)
        for name in ("sweep.json", "sweep.csv"):
            shutil.copy2(out / name, store / name)
    return rows
