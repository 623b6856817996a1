"""The lessons' training loop, :func:`fit`: one small loop for every model that fits in a notebook
(lessons 01–08: sample a batch, compute a loss, take an Adam step) and the recipes built on it:
rectified flow, reflow and DDPM, and the class-conditional rectified flow with label dropout of
lesson 06. Only the data sampler and the network change between a 2-D toy and digits. (A full run
with checkpoints, EMA, logging and torchrun is the engine's :func:`minisd3.engine.loop.train_run`.)"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .ddpm import NoiseSchedule, eps_loss
from .env import full_or_fast, progress_bar
from .guidance import drop_mask
from .nets import TimeMLP
from .rectified_flow import rf_loss
from .seeding import make_generator
from .timesteps import TimeSampler, sample_uniform
from .validation import check_positive_int, check_same_shape

BatchFn = Callable[[torch.Generator], object]
LossFn = Callable[[nn.Module, object, torch.Generator], torch.Tensor]


def fit(model: nn.Module, loss_fn: LossFn, batch_fn: BatchFn, steps: int, lr: float = 1e-3, seed: int = 0,
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
    bar = progress_bar(range(steps), desc=desc, disable=not progress, mininterval=1.0)
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
        if step % 100 == 0 or step == steps - 1:  # the last loss is what a finished bar shows
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    return losses


DataSampler = Callable[[int, torch.Generator], torch.Tensor]
"""sample(n, generator) → n data points: the toy samplers of :mod:`minisd3.toy2d`, or :func:`row_sampler`."""


def row_sampler(data: torch.Tensor) -> DataSampler:
    """Draw rows of a fixed data set (e.g. digits) with replacement."""
    return lambda n, generator: data[torch.randint(0, data.shape[0], (n,), generator=generator).to(data.device)]


def train_rectified_flow(model: nn.Module, sample_data: DataSampler, steps: int, batch_size: int = 256,
                         lr: float = 1e-3, time_sampler: TimeSampler = sample_uniform,
                         sample_source: DataSampler | None = None, seed: int = 0, progress: bool = True,
                         device=None) -> list[float]:
    """Fit v̂ to ε − x0 on z_t = (1 − t)·x0 + t·ε with t from ``time_sampler`` (:func:`rf_loss`).

    ε ~ N(0, I) unless ``sample_source`` draws it from another distribution (a flow between two
    data sets, as 8-Gaussians → two moons).
    """
    check_positive_int(batch_size, "batch_size")
    device = device or next(model.parameters()).device

    def batch(generator):
        x0 = sample_data(batch_size, generator).to(device)
        eps = sample_source(batch_size, generator).to(device) if sample_source is not None else None
        return x0, eps

    def loss(m, b, generator):
        return rf_loss(m, b[0], eps=b[1], time_sampler=time_sampler, generator=generator)

    return fit(model, loss, batch, steps, lr, seed, progress=progress, desc="rectified flow")


def train_reflow(model: nn.Module, eps: torch.Tensor, x0_hat: torch.Tensor, steps: int, batch_size: int = 256,
                 lr: float = 1e-3, seed: int = 0, progress: bool = True) -> list[float]:
    """Reflow: fit a flow on the fixed pairs (ε, x̂0) from :func:`minisd3.rectified_flow.reflow_pairs`."""
    check_same_shape(eps, "eps", x0_hat, "x0_hat")
    check_positive_int(batch_size, "batch_size")

    def batch(generator):
        idx = torch.randint(0, eps.shape[0], (batch_size,), generator=generator).to(eps.device)
        return x0_hat[idx], eps[idx]

    def loss(m, b, generator):
        return rf_loss(m, b[0], eps=b[1], generator=generator)

    return fit(model, loss, batch, steps, lr, seed, progress=progress, desc="reflow")


def train_ddpm(model: nn.Module, sample_data: DataSampler, schedule: NoiseSchedule, steps: int,
               batch_size: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True,
               device=None) -> list[float]:
    """Fit ε̂ with the ε-prediction loss of :func:`minisd3.ddpm.eps_loss`."""
    check_positive_int(batch_size, "batch_size")
    device = device or next(model.parameters()).device
    return fit(model, lambda m, x0, g: eps_loss(m, x0, schedule, g),
               lambda g: sample_data(batch_size, g).to(device), steps, lr, seed, progress=progress, desc="DDPM")


def train_class_conditional(model: nn.Module, data: torch.Tensor, labels: torch.Tensor, null_label: int, steps: int,
                            batch_size: int = 256, lr: float = 1e-3, p_uncond: float = 0.1,
                            time_sampler: TimeSampler = sample_uniform, seed: int = 0, progress: bool = True,
                            device=None) -> list[float]:
    """Rectified flow on labelled data with CFG label dropout: ``model(z, t, labels)`` is fit to ε − x0,

        c = null_label with probability p_uncond, else the row's label
        loss = E ‖v̂(z_t, t, c) − (ε − x0)‖²,   z_t = (1 − t)·x0 + t·ε,  t ~ time_sampler

    so one network learns both v(z, t | c) and the unconditional v(z, t | ∅) (:mod:`minisd3.guidance`).
    """
    check_positive_int(batch_size, "batch_size")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"labels: expected shape ({data.shape[0]},) (one per row of data), got {tuple(labels.shape)}")
    device = device or next(model.parameters()).device

    def batch(generator):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        drop = drop_mask(batch_size, p_uncond, generator)
        c = torch.where(drop, null_label, labels[idx.to(labels.device)].cpu())
        return data[idx.to(data.device)].to(device), c.to(device)

    def loss(m, b, generator):
        x0, c = b
        return rf_loss(lambda z, t: m(z, t, c), x0, time_sampler=time_sampler, generator=generator)

    return fit(model, loss, batch, steps, lr, seed, progress=progress, desc="class-conditional flow")


@dataclass(frozen=True)
class Recipe:
    """Network size and optimisation settings for one kind of data, shared by every lesson that
    trains on it, so that models compared across lessons (RF against DDPM, samplers in lesson 04)
    were trained alike."""

    hidden: int
    depth: int
    batch_size: int
    lr: float
    steps: int
    fast_steps: int

    def make_model(self, data_shape: tuple[int, ...], num_classes: int | None = None) -> TimeMLP:
        return TimeMLP(data_shape, hidden=self.hidden, depth=self.depth, num_classes=num_classes)

    @property
    def train_steps(self) -> int:
        """``steps`` in full mode, ``fast_steps`` in fast mode."""
        return full_or_fast(self.steps, self.fast_steps)


RECIPES: dict[str, Recipe] = {
    "2d": Recipe(hidden=256, depth=3, batch_size=512, lr=2e-3, steps=4000, fast_steps=400),
    "digits": Recipe(hidden=512, depth=4, batch_size=256, lr=2e-3, steps=6000, fast_steps=300),
}
