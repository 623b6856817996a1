"""Forward+backward throughput of minisd3's MM-DiT against diffusers' SD3Transformer2DModel,
same configuration, same weights, same inputs, in one run; prints images/s and the ratio.

    python benchmarks/mmdit_vs_diffusers.py                 # CPU, a small model
    python benchmarks/mmdit_vs_diffusers.py --device cuda --depth 12 --batch 64 --dtype bf16
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from diffusers import SD3Transformer2DModel

from minisd3 import get_device
from minisd3.convert import diffusers_config, mmdit_from_diffusers
from minisd3.models import MMDiTConfig


def step_time(run, repeats: int, device: torch.device) -> float:
    """Median seconds of one forward+backward, after two warm-up calls."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=4, help="size rule: hidden 64·depth, heads = depth")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=16)
    parser.add_argument("--qk-norm", action="store_true")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast (CUDA)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = get_device(args.device)
    torch.manual_seed(0)
    config = MMDiTConfig.from_depth(args.depth, input_size=args.input_size, in_channels=args.channels,
                                    context_dim=256, pooled_dim=256, qk_norm=args.qk_norm)
    theirs = SD3Transformer2DModel(**diffusers_config(config)).to(device)
    ours = mmdit_from_diffusers(theirs).to(device)
    x = torch.randn(args.batch, args.channels, args.input_size, args.input_size, device=device)
    t = torch.rand(args.batch, device=device)
    ctx = torch.randn(args.batch, args.text_tokens, 256, device=device)
    pooled = torch.randn(args.batch, 256, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def run_ours():
        with autocast:
            out = ours(x, t, ctx, pooled)
        out.float().square().mean().backward()

    def run_theirs():
        with autocast:
            out = theirs(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=1000 * t).sample
        out.float().square().mean().backward()

    # interleave the two so that machine noise hits both alike
    ours_s, theirs_s = [], []
    for _ in range(3):
        ours_s.append(step_time(run_ours, args.repeats, device))
        theirs_s.append(step_time(run_theirs, args.repeats, device))
    t_ours, t_theirs = min(ours_s), min(theirs_s)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"config: depth {args.depth}, hidden {config.hidden}, {(args.input_size // 2) ** 2} image tokens + "
          f"{args.text_tokens} text tokens, batch {args.batch}, {args.dtype}, qk_norm {args.qk_norm}")
    print(f"minisd3   : {args.batch / t_ours:8.1f} images/s  ({1000 * t_ours:.1f} ms per forward+backward)")
    print(f"diffusers : {args.batch / t_theirs:8.1f} images/s  ({1000 * t_theirs:.1f} ms per forward+backward)")
    print(f"ratio minisd3/diffusers throughput: {t_theirs / t_ours:.2f}x")


if __name__ == "__main__":
    main()
