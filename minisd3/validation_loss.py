"""Validation loss as a metric: the rectified-flow loss on held-out data at fixed t levels with fixed noise.

SD3 (Esser et al. 2024, §5.3 and Fig. 8) tracks a model by its loss on held-out prompts and images instead of
by samples: the loss is evaluated at eight equally spaced noise levels

    t_i = i / 7,   i = 0 … 7         (t = 0 data, t = 1 noise)

with the same noise ε for every level and every evaluation, and averaged over all levels but t = 1:

    L_val = 1/7 · Σ_{i=0}^{6} mean_b ‖v̂(z_{t_i}, t_i, c) − (ε − x0)‖²,   z_t = (1 − t)·x0 + t·ε.

At t = 1 the input is pure noise, so the model can only predict the mean velocity and the loss there says
nothing about the data. Fixing t and ε removes the sampling noise of the training loss (its t ~ π(t) and fresh
ε), so two checkpoints, or two model sizes, are compared on exactly the same problems; the paper finds this
number falls smoothly with size and compute and predicts GenEval and human preference.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .rectified_flow import interpolate, velocity_target
from .seeding import make_generator, randn
from .text_to_image import TextToImage
from .validation import check_positive_int, check_tensor

LEVELS = 8
"""Number of equally spaced t levels in [0, 1] (SD3 §5.3)."""


def validation_times(levels: int = LEVELS) -> torch.Tensor:
    """The t levels i / (levels − 1), i = 0 … levels − 1, as a (levels,) tensor from 0 to 1.

    Raises ValueError when ``levels`` < 2.
    """
    check_positive_int(levels, "levels")
    if levels < 2:
        raise ValueError(f"levels: expected at least 2 t levels (t = 0 and t = 1), got {levels}")
    return torch.linspace(0.0, 1.0, levels)


@torch.no_grad()
def validation_loss(model: TextToImage, x0: torch.Tensor, captions: Sequence[str], levels: int = LEVELS,
                    seed: int = 0, batch: int = 64) -> dict:
    """The SD3 validation loss of ``model`` on held-out pairs (x0, captions), deterministic for a ``seed``.

    ``x0`` (B, C, H, W): held-out data in the model's space (normalised latents for a latent model);
    ``captions``: B strings, never dropped. ε ~ N(0, I) is drawn once from ``seed``, the same for every level,
    so the result depends only on the model, the data and the seed.

    Returns ``{"loss": L_val, "times": [t_0 … t_{levels−1}], "per_level": [loss at each t]}``; ``loss`` averages
    ``per_level`` over every level but t = 1 (module docstring). Raises ValueError for a caption count that is
    not B, or ``levels`` < 2.
    """
    check_tensor(x0, "x0", ndim=4)
    captions = list(captions)
    if len(captions) != x0.shape[0]:
        raise ValueError(f"captions: expected {x0.shape[0]} captions (one per x0), got {len(captions)}")
    times = validation_times(levels)
    device = next(model.parameters()).device
    eps = randn(x0.shape, make_generator(seed))
    totals = torch.zeros(levels, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for lo in range(0, x0.shape[0], batch):
        part_x0, part_eps = x0[lo:lo + batch].to(device).float(), eps[lo:lo + batch].to(device)
        ctx, pooled = model.encode(captions[lo:lo + batch])
        target = velocity_target(part_x0, part_eps)
        for i, t in enumerate(times.tolist()):
            t_batch = torch.full((part_x0.shape[0],), t, device=device)
            v_hat = model.mmdit(interpolate(part_x0, part_eps, t_batch), t_batch, ctx, pooled)
            totals[i] += ((v_hat.float() - target) ** 2).flatten(1).mean(1).sum().item()
    model.train(was_training)
    per_level = (totals / x0.shape[0]).tolist()
    return {"loss": sum(per_level[:-1]) / (levels - 1), "times": times.tolist(), "per_level": per_level}
