"""Latent caches: encode once, memory-map, train through the engine, decode samples; ImageFolder; clear errors."""
import json

import numpy as np
import pytest
import torch
from helpers import tiny, tiny_autoencoder_kl

from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, fit_latent_statistics, save_autoencoder
from minisd3.cli import main
from minisd3.engine.data import MissingDatasetError, caption_from_folder, image_batches, image_folder, load_images, words_of
from minisd3.engine.grids import GUTTER
from minisd3.engine.latent_cache import encode_dataset, read_latent_cache
from minisd3.engine.loop import train_run
from minisd3.engine.sources import LatentSource, TensorSource
from minisd3.seeding import make_generator
from minisd3.shapes import VOCABULARY, split_prompts


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory):
    """A small autoencoder (untrained, statistics fitted) and a cache of 24 shapes scenes of 24×24."""
    root = tmp_path_factory.mktemp("shapes")
    torch.manual_seed(0)
    model = SmallAutoencoder(AutoencoderConfig(latent_channels=4, factor=4, width=8)).eval()
    images, captions, _ = load_images("shapes", image_size=24, count=24, seed=0)
    fit_latent_statistics(model, images)
    save_autoencoder(model, root / "ae")
    batches, count, names = image_batches("shapes", image_size=24, batch=10, count=24, seed=0)
    encode_dataset(model, batches, count, root / "cache", names, VOCABULARY, {"data": "shapes", "image_size": 24},
                   root / "ae", progress=False)
    return root, model, images, captions


def test_caption_from_folder_and_vocabulary():
    assert caption_from_folder("Great_White_Shark") == "great white shark"
    assert caption_from_folder("n01440764") == "n01440764"
    assert words_of(["great white shark", "white wolf"]) == ["great", "shark", "white", "wolf"]


def test_cache_round_trips_through_mmap(shapes_cache, tmp_path):
    root, model, images, captions = shapes_cache
    cache = read_latent_cache(root / "cache")
    assert isinstance(cache.latents, np.memmap) and not cache.latents.flags.writeable
    assert cache.latents.shape == (24, 4, 6, 6) and cache.meta["shape"] == [24, 4, 6, 6]
    expected = model.images_to_latents(images)
    assert torch.allclose(torch.from_numpy(np.array(cache.latents)), expected, atol=1e-6)
    assert [cache.captions[i] for i in cache.labels] == captions
    assert cache.vocabulary == list(VOCABULARY) and cache.data == "shapes"
    assert (cache.meta["scale"], cache.meta["shift"]) == (model.scaling_factor, model.shift_factor)
    assert cache.meta["latent_mean"] == pytest.approx(0.0, abs=1e-5)
    assert cache.meta["latent_std"] == pytest.approx(1.0, abs=1e-3)
    assert cache.meta["autoencoder"]["path"] == str((root / "ae").resolve())
    assert torch.allclose(cache.to_images(expected), model.decode(model.images_to_latents(images, normalized=False)),
                          atol=1e-5)
    with pytest.raises(ValueError, match="already holds a latent cache"):
        encode_dataset(model, iter([]), 1, root / "cache", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="expected a new or empty folder"):
        encode_dataset(model, iter([]), 1, tmp_path / "busy", progress=False)
    with pytest.raises(ValueError, match="count: expected 1 images from the data, got 0"):
        encode_dataset(model, iter([]), 1, tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty").exists() and list(tmp_path.glob(".empty.*")) == []  # nothing half-written left


def test_latent_source_reuses_the_epoch_permutation(shapes_cache):
    root, model, _, captions = shapes_cache
    source = LatentSource(root / "cache", seed=3)
    reference = TensorSource(torch.zeros(24, 1, 1, 1), torch.arange(24), tuple(str(i) for i in range(24)), seed=3)
    for step in (0, 5, 11):  # crosses epoch boundaries: 24 items, batches of 5
        assert torch.equal(source.indices(step, 5), reference.indices(step, 5))
        latents, batch_captions = source.batch(step, 5, make_generator(0))
        idx = reference.indices(step, 5)
        assert latents.dtype == torch.float32 and latents.shape == (5, 4, 6, 6)
        assert torch.equal(latents, torch.from_numpy(np.array(source.cache.latents[idx.numpy()])))
        assert batch_captions == [captions[int(i)] for i in idx]
    assert source.channels == 4 and source.image_size == 6 and source.vocabulary == tuple(VOCABULARY)
    assert source.to_images(latents).shape == (5, 3, 24, 24)


def test_training_on_shapes_latents_and_decoded_samples(shapes_cache, tmp_path):
    root, *_ = shapes_cache
    config = tiny(f"latents={root / 'cache'}", "autoencoder=", "image_size=6", "patch_size=2", "max_steps=2",
                  preset="shapes")
    summary = train_run(config, tmp_path / "run", progress=False)
    assert np.isfinite(summary["loss"]) and "sliced_wasserstein" in summary["evaluation"]
    assert set(summary["evaluation"]["adherence"]) >= {"colour", "shape", "count", "overall"}  # held-out prompts
    prompts = LatentSource(root / "cache").eval_prompts(30, make_generator(0))
    assert all(split_prompts(0).is_held_out(p) for p in prompts)
    from PIL import Image

    grid = Image.open(tmp_path / "run" / "samples" / "step_0000002.png")
    assert grid.width == 8 * (144 + GUTTER) + GUTTER  # rows of 8 decoded 24-pixel images, upscaled 6×, labelled
    assert [split_prompts(0).is_held_out(p) for p in (tmp_path / "run" / "samples" / "step_0000002.txt")
            .read_text().splitlines()] == [True] * 8 + [False] * 8
    out = tmp_path / "s.png"
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--prompt", "two small red circles", "--steps", "2",
                 "--n", "2", "--out", str(out)]) == 0
    assert Image.open(out).width == 2 * (144 + GUTTER) + GUTTER


def test_latent_config_mistakes_are_named(shapes_cache, tmp_path):
    root, *_ = shapes_cache
    with pytest.raises(ValueError, match="image_size: the latent cache holds 6×6 latents"):
        train_run(tiny(f"latents={root / 'cache'}", "autoencoder=", "image_size=8", "max_steps=1", preset="shapes"), tmp_path,
              progress=False)
    with pytest.raises(ValueError, match="was encoded from 'shapes', got 'digits'"):
        train_run(tiny(f"latents={root / 'cache'}", "image_size=6", "max_steps=1", preset="digits"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="latents: an ImageFolder is trained in latent space"):
        tiny("data=imagefolder", preset="shapes")


def test_missing_cache_and_missing_autoencoder_messages(shapes_cache, tmp_path):
    root, *_ = shapes_cache
    nowhere = tmp_path / "nowhere"
    with pytest.raises(MissingDatasetError, match="minisd3 encode-latents --data cifar10 .* --data-root ROOT"):
        train_run(tiny(f"latents={nowhere}", "image_size=8", "max_steps=1", preset="cifar10"), tmp_path, progress=False)
    with pytest.raises(MissingDatasetError, match="no latent cache"):
        train_run(tiny(f"latents={tmp_path / 'nowhere'}", "max_steps=1", preset="imagenet-latents"), tmp_path, progress=False)
    with pytest.raises(MissingDatasetError, match="not on this machine; pass its folder with --set autoencoder=DIR"):
        read_latent_cache(root / "cache", autoencoder=tmp_path / "deleted")
    assert read_latent_cache(root / "cache", autoencoder=root / "ae").autoencoder_path == str(root / "ae")
    with pytest.raises(MissingDatasetError, match="expected an ImageFolder root"):
        image_folder(tmp_path / "empty", 16)


def write_image_folder(root, classes=("red_square", "blue_circle"), per_class=3):
    """A few PNGs of different sizes in class folders, as ImageNet's train/ is laid out."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20 + 4 * i, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "blue_circle" / "notes.txt").write_text("not an image")


def test_image_folder_encodes_with_autoencoder_kl_and_trains_one_step(tmp_path, capsys):

    write_image_folder(tmp_path / "images")
    folder = image_folder(tmp_path / "images", 16)
    assert len(folder) == 6 and folder.classes == ["blue_circle", "red_square"]
    image, label = folder[0]
    assert image.shape == (3, 16, 16) and -1 <= image.min() and image.max() <= 1
    tiny_autoencoder_kl(tmp_path / "vae")
    args = ["encode-latents", "--data", "imagefolder", "--data-root", str(tmp_path / "images"), "--image-size", "16",
            "--autoencoder", str(tmp_path / "vae"), "--out", str(tmp_path / "cache"), "--batch", "4", "--quiet",
            "--device", "cpu"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == [6, 4, 8, 8] and report["scale"] == 1.5 and report["shift"] == 0.1
    cache = read_latent_cache(tmp_path / "cache")
    assert cache.captions == ["blue circle", "red square"] and cache.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert cache.vocabulary == ["blue", "circle", "red", "square"]
    assert cache.meta["autoencoder"]["kind"] == "diffusers.AutoencoderKL"
    assert main(args) == 2 and "already holds a latent cache" in capsys.readouterr().err
    config = tiny(f"latents={tmp_path / 'cache'}", "image_size=8", "compile=false", "max_steps=1",
                  preset="imagenet-latents")
    summary = train_run(config, tmp_path / "run", progress=False)
    assert np.isfinite(summary["loss"])
    assert (tmp_path / "run" / "samples" / "step_0000001.png").is_file()


def test_autoencoder_command_trains_saves_and_reports(tmp_path, capsys):
    out = tmp_path / "ae"
    assert main(["autoencoder", "--data", "digits", "--factor", "2", "--channels", "4", "--width", "8", "--steps",
                 "3", "--batch", "8", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"out", "shift_factor", "scaling_factor", "psnr", "ssim"}
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["in_channels"] == 1 and meta["training"]["image_size"] == 8
    assert main(["autoencoder", "--data", "cifar10", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    assert "download=true" in capsys.readouterr().err
