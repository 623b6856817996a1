"""One small training loop for every model in lessons 01–04: sample a batch, compute a loss,
take an Adam step. Only the batch function and the loss change between a 2-D toy and digits."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .seeding import make_generator
from .validation import check_positive_int

BatchFn = Callable[[torch.Generator], object]
LossFn = Callable[[nn.Module, object, torch.Generator], torch.Tensor]


def train(model: nn.Module, loss_fn: LossFn, batch_fn: BatchFn, steps: int, lr: float = 1e-3, seed: int = 0,
          grad_clip: float | None = 1.0, progress: bool = True, desc: str = "training") -> list[float]:
    """Train ``model`` for ``steps`` Adam steps and return the loss of every step.

    ``batch_fn(generator)`` returns a batch; ``loss_fn(model, batch, generator)`` returns a scalar.
    One generator seeded with ``seed`` drives both, so a run is reproducible.
    The learning rate decays with a cosine to 10 % at the end.
    """
    check_positive_int(steps, "steps")
    generator = make_generator(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.1)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        loss = loss_fn(model, batch_fn(generator), generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    return losses


def sample_rows(data: torch.Tensor, batch_size: int) -> BatchFn:
    """A batch function that draws ``batch_size`` rows of ``data`` with replacement."""
    check_positive_int(batch_size, "batch_size")
    return lambda generator: data[torch.randint(0, data.shape[0], (batch_size,), generator=generator).to(data.device)]
