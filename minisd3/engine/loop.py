"""The training engine behind ``python -m minisd3 train``: one loop from a laptop CPU to torchrun.

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
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..adherence import ATTRIBUTES
from ..env import get_device
from ..files import atomic_file, load_weights_into, write_text_atomic
from ..guidance import drop_mask
from ..models import MMDiTConfig
from ..seeding import make_generator, randn
from ..text import SmallTextEncoder, WordTokenizer
from ..text_to_image import TextToImage
from ..timesteps import make_time_sampler, shift_time
from .checkpoints import load_state, load_tensors, resolve_checkpoint, restore_optimizer, save_checkpoint
from .config import TrainConfig
from .data import make_source
from .evaluation import ADHERENCE_KEYS, evaluate
from .grids import save_labelled_grid

METRICS_HEADER = ("step", "loss", "lr", "grad_norm", "images_per_s", "train_cpu_s")
ADHERENCE_FILE = "adherence.csv"
"""Held-out and training-pair adherence with chance rates, at every sample step of a shapes run."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def build_model(config: TrainConfig, vocabulary, channels: int) -> TextToImage:
    """The MM-DiT + small text encoder a config describes."""
    encoder = SmallTextEncoder(WordTokenizer(vocabulary, config.text_length), dim=config.text_dim, depth=config.text_depth,
                               heads=max(1, config.text_dim // 32))
    mmdit = MMDiTConfig(input_size=config.image_size, in_channels=channels, patch_size=config.patch_size,
                        depth=config.depth, heads=config.heads, head_dim=config.head_dim,
                        context_dim=config.text_dim, pooled_dim=config.text_dim, qk_norm=config.qk_norm)
    return TextToImage(mmdit, encoder)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Warm-up then cosine to 10 % (module docstring)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def ema_decay_at(config: TrainConfig, step: int) -> float:
    """The EMA decay after step ``step``: min(ema_decay, (1 + step)/(10 + step)) (module docstring)."""
    return min(config.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ for every parameter (module docstring)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: everything random in that step comes from it."""
    return make_generator(seed * 1_000_003 + step)


def training_times(config: TrainConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` training times: u ~ π (``time_sampler``), shifted once, t = α·u / (1 + (α − 1)·u), α = ``shift``."""
    return shift_time(make_time_sampler(config.time_sampler)(n, generator=generator), config.shift)


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
    ignorable = {"max_steps", "log_every", "sample_every", "ckpt_every", "device", "compile", "data_root",
                 "download", "eval_samples"}
    differing = [f"{k}: checkpoint {saved[k]!r} vs now {v!r}" for k, v in asdict(config).items()
                 if k not in ignorable and k in saved and saved[k] != v]
    if differing:
        raise ValueError("--resume: the run was made with another configuration:\n  " + "\n  ".join(differing))


def train(config: TrainConfig, out_dir: str | Path, resume: str | Path | None = None,
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Train per ``config``, writing metrics, sample grids and checkpoints under ``out_dir``.

    ``stop_at`` ends the run early at that step with a checkpoint, as a time-limited job would
    (the schedule still runs to ``max_steps``; ``--resume`` continues it). Returns a summary.
    """
    config.validate()
    if stop_at is not None and not 0 < stop_at <= config.max_steps:
        raise ValueError(f"stop_at: expected a step in [1, {config.max_steps}], got {stop_at}")
    env = Distributed(config.device)
    try:
        return _train(config, Path(out_dir), resume, progress, env, stop_at or config.max_steps)
    finally:
        env.close()


def _train(config: TrainConfig, out: Path, resume, progress: bool, env: Distributed, stop: int) -> dict:
    device = env.device
    per_rank = config.batch_size // env.world
    if per_rank * env.world != config.batch_size or per_rank % config.grad_accum:
        raise ValueError(f"batch_size: expected a multiple of processes × grad_accum = "
                         f"{env.world * config.grad_accum}, got {config.batch_size}")
    source = make_source(config)
    torch.manual_seed(config.seed)
    model = build_model(config, source.vocabulary, source.channels).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    start, last_ckpt, cpu_before = 0, None, 0.0
    if resume is not None:
        folder = resolve_checkpoint(resume)
        state = load_state(folder)
        _check_resume_config(state["config"], config)
        load_weights_into(model, load_tensors(folder, "model.safetensors"), "model")
        load_weights_into(ema, load_tensors(folder, "ema.safetensors"), "ema")
        restore_optimizer(optimizer, {k: v.to(device) for k, v in load_tensors(folder, "optimizer.safetensors").items()},
                          state["optimizer"])
        start, last_ckpt = state["step"], folder
        cpu_before = state.get("train_cpu_seconds", 0.0)
    trainee: nn.Module = model
    if env.world > 1:
        trainee = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        trainee = torch.compile(trainee)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type in ("cuda", "cpu"))
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(asdict(config), indent=1))
    metrics_path = out / "metrics.csv"
    new_metrics = not metrics_path.exists() or start == 0
    if env.main and not new_metrics:
        drop_metrics_after(metrics_path, start)
        if (out / ADHERENCE_FILE).exists():
            drop_metrics_after(out / ADHERENCE_FILE, start)
    metrics = open(metrics_path, "w" if new_metrics else "a", newline="") if env.main else None
    writer = csv.writer(metrics) if metrics else None
    if writer and new_metrics:
        writer.writerow(METRICS_HEADER)
    micro = per_rank // config.grad_accum
    last_loss, tick, seen = float("nan"), time.perf_counter(), 0
    last_evaluation = None  # the evaluation of the final step, reused by the summary (shapes runs)
    cpu = CPUClock(cpu_before)  # CPU seconds of the training steps alone (sampling and saving not counted)
    bar = tqdm(range(start, stop), desc="training", disable=not (progress and env.main),
               initial=start, total=config.max_steps, mininterval=2.0)
    try:
        for step in bar:
            cpu.resume()
            g = step_generator(config.seed, step)
            images, captions = source.batch(step, config.batch_size, g)
            t = training_times(config, config.batch_size, g)
            eps = randn(images.shape, g)
            drop = drop_mask(config.batch_size, config.p_uncond, g)
            lo = env.rank * per_rank
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = 0.0
            for m in range(config.grad_accum):
                part = slice(lo + m * micro, lo + (m + 1) * micro)
                sync = m == config.grad_accum - 1 or env.world == 1
                context = trainee.no_sync() if (not sync and hasattr(trainee, "no_sync")) else contextlib.nullcontext()
                with context, autocast:
                    loss = trainee(images[part].to(device), captions[part], eps=eps[part].to(device),
                                   t=t[part].to(device), drop=drop[part])
                (loss / config.grad_accum).backward()
                total += loss.item() / config.grad_accum
            loss_value = env.mean(total)
            if not math.isfinite(loss_value):
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise NonFiniteLossError(f"loss became {loss_value} at step {step}; stopped, {where}")
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema, model, ema_decay_at(config, step))
            last_loss, seen = loss_value, seen + config.batch_size
            cpu.pause()
            done = step + 1
            final = done == stop
            if writer and (done % config.log_every == 0 or final):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                writer.writerow([done, f"{loss_value:.6f}", f"{lr:.3e}", f"{grad_norm:.4f}", f"{seen / (now - tick):.1f}",
                                 f"{cpu.seconds:.1f}"])
                metrics.flush()
                tick, seen = now, 0
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if env.main and (done % config.sample_every == 0 or final):
                save_sample_grid(ema, source, config, out / "samples" / f"step_{done:07d}.png", device)
                if getattr(source, "split", None) is not None:
                    last_evaluation = evaluate(ema, source, config.eval_samples, config.sample_steps,
                                               config.sample_cfg, config.shift, config.seed)
                    log_adherence(out / ADHERENCE_FILE, done, cpu.seconds, last_evaluation)
            if env.main and (done % config.ckpt_every == 0 or final):
                last_ckpt = save_checkpoint(out, done, model.state_dict(), ema.state_dict(), optimizer,
                                            {"config": asdict(config), "vocabulary": list(source.vocabulary),
                                             "channels": source.channels, "train_cpu_seconds": cpu.seconds})
    finally:
        if metrics:
            metrics.close()
    summary = {"step": stop, "loss": last_loss, "train_cpu_seconds": round(cpu.seconds, 1),
               "checkpoint": str(last_ckpt) if last_ckpt else None}
    if env.main and stop == config.max_steps:
        summary["evaluation"] = last_evaluation or evaluate(ema, source, config.eval_samples, config.sample_steps,
                                                             config.sample_cfg, config.shift, config.seed)
    if env.main:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


class CPUClock:
    """Process CPU seconds (all threads) summed over the intervals between :meth:`resume` and :meth:`pause`."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self._since = seconds, None

    def resume(self) -> None:
        self._since = time.process_time()

    def pause(self) -> None:
        self.seconds += time.process_time() - self._since


def log_adherence(path: Path, step: int, cpu_seconds: float, result: dict) -> None:
    """Append one row (step, training CPU seconds, every adherence report of ``result``) to ``path``."""
    columns = [f"{key}_{a}" for key in ADHERENCE_KEYS for a in (*ATTRIBUTES, "overall")]
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "train_cpu_s", *columns])
        values = {f"{key}_{a}": v for key in ADHERENCE_KEYS for a, v in result.get(key, {}).items()}
        writer.writerow([step, f"{cpu_seconds:.1f}", *(f"{values[c]:.4f}" if c in values else "" for c in columns)])


@torch.no_grad()
def save_sample_grid(model: TextToImage, source, config: TrainConfig, path: Path, device, n: int = 16) -> list[str]:
    """Sample ``n`` prompts with the EMA model into a labelled PNG grid (:mod:`minisd3.engine.grids`, latents
    decoded) and write the prompts, one a line, to the ``.txt`` beside it; returns the prompts.

    For shapes (a source with a ``split``) the first ⌈n/2⌉ prompts use held-out (colour, shape)
    pairs and the rest training pairs, each half under its own header, every image with the
    detector's verdict; other sources sample ``n`` evaluation prompts (captions only).
    """
    split = getattr(source, "split", None)
    generator = make_generator(config.seed + 17)
    if split is None:
        prompts, held_out = source.eval_prompts(n, generator), None
    else:
        n_train = n // 2
        prompts = source.eval_prompts(n - n_train, generator) + split.train_captions(n_train, generator)
        held_out = [True] * (n - n_train) + [False] * n_train
    images = source.to_images(model.sample(prompts, steps=config.sample_steps, cfg=config.sample_cfg,
                                           shift=config.shift, generator=make_generator(config.seed + 23)))
    save_labelled_grid(path, images, prompts, held_out, verdicts=split is not None,
                       title=f"{path.stem}: EMA samples, {config.sample_steps} steps, cfg {config.sample_cfg}")
    path.with_suffix(".txt").write_text("\n".join(prompts))
    return prompts
