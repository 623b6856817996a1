"""Helpers shared by the test modules: tiny training configs, the command line, checkpoint tensors."""
import os
import subprocess
import sys

import torch

from minisd3.engine.checkpoints import load_tensors, resolve_checkpoint
from minisd3.engine.config import apply_overrides, preset_config

# a preset shrunk to seconds on one CPU thread; later overrides win
TINY = ["depth=2", "heads=2", "head_dim=16", "text_dim=32", "text_depth=1", "batch_size=8", "warmup_steps=2",
        "log_every=1", "sample_every=100", "ckpt_every=100", "sample_steps=2", "eval_samples=8", "device=cpu",
        "bf16=false", "data_workers=0"]  # engine mechanics (exact resume, DDP = one process) are checked in float32


def tiny(*extra, preset="shapes"):
    return apply_overrides(preset_config(preset), TINY + list(extra))


def weights(run, name="model.safetensors"):
    return load_tensors(resolve_checkpoint(run), name)


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "minisd3", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def tiny_autoencoder_kl(path, scaling_factor=1.5, shift_factor=0.1):
    """A two-level diffusers AutoencoderKL saved to ``path`` in its own format."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=16, scaling_factor=scaling_factor,
                        shift_factor=shift_factor)
    vae.save_pretrained(path)
    return vae.eval()


def tiny_shapes_autoencoder(path, width=8, channels=4, factor=4, scaling_factor=1.3, shift_factor=0.1):
    """An untrained SmallAutoencoder (seeded) with a non-trivial latent scale and shift, saved to ``path``."""
    from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, save_autoencoder

    torch.manual_seed(0)
    model = SmallAutoencoder(AutoencoderConfig(latent_channels=channels, factor=factor, width=width)).eval()
    model.scaling_factor, model.shift_factor = scaling_factor, shift_factor
    save_autoencoder(model, path)
    return path
