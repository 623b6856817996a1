"""Latent space (lesson 08): a small KL autoencoder, its quality metrics and latent scale and shift.

The autoencoder compresses an image x (C, H, W) into a latent z (c, H/f, W/f), f ∈ {2, 4}, with
strided convolutions; the diffusion model then works on z instead of the pixels.

    encoder     x → (μ, log σ²)                       (both c × H/f × W/f)
    sampling    z = μ + σ·n,  n ~ N(0, I)              (training only; encode() returns μ)
    decoder     z → x̂
    loss        L = rec(x, x̂) + β·KL,   rec = mean (x − x̂)² (MSE, default) or mean |x − x̂| (L1)
                KL = mean over latent elements of ½ (μ² + σ² − 1 − log σ²)

β is small (the KL only keeps the latents from drifting to huge values; it is not a VAE prior).
MSE is the default because on mostly-background images (shapes, digits) L1's minimiser, the
per-pixel median, is the background: an L1 autoencoder first learns to draw nothing.

Latent statistics, as SD3: the diffusion model sees z′ = (z − shift)·scale, with shift = mean of
the latents and scale = 1/std, computed once from data; decoding inverts it, z = z′/scale + shift.

Quality of reconstructions, for images in [−1, 1] (data range L = 2):

    PSNR = 10·log10(L² / MSE)                                                      (dB, per image)
    SSIM = mean over windows of (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
           Gaussian window 11×11, σ = 1.5, C1 = (0.01·L)², C2 = (0.03·L)², each channel, then averaged
           (Wang et al. 2004; the window shrinks to the image for images smaller than 11 pixels)

:class:`PretrainedAutoencoder` puts a diffusers ``AutoencoderKL`` on disk (e.g. SD3's VAE, 16
channels, f = 8) behind the same interface, with the scaling and shift factors of its config.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .files import atomic_file, load_weights_into, write_text_atomic
from .seeding import randn
from .training import DataSampler, StepCallback, fit
from .validation import check_positive_int, check_same_shape, check_tensor

WEIGHTS_FILE = "autoencoder.safetensors"
CONFIG_FILE = "config.json"
KIND = "minisd3.SmallAutoencoder"


class MissingAutoencoderError(ValueError):
    """No autoencoder at the given path; the message says how to make or where to put one."""


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of a :class:`SmallAutoencoder`: channels double at each of the log2(f) downsamplings."""

    in_channels: int = 3
    latent_channels: int = 4
    factor: int = 4
    width: int = 32

    def validate(self) -> "AutoencoderConfig":
        check_positive_int(self.in_channels, "in_channels")
        check_positive_int(self.width, "width")
        if self.factor not in (2, 4, 8):
            raise ValueError(f"factor: expected a downsampling factor 2, 4 or 8, got {self.factor!r}")
        if self.latent_channels not in (4, 8, 16):
            raise ValueError(f"latent_channels: expected 4, 8 or 16, got {self.latent_channels!r}")
        return self

    @property
    def levels(self) -> int:
        """Number of stride-2 convolutions: log2(f)."""
        return int(math.log2(self.factor))


class LatentCodec:
    """What diffusion needs from any autoencoder: encode, decode and the latent normalisation.

    Subclasses provide ``encode(images) → μ`` and ``decode(z) → images`` and set
    ``scaling_factor`` and ``shift_factor``.
    """

    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """z′ = (z − shift)·scale: what the diffusion model is trained on."""
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z = z′/scale + shift: back to what the decoder expects."""
        return z / self.scaling_factor + self.shift_factor

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def images_to_latents(self, images: torch.Tensor, batch: int = 64, normalized: bool = True) -> torch.Tensor:
        """Latent means of ``images`` in [−1, 1], normalised unless ``normalized=False``, in batches."""
        check_tensor(images, "images", ndim=4)
        device = self._device()
        out = [self.encode(images[i:i + batch].to(device)).float() for i in range(0, len(images), batch)]
        z = torch.cat(out)
        return (self.normalize(z) if normalized else z).to(images.device)

    @torch.no_grad()
    def latents_to_images(self, latents: torch.Tensor, batch: int = 64, normalized: bool = True) -> torch.Tensor:
        """Decoded images for (normalised, unless ``normalized=False``) latents, in batches."""
        check_tensor(latents, "latents", ndim=4)
        device = self._device()
        z = self.denormalize(latents.float()) if normalized else latents.float()
        out = [self.decode(z[i:i + batch].to(device)).float() for i in range(0, len(z), batch)]
        return torch.cat(out).to(latents.device)


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SmallAutoencoder(nn.Module, LatentCodec):
    """A KL autoencoder small enough to train on a CPU (module docstring).

    Encoder: conv → [stride-2 conv (channels ×2) → ResBlock] × log2(f) → GN, SiLU, conv → (μ, log σ²).
    Decoder: the mirror image, with nearest-neighbour upsampling followed by a conv.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config.validate()
        widths = [config.width * 2**i for i in range(config.levels + 1)]
        down: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        for a, b in zip(widths, widths[1:]):
            down += [nn.Conv2d(a, b, 3, stride=2, padding=1), ResBlock(b)]
        down += [nn.GroupNorm(_groups(widths[-1]), widths[-1]), nn.SiLU(),
                 nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        for a, b in zip(widths[::-1], widths[-2::-1]):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), ResBlock(b)]
        up += [nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(),
               nn.Conv2d(widths[0], config.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*up)
        self.scaling_factor, self.shift_factor = 1.0, 0.0

    @property
    def factor(self) -> int:
        """Downsampling factor f (as :class:`PretrainedAutoencoder`)."""
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        """Latent channels c (as :class:`PretrainedAutoencoder`)."""
        return self.config.latent_channels

    def _check_images(self, images: torch.Tensor) -> None:
        f, c = self.config.factor, self.config.in_channels
        check_tensor(images, "images", ndim=4)
        if images.shape[1] != c or images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"images: expected shape (B, {c}, H, W) with H and W multiples of {f}, "
                             f"got {tuple(images.shape)}")

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x), log σ² clamped to [−30, 20] as in latent diffusion."""
        self._check_images(images)
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The latent mean μ (what the diffusion model is trained on, before normalisation)."""
        return self.moments(images)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, "z", ndim=4)
        if z.shape[1] != self.config.latent_channels:
            raise ValueError(f"z: expected {self.config.latent_channels} latent channels, got shape {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x̂, μ, log σ²) with x̂ = decode(μ + σ·n)."""
        mean, logvar = self.moments(images)
        z = mean + torch.exp(0.5 * logvar) * randn(mean.shape, generator, mean.device, mean.dtype)
        return self.decode(z), mean, logvar


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over latent elements of KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²); always ≥ 0."""
    check_same_shape(mean, "mean", logvar, "logvar")
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()


def reconstruction_error(images: torch.Tensor, reconstructions: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """mean |x − x̂| (``"l1"``) or mean (x − x̂)² (``"mse"``)."""
    check_same_shape(images, "images", reconstructions, "reconstructions")
    if kind == "l1":
        return (images - reconstructions).abs().mean()
    if kind == "mse":
        return ((images - reconstructions) ** 2).mean()
    raise ValueError(f"kind: expected 'l1' or 'mse', got {kind!r}")


def autoencoder_loss(model: SmallAutoencoder, images: torch.Tensor, beta: float = 1e-4, kind: str = "mse",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """L = rec(x, decode(μ + σ·n)) + β·KL (module docstring)."""
    if beta < 0:
        raise ValueError(f"beta: expected a weight ≥ 0, got {beta}")
    reconstructions, mean, logvar = model(images, generator)
    return reconstruction_error(images, reconstructions, kind) + beta * kl_divergence(mean, logvar)


def train_autoencoder(model: SmallAutoencoder, sample_images: DataSampler, steps: int, batch_size: int = 64,
                      lr: float = 2e-3, beta: float = 1e-4, kind: str = "mse", seed: int = 0,
                      progress: bool = True, callback: StepCallback | None = None) -> list[float]:
    """Fit the autoencoder with :func:`autoencoder_loss` (Adam, cosine decay; :func:`minisd3.training.fit`).

    ``sample_images(n, generator)`` draws n images in [−1, 1], e.g. ``row_sampler(images)``;
    ``callback(step, model)`` runs after every step (a benchmark scores the autoencoder while it trains).
    Returns the loss of every step.
    """
    check_positive_int(batch_size, "batch_size")
    device = next(model.parameters()).device
    return fit(model, lambda m, x, g: autoencoder_loss(m, x, beta, kind, g),
                 lambda g: sample_images(batch_size, g).to(device), steps, lr, seed, progress=progress,
                 desc="autoencoder", callback=callback)


def psnr(images: torch.Tensor, reconstructions: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR = 10·log10(L² / MSE) in dB (inf for identical images); L = 2 for [−1, 1]."""
    check_tensor(images, "images", min_ndim=2)
    check_same_shape(images, "images", reconstructions, "reconstructions")
    mse = ((images.float() - reconstructions.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 2-D Gaussian window w(i, j) ∝ exp(−((i − c)² + (j − c)²) / (2σ²))."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(axis**2) / (2 * sigma**2))
    window = torch.outer(g, g)
    return (window / window.sum()).float()


def ssim(images: torch.Tensor, reconstructions: torch.Tensor, data_range: float = 2.0,
         window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (module docstring), 1 for identical images; local statistics over valid windows."""
    check_tensor(images, "images", ndim=4)
    check_same_shape(images, "images", reconstructions, "reconstructions")
    channels, side = images.shape[1], min(images.shape[-2:])
    size = min(window_size, side if side % 2 else side - 1)
    window = gaussian_window(size, sigma).to(images.device).expand(channels, 1, size, size)
    x, y = images.double(), reconstructions.double()
    window = window.double()

    def local_mean(a):
        return F.conv2d(a, window, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1).float()


@torch.no_grad()
def reconstruction_report(autoencoder: LatentCodec, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``autoencoder``'s reconstructions of ``images``."""
    z = autoencoder.images_to_latents(images, batch, normalized=False)
    reconstructions = autoencoder.latents_to_images(z, batch, normalized=False).clamp(-1, 1)
    return {"psnr": float(psnr(images, reconstructions).mean()), "ssim": float(ssim(images, reconstructions).mean())}


@torch.no_grad()
def fit_latent_statistics(autoencoder: LatentCodec, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """Set shift = mean(z) and scale = 1/std(z) over every element of the latents of ``images``.

    Afterwards ``autoencoder.normalize(encode(x))`` has mean ≈ 0 and std ≈ 1 on this data.
    """
    z = autoencoder.images_to_latents(images, batch, normalized=False).double()
    shift, std = float(z.mean()), float(z.std())
    if not std > 0:
        raise ValueError(f"images: expected latents that vary, got a standard deviation of {std}")
    autoencoder.shift_factor, autoencoder.scaling_factor = shift, 1.0 / std
    return {"shift_factor": shift, "scaling_factor": 1.0 / std}


def save_autoencoder(model: SmallAutoencoder, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``autoencoder.safetensors`` and ``config.json`` (shape, scale, shift and ``extra``) to ``directory``."""
    from safetensors.torch import save_file

    folder = Path(directory)
    with atomic_file(folder / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
    meta = {"_class_name": KIND, "config": asdict(model.config), "scaling_factor": model.scaling_factor,
            "shift_factor": model.shift_factor, **(extra or {})}
    write_text_atomic(folder / CONFIG_FILE, json.dumps(meta, indent=1))
    return folder


class PretrainedAutoencoder(nn.Module, LatentCodec):
    """A frozen diffusers ``AutoencoderKL`` loaded from a local directory (no download).

    ``path`` is the folder of the VAE (config.json + weights) or of a whole pipeline with a
    ``vae/`` sub-folder. encode → the latent mean; the normalisation uses the config's
    ``scaling_factor`` and ``shift_factor`` (SD3: 1.5305 and 0.0609; absent shift = 0).
    """

    def __init__(self, path: str | Path):
        super().__init__()
        folder = Path(path)
        if (folder / "vae" / CONFIG_FILE).is_file():
            folder = folder / "vae"
        if not (folder / CONFIG_FILE).is_file():
            raise MissingAutoencoderError(
                "autoencoder: expected a local diffusers AutoencoderKL folder (config.json and weights), "
                f"got {str(path)!r}")
        from diffusers import AutoencoderKL

        self.vae = AutoencoderKL.from_pretrained(folder, local_files_only=True).requires_grad_(False).eval()
        self.path = str(folder)
        self.scaling_factor = float(self.vae.config.scaling_factor or 1.0)
        self.shift_factor = float(self.vae.config.shift_factor or 0.0)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


STORED_AUTOENCODERS = Path(__file__).resolve().parent.parent / "data" / "autoencoders"
"""The course's stored autoencoders: ``load_autoencoder("shapes-32")`` reads ``STORED_AUTOENCODERS/shapes-32``."""


def load_autoencoder(path: str | Path, device=None) -> SmallAutoencoder | PretrainedAutoencoder:
    """The autoencoder saved at ``path``: a :func:`save_autoencoder` folder, a diffusers AutoencoderKL,
    or the name of a stored one (a folder of :data:`STORED_AUTOENCODERS`) when no such path exists."""
    from safetensors.torch import load_file


    folder = Path(path)
    if not folder.exists() and (STORED_AUTOENCODERS / str(path)).is_dir():
        folder = STORED_AUTOENCODERS / str(path)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file() and not (folder / "vae" / CONFIG_FILE).is_file():
        raise MissingAutoencoderError(
            f"autoencoder: no autoencoder at {str(path)!r} (expected {config_file}). Train a small one with "
            "`python -m minisd3 autoencoder --data shapes --channels 4 --out DIR`, or pass the folder of a "
            "diffusers AutoencoderKL (e.g. SD3's vae/) saved on this machine.")
    meta = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if meta.get("_class_name") != KIND:
        model: nn.Module = PretrainedAutoencoder(folder)
    else:
        model = SmallAutoencoder(AutoencoderConfig(**meta["config"]))
        load_weights_into(model, load_file(folder / WEIGHTS_FILE), "autoencoder")
        model.scaling_factor, model.shift_factor = float(meta["scaling_factor"]), float(meta["shift_factor"])
        model.requires_grad_(False).eval()
    return model.to(device or "cpu")


def describe(autoencoder: SmallAutoencoder | PretrainedAutoencoder) -> dict:
    """A JSON-able description: kind, latent channels, factor, scale and shift (recorded with latent caches)."""
    if isinstance(autoencoder, SmallAutoencoder):
        base = {"kind": KIND, **asdict(autoencoder.config)}
    else:
        base = {"kind": "diffusers.AutoencoderKL", "latent_channels": autoencoder.latent_channels,
                "factor": autoencoder.factor}
    return {**base, "scaling_factor": autoencoder.scaling_factor, "shift_factor": autoencoder.shift_factor}
