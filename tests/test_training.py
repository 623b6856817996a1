"""The shared training loop and recipes: reproducible, and a short run lowers the loss."""
import pytest
import torch

from minisd3.ddpm import linear_schedule
from minisd3.digits import load_digits_tensor, to_unit_range
from minisd3.nets import TimeMLP, count_parameters
from minisd3.rectified_flow import rf_loss
from minisd3.seeding import make_generator
from minisd3.toy2d import sample_8gaussians
from minisd3.training import RECIPES, ema_decay_at, fit, row_sampler, train_ddpm, train_rectified_flow, train_reflow


def small_model(seed=0):
    torch.manual_seed(seed)
    return TimeMLP((2,), hidden=32, depth=2, time_dim=16)


def rf_step_loss(model, x0, generator):
    return rf_loss(model, x0, generator=generator)


def test_train_is_reproducible_with_the_same_seed():
    batch = lambda g: sample_8gaussians(64, g)  # noqa: E731
    a = fit(small_model(), rf_step_loss, batch, steps=30, seed=1, progress=False)
    b = fit(small_model(), rf_step_loss, batch, steps=30, seed=1, progress=False)
    c = fit(small_model(), rf_step_loss, batch, steps=30, seed=2, progress=False)
    assert len(a) == 30 and a == b and a != c


def test_train_leaves_the_model_in_eval_mode_and_rejects_bad_steps():
    model = small_model()
    fit(model, rf_step_loss, lambda g: sample_8gaussians(8, g), steps=1, progress=False)
    assert not model.training
    with pytest.raises(ValueError, match="steps: expected"):
        fit(model, rf_step_loss, lambda g: sample_8gaussians(8, g), steps=0, progress=False)


def test_train_stops_on_a_non_finite_loss():
    model = small_model()
    with pytest.raises(FloatingPointError):
        fit(model, lambda m, b, g: m(b, torch.full((8,), 0.5)).sum() * float("nan"),
              lambda g: sample_8gaussians(8, g), steps=3, progress=False)


def test_with_ema_the_model_ends_holding_the_average_of_the_raw_weights():
    """The same seeded run with and without ``ema``: identical losses (the average never feeds back), and
    the final weights equal the average of the raw run's weights computed here by hand."""
    batch = lambda g: sample_8gaussians(64, g)  # noqa: E731
    raw_weights = []
    raw_model = small_model()
    raw = fit(raw_model, rf_step_loss, batch, steps=25, seed=3, progress=False,
              callback=lambda step, m: raw_weights.append([p.detach().clone() for p in m.parameters()]))
    seen = []
    averaged_model = small_model()
    averaged = fit(averaged_model, rf_step_loss, batch, steps=25, seed=3, progress=False, ema=0.9,
                   callback=lambda step, m: seen.append((step, m is averaged_model)))
    assert averaged == raw
    assert [s for s, _ in seen] == list(range(1, 26)) and not any(same for _, same in seen)
    by_hand = [p.detach().clone() for p in small_model().parameters()]
    for step, weights in enumerate(raw_weights):
        d = ema_decay_at(step, 0.9)
        by_hand = [d * a + (1 - d) * w for a, w in zip(by_hand, weights)]
    for p, expected in zip(averaged_model.parameters(), by_hand):
        assert torch.allclose(p, expected, atol=1e-6)
    assert not torch.allclose(next(averaged_model.parameters()), next(raw_model.parameters()))
    with pytest.raises(ValueError, match="ema: expected"):
        fit(small_model(), rf_step_loss, batch, steps=1, ema=1.0, progress=False)


def test_short_rectified_flow_run_lowers_the_loss():
    model = small_model()
    x0_eval = sample_8gaussians(4096, make_generator(100))

    def held_out():
        with torch.no_grad():
            return rf_loss(model, x0_eval, generator=make_generator(101)).item()

    before = held_out()
    losses = train_rectified_flow(model, sample_8gaussians, steps=200, batch_size=128, lr=3e-3, progress=False)
    assert len(losses) == 200
    assert held_out() < 0.6 * before
    assert sum(losses[-20:]) < 0.7 * sum(losses[:20])


def test_rectified_flow_with_a_source_distribution_and_reflow():
    model = small_model()
    losses = train_rectified_flow(model, sample_8gaussians, steps=5, batch_size=16,
                                  sample_source=lambda n, g: torch.randn(n, 2, generator=g) * 2, progress=False)
    assert len(losses) == 5
    eps, x0_hat = torch.randn(50, 2, generator=make_generator(0)), torch.randn(50, 2, generator=make_generator(1))
    assert len(train_reflow(model, eps, x0_hat, steps=4, batch_size=8, progress=False)) == 4
    with pytest.raises(ValueError, match="x0_hat: expected"):
        train_reflow(model, eps, x0_hat[:10], steps=1)


def test_ddpm_training_on_digit_rows_runs_and_is_seeded():
    images, labels = load_digits_tensor()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == -1 and images.max() == 1 and labels.dtype == torch.int64
    assert torch.equal(to_unit_range(images), (images + 1) / 2)
    sampler = row_sampler(images)
    assert torch.equal(sampler(5, make_generator(0)), sampler(5, make_generator(0)))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = TimeMLP((1, 8, 8), hidden=32, depth=2, time_dim=16)
        runs.append(train_ddpm(model, sampler, linear_schedule(100), steps=5, batch_size=16, progress=False))
    assert runs[0] == runs[1]


def test_recipes_build_models_of_the_stated_size(monkeypatch):
    recipe = RECIPES["2d"]
    model = recipe.make_model((2,))
    hidden, depth, time_dim = recipe.hidden, recipe.depth, model.time_dim
    expected = ((2 + time_dim) * hidden + hidden + (depth - 1) * (hidden * hidden + hidden)
                + hidden * 2 + 2 + time_dim * time_dim + time_dim)
    assert count_parameters(model) == expected
    monkeypatch.setenv("MINISD3_FAST", "1")
    assert recipe.train_steps == recipe.fast_steps
    monkeypatch.setenv("MINISD3_FAST", "0")
    assert recipe.train_steps == recipe.steps
    digits = RECIPES["digits"].make_model((1, 8, 8), num_classes=10)
    out = digits(torch.zeros(3, 1, 8, 8), torch.full((3,), 0.5), torch.tensor([0, 9, 10]))
    assert out.shape == (3, 1, 8, 8)
    # the "no label" index gives the same output as passing no labels
    assert torch.allclose(digits(torch.zeros(1, 1, 8, 8), torch.full((1,), 0.5)),
                          digits(torch.zeros(1, 1, 8, 8), torch.full((1,), 0.5), torch.tensor([10])))
