"""Benchmark: reconstruction PSNR and SSIM of lesson 08's autoencoder against its number of latent channels —
the SD3 paper's trend (more channels, better reconstructions; its §5.2.1, f = 8).

Two data sets, both made without downloads:

* ``--data photos``: the two photographs scikit-learn ships (``sklearn.datasets.load_sample_images``); the network
  trains on random 32×32 crops of one (china.jpg) and is scored on 256 crops of the other (flower.jpg).
* ``--data shapes``: lesson 08's shapes scenes at 32×32 (the engine's training pairs, seed 0) scored on 256 fresh
  scenes (seed 1), as in the lesson.

Each autoencoder is ``SmallAutoencoder(AutoencoderConfig(latent_channels=c, factor=F, width=W))`` trained like the
stored ``shapes-32`` (``train_autoencoder``, Adam lr 2e-3, β = 1e-4), one thread. The factor decides how hard the
latent squeezes: a 32×32×3 image is 3072 numbers; at f = 4 a c-channel latent holds 64·c of them, at f = 8 16·c.

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_channels.py [--data photos|shapes] [--factor 4|8] [--width 16]
        [--steps 1200] [--batch 32] [--channels 4 8 16] [--train-count 3000] [--report-every N] [--out CURVES.csv]

``--out`` writes every measurement (channels, step, PSNR and SSIM on the test and training images) as CSV
rows, the learning curves lesson 08 plots from ``data/runs/autoencoder-channels/``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, reconstruction_report, train_autoencoder
from minisd3.files import write_text_atomic
from minisd3.seeding import make_generator
from minisd3.shapes import sample_shapes
from minisd3.training import row_sampler

CROP = 32


def photo_crops(photo: np.ndarray, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random CROP×CROP crops of an (H, W, 3) uint8 photograph, as (count, 3, CROP, CROP) in [-1, 1]."""
    image = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1
    rows = torch.randint(0, image.shape[1] - CROP + 1, (count,), generator=generator)
    cols = torch.randint(0, image.shape[2] - CROP + 1, (count,), generator=generator)
    return torch.stack([image[:, r:r + CROP, c:c + CROP] for r, c in zip(rows.tolist(), cols.tolist())])


def data(kind: str, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(training images, 256 test images, a line saying what they are)."""
    if kind == "photos":
        from sklearn.datasets import load_sample_images
        china, flower = load_sample_images().images
        generator = make_generator(0)
        return (photo_crops(china, count, generator), photo_crops(flower, 256, generator),
                f"{count} training crops of china.jpg, 256 test crops of flower.jpg")
    from minisd3.shapes import split_prompts
    train, _ = sample_shapes(count, make_generator(0), image_size=CROP, pairs=split_prompts(0).train_pairs)
    test, _ = sample_shapes(256, make_generator(1), image_size=CROP)
    return train, test, f"{count} training scenes (training pairs), 256 fresh test scenes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["photos", "shapes"], default="photos")
    parser.add_argument("--factor", type=int, choices=[4, 8], default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--train-count", type=int, default=3000)
    parser.add_argument("--report-every", type=int, default=0, help="also print test and training PSNR every N steps")
    parser.add_argument("--out", help="CSV file for every measurement (channels, step, PSNR, SSIM)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test, what = data(args.data, args.train_count)
    print(f"{what}; f = {args.factor}, width {args.width}, {args.steps} steps × batch {args.batch}, "
          f"torch {torch.__version__}")
    print(" c   numbers kept   PSNR (dB), test   SSIM, test   PSNR (dB), training   parameters   CPU-s")
    rows: list[tuple] = []
    for channels in args.channels:
        torch.manual_seed(0)
        model = SmallAutoencoder(AutoencoderConfig(latent_channels=channels, factor=args.factor, width=args.width))
        start = time.process_time()

        def report(step: int, model: SmallAutoencoder, c: int = channels) -> None:
            if args.report_every and step % args.report_every == 0 and step < args.steps:
                model.eval()
                new, seen = reconstruction_report(model, test), reconstruction_report(model, train[:256])
                model.train()
                rows.append((c, step, new["psnr"], new["ssim"], seen["psnr"], seen["ssim"]))
                print(f"{c:2d}   step {step:5d}: PSNR (dB) test {new['psnr']:.2f}, training {seen['psnr']:.2f}", flush=True)

        train_autoencoder(model, row_sampler(train), args.steps, batch_size=args.batch, lr=2e-3, beta=1e-4,
                          progress=False, callback=report)
        cpu = time.process_time() - start
        new, seen = reconstruction_report(model, test), reconstruction_report(model, train[:256])
        rows.append((channels, args.steps, new["psnr"], new["ssim"], seen["psnr"], seen["ssim"]))
        if args.out:
            write_text_atomic(args.out, "channels,step,test_psnr,test_ssim,train_psnr,train_ssim\n" + "".join(
                f"{r[0]},{r[1]},{r[2]:.4f},{r[3]:.4f},{r[4]:.4f},{r[5]:.4f}\n" for r in rows))
        kept = channels * (CROP // args.factor) ** 2
        print(f"{channels:2d}   {kept:5d} of 3072   {new['psnr']:15.2f}   {new['ssim']:10.3f}   {seen['psnr']:19.2f}   "
              f"{sum(p.numel() for p in model.parameters()):10,d}   {cpu:5.0f}", flush=True)


if __name__ == "__main__":
    main()
