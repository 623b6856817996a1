"""Train small, then large (issue 16): the resolution shift of training times at each canvas, the
positions of a grid larger than the one trained on, fine-tuning from another run's weights, sampling
at another size, and the errors for combinations that cannot work."""
import dataclasses
import json
import math

import pytest
import torch
from helpers import TINY, assert_same, cli, tiny, weights

from minisd3.embeddings import sincos_2d_positions
from minisd3.engine.checkpoints import load_run, load_state, resolve_checkpoint
from minisd3.engine.loop import StepDraws, train_run
from minisd3.engine.sources import make_source
from minisd3.models import PatchEmbedding
from minisd3.seeding import make_generator
from minisd3.timesteps import resolution_shift_alpha, shift_time

# latents of the stored autoencoder (f = 4): image_size 6 is the 24-px canvas, 12 the 48-px one (4× the pixels)
SMALL, LARGE = 6, 12


@pytest.mark.parametrize("canvas", [24, 32, 48, 64])
def test_training_times_move_with_the_canvas_as_the_shift_formula_says(canvas):
    """A run at m pixels with shift α = √(m/n) (n = 24²) draws times whose median is shift(0.5, α):
    the logit-normal's median u = 0.5 maps to α/(1 + α)."""
    alpha = resolution_shift_alpha(canvas * canvas, 24 * 24)
    config = tiny(f"image_size={canvas}", "autoencoder=", f"shift={alpha}", "batch_size=4096", "max_steps=1")
    t = StepDraws(make_source(config), config).draw(0)[2]
    expected = float(shift_time(torch.tensor([0.5]), alpha))
    assert expected == pytest.approx(alpha / (1 + alpha))
    assert t.median().item() == pytest.approx(expected, abs=0.015)
    if canvas > 24:  # more pixels: more of training at high noise
        assert t.median().item() > 0.5 + 0.015


def test_positions_of_a_larger_grid_follow_the_documented_layouts():
    dim, base = 32, 4
    scaled = PatchEmbedding(4, dim, 2, 2 * base, layout="scaled")
    extended = PatchEmbedding(4, dim, 2, 2 * base, layout="extended")
    assert torch.equal(scaled.positions(base, base), sincos_2d_positions(dim, base, base))
    assert torch.equal(extended.positions(base, base), sincos_2d_positions(dim, base, base))
    # scaled: the 8×8 grid spans the 4×4 grid's range at spacing 4/8
    assert torch.allclose(scaled.positions(8, 8), sincos_2d_positions(dim, 8, 8, 0.5, 0.5))
    # extended: spacing 1, centred: the 4×4 grid's positions are the centre of the 8×8 one, and it goes beyond
    big = extended.positions(8, 8).reshape(8, 8, dim)
    assert torch.allclose(big, sincos_2d_positions(dim, 8, 8, origin=(-2.0, -2.0)).reshape(8, 8, dim))
    assert torch.allclose(big[2:6, 2:6].reshape(16, dim), sincos_2d_positions(dim, base, base), atol=1e-6)
    # a non-square grid: extended keeps spacing 1 on both axes; scaled stretches each axis to the base range
    wide = extended.positions(4, 8).reshape(4, 8, dim)
    assert torch.allclose(wide[:, 2:6].reshape(16, dim), sincos_2d_positions(dim, base, base), atol=1e-6)
    assert torch.allclose(scaled.positions(4, 8), sincos_2d_positions(dim, 4, 8, 1.0, 0.5))
    # position_base: a model built for 8×8 patches whose positions are those of the 4×4 grid it started from
    rebased = PatchEmbedding(4, dim, 2, 16, position_base=base, layout="scaled")
    assert torch.allclose(rebased.positions(8, 8), scaled.positions(8, 8))
    with pytest.raises(ValueError, match="position_layout"):
        PatchEmbedding(4, dim, 2, 8, layout="stretched")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("small") / "run"
    train_run(tiny(f"image_size={SMALL}", "max_steps=3", "ckpt_every=3"), run, progress=False)
    return run


def test_fine_tuning_starts_from_the_other_runs_weights_on_a_larger_canvas(small_run, tmp_path):
    config = tiny(f"image_size={LARGE}", f"init_from={small_run}", "max_steps=1", "lr=1e-12", "shift=2.0")
    summary = train_run(config, tmp_path / "ft", progress=False)
    assert summary["step"] == 1
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["init_from"] == str(small_run) and saved["position_base"] == SMALL  # the small grid keeps its positions
    # weights: the small run's EMA, moved by a step of lr 1e-12 only; optimizer fresh (one step taken)
    assert_same(weights(tmp_path / "ft"), weights(small_run, "ema.safetensors"), atol=1e-6)
    state = load_state(resolve_checkpoint(tmp_path / "ft"))
    assert state["step"] == 1
    # the fine-tuned model samples 48-px canvases (12×12 latents), at its own shift
    model, config, _ = load_run(tmp_path / "ft")
    assert config.shift == 2.0
    x = model.sample(["one small red circle"], steps=1)
    assert x.shape[-2:] == (LARGE, LARGE)
    assert model.sample(["one small red circle"], steps=1, size=(SMALL, 2 * SMALL)).shape[-2:] == (SMALL, 2 * SMALL)


def test_a_fine_tuned_model_with_scaled_positions_equals_the_small_model_on_the_small_canvas(small_run, tmp_path):
    """position_base keeps the small grid's positions, so before any step the fine-tuned model is the
    small model, on the small canvas, exactly."""
    small, small_config, _ = load_run(small_run)
    config = dataclasses.replace(small_config, image_size=LARGE, init_from=str(small_run), max_steps=1, lr=1e-30)
    train_run(config, tmp_path / "ft", progress=False)
    large, _, _ = load_run(tmp_path / "ft", weights="ema")
    x, t = torch.randn(2, small.mmdit.config.in_channels, SMALL, SMALL), torch.tensor([0.3, 0.8])
    ctx, pooled = small.encode(["one small red circle"] * 2)
    assert torch.allclose(small.mmdit(x, t, ctx, pooled), large.mmdit(x, t, ctx, pooled), atol=1e-5)


def test_bad_combinations_get_one_line_errors_naming_the_flag(small_run, tmp_path):
    def error(*args):
        result = cli(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    base = ["train", "--quiet", "--max-steps", "1", *sum((["--set", a] for a in TINY), [])]
    # a patch size that does not divide the canvas
    assert "image_size" in error(*base, "--set", "image_size=7", "--out", str(tmp_path / "a"))
    # an unsupported canvas: 10 latents × f 4 = 40 px
    message = error(*base, "--set", "image_size=10", "--out", str(tmp_path / "b"))
    assert "image_size" in message and "40" in message
    # weights of another architecture
    message = error(*base, "--set", "depth=3", "--init-from", str(small_run), "--out", str(tmp_path / "c"))
    assert message.startswith("error: --init-from:") and "depth 2 there, 3 here" in message
    assert "--init-from" in error(*base, "--init-from", str(tmp_path / "missing"), "--out", str(tmp_path / "d"))
    assert "positions" in error(*base, "--set", "positions=stretched", "--out", str(tmp_path / "e"))
    # sampling: sizes that are not multiples of f × p, and a canvas the detector cannot read
    sample = ["sample", "--ckpt", str(small_run), "--prompt", "one small red circle", "--n", "1",
              "--out", str(tmp_path / "s.png")]
    assert "--size" in error(*sample, "--size", "30", "32")
    assert "--size" in error(*sample, "--size", "40", "40")


def test_sampling_at_a_larger_size_from_the_command_line(small_run, tmp_path):
    result = cli("sample", "--ckpt", str(small_run), "--prompt", "one small red circle", "--n", "2", "--steps", "1",
                 "--size", "48", "48", "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "s" / "sample_000.png").size == (48, 48)


def test_alpha_composes_by_multiplying():
    """Shifting by α₁ then α₂ is one shift by α₁·α₂ (both multiply the odds t/(1 − t)): a model pre-trained
    at shift 3 moved to 4× the pixels trains at 3·√4 = 6."""
    t = torch.linspace(0.01, 0.99, 50)
    assert torch.allclose(shift_time(shift_time(t, 3.0), 2.0), shift_time(t, 6.0), atol=1e-6)
    assert math.isclose(3.0 * resolution_shift_alpha(64 * 64, 32 * 32), 6.0)


def test_aspect_ratio_buckets_draw_each_batch_on_one_canvas_chosen_by_the_step(tmp_path):
    config = tiny("buckets=32x32,32x64,64x32", "positions=extended", "max_steps=40")
    draws = StepDraws(make_source(config), config)
    shapes = [tuple(draws.draw(step)[0].shape[-2:]) for step in range(12)]
    assert set(shapes) == {(8, 8), (8, 16), (16, 8)}  # latents of the three canvases (f = 4)
    assert [tuple(draws.draw(step)[0].shape[-2:]) for step in range(12)] == shapes  # a function of the step
    eps = draws.draw(0)[3]
    assert eps.shape == draws.draw(0)[0].shape
    # pixels, drawn on the fly: the images are the canvases themselves and the detector reads them exactly
    from minisd3.adherence import adherence_report

    pixels = tiny("autoencoder=", "image_size=24", "buckets=24x48,48x24", "batch_size=16")
    source = make_source(pixels)
    for step in range(4):
        images, captions = source.batch(step, 16, make_generator(step))
        assert images.shape[-2:] in {(24, 48), (48, 24)}
        assert adherence_report(images, captions)["overall"] == 1.0
    # the trainer takes batches of different shapes in one run
    assert train_run(tiny("buckets=24x48,48x24,32x32", "positions=extended", "max_steps=3", "sample_every=3"),
                     tmp_path / "buckets", progress=False)["step"] == 3


@pytest.mark.parametrize("setting, words", [
    ("buckets=32x96", ["buckets", "2×"]),
    ("buckets=32x30", ["buckets"]),
    ("buckets=32 by 64", ["buckets", "HxW"]),
    ("buckets=40x40", ["buckets", "40"]),
])
def test_bad_buckets_are_named(setting, words):
    with pytest.raises(ValueError) as err:
        make_source(tiny(setting))
    message = str(err.value)
    assert message.startswith("buckets:") and "\n" not in message
    assert all(w in message for w in words), message


def test_buckets_are_refused_where_the_generator_does_not_draw():
    with pytest.raises(ValueError, match="^buckets: aspect-ratio buckets"):
        tiny("buckets=24x48", preset="glyphs")
