"""Validation loss (SD3's protocol), path length, and the scaling sweep command."""
import csv
import json

import pytest
import torch
from helpers import tiny_shapes_autoencoder

from minisd3.cli import main
from minisd3.engine.config import preset_config
from minisd3.engine.evaluation import eval_table, evaluate
from minisd3.engine.sources import ShapesLatentSource, ShapesSource
from minisd3.engine.sweep import HEAD_DIM, scaled_config, training_flops_per_image
from minisd3.models import MMDiTConfig
from minisd3.ode import Trajectory
from minisd3.rectified_flow import path_length, sample
from minisd3.seeding import make_generator, randn
from minisd3.text import SmallTextEncoder, WordTokenizer
from minisd3.text_to_image import TextToImage
from minisd3.validation_loss import validation_loss, validation_times

WORDS = ["one", "two", "red", "blue", "circle", "circles", "square", "squares", "above"]
TINY_LATENT = ["image_size=8", "patch_size=2", "text_dim=16", "text_depth=1", "text_length=11", "batch_size=4",
               "eval_samples=4", "sample_every=2", "ckpt_every=2", "sample_steps=2", "warmup_steps=1", "log_every=1",
               "device=cpu", "data_workers=0"]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    encoder = SmallTextEncoder(WordTokenizer(WORDS), dim=16, depth=1, heads=2)
    return TextToImage(MMDiTConfig(input_size=8, in_channels=3, depth=1, heads=2, head_dim=8, context_dim=16,
                                   pooled_dim=16), encoder)


def test_validation_times_are_eight_equally_spaced_levels_from_data_to_noise():
    times = validation_times()
    assert torch.allclose(times, torch.arange(8) / 7)
    with pytest.raises(ValueError, match="levels: expected at least 2"):
        validation_times(1)


def test_validation_loss_is_the_rf_loss_at_fixed_levels_and_noise_averaged_without_t_1():
    model = tiny_model()
    x0 = torch.randn(5, 3, 8, 8, generator=make_generator(1))
    captions = ["one red circle", "two blue squares", "one blue circle", "red", "two red circles above one square"]
    result = validation_loss(model, x0, captions, seed=3, batch=2)
    eps = randn(x0.shape, make_generator(3))
    ctx, pooled = model.encode(captions)
    by_hand = []
    with torch.no_grad():
        for t in (torch.arange(8) / 7).tolist():
            tb = torch.full((5,), t)
            v_hat = model.mmdit((1 - t) * x0 + t * eps, tb, ctx, pooled)
            by_hand.append(((v_hat - (eps - x0)) ** 2).mean().item())
    assert result["per_level"] == pytest.approx(by_hand, rel=1e-5)
    assert result["loss"] == pytest.approx(sum(by_hand[:7]) / 7, rel=1e-5)
    assert result["times"] == pytest.approx([i / 7 for i in range(8)])


def test_validation_loss_is_deterministic_for_a_seed_and_moves_with_it_and_with_the_model():
    model = tiny_model()
    x0 = torch.randn(4, 3, 8, 8, generator=make_generator(1))
    captions = ["one red circle"] * 4
    first = validation_loss(model, x0, captions, seed=5)
    assert validation_loss(model, x0, captions, seed=5) == first
    assert validation_loss(model, x0, captions, seed=6)["loss"] != first["loss"]
    other = tiny_model()
    with torch.no_grad():  # a fresh MM-DiT outputs 0 (zero-initialised final layer): move every weight a little
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=make_generator(p.numel())))
    assert validation_loss(other, x0, captions, seed=5)["loss"] != first["loss"]
    assert model.training  # restored after evaluation in eval mode
    with pytest.raises(ValueError, match="captions: expected 4 captions"):
        validation_loss(model, x0, captions[:3])


def test_path_length_is_the_straight_distance_for_a_straight_path_and_longer_for_a_bent_one():
    noise = torch.randn(6, 2, generator=make_generator(0))
    target = torch.tensor([1.0, -2.0])
    straight = sample(lambda z, t: (z - target) / t.clamp_min(1e-6)[:, None], noise, 10, return_trajectory=True)
    result = path_length(straight)
    assert result["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert result["length"] == pytest.approx((noise - target).norm(dim=1).mean().item(), rel=1e-5)
    # an L-shaped path: first along x, then along y, from (1, 1) to (0, 0): length 2, straight √2
    states = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]], [[0.0, 0.0]]])
    bent = Trajectory(torch.tensor([1.0, 0.5, 0.0]), states, (states[1:] - states[:-1]) / -0.5)
    assert path_length(bent) == pytest.approx({"length": 2.0, "straight": 2 ** 0.5, "ratio": 2 ** 0.5}, rel=1e-6)
    with pytest.raises(ValueError, match="trajectory: expected a Trajectory"):
        path_length(states)


def test_shapes_sources_give_held_out_scenes_that_the_evaluation_scores_by_validation_loss(tmp_path):
    pixels = ShapesSource(image_size=24)
    images, captions = pixels.held_out_batch(6, make_generator(0))
    held_out = set(pixels.split.held_out_pairs)
    from minisd3.shapes import as_prompt
    assert images.shape == (6, 3, 24, 24)
    assert all(any((g.colour, g.shape) in held_out for g in as_prompt(c).groups) for c in captions)
    latent = ShapesLatentSource(tiny_shapes_autoencoder(tmp_path / "ae"), 8)
    z, same = latent.held_out_batch(6, make_generator(0))
    assert z.shape == (6, latent.channels, 8, 8)
    model = TextToImage(MMDiTConfig(input_size=8, in_channels=latent.channels, depth=1, heads=2, head_dim=8,
                                    context_dim=16, pooled_dim=16),
                        SmallTextEncoder(WordTokenizer(latent.vocabulary), dim=16, depth=1, heads=2))
    result = evaluate(model, latent, 4, 2, 3.0, 1.0, seed=0)
    assert result["validation_loss"] > 0 and result["validation_loss"] == evaluate(model, latent, 4, 2, 3.0, 1.0, 0)[
        "validation_loss"]
    assert "val loss" in eval_table([result])


def test_scaled_config_follows_the_papers_rule():
    base = preset_config("shapes")
    for depth in (2, 3, 6):
        config = scaled_config(base, depth)
        assert (config.depth, config.heads, config.heads * config.head_dim) == (depth, depth, 64 * depth)
        assert config.lr == base.lr and HEAD_DIM == 64
    with pytest.raises(ValueError, match="--depths: expected positive whole numbers, got 0"):
        scaled_config(base, 0)


def test_training_flops_grow_with_depth_like_depth_times_width_squared(tmp_path):
    sets = [f"autoencoder={tiny_shapes_autoencoder(tmp_path / 'ae')}", *TINY_LATENT]
    from minisd3.engine.config import apply_overrides
    base = apply_overrides(preset_config("shapes"), sets)
    small, large = (training_flops_per_image(scaled_config(base, d)) for d in (1, 2))
    # the blocks' matmuls grow as depth · (64·depth)², eight times from 1 to 2 (a little more: the last block has
    # no text MLP, SD3's context_pre_only, and at depth 1 it is the only one; a little less: the fixed text encoder)
    assert 6 < large / small < 10


def test_sweep_command_trains_each_depth_measures_it_stores_small_files_and_resumes(tmp_path, capsys):
    ae = tiny_shapes_autoencoder(tmp_path / "ae")
    sets = [arg for key in [f"autoencoder={ae}", *TINY_LATENT] for arg in ("--set", key)]
    out, store = tmp_path / "sweep", tmp_path / "stored"
    args = ["sweep", "--depths", "1", "2", *sets, "--max-steps", "2", "--eval-steps", "1", "2", "--quiet",
            "--out", str(out), "--store", str(store)]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [int(r["depth"]) for r in rows] == [1, 2] and [int(r["hidden"]) for r in rows] == [64, 128]
    assert float(rows[1]["flops_per_image"]) > float(rows[0]["flops_per_image"])
    assert all(float(r["path_length"]) >= float(r["straight_length"]) * (1 - 1e-6) for r in rows)
    sizes = json.loads((out / "sweep.json").read_text())["sizes"]
    assert set(sizes[0]["few_steps"]) == {"1", "2"}
    header = next(csv.reader(open(out / "depth-1" / "adherence.csv")))
    assert "validation_loss" in header
    assert sorted(p.name for p in (store / "depth-2").iterdir()) == [
        "adherence.csv", "config.json", "metrics.csv", "summary.json"]
    assert not any(p.name == "checkpoints" for p in store.rglob("*"))
    stamp = (out / "depth-1" / "metrics.csv").stat().st_mtime_ns
    assert main(args) == 0  # complete runs are measured again, not retrained
    assert (out / "depth-1" / "metrics.csv").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["sweep", "--depths", "2", "2", "--out", str(tmp_path / "x")]) == 2
    assert main(["sweep", "--preset", "digits", "--out", str(tmp_path / "y")]) == 2
    assert main(["sweep", "--depths", "1", "--eval-steps", "0", "--out", str(tmp_path / "z")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0].startswith("error: --depths: expected distinct depths")
    assert errors[1].startswith("error: --preset: the sweep scores adherence")
    assert errors[2].startswith("error: --eval-steps: expected step counts ≥ 1")
    assert len(errors) == 3
