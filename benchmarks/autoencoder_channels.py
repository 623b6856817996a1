"""Benchmark: reconstruction PSNR and SSIM of lesson 08's autoencoder against its number of latent channels —
the SD3 paper's trend (more channels, better reconstructions; its §5.2.1, f = 8).

Data, all made without downloads:

* ``--data photos --split scenes`` (the default): the two photographs scikit-learn ships
  (``sklearn.datasets.load_sample_images``); the network trains on random 32×32 crops of one (china.jpg) and is
  scored on crops of the other (flower.jpg) — a different scene, so the score includes a distribution shift.
* ``--data photos --split regions``: both photographs cut into a 4×4 grid of blocks (about 107×160 pixels);
  the four diagonal blocks of each (row = column: sky, pagoda, lake, trees; background, petals, the flower's
  centre, background) are the test regions, the other twelve the training regions. Every crop lies inside one
  block, so training and test crops share no pixel, yet both are the same kind of image.
* ``--data shapes``: lesson 08's shapes scenes at 32×32 (the engine's training pairs, seed 0) scored on fresh
  scenes (seed 1), as in the lesson.

The crops are drawn once (generator 0) and shared by every run, so channel counts and seeds are scored on the
same test images. Each autoencoder is ``SmallAutoencoder(AutoencoderConfig(latent_channels=c, factor=F,
width=W))`` trained like the stored ``shapes-32`` (``train_autoencoder``: Adam lr 2e-3 with a cosine decay to
10 % over the run, β = 1e-4), one thread. Seed s sets the initial weights (``torch.manual_seed(s)``) and the
batches and latent noise (``train_autoencoder(seed=s)``); seed 0 is what the script did before it had seeds.
The factor decides how hard the latent squeezes: a 32×32×3 crop is 3072 numbers; at f = 4 a c-channel latent
holds 64·c of them, at f = 8 16·c.

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_channels.py [--data photos|shapes] [--split scenes|regions]
        [--factor 4|8] [--width 16] [--steps 1200] [--batch 32] [--channels 4 8 16] [--seeds 1] [--first-seed 0]
        [--train-count 3000] [--test-count 256] [--report-every N] [--out CURVES.csv]
    OMP_NUM_THREADS=1 python benchmarks/autoencoder_channels.py --summary CURVES.csv [MORE.csv ...]

``--out`` writes every measurement as a CSV row (data, split, factor, width, channels, seed, step, PSNR and
SSIM on the test images and on 256 training images, CPU-s so far), rewritten after every run, so that runs
split over several processes (one ``--out`` each) can be put together by ``--summary``. The summary gives, per
setting and channel count, the mean over seeds at each reported step and at the last one with a 95 %
t-interval (mean ± t₀.₉₇₅,ₙ₋₁·s/√n), and the difference to the fewest channels with a Welch 95 % interval.
Lesson 08 plots ``data/runs/autoencoder-channels/curves.csv`` (the 2000-step runs of docs/benchmarks.md put
together) and ``long.csv`` (one 16 000-step run each for 4, 8 and 16 channels).
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, reconstruction_report, train_autoencoder
from minisd3.files import write_text_atomic
from minisd3.seeding import make_generator
from minisd3.shapes import sample_shapes
from minisd3.training import row_sampler

CROP = 32
GRID = 4  # --split regions: each photograph cut into GRID × GRID blocks, the diagonal ones for testing
COLUMNS = ["data", "split", "factor", "width", "channels", "seed", "step",
           "test_psnr", "test_ssim", "train_psnr", "train_ssim", "cpu_s"]
SETTING = ["data", "split", "factor", "width"]


def as_image(photo: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 photograph as a (3, H, W) tensor in [-1, 1]."""
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1


def photo_crops(photo: np.ndarray, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random CROP×CROP crops of an (H, W, 3) uint8 photograph, as (count, 3, CROP, CROP) in [-1, 1]."""
    image = as_image(photo)
    rows = torch.randint(0, image.shape[1] - CROP + 1, (count,), generator=generator)
    cols = torch.randint(0, image.shape[2] - CROP + 1, (count,), generator=generator)
    return torch.stack([image[:, r:r + CROP, c:c + CROP] for r, c in zip(rows.tolist(), cols.tolist())])


def blocks(height: int, width: int, test: bool) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of the GRID × GRID blocks of an image: the diagonal ones if ``test``, else the rest."""
    rows, cols = np.linspace(0, height, GRID + 1).astype(int), np.linspace(0, width, GRID + 1).astype(int)
    return [(rows[i], cols[j], rows[i + 1], cols[j + 1]) for i in range(GRID) for j in range(GRID) if (i == j) == test]


def region_crops(photos: list[np.ndarray], count: int, test: bool, generator: torch.Generator) -> torch.Tensor:
    """``count`` crops, each inside one block (:func:`blocks`) of one photograph, blocks drawn uniformly."""
    images = [as_image(p) for p in photos]
    boxes = [(k, box) for k, image in enumerate(images) for box in blocks(image.shape[1], image.shape[2], test)]
    which = torch.randint(0, len(boxes), (count,), generator=generator).tolist()
    crops = []
    for b in which:
        k, (top, left, bottom, right) = boxes[b]
        r = top + int(torch.randint(0, bottom - top - CROP + 1, (1,), generator=generator))
        c = left + int(torch.randint(0, right - left - CROP + 1, (1,), generator=generator))
        crops.append(images[k][:, r:r + CROP, c:c + CROP])
    return torch.stack(crops)


def data(kind: str, split: str, count: int, test_count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(training images, test images, a line saying what they are)."""
    if kind == "photos":
        from sklearn.datasets import load_sample_images
        china, flower = load_sample_images().images
        generator = make_generator(0)
        if split == "regions":
            return (region_crops([china, flower], count, False, generator),
                    region_crops([china, flower], test_count, True, generator),
                    f"{count} training crops from the off-diagonal blocks ({GRID}×{GRID} grid) of china.jpg and "
                    f"flower.jpg, {test_count} test crops from their diagonal blocks")
        return (photo_crops(china, count, generator), photo_crops(flower, test_count, generator),
                f"{count} training crops of china.jpg, {test_count} test crops of flower.jpg")
    from minisd3.shapes import split_prompts
    train, _ = sample_shapes(count, make_generator(0), image_size=CROP, pairs=split_prompts(0).train_pairs)
    test, _ = sample_shapes(test_count, make_generator(1), image_size=CROP)
    return train, test, f"{count} training scenes (training pairs), {test_count} fresh test scenes"


def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95 % t-interval); the half-width is nan for one value."""
    from scipy.stats import t

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan
    return mean, float(t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(mean(a) − mean(b), lower, upper): the Welch 95 % interval of a difference of means (nan below 2 each)."""
    from scipy.stats import t

    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(t.ppf(0.975, df) * se)
    return diff, diff - half, diff + half


def summarize(rows: list[dict]) -> None:
    """Print, per setting, the mean curves over seeds and the last step's means with 95 % intervals."""
    settings: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        settings[tuple(row[k] for k in SETTING)].append(row)
    for setting, group in settings.items():
        last = max(int(r["step"]) for r in group)
        runs: dict[int, dict[int, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))  # c → seed → step → row
        for r in group:
            runs[int(r["channels"])][int(r["seed"])][int(r["step"])] = r
        steps = sorted({int(r["step"]) for r in group})
        print(f"\n{', '.join(f'{k} {v}' for k, v in zip(SETTING, setting))}: mean test PSNR (dB) over seeds at each step")
        print(" c   seeds " + "".join(f"{s:>8d}" for s in steps))
        for c in sorted(runs):
            means = [np.mean([float(by_step[s]["test_psnr"]) for by_step in runs[c].values() if s in by_step] or [math.nan])
                     for s in steps]
            print(f"{c:2d}   {len(runs[c]):5d} " + "".join(f"{m:8.2f}" for m in means))
        final = {c: [by_step[last] for by_step in seeds.values() if last in by_step] for c, seeds in runs.items()}
        print(f"at step {last}: mean ± 95 % t-interval over seeds (seeds that reached it)")
        print(" c   seeds   PSNR (dB), test   SSIM, test        PSNR (dB), training   each seed's test PSNR")
        for c in sorted(final):
            cells = [t_interval([float(r[k]) for r in final[c]]) for k in ("test_psnr", "test_ssim", "train_psnr")]
            each = " ".join(f"{float(r['test_psnr']):.2f}" for r in sorted(final[c], key=lambda r: int(r["seed"])))
            print(f"{c:2d}   {len(final[c]):5d}   {cells[0][0]:6.2f} ± {cells[0][1]:4.2f}    "
                  f"{cells[1][0]:.3f} ± {cells[1][1]:.3f}     {cells[2][0]:6.2f} ± {cells[2][1]:4.2f}         {each}")
        base = min(final)
        for c in sorted(final):
            if c != base and final[c] and final[base]:
                parts = []
                for key, unit, fmt in (("test_psnr", " dB", "+.2f"), ("test_ssim", "", "+.3f"), ("train_psnr", " dB", "+.2f")):
                    d, lo, hi = welch_interval([float(r[key]) for r in final[c]], [float(r[key]) for r in final[base]])
                    parts.append(f"{key} {d:{fmt}}{unit} [{lo:{fmt}}, {hi:{fmt}}]")
                print(f"{c:2d} − {base} channels (Welch 95 %): " + ";  ".join(parts))


def read_rows(files: list[str]) -> list[dict]:
    rows = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"--summary: expected a CSV written by --out, got {name!r} (no such file)")
        with path.open() as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != COLUMNS:
                raise SystemExit(f"--summary: expected the columns {','.join(COLUMNS)} in {name!r}, "
                                 f"got {','.join(reader.fieldnames or [])}")
            rows += list(reader)
    return rows


def check(args: argparse.Namespace) -> None:
    """One-line errors for arguments the parser cannot check."""
    for name in ("width", "steps", "batch", "seeds", "train_count", "test_count"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.report_every < 0 or args.first_seed < 0:
        bad = "report-every" if args.report_every < 0 else "first-seed"
        raise SystemExit(f"--{bad}: expected an integer ≥ 0, got {getattr(args, bad.replace('-', '_'))}")
    if args.split == "regions" and args.data != "photos":
        raise SystemExit("--split regions: expected --data photos (shapes test scenes are drawn fresh, never seen)")
    if bad := [c for c in args.channels if c not in (4, 8, 16)]:
        raise SystemExit(f"--channels: expected 4, 8 or 16, got {bad[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["photos", "shapes"], default="photos")
    parser.add_argument("--split", choices=["scenes", "regions"], default="scenes",
                        help="photos: test on the other photograph (scenes) or on unseen regions of both (regions)")
    parser.add_argument("--factor", type=int, choices=[4, 8], default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seeds", type=int, default=1, help="autoencoders per channel count (seeds first-seed, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--train-count", type=int, default=3000)
    parser.add_argument("--test-count", type=int, default=256)
    parser.add_argument("--report-every", type=int, default=0, help="also score the autoencoder every N steps")
    parser.add_argument("--out", help="CSV file for every measurement (module docstring)")
    parser.add_argument("--summary", nargs="+", metavar="CSV", help="summarise CSV files of --out; trains nothing")
    args = parser.parse_args()
    if args.summary:
        summarize(read_rows(args.summary))
        return
    check(args)
    torch.set_num_threads(1)
    train, test, what = data(args.data, args.split, args.train_count, args.test_count)
    print(f"{what}; f = {args.factor}, width {args.width}, {args.steps} steps × batch {args.batch}, "
          f"seeds {args.first_seed}–{args.first_seed + args.seeds - 1}, torch {torch.__version__}")
    print(" c   seed   numbers kept   PSNR (dB), test   SSIM, test   PSNR (dB), training   parameters   CPU-s")
    rows: list[dict] = []
    setting = {"data": args.data, "split": args.split, "factor": args.factor, "width": args.width}
    for channels in args.channels:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            torch.manual_seed(seed)
            model = SmallAutoencoder(AutoencoderConfig(latent_channels=channels, factor=args.factor, width=args.width))
            start = time.process_time()

            def measure(step: int, model: SmallAutoencoder, c: int = channels, s: int = seed, t0: float = start) -> dict:
                model.eval()
                new, seen = reconstruction_report(model, test), reconstruction_report(model, train[:256])
                model.train()
                row = {**setting, "channels": c, "seed": s, "step": step, "test_psnr": new["psnr"],
                       "test_ssim": new["ssim"], "train_psnr": seen["psnr"], "train_ssim": seen["ssim"],
                       "cpu_s": time.process_time() - t0}
                rows.append(row)
                return row

            def report(step: int, model: SmallAutoencoder, c: int = channels, s: int = seed) -> None:
                if args.report_every and step % args.report_every == 0 and step < args.steps:
                    row = measure(step, model)
                    print(f"{c:2d}   {s:4d}   step {step:5d}: PSNR (dB) test {row['test_psnr']:.2f}, "
                          f"training {row['train_psnr']:.2f}", flush=True)

            train_autoencoder(model, row_sampler(train), args.steps, batch_size=args.batch, lr=2e-3, beta=1e-4,
                              seed=seed, progress=False, callback=report)
            row = measure(args.steps, model)
            if args.out:
                write_text_atomic(args.out, ",".join(COLUMNS) + "\n" + "".join(
                    ",".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in COLUMNS) + "\n"
                    for r in rows))
            kept = channels * (CROP // args.factor) ** 2
            print(f"{channels:2d}   {seed:4d}   {kept:5d} of 3072   {row['test_psnr']:15.2f}   {row['test_ssim']:10.3f}   "
                  f"{row['train_psnr']:19.2f}   {sum(p.numel() for p in model.parameters()):10,d}   {row['cpu_s']:5.0f}",
                  flush=True)
    if args.seeds > 1 or args.report_every:
        summarize([{k: str(v) for k, v in r.items()} for r in rows])


if __name__ == "__main__":
    main()
