"""The small KL autoencoder, its metrics (PSNR, SSIM), latent scale and shift, saving, and diffusers' AutoencoderKL."""
import json
import math

import pytest
import torch
from helpers import tiny_autoencoder_kl

from minisd3.autoencoder import (
    AutoencoderConfig,
    MissingAutoencoderError,
    PretrainedAutoencoder,
    SmallAutoencoder,
    autoencoder_loss,
    fit_latent_statistics,
    gaussian_window,
    kl_divergence,
    load_autoencoder,
    psnr,
    reconstruction_report,
    save_autoencoder,
    ssim,
    train_autoencoder,
)
from minisd3.seeding import make_generator
from minisd3.shapes import sample_shapes
from minisd3.training import row_sampler


def small(channels=4, factor=4, width=8, in_channels=3):
    torch.manual_seed(0)
    return SmallAutoencoder(AutoencoderConfig(in_channels, channels, factor, width))


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("channels", [4, 8, 16])
def test_shapes_of_latents_and_reconstructions(factor, channels):
    model = small(channels, factor)
    x = torch.randn(2, 3, 16, 24)
    z = model.encode(x)
    assert z.shape == (2, channels, 16 // factor, 24 // factor)
    assert model.decode(z).shape == x.shape
    reconstruction, mean, logvar = model(x, make_generator(0))
    assert reconstruction.shape == x.shape and mean.shape == logvar.shape == z.shape


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ValueError, match="factor: expected a downsampling factor 2, 4 or 8, got 16"):
        AutoencoderConfig(factor=16).validate()
    with pytest.raises(ValueError, match="latent_channels: expected 4, 8 or 16, got 5"):
        SmallAutoencoder(AutoencoderConfig(latent_channels=5))
    with pytest.raises(ValueError, match=r"images: expected shape \(B, 3, H, W\) with H and W multiples of 4"):
        small().encode(torch.randn(1, 3, 10, 12))
    with pytest.raises(ValueError, match="kind: expected 'l1' or 'mse'"):
        autoencoder_loss(small(), torch.randn(1, 3, 8, 8), kind="l2")


def test_kl_is_zero_at_the_prior_positive_elsewhere_and_matches_the_formula():
    zeros = torch.zeros(2, 4, 3, 3)
    assert kl_divergence(zeros, zeros).item() == 0.0
    g = make_generator(1)
    mean, logvar = torch.randn(64, 4, 3, 3, generator=g), 3 * torch.randn(64, 4, 3, 3, generator=g)
    assert kl_divergence(mean, logvar).item() > 0
    # ½(μ² + σ² − 1 − log σ²) with μ = 1, σ² = e: ½(1 + e − 1 − 1) = (e − 1)/2
    assert kl_divergence(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).item() == pytest.approx((math.e - 1) / 2)
    # per-element KL against torch.distributions
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    assert kl_divergence(mean, logvar).item() == pytest.approx(torch.distributions.kl_divergence(q, p).mean().item(),
                                                               rel=1e-5)


def test_psnr_of_identical_images_is_infinite_and_known_for_a_fixed_mse():
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    # MSE = 0.01 on data range 2: 10·log10(4 / 0.01) = 26.0206 dB
    assert psnr(x, x + 0.1) == pytest.approx(torch.full((3,), 10 * math.log10(400.0)), abs=1e-3)
    assert psnr(x, x + 0.1, data_range=1.0)[0].item() == pytest.approx(20.0, abs=1e-3)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    images, _ = sample_shapes(4, make_generator(0), image_size=32)
    assert torch.allclose(ssim(images, images), torch.ones(4))
    g = make_generator(2)
    scores = [ssim(images, images + s * torch.randn(images.shape, generator=g)).mean().item() for s in (0.05, 0.2, 0.5)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    noisy = images + 0.3 * torch.randn(images.shape, generator=g)
    assert torch.allclose(ssim(images, noisy), ssim(noisy, images))  # symmetric


def test_ssim_of_constant_images_is_the_luminance_term():
    # constant images have σ = 0, so SSIM = (2ab + C1) / (a² + b² + C1) with C1 = (0.01·L)²
    a, b, c1 = 0.5, -0.25, (0.01 * 2) ** 2
    value = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    window = gaussian_window(11, 1.5)
    assert window.sum().item() == pytest.approx(1.0) and window[5, 5] == window.max()
    assert ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)).item() == pytest.approx(1.0)  # window shrinks to 7


def test_reconstructions_improve_with_training():
    images, _ = sample_shapes(256, make_generator(0), image_size=24)
    test, _ = sample_shapes(32, make_generator(1), image_size=24)
    model = small(width=8)
    before = reconstruction_report(model, test)
    losses = train_autoencoder(model, row_sampler(images), steps=40, batch_size=16, lr=3e-3, progress=False)
    after = reconstruction_report(model, test)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert after["psnr"] > before["psnr"] + 3 and after["ssim"] > before["ssim"]


def test_scale_and_shift_make_latents_zero_mean_unit_std():
    images, _ = sample_shapes(64, make_generator(0), image_size=24)
    model = small().eval()
    raw = model.images_to_latents(images, normalized=False)
    stats = fit_latent_statistics(model, images)
    assert stats["shift_factor"] == pytest.approx(raw.mean().item(), abs=1e-6)
    z = model.images_to_latents(images)
    assert abs(z.mean().item()) < 1e-5 and z.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(model.denormalize(z), raw, atol=1e-5)
    assert torch.allclose(model.latents_to_images(z), model.decode(raw), atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    model = small(8, 2).eval()
    images, _ = sample_shapes(8, make_generator(0), image_size=24)
    fit_latent_statistics(model, images)
    save_autoencoder(model, tmp_path / "ae", {"training": {"steps": 0}})
    meta = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert meta["config"] == {"in_channels": 3, "latent_channels": 8, "factor": 2, "width": 8}
    assert meta["training"] == {"steps": 0} and meta["scaling_factor"] == model.scaling_factor
    loaded = load_autoencoder(tmp_path / "ae")
    assert isinstance(loaded, SmallAutoencoder) and not loaded.training
    assert (loaded.scaling_factor, loaded.shift_factor) == (model.scaling_factor, model.shift_factor)
    assert torch.equal(loaded.images_to_latents(images), model.images_to_latents(images))


def test_missing_autoencoder_says_how_to_make_one(tmp_path):
    with pytest.raises(MissingAutoencoderError, match="python -m minisd3 autoencoder --data shapes"):
        load_autoencoder(tmp_path / "nowhere")
    with pytest.raises(MissingAutoencoderError, match="diffusers AutoencoderKL"):
        PretrainedAutoencoder(tmp_path)


def test_pretrained_autoencoder_kl_through_the_same_interface(tmp_path):
    vae = tiny_autoencoder_kl(tmp_path / "pipe" / "vae")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for path in (tmp_path / "pipe" / "vae", tmp_path / "pipe"):  # the VAE folder or a pipeline with vae/
        model = load_autoencoder(path)
        assert isinstance(model, PretrainedAutoencoder)
        assert (model.scaling_factor, model.shift_factor, model.latent_channels, model.factor) == (1.5, 0.1, 4, 2)
        with torch.no_grad():
            mean = vae.encode(x).latent_dist.mean
            assert torch.allclose(model.encode(x), mean, atol=1e-6)
            assert torch.allclose(model.images_to_latents(x), (mean - 0.1) * 1.5, atol=1e-5)
            assert torch.allclose(model.latents_to_images((mean - 0.1) * 1.5), vae.decode(mean).sample, atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())
    report = reconstruction_report(model, x)
    assert set(report) == {"psnr", "ssim"}


def test_pretrained_autoencoder_without_shift_uses_zero(tmp_path):
    tiny_autoencoder_kl(tmp_path / "vae", scaling_factor=0.18215, shift_factor=None)
    model = PretrainedAutoencoder(tmp_path / "vae")
    assert (model.scaling_factor, model.shift_factor) == (0.18215, 0.0)
