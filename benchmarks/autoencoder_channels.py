"""Benchmark: reconstruction PSNR and SSIM of lesson 08's autoencoder against its number of latent channels,
on photographs, where the SD3 paper's trend (more channels, better reconstructions; its §5.2.1) is measured.

Lesson 08's shapes are flat colours on black: a 4-channel latent already holds a scene, and the stored
4-, 8- and 16-channel autoencoders reconstruct them within 0.5 dB of each other. Photographs have texture that
a small latent cannot keep. Without downloads, the photographs are the two that scikit-learn ships
(``sklearn.datasets.load_sample_images``): the network trains on random 32×32 crops of one (china.jpg) and is
scored on 256 crops of the other (flower.jpg), a photograph it never saw. Each autoencoder is
``SmallAutoencoder(AutoencoderConfig(latent_channels=c, factor=4, width=16))`` trained like the stored
``shapes-32`` (``train_autoencoder``, Adam lr 2e-3, β = 1e-4, 1200 steps of 32 crops), one thread.

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_channels.py [--steps 1200] [--batch 32] [--channels 4 8 16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_sample_images

from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, reconstruction_report, train_autoencoder
from minisd3.seeding import make_generator
from minisd3.training import row_sampler

CROP = 32


def photo_crops(photo: np.ndarray, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random CROP×CROP crops of an (H, W, 3) uint8 photograph, as (count, 3, CROP, CROP) in [-1, 1]."""
    image = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1
    rows = torch.randint(0, image.shape[1] - CROP + 1, (count,), generator=generator)
    cols = torch.randint(0, image.shape[2] - CROP + 1, (count,), generator=generator)
    return torch.stack([image[:, r:r + CROP, c:c + CROP] for r, c in zip(rows.tolist(), cols.tolist())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--train-crops", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    china, flower = load_sample_images().images
    generator = make_generator(0)
    train, test = photo_crops(china, args.train_crops, generator), photo_crops(flower, 256, generator)
    print(f"{args.train_crops} training crops of china.jpg, 256 test crops of flower.jpg; "
          f"{args.steps} steps × batch {args.batch}, torch {torch.__version__}")
    print(" c   PSNR (dB), new photo   SSIM, new photo   PSNR (dB), training photo   CPU-s")
    for channels in args.channels:
        torch.manual_seed(0)
        model = SmallAutoencoder(AutoencoderConfig(latent_channels=channels, factor=4, width=16))
        start = time.process_time()
        train_autoencoder(model, row_sampler(train), args.steps, batch_size=args.batch, lr=2e-3, beta=1e-4,
                          progress=False)
        cpu = time.process_time() - start
        new, seen = reconstruction_report(model, test), reconstruction_report(model, train[:256])
        print(f"{channels:2d}   {new['psnr']:20.2f}   {new['ssim']:15.3f}   {seen['psnr']:25.2f}   {cpu:5.0f}", flush=True)


if __name__ == "__main__":
    main()
