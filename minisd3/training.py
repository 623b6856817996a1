"""The lessons' training loop, :func:`fit`: one small loop for every model that fits in a notebook
(lessons 01–08: sample a batch, compute a loss, take an Adam step) and the recipes built on it:
rectified flow, reflow and DDPM, and the class-conditional rectified flow with label dropout of
lesson 06. Only the data sampler and the network change between a 2-D toy and digits. (A full run
with checkpoints, logging and torchrun is the engine's :func:`minisd3.engine.loop.train_run`.)

    EMA   θ_ema ← d_s·θ_ema + (1 − d_s)·θ after step s, d_s = min(ema, (1 + s)/(10 + s));
          the warm-up keeps early averages from holding on to the random initial weights
          (with a fixed d = 0.999, 37 % of θ_ema would still be θ_init after 1000 steps);
          d_s reaches 0.999 after about 9000 steps, so a run of a few thousand steps averages
          roughly its last tenth. The engine's run uses the same two functions.
"""
from __future__ import annotations

import copy
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
StepCallback = Callable[[int, nn.Module], None]
"""callback(steps_done, model_to_sample): called after every step with the weights a sampler should use."""


def ema_decay_at(step: int, ema_decay: float) -> float:
    """The EMA decay after step ``step``: min(ema_decay, (1 + step)/(10 + step)) (module docstring)."""
    return min(ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ for every parameter (module docstring)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)


def fit(model: nn.Module, loss_fn: LossFn, batch_fn: BatchFn, steps: int, lr: float = 1e-3, seed: int = 0,
        grad_clip: float | None = 1.0, progress: bool = True, desc: str = "training", ema: float | None = None,
        callback: StepCallback | None = None) -> list[float]:
    """Train ``model`` for ``steps`` Adam steps and return the loss of every step.

    ``batch_fn(generator)`` returns a batch; ``loss_fn(model, batch, generator)`` returns a scalar.
    One generator seeded with ``seed`` drives both, so a run is reproducible.
    The learning rate decays with a cosine to 10 % at the end.
    With ``ema`` (a decay such as 0.999) an exponential moving average of the weights is kept
    (module docstring) and ``model`` ends holding it: the averaged weights are the ones to sample,
    as in SD3 and the engine. ``callback(step + 1, m)`` runs after every step with the weights to
    sample, the average when ``ema`` is set (benchmarks score a run while it trains).
    """
    check_positive_int(steps, "steps")
    if ema is not None and not 0 <= ema < 1:
        raise ValueError(f"ema: expected a decay in [0, 1) or None, got {ema}")
    generator = make_generator(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.1)
    averaged = copy.deepcopy(model).requires_grad_(False).eval() if ema is not None else None
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
        if averaged is not None:
            update_ema(averaged, model, ema_decay_at(step, ema))
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:  # the last loss is what a finished bar shows
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if callback is not None:
            callback(step + 1, averaged if averaged is not None else model)
    if averaged is not None:
        with torch.no_grad():
            for p, p_ema in zip(model.parameters(), averaged.parameters()):
                p.copy_(p_ema)
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
                         device=None, ema: float | None = None, callback: StepCallback | None = None) -> list[float]:
    """Fit v̂ to ε − x0 on z_t = (1 − t)·x0 + t·ε with t from ``time_sampler`` (:func:`rf_loss`).

    ε ~ N(0, I) unless ``sample_source`` draws it from another distribution (a flow between two
    data sets, as 8-Gaussians → two moons). ``ema`` and ``callback`` as in :func:`fit`.
    """
    check_positive_int(batch_size, "batch_size")
    device = device or next(model.parameters()).device

    def batch(generator):
        x0 = sample_data(batch_size, generator).to(device)
        eps = sample_source(batch_size, generator).to(device) if sample_source is not None else None
        return x0, eps

    def loss(m, b, generator):
        return rf_loss(m, b[0], eps=b[1], time_sampler=time_sampler, generator=generator)

    return fit(model, loss, batch, steps, lr, seed, progress=progress, desc="rectified flow", ema=ema,
               callback=callback)


def train_reflow(model: nn.Module, eps: torch.Tensor, x0_hat: torch.Tensor, steps: int, batch_size: int = 256,
                 lr: float = 1e-3, seed: int = 0, progress: bool = True, ema: float | None = None) -> list[float]:
    """Reflow: fit a flow on the fixed pairs (ε, x̂0) from :func:`minisd3.rectified_flow.reflow_pairs`."""
    check_same_shape(eps, "eps", x0_hat, "x0_hat")
    check_positive_int(batch_size, "batch_size")

    def batch(generator):
        idx = torch.randint(0, eps.shape[0], (batch_size,), generator=generator).to(eps.device)
        return x0_hat[idx], eps[idx]

    def loss(m, b, generator):
        return rf_loss(m, b[0], eps=b[1], generator=generator)

    return fit(model, loss, batch, steps, lr, seed, progress=progress, desc="reflow", ema=ema)


def train_ddpm(model: nn.Module, sample_data: DataSampler, schedule: NoiseSchedule, steps: int,
               batch_size: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True,
               device=None, ema: float | None = None) -> list[float]:
    """Fit ε̂ with the ε-prediction loss of :func:`minisd3.ddpm.eps_loss`; ``ema`` as in :func:`fit`."""
    check_positive_int(batch_size, "batch_size")
    device = device or next(model.parameters()).device
    return fit(model, lambda m, x0, g: eps_loss(m, x0, schedule, g),
               lambda g: sample_data(batch_size, g).to(device), steps, lr, seed, progress=progress, desc="DDPM",
               ema=ema)


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
    were trained alike. ``ema`` is the decay of the weights' moving average (:func:`fit`), or None."""

    hidden: int
    depth: int
    batch_size: int
    lr: float
    steps: int
    fast_steps: int
    ema: float | None = None

    def make_model(self, data_shape: tuple[int, ...], num_classes: int | None = None) -> TimeMLP:
        return TimeMLP(data_shape, hidden=self.hidden, depth=self.depth, num_classes=num_classes)

    @property
    def train_steps(self) -> int:
        """``steps`` in full mode, ``fast_steps`` in fast mode."""
        return full_or_fast(self.steps, self.fast_steps)


RECIPES: dict[str, Recipe] = {
    # ema: without it the 2-D flow's samples jump between 1.2× and 7× the metric's noise floor during
    # training (Adam's weight jitter on the spread-out targets ε − x0); with it they are within 1.5× after
    # 10–20 CPU-s and stay there (benchmarks/flows_2d_convergence.py, docs/benchmarks.md)
    "2d": Recipe(hidden=256, depth=3, batch_size=512, lr=2e-3, steps=4000, fast_steps=400, ema=0.999),
    "digits": Recipe(hidden=512, depth=4, batch_size=256, lr=2e-3, steps=6000, fast_steps=300),
}
