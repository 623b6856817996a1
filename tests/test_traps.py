"""The traps COURSE.md names, pinned down: the logit-normal sample multiplied into the loss instead of
sampling t from it, and the velocity sign or time direction flipped between training and sampling.
(The shift applied twice is pinned in test_rectified_flow.py, t unscaled in test_embeddings.py.)"""
import math

import pytest
import torch
from scipy import integrate, stats

from minisd3.nets import TimeMLP
from minisd3.rectified_flow import interpolate, rf_loss, sample
from minisd3.seeding import make_generator
from minisd3.timesteps import logit_normal_density, sample_logit_normal, sample_uniform
from minisd3.training import train_rectified_flow

A = 3.0  # the fixed model v̂(z, t) = A·z
MEAN, STD = 1.0, 0.5  # x0 ~ N(MEAN, STD²), one dimension


def fixed_model(z, t):
    return A * z


def loss_at(t):
    """L(t) = E(A·z_t − (ε − x0))² = (A(1 − t) + 1)²·E[x0²] + (A·t − 1)², for the fixed model."""
    return (A * (1 - t) + 1) ** 2 * (MEAN**2 + STD**2) + (A * t - 1) ** 2


def expect(weight):
    return integrate.quad(lambda t: weight(t) * loss_at(t), 0, 1)[0]


def logit_normal_pdf(t):
    return stats.norm.pdf(math.log(t / (1 - t))) / (t * (1 - t))


@pytest.fixture(scope="module")
def data():
    return MEAN + STD * torch.randn(400_000, 1, generator=make_generator(0), dtype=torch.float64)


def test_sampling_from_the_density_equals_weighting_uniform_t_by_it(data):
    target = expect(logit_normal_pdf)  # E_{t~π} L(t) = ∫ π(t) L(t) dt
    sampled = rf_loss(fixed_model, data, time_sampler=lambda n, generator=None, device=None:
                      sample_logit_normal(n, 0.0, 1.0, generator, device).double(), generator=make_generator(1))
    weighted = rf_loss(fixed_model, data, time_sampler=lambda n, generator=None, device=None:
                       sample_uniform(n, generator, device).double(),
                       weight=lambda t: logit_normal_density(t, 0.0, 1.0), generator=make_generator(2))
    assert sampled.item() == pytest.approx(target, rel=0.01)
    assert weighted.item() == pytest.approx(target, rel=0.02)
    # and both differ from plain uniform t, so the density matters here
    assert abs(expect(lambda t: 1.0) - target) > 0.05 * target


def test_multiplying_the_logit_normal_sample_into_the_loss_is_a_different_objective(data):
    target = expect(logit_normal_pdf)
    uniform_t = lambda n, generator=None, device=None: sample_uniform(n, generator, device).double()  # noqa: E731
    gen = make_generator(3)
    # trap 1: uniform t, loss multiplied by an independent logit-normal draw: E[w]·E_U L = ½·∫ L
    draws = sample_logit_normal(data.shape[0], 0.0, 1.0, make_generator(4)).double()
    trap_uniform = rf_loss(fixed_model, data, time_sampler=uniform_t, weight=lambda t: draws, generator=gen)
    assert trap_uniform.item() == pytest.approx(0.5 * expect(lambda t: 1.0), rel=0.02)
    # trap 2: t drawn from the logit-normal and the loss also multiplied by that t
    trap_both = rf_loss(fixed_model, data, time_sampler=lambda n, generator=None, device=None:
                        sample_logit_normal(n, 0.0, 1.0, generator, device).double(), weight=lambda t: t,
                        generator=gen)
    assert trap_both.item() == pytest.approx(expect(lambda t: t * logit_normal_pdf(t)), rel=0.02)
    for wrong in (trap_uniform, trap_both):
        assert abs(wrong.item() - target) > 0.2 * target


def test_density_weighting_matches_sampling_for_a_network_too():
    model = TimeMLP((2,), hidden=32, depth=2, time_dim=16)
    torch.manual_seed(0)
    for p in model.parameters():  # a fixed, clearly t-dependent field
        torch.nn.init.normal_(p, std=0.5)
    x0 = torch.randn(100_000, 2, generator=make_generator(5))
    with torch.no_grad():
        sampled = rf_loss(model, x0, time_sampler=lambda n, generator=None, device=None:
                          sample_logit_normal(n, 0.0, 1.0, generator, device), generator=make_generator(6))
        weighted = rf_loss(model, x0, weight=lambda t: logit_normal_density(t, 0.0, 1.0),
                           generator=make_generator(7))
        draws = sample_logit_normal(100_000, 0.0, 1.0, make_generator(8))
        trap = rf_loss(model, x0, weight=lambda t: draws, generator=make_generator(7))
    assert weighted.item() == pytest.approx(sampled.item(), rel=0.03)
    assert abs(trap.item() - sampled.item()) > 0.2 * sampled.item()


X0 = torch.tensor([2.0, -1.0])


def point_field(z, t):
    """The exact field of the one-point data set {x0}: z_t = (1 − t)x0 + tε gives ε − x0 = (z − x0)/t."""
    return (z - X0) / t[:, None]


def test_the_field_that_training_fits_carries_noise_to_the_data():
    x0 = X0.expand(256, 2)
    # training: the exact field has zero loss, the flipped sign a large one
    assert rf_loss(point_field, x0, generator=make_generator(0)).item() < 1e-10
    assert rf_loss(lambda z, t: -point_field(z, t), x0, generator=make_generator(0)).item() > 1
    # sampling from t = 1 (noise) to t = 0 with that field lands on the data
    noise = torch.randn(256, 2, generator=make_generator(1))
    assert torch.allclose(interpolate(x0, noise, 1.0), noise)
    assert torch.allclose(sample(point_field, noise, 10), x0, atol=1e-5)
    flipped = sample(lambda z, t: -point_field(z, t), noise, 10)
    assert (flipped - x0).norm(dim=1).min() > 1


def test_a_trained_network_samples_onto_its_one_point_data_set():
    torch.manual_seed(0)
    model = TimeMLP((2,), hidden=64, depth=2, time_dim=16)
    losses = train_rectified_flow(model, lambda n, generator: X0.expand(n, 2).clone(), steps=300, batch_size=128,
                                  lr=3e-3, seed=0, progress=False)
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20
    noise = torch.randn(500, 2, generator=make_generator(2))
    end = sample(model, noise, 20)
    assert (end - X0).norm(dim=1).mean() < 0.25
    assert (noise - X0).norm(dim=1).mean() > 1.5
    # running the learned field the wrong way (0 → 1 from noise) moves away from the data
    with torch.no_grad():
        wrong = sample(lambda z, t: -model(z, 1 - t), noise, 20)
    assert (wrong - X0).norm(dim=1).mean() > 2
