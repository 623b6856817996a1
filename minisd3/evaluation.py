"""Evaluating a text-to-image checkpoint: offline metrics that need no download, and FID.

    shapes          prompt adherence (mini GenEval, :mod:`minisd3.adherence`) on held-out prompts
    every data set  sliced Wasserstein distance between generated and real images (pixels)
    FID             Fréchet Inception Distance against the real training images, through
                    torch-fidelity; needs the Inception weights file on disk (never downloaded here)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .adherence import adherence_report
from .metrics import sliced_wasserstein
from .seeding import make_generator
from .text_to_image import TextToImage

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@torch.no_grad()
def generate(model: TextToImage, prompts: list[str], steps: int, cfg: float, shift: float, seed: int,
             batch: int = 64, method: str = "euler", to_images: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> torch.Tensor:
    """Images in [−1, 1] for ``prompts``, in batches, reproducible from ``seed``.

    ``to_images`` turns the model's samples into images (a latent model's decoder, ``source.to_images``).
    """
    generator = make_generator(seed)
    decode = to_images or (lambda x: x)
    chunks = [decode(model.sample(prompts[i:i + batch], steps=steps, cfg=cfg, shift=shift, method=method,
                                  generator=generator)).float().cpu() for i in range(0, len(prompts), batch)]
    return torch.cat(chunks).clamp(-1, 1)


def offline_metrics(model: TextToImage, source, n: int, steps: int, cfg: float, shift: float, seed: int) -> dict:
    """Sliced Wasserstein to real images, plus prompt adherence for shapes (held-out prompts).

    For a latent source both sides are decoded images: the real side is the autoencoder's
    reconstruction of the data, so the distance measures the diffusion model, not the autoencoder.
    """
    prompts = source.eval_prompts(n, make_generator(seed + 1))
    images = generate(model, prompts, steps, cfg, shift, seed, to_images=source.to_images)
    real, _ = source.batch(10_000_000 + seed, n, make_generator(seed + 2))
    real = source.to_images(real.to(next(model.parameters()).device)).float().cpu().clamp(-1, 1)
    result = {"samples": n, "steps": steps, "cfg": cfg, "sliced_wasserstein": sliced_wasserstein(images, real)}
    if hasattr(source, "split"):
        result["adherence"] = adherence_report(images, prompts)
    return result


def inception_weights(path: str | None = None) -> Path:
    """The Inception weights torch-fidelity needs: ``path``, or its file in torch hub's cache."""
    candidate = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not candidate.is_file():
        raise FileNotFoundError(
            f"inception_weights: expected torch-fidelity's Inception weights at {candidate}. FID needs them and "
            f"they are not downloaded here: fetch {INCEPTION_FILE} from torch-fidelity's releases once on a "
            "machine with internet and pass --inception-weights PATH (or place it in that cache folder)."
        )
    return candidate


class _Uint8Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def fid(generated: torch.Tensor, real: torch.Tensor, weights: str | None = None, cuda: bool = False) -> float:
    """FID between two image sets in [−1, 1] (N, 3, H, W) with torch-fidelity's Inception network."""
    import torch_fidelity

    weights_path = inception_weights(weights)
    metrics = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(generated), input2=_Uint8Images(real), fid=True, cuda=cuda, verbose=False,
        feature_extractor_weights_path=str(weights_path), save_cpu_ram=True,
    )
    return float(metrics["frechet_inception_distance"])
