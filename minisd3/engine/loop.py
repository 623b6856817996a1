"""The training engine's run loop behind ``python -m minisd3 train``: one loop from a laptop CPU to torchrun.

:func:`train_run` builds a :class:`Trainer` (data source, model, EMA, optimizer, restored state,
logs) and calls :meth:`Trainer.train`, whose body is a list of calls: ``train_step`` then
``maybe_log`` / ``maybe_sample`` / ``maybe_save``, each deciding when it acts. The schedules
(:func:`learning_rate`, :func:`ema_decay_at`, :func:`training_times`) are pure functions of the step.
(The lessons' own small loop, for models that fit in a notebook, is :func:`minisd3.training.fit`.)

Each step s draws, from a generator seeded by (seed, s), the global batch (images, captions), the
times t ~ π, the noise ε and the CFG drop mask; process r of N trains on its slice r, split into
``grad_accum`` micro-batches. DistributedDataParallel averages gradients over processes, so the
update equals the single-process update on the global batch, and a resumed run continues exactly.

    times     t = α·u / (1 + (α − 1)·u),  u ~ π (``time_sampler``),  α = ``shift`` (SD3's resolution shift)
    loss      E ‖v̂(z_t, t, c) − (ε − x0)‖²,  z_t = (1 − t)·x0 + t·ε   (TextToImage.loss)
    lr        linear warm-up over ``warmup_steps``, then cosine decay to 10 % at ``max_steps``
    EMA       θ_ema ← d_s·θ_ema + (1 − d_s)·θ after step s, d_s = min(ema_decay, (1 + s)/(10 + s));
              the warm-up keeps early averages from holding on to the random initial weights
              (with a fixed d = 0.999, 37 % of θ_ema would still be θ_init after 1000 steps);
              d_s reaches 0.999 after about 9000 steps, 0.9999 after about 90 000
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..env import get_device, progress_bar
from ..files import atomic_file, load_weights_into, write_text_atomic
from ..guidance import drop_mask
from ..seeding import make_generator, randn
from ..timesteps import make_time_sampler, shift_time
from ..training import ema_decay_at, update_ema
from .checkpoints import (
    initial_weights,
    load_state,
    load_tensors,
    resolve_checkpoint,
    restore_optimizer,
    save_checkpoint,
    with_init_from,
)
from .config import TrainConfig, build_model
from .evaluation import evaluate, flatten_scores, json_safe, save_sample_grid, score_columns
from .sources import make_source

METRICS_HEADER = ("step", "loss", "lr", "grad_norm", "images_per_s", "train_cpu_s")
ADHERENCE_FILE = "adherence.csv"
"""Held-out and training-pair adherence with chance rates, at every sample step of a shapes run."""
SPELLING_FILE = "spelling.csv"
"""Held-out and training-word spelling with chance rates, at every sample step of a glyphs run."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training: a checkpoint of the current step was written; the message says how to resume."""


def learning_rate(step: int, lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine to 10 % of ``lr`` at ``max_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: everything random in that step comes from it."""
    return make_generator(seed * 1_000_003 + step)


def training_times(n: int, generator: torch.Generator, time_sampler: str, shift: float) -> torch.Tensor:
    """``n`` training times in (0, 1): u ~ π (``time_sampler``, e.g. "lognorm(0,1)"), shifted once,
    t = α·u / (1 + (α − 1)·u), α = ``shift`` (SD3's resolution shift, eq. 23)."""
    return shift_time(make_time_sampler(time_sampler)(n, generator=generator), shift)


class StepDraws(torch.utils.data.Dataset):
    """Step s → everything random in step s: ``(images, captions, t, ε, drop, cpu_s)``, drawn in this
    order from :func:`step_generator` (module docstring), so the same step draws the same batch in
    any process. ``cpu_s`` is None when drawn in the training process, else the CPU seconds the
    draw took in a worker.

    :meth:`iterate` yields steps ``start`` … ``stop − 1``; with ``config.data_workers`` > 0 they are
    drawn ahead in that many worker processes (a torch DataLoader), so that rendering and encoding
    the next batches run on another core while this one trains.
    """

    def __init__(self, source, config: TrainConfig):
        self.source, self.config = source, config

    def __len__(self) -> int:
        return self.config.max_steps

    def __getitem__(self, step: int) -> tuple:
        return self.draw(step) + (None,)

    def draw(self, step: int) -> tuple:
        config = self.config
        g = step_generator(config.seed, step)
        images, captions = self.source.batch(step, config.batch_size, g)
        t = training_times(config.batch_size, g, config.time_sampler, config.shift)
        eps = randn(images.shape, g)
        drop = drop_mask(config.drop_shape(config.batch_size), config.p_uncond, g)
        return images, captions, t, eps, drop

    def iterate(self, start: int, stop: int) -> Iterator[tuple]:
        workers = self.config.data_workers
        if workers == 0:
            return (self[step] for step in range(start, stop))
        loader = torch.utils.data.DataLoader(_WorkerDraws(self), batch_size=None, sampler=range(start, stop),
                                             num_workers=workers, prefetch_factor=4)
        return iter(loader)


class _WorkerDraws(torch.utils.data.Dataset):
    """:class:`StepDraws` as a worker draws them: with the CPU seconds each draw took there."""

    def __init__(self, draws: StepDraws):
        self.draws = draws

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, step: int) -> tuple:
        start = time.process_time()
        drawn = self.draws.draw(step)
        return drawn + (time.process_time() - start,)


class Distributed:
    """Rank and world size from torchrun's environment (1 process without torchrun)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = get_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep the header and the rows of steps ≤ ``step`` of a metrics CSV, rewritten atomically.

    A run resumed from the checkpoint of step S trains steps S+1, … again, so the rows a crashed run
    logged after its last checkpoint go before the resumed run appends its own.
    """
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= step]
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def _check_resume_config(saved: dict, config: TrainConfig) -> None:
    if "max_steps" in saved and saved["max_steps"] != config.max_steps:
        raise ValueError(
            f"--resume: the run was made for max_steps={saved['max_steps']} (its learning rate follows a schedule "
            f"fitted to that length), got {config.max_steps}; a resumed run keeps its length. To train longer, "
            f"start a new run with --max-steps {config.max_steps}")
    ignorable = {"log_every", "sample_every", "ckpt_every", "ckpt_minutes", "device", "compile", "data_workers", "data_root",
                 "download", "eval_samples"}
    differing = [f"{k}: checkpoint {saved[k]!r} vs now {v!r}" for k, v in asdict(config).items()
                 if k not in ignorable and k in saved and saved[k] != v]
    if differing:
        raise ValueError("--resume: the run was made with another configuration:\n  " + "\n  ".join(differing))


class MetricsLog:
    """metrics.csv of a run (one row per ``log_every`` steps), kept consistent across resumes.

    A run resumed from the checkpoint of step S drops the rows (and adherence rows) a crashed run
    logged after S before appending its own; a fresh run starts the file over.
    """

    def __init__(self, out: Path, start: int, enabled: bool):
        self.file, self.writer, self.path = None, None, None
        if not enabled:
            return
        path = self.path = out / "metrics.csv"
        fresh = start == 0 or not path.exists()
        if not fresh:
            drop_metrics_after(path, start)
            for scores in (ADHERENCE_FILE, SPELLING_FILE):
                if (out / scores).exists():
                    drop_metrics_after(out / scores, start)
        self.file = open(path, "w" if fresh else "a", newline="")
        self.writer = csv.writer(self.file)
        if fresh:
            self.writer.writerow(METRICS_HEADER)

    def row(self, step: int, loss: float, lr: float, grad_norm: float, images_per_s: float, cpu_s: float) -> None:
        self.writer.writerow([step, f"{loss:.6f}", f"{lr:.3e}", f"{grad_norm:.4f}", f"{images_per_s:.1f}", f"{cpu_s:.1f}"])
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()

    def last_loss(self) -> float | None:
        """The loss of the last row written to metrics.csv (None without rows)."""
        if self.path is None or not self.path.exists():
            return None
        with open(self.path, newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        return float(rows[-1][1]) if rows else None


class Trainer:
    """One training run: built in ``__init__``, stepped by :meth:`train_step`, driven by :meth:`train`.

    ``config`` is a validated :class:`TrainConfig`; ``out`` the run directory (metrics.csv,
    adherence.csv, samples/, checkpoints/, config.json, summary.json); ``resume`` a run directory
    or checkpoint to continue exactly. Raises ValueError for a batch that does not split over
    processes × ``grad_accum``, or a resume checkpoint of another configuration.
    """

    def __init__(self, config: TrainConfig, out: Path, env: Distributed, resume=None):
        self.config, self.out, self.env = config, out, env
        device = self.device = env.device
        self.per_rank = config.batch_size // env.world
        if self.per_rank * env.world != config.batch_size or self.per_rank % config.grad_accum:
            raise ValueError(f"batch_size: expected a multiple of processes × grad_accum = "
                             f"{env.world * config.grad_accum}, got {config.batch_size}")
        self.source = make_source(config)
        self.draws = StepDraws(self.source, config)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.source.vocabulary, self.source.channels)
        if config.init_from and resume is None:  # fine-tuning: weights only; optimizer, schedule and EMA start fresh
            load_weights_into(self.model, initial_weights(config.init_from, self.source.vocabulary, self.source.channels),
                              "--init-from")
        self.model = self.model.to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           fused=device.type in ("cuda", "cpu"))  # CPU: 2.8 ms a step, not 13.7
        self.start, self.last_checkpoint, cpu_before = 0, None, 0.0
        if resume is not None:
            self.start, self.last_checkpoint, cpu_before = self._restore(resume)
        self.trainee: nn.Module = self.model
        if env.world > 1:
            self.trainee = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            self.trainee = torch.compile(self.trainee)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=config.bf16 and device.type in ("cuda", "cpu"))
        if env.main:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.json", json.dumps(asdict(config), indent=1))
        self.metrics = MetricsLog(out, self.start, env.main)
        self.cpu = CPUClock(cpu_before)  # CPU seconds of the training steps alone (sampling and saving not counted)
        self.last_evaluation = None  # the evaluation of the final step, reused by the summary (shapes runs)
        self.tick, self.seen = time.perf_counter(), 0
        self.saved_at = time.monotonic()
        self.interrupted = False

    def _restore(self, resume) -> tuple[int, Path, float]:
        folder = resolve_checkpoint(resume, "--resume")
        state = load_state(folder)
        _check_resume_config(state["config"], self.config)
        load_weights_into(self.model, load_tensors(folder, "model.safetensors"), "model")
        load_weights_into(self.ema, load_tensors(folder, "ema.safetensors"), "ema")
        tensors = {k: v.to(self.device) for k, v in load_tensors(folder, "optimizer.safetensors").items()}
        restore_optimizer(self.optimizer, tensors, state["optimizer"])
        return state["step"], folder, state.get("train_cpu_seconds", 0.0)

    def train_step(self, step: int, draws: tuple | None = None) -> tuple[float, float, float]:
        """One optimizer step on this process's slice of the global batch of ``step``; returns
        (loss averaged over processes, gradient norm before clipping, learning rate).

        ``draws`` is ``self.draws[step]``, drawn here when not given (:class:`StepDraws`).

        Raises :class:`NonFiniteLossError` when the loss is NaN or infinite.
        """
        config, env = self.config, self.env
        self.cpu.resume()
        if draws is None:
            draws = self.draws[step]
        images, captions, t, eps, drop, draw_cpu_s = draws
        if draw_cpu_s is not None:  # drawn in a worker process: its CPU seconds count as the step's
            self.cpu.add(draw_cpu_s)
        lr = learning_rate(step, config.lr, config.warmup_steps, config.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro, lo, total = self.per_rank // config.grad_accum, env.rank * self.per_rank, 0.0
        for m in range(config.grad_accum):
            part = slice(lo + m * micro, lo + (m + 1) * micro)
            last = m == config.grad_accum - 1 or env.world == 1
            no_sync = self.trainee.no_sync() if (not last and hasattr(self.trainee, "no_sync")) else contextlib.nullcontext()
            with no_sync, self.autocast:
                loss = self.trainee(images[part].to(self.device), captions[part], eps=eps[part].to(self.device),
                                    t=t[part].to(self.device), drop=drop[part])
            (loss / config.grad_accum).backward()
            total += loss.item() / config.grad_accum
        loss_value = env.mean(total)
        if not math.isfinite(loss_value):
            where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                     else "no checkpoint was written yet")
            raise NonFiniteLossError(f"loss became {loss_value} at step {step}; stopped, {where}")
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        update_ema(self.ema, self.model, ema_decay_at(step, config.ema_decay))
        self.seen += config.batch_size
        self.cpu.pause()
        return loss_value, grad_norm, lr

    def maybe_log(self, done: int, final: bool, loss: float, grad_norm: float, lr: float) -> bool:
        """Write a metrics row every ``log_every`` steps and at the end; True when it did."""
        if not (self.metrics.writer and (done % self.config.log_every == 0 or final)):
            return False
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.metrics.row(done, loss, lr, grad_norm, self.seen / (now - self.tick), self.cpu.seconds)
        self.tick, self.seen = now, 0
        return True

    def maybe_sample(self, done: int, final: bool) -> None:
        """Every ``sample_every`` steps and at the end: a labelled sample grid and, for shapes, adherence."""
        config = self.config
        if not (self.env.main and (done % config.sample_every == 0 or final)):
            return
        save_sample_grid(self.ema, self.source, self.out / "samples" / f"step_{done:07d}.png", config.sample_steps,
                         config.sample_cfg, config.shift, config.seed)
        scored = {ADHERENCE_FILE: getattr(self.source, "split", None), SPELLING_FILE: getattr(self.source, "words", None)}
        for name, held_out in scored.items():
            if held_out is not None:
                self.last_evaluation = self.evaluate()
                log_scores(self.out / name, done, self.cpu.seconds, self.last_evaluation)

    def maybe_save(self, done: int, final: bool, now: bool = False) -> None:
        """A checkpoint every ``ckpt_every`` steps, every ``ckpt_minutes`` of wall time, at the end, and
        when ``now`` (the main process only)."""
        minutes = self.config.ckpt_minutes
        due_by_time = minutes > 0 and time.monotonic() - self.saved_at >= 60 * minutes
        if not (self.env.main and (done % self.config.ckpt_every == 0 or final or now or due_by_time)):
            return
        self.saved_at = time.monotonic()
        state = {"config": asdict(self.config), "vocabulary": list(self.source.vocabulary),
                 "channels": self.source.channels, "train_cpu_seconds": self.cpu.seconds}
        self.last_checkpoint = save_checkpoint(self.out, done, self.model.state_dict(), self.ema.state_dict(),
                                               self.optimizer, state)

    def evaluate(self) -> dict:
        """The EMA model's metrics on ``eval_samples`` prompts (:func:`~minisd3.engine.evaluation.evaluate`)."""
        config = self.config
        return evaluate(self.ema, self.source, config.eval_samples, config.sample_steps, config.sample_cfg,
                        config.shift, config.seed)

    def train(self, stop: int, progress: bool = True) -> dict:
        """Steps ``start`` … ``stop − 1``, then the summary (written to summary.json and returned).

        A first Ctrl-C (single process) finishes the current step, writes a checkpoint of it and
        raises :class:`TrainingInterrupted`; a second one interrupts at once.
        """
        config, loss = self.config, float("nan")
        bar = progress_bar(range(self.start, stop), desc="training", disable=not (progress and self.env.main),
                   initial=self.start, total=config.max_steps, mininterval=2.0)
        done = self.start
        try:
            with self._stop_on_ctrl_c():
                for step, draws in zip(bar, self.draws.iterate(self.start, stop)):
                    loss, grad_norm, lr = self.train_step(step, draws)
                    done, final = step + 1, step + 1 == stop
                    if self.maybe_log(done, final, loss, grad_norm, lr):
                        bar.set_postfix(loss=f"{loss:.4f}")
                    if self.interrupted:
                        break
                    self.maybe_sample(done, final)
                    self.maybe_save(done, final)
                if self.interrupted and done < stop:
                    bar.close()
                    self.maybe_save(done, final=False, now=True)
                    raise TrainingInterrupted(
                        f"interrupted at step {done} of {config.max_steps}; checkpoint {self.last_checkpoint} written. "
                        f"Continue with: python -m minisd3 train --resume {self.out}")
        finally:
            self.metrics.close()
        if math.isnan(loss):  # nothing left to train (resumed at the end): the last logged loss
            loss = self.metrics.last_loss()
        summary = {"step": stop, "loss": loss, "train_cpu_seconds": round(self.cpu.seconds, 1),
                   "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None}
        if self.env.main and stop == config.max_steps:
            summary["evaluation"] = self.last_evaluation or self.evaluate()
        if self.env.main:
            write_text_atomic(self.out / "summary.json", json.dumps(json_safe(summary), indent=1, allow_nan=False))
        return summary

    @contextlib.contextmanager
    def _stop_on_ctrl_c(self):
        """While training in one process on the main thread, the first SIGINT only sets ``interrupted``."""
        if self.env.world > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def prepare_run_directory(out: Path, resume, overwrite: bool) -> Path | None:
    """Refuse to mix two runs in ``out``: a non-empty ``out`` needs ``resume`` (continue) or ``overwrite``
    (the old run is moved aside to ``OUT.replaced-YYYYmmdd-HHMMSS``, whose path is returned)."""
    if resume is not None and overwrite:
        raise ValueError("--overwrite: expected either --resume (continue the run) or --overwrite (start over), got both")
    if resume is not None or not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"--out: expected a run directory, got {str(out)!r}, a file")
    held = sorted(p.name for p in out.iterdir())
    if not held:
        return None
    if not overwrite:
        raise ValueError(f"--out: {str(out)!r} already holds a run ({', '.join(held[:4])}{', …' if len(held) > 4 else ''}); "
                         f"continue it with --resume {out}, or start over with --overwrite (the old run is moved aside)")
    aside = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(out), str(aside))
    return aside


def train_run(config: TrainConfig, out_dir: str | Path, resume: str | Path | None = None,
              progress: bool = True, stop_at: int | None = None, overwrite: bool = False) -> dict:
    """Train per ``config``, writing metrics, sample grids and checkpoints under ``out_dir``; returns the summary.

    A non-empty ``out_dir`` is refused unless ``resume`` continues a run (normally the same
    directory) or ``overwrite`` starts over (the old run is moved aside; the summary's
    ``moved_aside`` says where). ``stop_at`` ends the run early at that step with a checkpoint, as a
    time-limited job would (the schedule still runs to ``max_steps``; ``resume`` continues it).
    Raises ValueError for an invalid config, ``stop_at`` or run directory, :class:`NonFiniteLossError`
    when the loss diverges, :class:`TrainingInterrupted` after Ctrl-C (a checkpoint was written).
    """
    config = with_init_from(config.validate())
    if stop_at is not None and not 0 < stop_at <= config.max_steps:
        raise ValueError(f"stop_at: expected a step in [1, {config.max_steps}], got {stop_at}")
    out = Path(out_dir)
    env = Distributed(config.device)
    try:
        aside = prepare_run_directory(out, resume, overwrite) if env.main else None
        summary = Trainer(config, out, env, resume).train(stop_at or config.max_steps, progress)
        return {**summary, "moved_aside": str(aside)} if aside else summary
    finally:
        env.close()


class CPUClock:
    """Process CPU seconds (all threads) summed over the intervals between :meth:`resume` and :meth:`pause`."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self._since = seconds, None

    def resume(self) -> None:
        self._since = time.process_time()

    def pause(self) -> None:
        self.seconds += time.process_time() - self._since

    def add(self, seconds: float) -> None:
        """Count ``seconds`` spent in another process (a data worker) for these steps."""
        self.seconds += seconds


def log_scores(path: Path, step: int, cpu_seconds: float, result: dict) -> None:
    """Append one row (step, training CPU seconds, every adherence or spelling report of ``result``) to ``path``."""
    columns = score_columns(result)
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "train_cpu_s", *columns])
        values = flatten_scores(result)
        writer.writerow([step, f"{cpu_seconds:.1f}", *(f"{values[c]:.4f}" if c in values else "" for c in columns)])
