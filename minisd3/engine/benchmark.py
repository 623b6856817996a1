"""Training throughput and model FLOPs utilisation (MFU) of the MM-DiT, against diffusers.

    MFU = (training FLOPs per image · images/s) / peak bf16 FLOP/s of the device

Training FLOPs per step are counted by PyTorch's ``FlopCounterMode`` over one forward+backward,
with attention run as its two explicit matrix products (QKᵀ and PV) on every device, so MFU counts
useful model work, not a fused kernel's recomputation (:func:`count_training_flops` gives the count).
Models: the size rule hidden = 64·depth, heads = depth, 2×2 patches, at 32×32×4 inputs
(256 image tokens) with 32 text tokens — depth 6 (S/2-class, hidden 384) and depth 12
(B/2-class, hidden 768).
"""
from __future__ import annotations

import contextlib
import platform
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..convert import diffusers_config
from ..env import get_device
from ..models import MMDiT, MMDiTConfig

# dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s)
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "A10G": 70e12, "RTX 4090": 165e12}
MODELS = {"S/2 (depth 6)": 6, "B/2 (depth 12)": 12}
TEXT_TOKENS, TEXT_DIM = 32, 256


def peak_flops(device: torch.device) -> float | None:
    """The device's peak dense bf16 rate, or None when unknown (CPUs)."""
    return peak_bf16_for(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def peak_bf16_for(name: str) -> float | None:
    """The peak dense bf16 FLOP/s of a GPU by its CUDA name (the first matching key of ``PEAK_BF16``)."""
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def bench_config(depth: int) -> MMDiTConfig:
    return MMDiTConfig.from_depth(depth, input_size=32, in_channels=4, context_dim=TEXT_DIM, pooled_dim=TEXT_DIM,
                                  qk_norm=True)


def make_step(forward, params, device: torch.device, batch: int):
    """One optimisation step (bf16 autocast on CUDA, MSE to a random target, AdamW) as a closure."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 4, 32, 32, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    ctx = torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g).to(device)
    pooled = torch.randn(batch, TEXT_DIM, generator=g).to(device)
    target = torch.randn_like(x)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = (forward(x, t, ctx, pooled).float() - target).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@contextlib.contextmanager
def counting_flops():
    """A ``FlopCounterMode`` under which attention runs as explicit matmuls (SDPA's math backend).

    Fused attention kernels are counted differently by device (CPU's not at all, CUDA flash
    backward with the recomputed QKᵀ); the math backend counts 2 matmuls forward, 4 backward.
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        yield counter


def count_training_flops(forward, params, device: torch.device, batch: int) -> float:
    """FLOPs of one forward+backward at ``batch`` (:func:`counting_flops`), per image.

    Every matmul Y = XW of the forward (2·rows·in·out FLOPs) costs two in the backward, the weight
    gradient XᵀdY and the input gradient dY·Wᵀ, except that the input gradient is skipped where X
    needs none; attention's QKᵀ and PV (4·T²·D per image for T tokens of width D) likewise cost twice
    their forward. So a step is not three forwards but

        training = 3·forward − Σ 2·rows·in·out  over Linear layers whose input needs no gradient

    (in the MM-DiT: the patch embedding, the context embedder and the first Linear of the timestep
    and pooled-text MLPs).
    """
    step = make_step(forward, params, device, batch)
    with counting_flops() as counter:
        step()
    return counter.get_total_flops() / batch


def images_per_second(step, device: torch.device, steps: int, batch: int) -> float:
    for _ in range(3):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def run_benchmark(device: str = "auto", steps: int = 10, batch: int | None = None, compile_too: bool = True,
                  diffusers_too: bool = True, models: dict[str, int] = MODELS) -> list[dict]:
    """Print and return a table: model, implementation, images/s, TFLOP/s, MFU (``models``: label → depth)."""
    dev = get_device(device)
    batch = batch or (64 if dev.type == "cuda" else 4)
    peak = peak_flops(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device {dev} ({name}); torch {torch.__version__}; batch {batch}; "
          f"{'bf16 autocast' if dev.type == 'cuda' else 'fp32'}; peak bf16 "
          f"{peak / 1e12:.0f} TFLOP/s" if peak else f"device {dev} ({name}); torch {torch.__version__}; batch {batch}; "
          "fp32; peak unknown, MFU not computed")
    rows = []
    for label, depth in models.items():
        torch.manual_seed(0)
        ours = MMDiT(bench_config(depth)).to(dev)
        variants = [("minisd3 eager", ours, ours)]
        if compile_too:
            variants.append(("minisd3 compiled", torch.compile(ours), ours))
        if diffusers_too:
            from diffusers import SD3Transformer2DModel

            theirs = SD3Transformer2DModel(**diffusers_config(bench_config(depth))).to(dev)
            call = lambda x, t, c, p, m=theirs: m(hidden_states=x, encoder_hidden_states=c, pooled_projections=p,  # noqa: E731
                                                   timestep=1000 * t).sample
            variants.append(("diffusers eager", call, theirs))
        flops = count_training_flops(ours, ours.parameters(), dev, batch)
        for impl, forward, module in variants:
            rate = images_per_second(make_step(forward, module.parameters(), dev, batch), dev, steps, batch)
            achieved = flops * rate
            row = {"model": label, "implementation": impl, "images_per_s": rate, "tflops": achieved / 1e12,
                   "mfu": achieved / peak if peak else None}
            rows.append(row)
            mfu = f"{100 * row['mfu']:.1f} %" if peak else "n/a"
            print(f"{label:16s} {impl:18s} {rate:9.1f} images/s  {row['tflops']:7.2f} TFLOP/s  MFU {mfu}")
        eager = next(r for r in rows if r["model"] == label and r["implementation"] == "minisd3 eager")
        for r in rows:
            if r["model"] == label and r["implementation"] == "diffusers eager":
                best = max(x["images_per_s"] for x in rows if x["model"] == label and x["implementation"].startswith("minisd3"))
                print(f"{label:16s} minisd3 best / diffusers eager: {best / r['images_per_s']:.2f}x "
                      f"(eager alone {eager['images_per_s'] / r['images_per_s']:.2f}x)")
    return rows
