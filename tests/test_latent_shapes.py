"""Shapes encoded on the fly by a frozen autoencoder, float16 export, stored names, bf16 on CPU, text_length."""
import json
import shutil

import pytest
import torch
from helpers import tiny, tiny_shapes_autoencoder
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import minisd3.autoencoder as autoencoder_module
import minisd3.engine.checkpoints as checkpoint_module
import minisd3.engine.loop as trainer_module
from minisd3.autoencoder import AutoencoderConfig, SmallAutoencoder, load_autoencoder, save_autoencoder
from minisd3.cli import main
from minisd3.engine.checkpoints import CheckpointError, export_weights, load_run, resolve_checkpoint
from minisd3.engine.config import build_model
from minisd3.engine.grids import GUTTER
from minisd3.engine.loop import step_generator, train_run
from minisd3.engine.sources import ShapesLatentSource, ShapesSource, make_source
from minisd3.seeding import make_generator
from minisd3.shapes import VOCABULARY, sample_shapes, split_prompts

# a latent-space shapes run shrunk to seconds: 8×8 latents of 32-pixel canvases (f = 4)
TINY_LATENT = ["image_size=8", "patch_size=2", "depth=1", "heads=2", "head_dim=8", "text_dim=16", "text_depth=1",
               "text_length=11", "batch_size=4", "eval_samples=4", "sample_every=2", "ckpt_every=2", "sample_steps=2",
               "warmup_steps=1", "log_every=1", "device=cpu", "bf16=true"]
PROMPT = "one small red circle"


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    """A tiny SmallAutoencoder (width 8, 4 channels, f = 4) with a non-trivial scale and shift, saved."""
    return tiny_shapes_autoencoder(tmp_path_factory.mktemp("ae") / "ae")


@pytest.fixture(scope="module")
def latent_run(ae, tmp_path_factory):
    """A two-step latent shapes run made through the command line (bf16, text_length 11)."""
    run = tmp_path_factory.mktemp("latent_run") / "run"
    sets = [arg for key in [f"autoencoder={ae}", *TINY_LATENT] for arg in ("--set", key)]
    assert main(["train", "--preset", "shapes", *sets, "--max-steps", "2", "--quiet", "--out", str(run)]) == 0
    return run


def test_shapes_latent_source_encodes_fresh_scenes_with_the_frozen_autoencoder(ae):
    source = ShapesLatentSource(ae, 8, seed=0)
    codec = load_autoencoder(ae)
    assert (source.channels, source.image_size, source.vocabulary) == (4, 32, tuple(VOCABULARY))
    assert (codec.factor, codec.latent_channels) == (4, 4)
    latents, captions = source.batch(3, 4, step_generator(0, 3))
    assert latents.shape == (4, 4, 8, 8) and latents.dtype == torch.float32 and not latents.requires_grad
    again, captions_again = source.batch(3, 4, step_generator(0, 3))
    assert torch.equal(latents, again) and captions == captions_again
    other, _ = source.batch(4, 4, step_generator(0, 4))
    assert not torch.allclose(latents, other)
    images, expected_captions = sample_shapes(4, step_generator(0, 3), image_size=32, pairs=split_prompts(0).train_pairs)
    assert captions == expected_captions
    assert torch.allclose(latents, codec.images_to_latents(images), atol=1e-6)
    assert not torch.allclose(latents, codec.images_to_latents(images, normalized=False))  # z′, not z
    decoded = source.to_images(latents)
    assert decoded.shape == (4, 3, 32, 32)
    assert torch.allclose(decoded, codec.latents_to_images(latents), atol=1e-6)
    pixels = ShapesSource(32, 0)
    assert source.split.train_pairs == pixels.split.train_pairs
    assert source.eval_prompts(12, make_generator(5)) == pixels.eval_prompts(12, make_generator(5))
    assert all(source.split.is_held_out(p) for p in source.eval_prompts(12, make_generator(5)))


def test_make_source_picks_latent_shapes_only_without_a_cache_and_refuses_bad_canvases(ae):
    assert isinstance(make_source(tiny(f"autoencoder={ae}", "image_size=8", "patch_size=2")), ShapesLatentSource)
    assert type(make_source(tiny("autoencoder=", "image_size=32"))) is ShapesSource
    # latent side 5 → canvas 20, which the shapes generator does not draw
    with pytest.raises(ValueError, match=r"image_size.*got 20"):
        ShapesLatentSource(ae, 5)
    with pytest.raises(ValueError, match=r"image_size.*got 20"):
        make_source(tiny(f"autoencoder={ae}", "image_size=5", "patch_size=1"))
    with pytest.raises(ValueError, match="image_size: expected one of"):  # pixels: the canvas itself is checked
        tiny("autoencoder=", "image_size=8", "patch_size=2")


def test_latent_shapes_run_writes_decoded_samples_and_the_sample_command_decodes(latent_run, tmp_path, capsys):
    config = json.loads((latent_run / "config.json").read_text())
    assert (config["text_length"], config["bf16"], config["image_size"]) == (11, True, 8)
    grid = Image.open(latent_run / "samples" / "step_0000002.png")
    assert grid.width == 8 * (128 + GUTTER) + GUTTER  # decoded 32-pixel images, upscaled 4×
    assert (latent_run / "samples" / "step_0000002.txt").read_text().count("\n") == 15
    model, loaded, _ = load_run(str(latent_run))
    assert model.text_encoder.tokenizer.max_length == 11 and model.mmdit.config.in_channels == 4
    out = tmp_path / "x.png"
    assert main(["sample", "--ckpt", str(latent_run), "--prompt", PROMPT, "--n", "2", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert Image.open(out).width == 2 * (128 + GUTTER) + GUTTER


def sample_decoded(ckpt, source):
    model, config, _ = load_run(str(ckpt))
    latents = model.sample([PROMPT] * 2, steps=config.sample_steps, cfg=config.sample_cfg, shift=config.shift,
                           generator=make_generator(0))
    return source.to_images(latents)


def test_export_keeps_float16_ema_weights_that_sample_like_the_run(latent_run, ae, tmp_path, capsys):
    out = tmp_path / "tmp" / "model"
    assert main(["export", "--ckpt", str(latent_run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ema.safetensors", "state.json"]
    assert list((tmp_path / "tmp").iterdir()) == [out]  # no temporary folder left behind
    exported = load_file(out / "ema.safetensors")
    original = load_file(resolve_checkpoint(latent_run) / "ema.safetensors")
    assert exported.keys() == original.keys()
    assert all(v.dtype == torch.float16 for v in exported.values() if v.is_floating_point())
    assert all(torch.allclose(exported[k].float(), original[k].float(), rtol=1e-3, atol=1e-4) for k in exported)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 2 and state["config"]["text_length"] == 11 and state["dtype"] == "float16"
    assert resolve_checkpoint(out) == out
    sample = tmp_path / "from_export.png"
    assert main(["sample", "--ckpt", str(out), "--prompt", PROMPT, "--n", "2", "--out", str(sample)]) == 0, \
        capsys.readouterr().err
    assert sample.is_file()
    source = ShapesLatentSource(ae, 8)
    a, b = sample_decoded(latent_run, source), sample_decoded(out, source)
    assert a.shape == (2, 3, 32, 32)
    assert torch.allclose(a, b, atol=5e-2), (a - b).abs().max()
    # the guidance scale chosen for the stored model becomes its default; nonsense is refused by flag
    assert main(["export", "--ckpt", str(latent_run), "--out", str(out), "--cfg", "2"]) == 0
    assert json.loads((out / "state.json").read_text())["config"]["sample_cfg"] == 2.0
    assert main(["export", "--ckpt", str(latent_run), "--out", str(out), "--cfg", "nan"]) == 2
    assert "--cfg: expected a finite guidance scale" in capsys.readouterr().err
    # exporting again replaces the folder whole
    assert export_weights(latent_run, out) == out and sorted(p.name for p in out.iterdir()) == ["ema.safetensors",
                                                                                                "state.json"]


def test_a_missing_model_name_lists_the_stored_ones(latent_run, tmp_path, monkeypatch, capsys):
    stored = tmp_path / "models"
    export_weights(latent_run, stored / "course")
    (stored / "empty").mkdir()  # no state.json: not a stored model
    monkeypatch.setattr(checkpoint_module, "STORED_MODELS", stored)
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--ckpt", "nosuchmodel", "--prompt", PROMPT, "--n", "2", "--out", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --ckpt:")
    assert "(course)" in err and "'nosuchmodel'" in err and "empty" not in err
    monkeypatch.setattr(checkpoint_module, "STORED_MODELS", tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="none stored"):
        resolve_checkpoint("nosuchmodel")


def test_stored_names_resolve_unless_a_path_of_that_name_exists(latent_run, ae, tmp_path, monkeypatch, capsys):
    stored = tmp_path / "stored"
    export_weights(latent_run, stored / "models" / "course")
    shutil.copytree(ae, stored / "autoencoders" / "tiny")
    monkeypatch.setattr(checkpoint_module, "STORED_MODELS", stored / "models")
    monkeypatch.setattr(autoencoder_module, "STORED_AUTOENCODERS", stored / "autoencoders")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_checkpoint("course") == stored / "models" / "course"
    assert main(["sample", "--ckpt", "course", "--prompt", PROMPT, "--n", "2", "--out", "y.png"]) == 0, \
        capsys.readouterr().err
    codec = load_autoencoder("tiny")
    assert isinstance(codec, SmallAutoencoder) and codec.factor == 4
    assert all(torch.equal(a, b) for a, b in zip(codec.state_dict().values(), load_autoencoder(ae).state_dict().values()))
    assert isinstance(make_source(tiny("autoencoder=tiny", "image_size=8", "patch_size=2")), ShapesLatentSource)
    # a relative path that exists wins over the stored name
    export_weights(latent_run, work / "course")
    assert resolve_checkpoint("course").resolve() == (work / "course").resolve()
    torch.manual_seed(1)
    save_autoencoder(SmallAutoencoder(AutoencoderConfig(latent_channels=4, factor=2, width=8)), work / "tiny")
    assert load_autoencoder("tiny").factor == 2


def linear_output_dtypes(monkeypatch):
    """Patch build_model so that every Linear of the MM-DiT records its output dtype in a training forward."""
    original, seen = trainer_module.build_model, []

    def record(module, inputs, output):
        if module.training and torch.is_grad_enabled():  # the training step, not EMA sampling
            seen.append(output.dtype)

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        for layer in model.mmdit.modules():
            if isinstance(layer, nn.Linear):
                layer.register_forward_hook(record)
        return model

    monkeypatch.setattr(trainer_module, "build_model", build)
    return seen


@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_bf16_autocasts_the_training_step_on_cpu(bf16, dtype, tmp_path, monkeypatch):
    seen = linear_output_dtypes(monkeypatch)
    config = tiny(f"bf16={bf16}", "depth=1", "head_dim=8", "text_dim=16", "batch_size=4", "max_steps=1",
                  "eval_samples=4", "sample_steps=1")
    summary = train_run(config, tmp_path, progress=False)
    assert seen and set(seen) == {dtype}
    assert summary["loss"] == summary["loss"]  # finite under bf16 too (NaN would stop the run)


def test_bf16_is_off_by_default_and_on_where_it_was_measured():
    from minisd3.engine.config import TrainConfig, preset_config

    assert not TrainConfig().bf16 and not preset_config("digits").bf16
    assert all(preset_config(name).bf16 for name in ("shapes", "shapes-course", "cifar10", "imagenet-latents"))


def test_text_length_sets_the_tokenizer_and_the_caption_limit():
    model = build_model(tiny("text_length=11"), VOCABULARY, 3)
    assert model.text_encoder.tokenizer.max_length == 11
    assert model.text_encoder.positions.shape[0] == 11
    ctx, pooled = model.encode([" ".join(["red"] * 10), ""])
    assert ctx.shape[:2] == (2, 11)
    with pytest.raises(ValueError, match="captions: expected at most 10 words, got 11"):
        model.encode([" ".join(["red"] * 11)])
    assert build_model(tiny(preset="digits"), VOCABULARY, 3).text_encoder.tokenizer.max_length == 16  # the default
    with pytest.raises(ValueError, match="text_length: expected a positive value, got 0"):
        tiny("text_length=0")
