"""Lesson 08 (latent space): the checks of SD3's latent statistics computed from data
(``latent_scale_shift``), the whole encode-for-diffusion piece with its inverse (``encode_for_diffusion``)
and the PSNR of a reconstruction (``psnr``), with their references and the wrong variants the checks name.

The convention is the package's (:class:`minisd3.autoencoder.LatentCodec`, :func:`minisd3.autoencoder.fit_latent_statistics`):
shift = mean of every element of the latents, scale = 1/std, the diffusion model sees z′ = (z − shift)·scale and
decoding inverts it, z = z′/scale + shift. The standard deviation may be the sample one (÷ N − 1, torch's
default) or the population one (÷ N): on the check's 32 768 numbers the two differ by 2·10⁻⁵, within tolerance.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...autoencoder import AutoencoderConfig, SmallAutoencoder
from ...autoencoder import kl_divergence as _package_kl
from ...autoencoder import psnr as _package_psnr
from ...seeding import make_generator, rand, randn
from .core import Mistake, _as_number, _call, _check, _compare, _near, error_summary

# ---------------------------------------------------------------------------------------------
# latent_scale_shift
# ---------------------------------------------------------------------------------------------


def _latent_scale_shift_reference(latents: torch.Tensor) -> tuple[float, float]:
    """(shift, scale) = (mean, 1/std) over every element of ``latents``, as :func:`minisd3.autoencoder.fit_latent_statistics`."""
    z = latents.detach().double()
    return float(z.mean()), 1.0 / float(z.std())


_CHANNEL_MEANS = (0.8, -0.5, 1.6, 0.2)
_CHANNEL_STDS = (2.5, 1.0, 4.0, 0.6)


def _test_latents(seed: int, batch: int = 128) -> torch.Tensor:
    """(batch, 4, 8, 8) latents whose channels have different means and spreads, as an autoencoder's do."""
    z = randn((batch, 4, 8, 8), make_generator(seed))
    return z * torch.tensor(_CHANNEL_STDS)[:, None, None] + torch.tensor(_CHANNEL_MEANS)[:, None, None]


def _two_numbers(got, name: str) -> tuple:
    if isinstance(got, torch.Tensor) or not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise Mistake(f"{name} should return two numbers (shift, scale), got {kind}")
    return tuple(got)


@_check("latent_scale_shift", "shift = mean and scale = 1/std over every element of the latents, as SD3")
def check_latent_scale_shift(latent_scale_shift: Callable) -> None:
    """Check ``latent_scale_shift(latents)`` → (shift, scale), two numbers: the mean of every element of the
    latents and one over their standard deviation, so that (z − shift)·scale has mean 0 and std 1; on latents
    whose channels differ in mean and spread (so per-channel statistics show)."""
    for seed in (801, 802):
        z = _test_latents(seed)
        got = _two_numbers(_call(latent_scale_shift, "latent_scale_shift", z.clone()), "latent_scale_shift")
        if any(isinstance(v, torch.Tensor) and v.numel() == z.shape[1] for v in got):
            raise Mistake(f"returned {z.shape[1]} numbers per statistic, one per channel: SD3 (and the package) use one "
                          "shift and one scale for every element of the latents, shift = z.mean(), scale = 1 / z.std()",
                          "per_channel")
        shift, scale = (_as_number(v, "latent_scale_shift") for v in got)
        zd = z.double()
        mean, std = float(zd.mean()), float(zd.std())
        rms = float(zd.pow(2).mean().sqrt())
        if _near(shift, mean) and _near(scale, 1 / std):
            continue
        variants = [
            ("order_swapped", "returned (scale, shift): return them in the order (shift, scale)",
             (1 / std, mean)),
            ("scale_is_std", "scale is the standard deviation itself: it is 1/std, so that multiplying by it brings "
             "the spread to 1, z′ = (z − shift)·scale", (mean, std)),
            ("variance_not_std", "used the variance: scale = 1/std, the square root of the variance", (mean, 1 / std**2)),
            ("rms_not_std", "the spread was measured around 0, not around the mean: scale = 1/std = 1/√mean((z − shift)²), "
             "not 1/√mean(z²)", (mean, 1 / rms)),
            ("max_not_std", "scaled by the largest value: scale = 1/std, the standard deviation of the latents, "
             "not 1/max |z|", (mean, 1 / float(zd.abs().max()))),
            ("missing_shift", "the shift is missing (0): shift is the mean of the latents", (0.0, 1 / std)),
        ]
        for mistake, message, (want_shift, want_scale) in variants:
            if _near(shift, want_shift) and _near(scale, want_scale):
                raise Mistake(message, mistake)
        if not _near(shift, mean):
            raise Mistake(f"shift is {shift:.5g}, the mean of every element of the latents is {mean:.5g}")
        raise Mistake(f"scale is {scale:.5g}, one over the standard deviation of every element is {1 / std:.5g}")


# ---------------------------------------------------------------------------------------------
# encode_for_diffusion
# ---------------------------------------------------------------------------------------------

_STORED_SHIFT, _STORED_SCALE = 0.25, 0.5
"""The tiny autoencoder's own factors, left from other data: using them instead of fitting is a named mistake."""


def _tiny_autoencoder(seed: int = 803) -> SmallAutoencoder:
    """A small random autoencoder (f = 2, 4 channels) whose latent channels differ in mean and spread."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallAutoencoder(AutoencoderConfig(in_channels=3, latent_channels=4, factor=2, width=8)).eval()
    last = model.encoder[-1]
    with torch.no_grad():
        stds, means = torch.tensor(_CHANNEL_STDS), torch.tensor(_CHANNEL_MEANS)
        last.weight[:4] *= 8 * stds[:, None, None, None]
        last.bias[:4] += means
    model.requires_grad_(False)
    model.shift_factor, model.scaling_factor = _STORED_SHIFT, _STORED_SCALE
    return model


def _test_images(seed: int, batch: int = 64) -> torch.Tensor:
    return 2 * rand((batch, 3, 16, 16), make_generator(seed)) - 1


def _encode_for_diffusion_reference(autoencoder, images: torch.Tensor):
    """(z′, decode_from_diffusion): z′ = (μ − shift)·scale with μ the encoder's mean and (shift, scale) the
    latents' own mean and 1/std; decode_from_diffusion(z′) = decode(z′/scale + shift)."""
    with torch.no_grad():
        mu = autoencoder.encode(images)
    shift, scale = _latent_scale_shift_reference(mu)

    def decode_from_diffusion(latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return autoencoder.decode(latents / scale + shift)

    return (mu - shift) * scale, decode_from_diffusion


_ENCODE_FORMULA = "z′ = (μ − shift)·scale, μ = autoencoder.encode(images), shift = mean(μ), scale = 1/std(μ)"
_DECODE_FORMULA = "decode_from_diffusion(z′) = autoencoder.decode(z′/scale + shift)"


@_check("encode_for_diffusion", "normalised latents of mean 0 and std 1 from the encoder's mean, and their exact inverse")
def check_encode_for_diffusion(encode_for_diffusion: Callable) -> None:
    """Check ``encode_for_diffusion(autoencoder, images)`` → ``(latents, decode_from_diffusion)`` on a tiny random
    autoencoder whose own (stale) factors are not the data's: ``latents`` must be the encoder's mean μ normalised
    with statistics of these latents, z′ = (μ − mean μ)/std μ, and ``decode_from_diffusion(z′)`` must decode
    z′/scale + shift, for the encoded latents and for fresh N(0, I) latents such as a diffusion model samples."""
    autoencoder = _tiny_autoencoder()
    images = _test_images(804)
    want, reference_decode = _encode_for_diffusion_reference(autoencoder, images)
    got = _call(encode_for_diffusion, "encode_for_diffusion", autoencoder, images.clone())
    if isinstance(got, torch.Tensor) or not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Mistake("should return two things, (latents, decode_from_diffusion): the normalised latents and the "
                      "function that turns normalised latents back into images")
    latents, decode = got
    if callable(latents) and isinstance(decode, torch.Tensor):
        raise Mistake("returned (decode_from_diffusion, latents): return them in the order (latents, decode_from_diffusion)",
                      "order_swapped")
    with torch.no_grad():
        mu = autoencoder.encode(images).double()
        mean, std = float(mu.mean()), float(mu.std())
        image_mean, image_std = float(images.double().mean()), float(images.double().std())
        channel_mean = mu.mean((0, 2, 3), keepdim=True)
        channel_std = mu.std((0, 2, 3), keepdim=True)
    if isinstance(latents, torch.Tensor) and tuple(latents.shape) == tuple(want.shape):
        again = _call(encode_for_diffusion, "encode_for_diffusion", autoencoder, images.clone())
        other = again[0] if isinstance(again, (tuple, list)) and len(again) == 2 else None
        if isinstance(other, torch.Tensor) and other.shape == latents.shape and not torch.allclose(
                other.detach().double(), latents.detach().double(), atol=1e-5):
            raise Mistake("two calls on the same images gave different latents: they carry the encoder's sampling noise; "
                          "use the mean μ = autoencoder.encode(images) (the diffusion model is trained on μ), not a sample "
                          "μ + σ·n", "sampled_not_mean")
    mutations = [
        ("not_normalized", "the latents are not normalised: the diffusion model sees z′ = (μ − shift)·scale, with "
         "shift = mean(μ) and scale = 1/std(μ), so that z′ has mean 0 and std 1", mu),
        ("stored_factors", "used the autoencoder's own scaling_factor and shift_factor: they were set for other data; "
         "compute shift and scale from these latents (your latent_scale_shift)", (mu - _STORED_SHIFT) * _STORED_SCALE),
        ("scale_is_std", "multiplied by the standard deviation: scale = 1/std, so z′ = (μ − shift)·scale = (μ − mean)/std",
         (mu - mean) * std),
        ("shift_after_scale", "shifted after scaling: z′ = (μ − shift)·scale, the mean subtracted first",
         mu / std - mean),
        ("per_channel", "normalised each channel by its own statistics: SD3 (and the package) use one shift and one "
         "scale for every element of the latents", (mu - channel_mean) / channel_std),
        ("statistics_of_images", "the statistics come from the images: shift and scale are the mean and 1/std of the "
         "latents μ, the numbers the diffusion model sees", (mu - image_mean) / image_std),
    ]
    _compare(latents, want, mutations, formula=_ENCODE_FORMULA, atol=1e-4,
             shape_hint="the latents have the encoder's shape (B, c, H/f, W/f)")
    if not callable(decode):
        raise Mistake(f"the second thing returned should be a function latents → images, got {type(decode).__name__}")
    samples = randn(want.shape, make_generator(805))
    for what, z in (("the latents it encoded", want.float()), ("fresh N(0, I) latents (a diffusion model's samples)", samples)):
        out = _call(decode, "decode_from_diffusion", z.clone())
        zd = z.double()
        with torch.no_grad():
            decoded = [autoencoder.decode(x.float()).double() for x in
                       (zd / std + mean, (zd + mean) * std, zd * std - mean, zd, (zd - mean) / std)]
        mutations = [
            ("inverse_multiplies", "the inverse multiplies by scale: undo z′ = (z − shift)·scale by dividing, "
             "z = z′/scale + shift", decoded[0]),
            ("inverse_wrong_order", "the inverse adds the shift before dividing: z = z′/scale + shift, divide first",
             decoded[1]),
            ("inverse_shift_sign", "the inverse subtracts the shift: z = z′/scale + shift", decoded[2]),
            ("not_denormalized", "decoded the normalised latents directly: the decoder expects z = z′/scale + shift",
             decoded[3]),
            ("normalized_again", "normalised again instead of inverting: decode z = z′/scale + shift, not (z′ − shift)·scale",
             decoded[4]),
        ]
        with torch.no_grad():
            right = reference_decode(z).double()
        try:
            _compare(out, right, mutations, formula=_DECODE_FORMULA, atol=1e-4,
                     shape_hint="decode_from_diffusion returns images (B, 3, H, W)")
        except Mistake as err:
            raise Mistake(f"decode_from_diffusion on {what}: {err}", err.mistake) from None


# ---------------------------------------------------------------------------------------------
# psnr
# ---------------------------------------------------------------------------------------------

_PSNR_FORMULA = "PSNR = 10·log10(L² / MSE) per image, L = 2, MSE the mean over the image's elements"


@_check("psnr", "10·log10(L²/MSE) per image with L = 2, as minisd3.autoencoder.psnr")
def check_psnr(psnr: Callable) -> None:
    """Check ``psnr(images, reconstructions)`` → (B,) PSNR in dB, one per image, for images in [−1, 1] (peak-to-peak
    range L = 2): 10·log10(L²/MSE), MSE the mean squared difference over the image's elements; on images whose
    errors differ from image to image (so a batch-wide MSE shows)."""
    gen = make_generator(806)
    images = (2 * rand((6, 3, 8, 8), gen) - 1)
    levels = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.3, 0.5])[:, None, None, None]
    recon = (images + levels * randn(images.shape, gen)).clamp(-1, 1)
    got = _call(psnr, "psnr", images.clone(), recon.clone())
    x, y = images.double(), recon.double()
    mse = ((x - y) ** 2).flatten(1).mean(1)
    want = 10 * torch.log10(4 / mse)
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not _near(float(got), float(want.mean()), rel=1e-3):
        one = float(got)
        if _near(one, 10 * math.log10(4 / float(mse.mean())), rel=1e-4):
            raise Mistake("one number for the whole batch (the MSE over every image): PSNR is per image, "
                          "10·log10(L²/MSE) with each image's own MSE, shape (B,)", "batch_mse")
        raise Mistake("one number for the whole batch: PSNR is per image, shape (B,)", "batch_mse")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        raise Mistake("averaged the PSNR over the batch: return one value per image, shape (B,)", "averaged_over_batch")
    elements = x[0].numel()
    mutations = [
        ("peak_one", "used L = 1: the images lie in [−1, 1], so the peak-to-peak range is L = 2 (+6.02 dB)",
         10 * torch.log10(1 / mse)),
        ("peak_255", "used L = 255 (8-bit images): these images lie in [−1, 1], L = 2", 10 * torch.log10(255**2 / mse)),
        ("peak_not_squared", "the peak is not squared: PSNR = 10·log10(L²/MSE)", 10 * torch.log10(2 / mse)),
        ("twenty_log", "20·log10 of a ratio of squares: PSNR = 10·log10(L²/MSE) (or 20·log10(L/√MSE))",
         20 * torch.log10(4 / mse)),
        ("natural_log", "used the natural log: decibels use log10, PSNR = 10·log10(L²/MSE)", 10 * torch.log(4 / mse)),
        ("rmse_not_mse", "divided by the root of the MSE: PSNR = 10·log10(L²/MSE), the mean squared error itself",
         10 * torch.log10(4 / mse.sqrt())),
        ("sum_not_mean", "summed the squared errors over the image: MSE is their mean over the image's elements",
         10 * torch.log10(4 / (mse * elements))),
        ("inverted_ratio", "the ratio is upside down: PSNR = 10·log10(L²/MSE), larger for better reconstructions",
         10 * torch.log10(mse / 4)),
    ]
    _compare(got, want, mutations, formula=_PSNR_FORMULA, atol=1e-3,
             shape_hint="one PSNR per image, shape (B,): the mean over each image's elements, .flatten(1).mean(1)")
    same = _call(psnr, "psnr", images.clone(), images.clone())
    if isinstance(same, torch.Tensor) and not bool(torch.isinf(same.double()).all() | (same.double() > 60).all()):
        raise Mistake("identical images should give PSNR = ∞ (MSE = 0) or a very large number, got "
                      f"{[round(float(v), 2) for v in same.flatten()[:3]]}…")


def _psnr_reference(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """:func:`minisd3.autoencoder.psnr` with L = 2."""
    return _package_psnr(images, reconstructions, data_range=2.0)


# ---------------------------------------------------------------------------------------------
# sample_and_kl
# ---------------------------------------------------------------------------------------------

def _sample_and_kl_reference(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor):
    """(z, KL): z = μ + exp(½·log σ²)·n, KL = mean over every element of ½(μ² + σ² − 1 − log σ²), as
    :meth:`minisd3.autoencoder.SmallAutoencoder.forward` and :func:`minisd3.autoencoder.kl_divergence`."""
    return mean + torch.exp(0.5 * logvar) * noise, _package_kl(mean, logvar)


_SAMPLE_FORMULA = "z = μ + σ·n, σ = exp(½·log σ²)"
_KL_FORMULA = "KL = mean over every element of ½(μ² + σ² − 1 − log σ²)"


@_check("sample_and_kl", "z = μ + exp(½·log σ²)·n and KL = mean of ½(μ² + σ² − 1 − log σ²), as the package")
def check_sample_and_kl(sample_and_kl: Callable) -> None:
    """Check ``sample_and_kl(mean, logvar, noise)`` → ``(z, kl)`` on (B, c, h, w) moments whose log-variances are
    far from 0 and differ from image to image: z the reparameterised sample μ + σ·n, kl one number, the mean over
    every latent element of KL(N(μ, σ²) ‖ N(0, 1)), as the package's autoencoder computes them."""
    gen = make_generator(807)
    mean = 1.5 * randn((4, 4, 3, 3), gen)
    logvar = -3.0 + 2.5 * randn((4, 4, 3, 3), gen) + torch.arange(4.0)[:, None, None, None]
    noise = randn(mean.shape, gen)
    got = _call(sample_and_kl, "sample_and_kl", mean.clone(), logvar.clone(), noise.clone())
    if isinstance(got, torch.Tensor) or not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Mistake("should return two things, (z, kl): the sample and the KL term")
    z, kl = got
    m, lv, n = mean.double(), logvar.double(), noise.double()
    want_z, want_kl = _sample_and_kl_reference(m, lv, n)
    if (not isinstance(z, torch.Tensor) or z.numel() == 1) and isinstance(kl, torch.Tensor) and kl.shape == mean.shape:
        raise Mistake("returned (kl, z): return them in the order (z, kl)", "order_swapped")
    sigma = torch.exp(0.5 * lv)
    sample_mutations = [
        ("std_is_variance", "multiplied the noise by σ² = exp(log σ²): the standard deviation is σ = exp(½·log σ²)",
         m + torch.exp(lv) * n),
        ("logvar_as_std", "multiplied the noise by log σ² itself: σ = exp(½·log σ²)", m + lv * n),
        ("std_not_exponentiated", "multiplied the noise by ½·log σ²: exponentiate it, σ = exp(½·log σ²)", m + 0.5 * lv * n),
        ("missing_mean", "the mean is missing: z = μ + σ·n", sigma * n),
        ("returned_mean", "returned the mean, not a sample: z = μ + σ·n with the noise you are given", m),
    ]
    try:
        _compare(z, want_z, sample_mutations, formula=_SAMPLE_FORMULA, atol=1e-4,
                 shape_hint="z has the shape of mean, (B, c, h, w)")
    except Mistake as err:
        if err.mistake is None and isinstance(z, torch.Tensor) and z.shape == mean.shape:
            drawn = ((z.detach().double() - m) / sigma).flatten()
            if 0.6 < float(drawn.std()) < 1.5 and float(torch.corrcoef(torch.stack([drawn, n.flatten()]))[0, 1]) < 0.5:
                raise Mistake("z = μ + σ·(noise of your own): use the noise you are given, z = μ + σ·noise, so that "
                              "the sample is reproducible and the check can follow it", "ignores_noise") from None
        raise
    if isinstance(kl, torch.Tensor) and kl.numel() == mean.shape[0] and kl.numel() != 1:
        per_image = (0.5 * (m**2 + lv.exp() - 1 - lv)).flatten(1)
        if torch.allclose(kl.detach().double().flatten(), per_image.sum(1), rtol=1e-4):
            raise Mistake("returned one KL per image, summed over its elements: the package's KL is one number, "
                          "the mean over every latent element", "kl_per_image")
        raise Mistake("returned one KL per image: the package's KL is one number, the mean over every latent element",
                      "kl_per_image")
    value = _as_number(kl, "sample_and_kl's kl")
    want = float(want_kl)
    if _near(value, want):
        return
    terms = 0.5 * (m**2 + lv.exp() - 1 - lv)
    variants = [
        ("kl_sum_not_mean", "summed the KL over the elements: the package takes the mean over every latent element",
         float(terms.sum())),
        ("kl_sum_per_image", "summed over each image's elements and averaged over the batch: the package takes the "
         "mean over every element", float(terms.flatten(1).sum(1).mean())),
        ("kl_missing_half", "the factor ½ is missing: KL = ½(μ² + σ² − 1 − log σ²)", float(2 * terms.mean())),
        ("kl_sigma_not_variance", "used σ where the formula has σ²: KL = ½(μ² + σ² − 1 − log σ²), σ² = exp(log σ²)",
         float((0.5 * (m**2 + sigma - 1 - lv)).mean())),
        ("kl_logvar_sign", "the sign of log σ² is flipped: KL = ½(μ² + σ² − 1 − log σ²)",
         float((0.5 * (m**2 + lv.exp() - 1 + lv)).mean())),
        ("kl_missing_mean_term", "the μ² term is missing: KL = ½(μ² + σ² − 1 − log σ²)",
         float((0.5 * (lv.exp() - 1 - lv)).mean())),
        ("kl_negated", "the KL is negative: KL = ½(μ² + σ² − 1 − log σ²) ≥ 0 (the negative is the ELBO's term)",
         -want),
        ("kl_of_sample", "used the sample z in place of μ: the KL is a closed form of μ and log σ²",
         float((0.5 * (want_z**2 + lv.exp() - 1 - lv)).mean())),
    ]
    for mistake, message, wrong in variants:
        if _near(value, wrong):
            raise Mistake(message, mistake)
    raise Mistake(f"kl is {value:.5g}, {_KL_FORMULA} gives {want:.5g}")


# ---------------------------------------------------------------------------------------------
# latent_tokens
# ---------------------------------------------------------------------------------------------

def _latent_tokens_reference(height: int, width: int, factor: int, channels: int, patch: int):
    """((c, H/f, W/f), (H/(f·p))·(W/(f·p))); ValueError when H or W is not a multiple of f·p."""
    for name, size in (("height", height), ("width", width)):
        if size % (factor * patch):
            raise ValueError(f"{name}: expected a multiple of factor × patch = {factor * patch}, got {size}")
    return (channels, height // factor, width // factor), (height // (factor * patch)) * (width // (factor * patch))


_TOKEN_CASES = ((256, 256, 8, 16, 2), (96, 64, 4, 4, 2), (48, 80, 2, 8, 4), (512, 384, 8, 16, 1))
"""(H, W, f, c, p): square and not, p = 1, and c differing from f (so that swapped arguments show)."""


@_check("latent_tokens", "latent shape (c, H/f, W/f) and (H/(f·p))·(W/(f·p)) tokens, with an error for other sizes")
def check_latent_tokens(latent_tokens: Callable) -> None:
    """Check ``latent_tokens(height, width, factor, channels, patch)`` → ``((c, H/f, W/f), tokens)`` with
    tokens = (H/(f·p))·(W/(f·p)) the number of image tokens after p×p patchify of the latents, on square and
    oblong images; and a ValueError that names the size when H or W is not a multiple of f·p."""
    for height, width, factor, channels, patch in _TOKEN_CASES:
        got = _call(latent_tokens, "latent_tokens", height, width, factor, channels, patch)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mistake(f"should return two things, (shape, tokens), got {type(got).__name__}")
        shape, tokens = got
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if isinstance(tokens, (tuple, list, torch.Size)) and isinstance(shape, (int, float)):
            raise Mistake("returned (tokens, shape): return them in the order (shape, tokens)", "order_swapped")
        if not isinstance(shape, (tuple, list)) or len(shape) != 3:
            raise Mistake(f"the shape should be three numbers (c, H/f, W/f), got {shape!r}")
        shape = tuple(int(s) for s in shape)
        h, w = height // factor, width // factor
        want_shape = (channels, h, w)
        where = f"for H = {height}, W = {width}, f = {factor}, c = {channels}"
        if shape != want_shape:
            shapes = [
                ("channels_last", "channels last: PyTorch's latents are (c, H/f, W/f), channels first", (h, w, channels)),
                ("upsampled", "multiplied by the factor: the encoder downsamples, (c, H/f, W/f)",
                 (channels, height * factor, width * factor)),
                ("height_width_swapped", "height and width swapped: (c, H/f, W/f)", (channels, w, h)),
                ("image_channels", "kept the image's 3 channels: the latents have c channels, (c, H/f, W/f)", (3, h, w)),
                ("factor_squared", "divided by f² per side: the factor f is per side, (c, H/f, W/f)",
                 (channels, height // factor**2, width // factor**2)),
            ]
            for mistake, message, wrong in shapes:
                if shape == wrong:
                    raise Mistake(f"{message} {where}, expected {want_shape}, got {shape}", mistake)
            raise Mistake(f"latent shape {shape} {where}, expected (c, H/f, W/f) = {want_shape}")
        want = (h // patch) * (w // patch)
        value = _as_number(tokens, "latent_tokens's tokens")
        if value == want:
            continue
        counts = [
            ("tokens_from_pixels", "counted patches of the image, not of the latents: the latents are f times smaller "
             "per side, tokens = (H/(f·p))·(W/(f·p))", (height // patch) * (width // patch)),
            ("no_patchify", "counted latent pixels: each token is a p×p patch of the latents, tokens = (H/(f·p))·(W/(f·p))",
             h * w),
            ("patch_not_squared", "divided by p once: a patch covers p×p latent pixels, tokens = (H/(f·p))·(W/(f·p))",
             h * w // patch),
            ("factor_not_squared", "divided by f once: the latents are f times smaller per side, so f² fewer pixels, "
             "tokens = (H/(f·p))·(W/(f·p))", height * width // (factor * patch**2)),
            ("tokens_times_channels", "multiplied by the channels: a token holds all c channels of its patch (c·p² "
             "numbers), tokens = (H/(f·p))·(W/(f·p))", channels * (h // patch) * (w // patch)),
        ]
        for mistake, message, wrong in counts:
            if value == wrong:
                raise Mistake(f"{message} ({where}, p = {patch}: expected {want}, got {value:g})", mistake)
        raise Mistake(f"tokens = {value:g} {where}, p = {patch}: expected (H/(f·p))·(W/(f·p)) = {want}")
    for height, width, factor, patch, bad in ((100, 96, 8, 2, "height"), (64, 72, 8, 2, "width"), (68, 64, 4, 2, "height")):
        try:
            got = latent_tokens(height, width, factor, 4, patch)
        except NotImplementedError:
            raise
        except ValueError as err:
            if bad not in str(err).lower():
                raise Mistake(f"the ValueError for {bad} = {height if bad == 'height' else width} (f = {factor}, "
                              f"p = {patch}) should name the argument '{bad}', got: {error_summary(err)}",
                              "error_without_name") from None
            continue
        except Exception as err:
            raise Mistake(f"{bad} = {height if bad == 'height' else width} with f·p = {factor * patch}: raise a "
                          f"ValueError that names it, got {type(err).__name__}: {error_summary(err)}",
                          "wrong_error_type") from None
        size = height if bad == "height" else width
        mistake = "divisible_by_factor_only" if size % factor == 0 else "no_error"
        why = (f"is a multiple of f = {factor} but not of f·p = {factor * patch}, so the latents do not split into "
               f"{patch}×{patch} patches" if mistake == "divisible_by_factor_only"
               else f"is not a multiple of f·p = {factor * patch}")
        raise Mistake(f"{bad} = {size} {why}: raise a ValueError that names '{bad}', got {got!r}", mistake)
