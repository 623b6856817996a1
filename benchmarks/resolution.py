"""Benchmark: train small, then large — SD3's resolution shift and positions, measured on the shapes model.

Two parts, each writing into ``--out`` (default ``data/runs/resolution``, what lesson 09 plots):

``--part snr`` (seconds): why the shift exists. For canvases 24, 32, 48 and 64 px, scenes are noised,
z_t = (1 − t)·x0 + t·ε, and an ideal observer reads each object's colour from the mean of z_t over the
object's own pixels (its mask is known; the nearest of the seven colours, after dividing by 1 − t). The
observer that reads one pixel alone is the same at every canvas; the one that averages over the object
gets √(pixels) less noise, and objects cover the same fraction of every canvas. The table gives, per
canvas, the t at which the object-average observer's accuracy falls to ``--threshold`` (interpolated on a
fine grid of t) and its signal-to-noise ratio SNR = ((1 − t)/t)², and the shift α that maps the 24-px
threshold onto each canvas's — beside the paper's α = √(m/n) (eq. 23). → snr.csv

``--part finetune`` (about 40 CPU-minutes): the stored shapes model (``--start``, data/models/shapes-3000:
3000 steps at the 32-px canvas, 8×8 latents, shift 3) fine-tuned on the 64-px canvas (16×16 latents: 4× the
pixels) for ``--steps`` steps, at shift 3 (no resolution shift: the pre-training schedule), 3·2 = 6
(α = √(m/n) = 2 on top; shifts compose by multiplying, since the shift multiplies the odds t/(1 − t) by α)
and 3·4 = 12 (a larger α), with positions "scaled" (the 8×8 patch grid spans the 4×4 grid's range) and,
at shift 6, "extended" (spacing 1, continuing beyond it; minisd3.models.PatchEmbedding); against a model
trained on the 64-px canvas from scratch at shift 6 for the same total training FLOPs (pre-training +
fine-tuning, counted by :func:`minisd3.engine.sweep.training_flops_per_image`), and the pre-trained model
sampled at 64 px with no fine-tuning at all. Every model is scored by the engine's own
:func:`minisd3.engine.evaluation.evaluate` on ``--eval-samples`` held-out prompts (with chance rates) at
20 Euler steps, w = 3, at its own training shift. Each run keeps config.json, metrics.csv (loss every 5
steps: the first fine-tuning steps), summary.json and its last sample grid; checkpoints are deleted
(``--keep-checkpoints`` keeps them). → finetune.json

``--part buckets`` (about 10 CPU-minutes): non-square canvases. The stored model sampled on 32×64 and
64×32 canvases with positions "scaled" (each axis stretched to the trained range) and "extended" (spacing
1 on both axes), then fine-tuned ``--steps`` steps with aspect-ratio buckets 32×32, 32×64 and 64×32 in one
run (positions extended, shift 3 for every bucket), each scored by the detector on ``--eval-samples``
held-out prompts per canvas. → buckets.json

The stored runs (about 95 CPU-minutes in all; ``image_size`` counts latents, 16 = the 64-px canvas):

    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part snr                 # snr.csv, snr_curves.csv
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune            # shapes-3000: finetune.json, runs
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part buckets             # buckets.json
    NO_FT="no-finetune-scaled-shift1 no-finetune-scaled-shift2 no-finetune-extended-shift1 no-finetune-extended-shift2"
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune --start course --extended-factors \
        --out data/runs/resolution/course --skip scratch-shift2 no-finetune-extended-shift1 no-finetune-extended-shift2
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune --start course --factors 8 --extended-factors \
        --out data/runs/resolution/course-shift8 --skip scratch-shift2 $NO_FT
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune --start course --steps 600 --factors 1 2 \
        --extended-factors --out data/runs/resolution/course-600 --skip scratch-shift2 $NO_FT
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune --start course --steps 600 --factors 4 \
        --extended-factors --out data/runs/resolution/course-600-shift4 --skip scratch-shift2 $NO_FT
    OMP_NUM_THREADS=1 python benchmarks/resolution.py --part finetune --steps 4 --eval-samples 8 --out /tmp/r  # smoke
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minisd3.adherence import adherence_report, chance_report
from minisd3.engine.checkpoints import initial_weights, load_run
from minisd3.engine.config import build_model
from minisd3.engine.evaluation import evaluate, json_safe, save_sample_grid
from minisd3.engine.grids import save_labelled_grid
from minisd3.engine.loop import train_run
from minisd3.engine.sources import make_source
from minisd3.engine.sweep import training_flops_per_image
from minisd3.files import load_weights_into, write_text_atomic
from minisd3.seeding import make_generator
from minisd3.shapes import COLOURS, OBJECT_EXTENTS, SUPPORTED_SIZES, render_prompt, sample_prompt, shape_mask
from minisd3.shapes import render as render_scene

PALETTE = torch.tensor(list(COLOURS.values()))
"""(7, 3) RGB in [−1, 1] of the seven colour words (minisd3.shapes.COLOURS)."""


def object_pixels(size: int, count: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    """(pixel values (3, n) of one object, its colour index) for the objects of ``count`` random scenes."""
    generator = make_generator(seed)
    objects = []
    while len(objects) < count:
        scene = render_prompt(sample_prompt(generator), generator, image_size=size)
        image = render_scene(scene)
        for obj in scene.objects:
            extent = OBJECT_EXTENTS[size][obj.size]
            half = (extent - 1) // 2
            r, c = obj.centre
            mask = torch.tensor(shape_mask(obj.shape, extent), dtype=torch.bool)
            window = image[:, r - half:r + half + 1, c - half:c + half + 1]
            objects.append((window[:, mask], list(COLOURS).index(obj.colour)))
    return objects[:count]


def readout_accuracy(objects, ts: torch.Tensor, generator: torch.Generator, average: bool) -> np.ndarray:
    """For each t of ``ts``: the fraction of objects whose colour the observer reads right from
    z_t = (1 − t)·x0 + t·ε — from the mean over the object's pixels (``average``) or from one pixel."""
    t = ts[:, None, None]
    right = torch.zeros(len(ts))
    for pixels, label in objects:
        pixels = pixels if average else pixels[:, :1]
        noised = (1 - t) * pixels + t * torch.randn((len(ts), *pixels.shape), generator=generator)
        estimate = noised.mean(dim=2) / (1 - ts[:, None])  # (T, 3)
        right += (torch.cdist(estimate, PALETTE).argmin(dim=1) == label).float()
    return (right / len(objects)).numpy()


def threshold_t(ts: np.ndarray, accuracy: np.ndarray, level: float) -> float:
    """The t at which accuracy (falling in t) first drops below ``level``, linearly interpolated."""
    below = np.nonzero(accuracy < level)[0]
    if len(below) == 0:
        return float(ts[-1])
    i = below[0]
    if i == 0:
        return float(ts[0])
    a0, a1 = accuracy[i - 1], accuracy[i]
    return float(ts[i - 1] + (a0 - level) / (a0 - a1) * (ts[i] - ts[i - 1]))


def snr(t: float) -> float:
    return ((1 - t) / t) ** 2


def part_snr(out: Path, objects_per_canvas: int, threshold: float, seed: int) -> list[dict]:
    ts = torch.arange(0.02, 0.995, 0.0025, dtype=torch.float64).float()
    rows, curves = [], []
    for size in SUPPORTED_SIZES:
        objects = object_pixels(size, objects_per_canvas, seed)
        generator = make_generator(seed + size)
        accuracy = readout_accuracy(objects, ts, generator, average=True)
        single = readout_accuracy(objects, ts, generator, average=False)
        t_star = threshold_t(ts.numpy(), accuracy, threshold)
        t_pixel = threshold_t(ts.numpy(), single, threshold)
        rows.append({"canvas": size, "pixels": size * size,
                     "object_pixels_mean": float(np.mean([p.shape[1] for p, _ in objects])),
                     "t_threshold": t_star, "snr_threshold": snr(t_star), "t_threshold_one_pixel": t_pixel})
        curves += [{"canvas": size, "t": float(t), "accuracy_object": float(a), "accuracy_pixel": float(b)}
                   for t, a, b in zip(ts.tolist(), accuracy, single)]
    base = rows[0]
    for row in rows:
        odds = lambda t: t / (1 - t)  # noqa: E731 - the shift multiplies the odds t/(1 − t) by α
        row["alpha_measured"] = odds(row["t_threshold"]) / odds(base["t_threshold"])
        row["alpha_paper"] = math.sqrt(row["pixels"] / base["pixels"])
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "snr.csv", to_csv(rows))
    write_text_atomic(out / "snr_curves.csv", to_csv(curves))
    print(f"object-colour readout: t at which accuracy falls to {threshold} ({objects_per_canvas} objects a canvas; "
          f"chance {1 / len(COLOURS):.2f})")
    print("canvas  pixels  object px  t* (object mean)  SNR*     t* (one pixel)  α measured  α = √(m/n)")
    for r in rows:
        print(f"{r['canvas']:>6}  {r['pixels']:>6}  {r['object_pixels_mean']:>9.1f}  {r['t_threshold']:>16.4f}  "
              f"{r['snr_threshold']:.5f}  {r['t_threshold_one_pixel']:>14.4f}  {r['alpha_measured']:>10.2f}  "
              f"{r['alpha_paper']:>9.2f}")
    return rows


def to_csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def score(model, config, samples: int, seed: int, out_grid: Path | None = None) -> dict:
    source = make_source(config)
    start = time.process_time()
    result = evaluate(model, source, samples, config.sample_steps, config.sample_cfg, config.shift, seed)
    result["eval_cpu_seconds"] = time.process_time() - start
    if out_grid is not None:
        save_sample_grid(model, source, out_grid, config.sample_steps, config.sample_cfg, config.shift, seed)
    return result


def pretrained_at(start: str, large: int, positions: str, shift: float):
    """The pre-trained model's weights in a model for the large canvas (no training): (model, config)."""
    _, config, _ = load_run(start, name="--start")
    big = dataclasses.replace(config, image_size=large, position_base=config.position_base or config.image_size,
                              positions=positions, shift=shift).validate()
    source = make_source(big)
    model = build_model(big, source.vocabulary, source.channels)
    load_weights_into(model, initial_weights(start, source.vocabulary, source.channels), "--start")
    return model.eval(), big


def part_finetune(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, small, _ = load_run(args.start, name="--start")
    large = small.image_size * 2  # 4× the pixels
    base_shift = small.shift
    results = {"start": args.start, "small_latent": small.image_size, "large_latent": large, "steps": args.steps,
               "eval_samples": args.eval_samples, "base_shift": base_shift, "runs": {}}
    common = dict(init_from=args.start, image_size=large, max_steps=args.steps, lr=args.lr,
                  warmup_steps=max(1, args.steps // 10), log_every=5, sample_every=args.steps, ckpt_every=args.steps,
                  eval_samples=args.eval_samples, data_workers=1)
    flops_small = training_flops_per_image(small)
    flops_large = training_flops_per_image(dataclasses.replace(small, image_size=large, position_base=small.image_size))
    pretrain = small.max_steps * small.batch_size * flops_small
    finetune = args.steps * small.batch_size * flops_large
    scratch_steps = round((pretrain + finetune) / (small.batch_size * flops_large))
    results.update(flops_per_image_small=flops_small, flops_per_image_large=flops_large, pretrain_flops=pretrain,
                   finetune_flops=finetune, finetune_fraction=finetune / pretrain, scratch_steps=scratch_steps)
    print(f"fine-tuning {args.steps} steps = {finetune / pretrain:.0%} of pre-training FLOPs; from scratch: "
          f"{scratch_steps} steps at the large canvas for the same total", flush=True)

    for positions in ("scaled", "extended"):  # the pre-trained model at 64 px, no fine-tuning
        for factor in (1, 2):
            name = f"no-finetune-{positions}-shift{base_shift * factor:g}"
            if name in args.skip:
                continue
            model, config = pretrained_at(args.start, large, positions, base_shift * factor)
            results["runs"][name] = {"kind": "no fine-tuning", "positions": positions, "shift": config.shift,
                                     "evaluation": score(model, config, args.eval_samples, args.seed,
                                                         out / f"{name}.png")}
            report(name, results["runs"][name])
            write_text_atomic(out / "finetune.json", json.dumps(json_safe(results), indent=1))

    pairs = [(factor, "scaled") for factor in args.factors] + [(factor, "extended") for factor in args.extended_factors]
    settings = [(f"finetune-shift{factor * base_shift:g}-{positions}", factor * base_shift, positions)
                for factor, positions in pairs]
    runs = [(name, dict(common, shift=shift, positions=positions)) for name, shift, positions in settings]
    runs.append((f"scratch-shift{2 * base_shift:g}", dict(common, init_from="", position_base=0, positions="scaled",
                                                        shift=2 * base_shift, max_steps=scratch_steps,
                                                        lr=small.lr, warmup_steps=small.warmup_steps,
                                                        sample_every=scratch_steps, ckpt_every=500)))
    for name, changes in runs:
        if name in args.skip:
            continue
        config = dataclasses.replace(small, **changes).validate()
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.process_time()
        train_run(config, run_dir, progress=False)
        train_cpu = time.process_time() - start
        model, config, _ = load_run(run_dir)
        entry = {"kind": "from scratch" if not config.init_from else "fine-tuned", "positions": config.positions,
                 "shift": config.shift, "steps": config.max_steps, "process_cpu_seconds": train_cpu,
                 "evaluation": json.loads((run_dir / "summary.json").read_text())["evaluation"]}
        results["runs"][name] = entry
        report(name, entry)
        if not args.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints")
        write_text_atomic(out / "finetune.json", json.dumps(json_safe(results), indent=1))
    return results


@torch.no_grad()
def adherence_at(model, config, canvas: tuple[int, int], samples: int, seed: int, grid: Path | None = None) -> dict:
    """Held-out adherence (with chance) of ``model`` sampled on a ``canvas`` (H, W) in pixels, at the run's
    steps, guidance and shift; the first 8 samples as a labelled grid to ``grid``."""
    source = make_source(config)
    prompts = source.split.held_out_captions(samples, make_generator(seed + 1), canvas)
    size = (canvas[0] // source.factor, canvas[1] // source.factor)
    generator = make_generator(seed)
    images = torch.cat([source.to_images(model.sample(prompts[i:i + 64], steps=config.sample_steps,
                                                      cfg=config.sample_cfg, shift=config.shift,
                                                      generator=generator, size=size)).clamp(-1, 1)
                        for i in range(0, samples, 64)])
    if grid is not None:
        save_labelled_grid(grid, images[:8], prompts[:8], [True] * 8, verdicts=True, columns=4,
                           title=f"{grid.stem}: {canvas[0]}×{canvas[1]} px")
    return {"canvas": list(canvas), "samples": samples, "adherence": adherence_report(images, prompts),
            "chance": chance_report(images, prompts, make_generator(seed + 3))}


def part_buckets(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, small, _ = load_run(args.start, name="--start")
    canvases = [(32, 64), (64, 32), (32, 32)]
    results = {"start": args.start, "steps": args.steps, "eval_samples": args.eval_samples, "models": {}}

    def record(name, model, config):
        results["models"][name] = {"positions": config.positions, "canvases": {}}
        for canvas in canvases:
            key = f"{canvas[0]}x{canvas[1]}"
            entry = adherence_at(model, config, canvas, args.eval_samples, args.seed,
                                 out / f"{name}-{key}.png" if canvas != (32, 32) else None)
            results["models"][name]["canvases"][key] = entry
            a, c = entry["adherence"], entry["chance"]
            print(f"{name:<28} {key:>6}  held-out all {a['overall']:.3f} (chance {c['overall']:.3f})  colour "
                  f"{a['colour']:.2f} shape {a['shape']:.2f} count {a['count']:.2f} size {a['size']:.2f} "
                  f"relation {a['relation']:.2f}", flush=True)
        write_text_atomic(out / "buckets.json", json.dumps(json_safe(results), indent=1))

    for positions in ("scaled", "extended"):
        model, config = pretrained_at(args.start, small.image_size, positions, small.shift)
        record(f"pretrained-{positions}", model, config)
    config = dataclasses.replace(small, init_from=args.start, buckets="32x32,32x64,64x32", positions="extended",
                                 max_steps=args.steps, lr=args.lr, warmup_steps=max(1, args.steps // 10), log_every=5,
                                 sample_every=args.steps, ckpt_every=args.steps, eval_samples=64,
                                 data_workers=1).validate()
    run_dir = out / "finetune-buckets"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    train_run(config, run_dir, progress=False)
    model, config, _ = load_run(run_dir)
    record("finetune-buckets", model, config)
    if not args.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints")
    return results


def report(name: str, entry: dict) -> None:
    e = entry["evaluation"]
    a, c = e["adherence"], e["chance"]
    n = e["samples"]
    se = math.sqrt(max(a["overall"] * (1 - a["overall"]), 1e-9) / n)
    print(f"{name:<34} shift {entry['shift']:>4g}  held-out all {a['overall']:.3f} ± {se:.3f} (chance {c['overall']:.3f})"
          f"  colour {a['colour']:.2f} shape {a['shape']:.2f} count {a['count']:.2f} size {a['size']:.2f} "
          f"relation {a['relation']:.2f}  SW {e['sliced_wasserstein']:.3f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["snr", "finetune", "buckets"], required=True)
    parser.add_argument("--out", default="data/runs/resolution")
    parser.add_argument("--start", default="shapes-3000", help="the pre-trained run or stored model")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--objects", type=int, default=1000, help="objects per canvas (--part snr)")
    parser.add_argument("--threshold", type=float, default=0.9, help="readout accuracy that defines t* (--part snr)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1, 2, 4],
                        help="fine-tuning shifts, as multiples of the start's own shift (positions scaled)")
    parser.add_argument("--extended-factors", type=float, nargs="*", default=[2],
                        help="the same with positions extended")
    parser.add_argument("--skip", nargs="*", default=[], help="names of runs to leave out")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.part == "snr":
        part_snr(Path(args.out), args.objects, args.threshold, args.seed)
    elif args.part == "buckets":
        part_buckets(args)
    else:
        part_finetune(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
