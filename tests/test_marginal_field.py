"""The exact marginal field of the straight path from N(0, I) to a Gaussian mixture, checked against
the continuity equation, a Monte-Carlo posterior mean, the single-Gaussian flow and its limits."""
import math

import pytest
import torch

from minisd3.marginal_field import marginal_log_density, marginal_velocity, marginal_velocity_field
from minisd3.metrics import sliced_wasserstein
from minisd3.ode import heun
from minisd3.seeding import make_generator
from minisd3.toy2d import GaussianMixture, eight_gaussians_mixture

MIXTURE = GaussianMixture(
    means=torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]], dtype=torch.float64),
    std=0.5,
    weights=torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
)


def points_at(t, n, seed, mixture=MIXTURE):
    """Draws of z_t = (1 − t)·x0 + t·ε, the places where the field matters."""
    gen = make_generator(seed)
    x0 = mixture.sample(n, gen).double()
    return (1 - t) * x0 + t * torch.randn(x0.shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("t", [0.15, 0.5, 0.85])
def test_continuity_equation(t):
    """∂_t p + ∇·(p v) = 0, i.e. ∂_t log p + ∇·v + v·∇log p = 0, by central differences."""
    z, h = points_at(t, 64, seed=1), 1e-5
    log_p = lambda zz, tt: marginal_log_density(zz, tt, MIXTURE)  # noqa: E731
    field = lambda zz, tt: marginal_velocity(zz, tt, MIXTURE)  # noqa: E731
    dlogp_dt = (log_p(z, t + h) - log_p(z, t - h)) / (2 * h)
    grad_logp = torch.zeros_like(z)
    div_v = torch.zeros(z.shape[0], dtype=torch.float64)
    for d in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[d] = h
        grad_logp[:, d] = (log_p(z + e, t) - log_p(z - e, t)) / (2 * h)
        div_v += (field(z + e, t)[:, d] - field(z - e, t)[:, d]) / (2 * h)
    v = field(z, t)
    residual = dlogp_dt + div_v + (v * grad_logp).sum(1)
    scale = dlogp_dt.abs() + div_v.abs() + (v * grad_logp).sum(1).abs()
    assert (residual.abs() < 1e-5 * (1 + scale)).all(), residual.abs().max()
    # the reversed field (the sign trap) violates it
    bad = dlogp_dt - div_v - (v * grad_logp).sum(1)
    assert bad.abs().max() > 0.1


def test_log_density_is_the_mixture_of_gaussians():
    t, z = 0.4, points_at(0.4, 20, seed=2)
    s2 = (1 - t) ** 2 * MIXTURE.std**2 + t**2
    expected = torch.zeros(20, dtype=torch.float64)
    for mu, pi in zip(MIXTURE.means, MIXTURE.weights):
        expected += pi * torch.exp(-((z - (1 - t) * mu) ** 2).sum(1) / (2 * s2)) / (2 * math.pi * s2)
    assert torch.allclose(marginal_log_density(z, t, MIXTURE), expected.log())


@pytest.mark.parametrize("t", [0.3, 0.7])
def test_matches_a_monte_carlo_posterior_mean(t):
    """E[ε − x0 | z_t = z] by importance sampling x0 from the data: weight N(z; (1 − t)x0, t²I),
    and given x0 and z the noise is ε = (z − (1 − t)x0)/t."""
    gen = make_generator(3)
    x0 = MIXTURE.sample(100_000, gen).double()
    z = points_at(t, 6, seed=4)
    v = marginal_velocity(z, t, MIXTURE)
    for i in range(z.shape[0]):
        log_w = -((z[i] - (1 - t) * x0) ** 2).sum(1) / (2 * t**2)
        w = torch.softmax(log_w, 0)
        assert 1 / (w**2).sum() > 1000  # enough effective samples for the tolerance below
        eps = (z[i] - (1 - t) * x0) / t
        estimate = (w[:, None] * (eps - x0)).sum(0)
        assert torch.allclose(v[i], estimate, atol=0.03), (v[i], estimate)


def test_single_gaussian_follows_its_affine_flow():
    """For x0 ~ N(μ, σ²I) the law of z_t is N((1 − t)μ, s(t)² I), s² = (1 − t)²σ² + t², carried by
    the affine map z_t = (1 − t)μ + s(t)·ξ, whose velocity is −μ + s′(t)/s(t)·(z − (1 − t)μ)."""
    mu, std = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.4
    single = GaussianMixture(means=mu[None], std=std, weights=torch.ones(1, dtype=torch.float64))
    s = lambda t: math.sqrt((1 - t) ** 2 * std**2 + t**2)  # noqa: E731
    for t in (0.1, 0.5, 0.9):
        z = points_at(t, 10, seed=5, mixture=single)
        ds = (s(t + 1e-6) - s(t - 1e-6)) / 2e-6
        expected = -mu + ds / s(t) * (z - (1 - t) * mu)
        assert torch.allclose(marginal_velocity(z, t, single), expected, atol=1e-7)


def test_limits_at_noise_and_data():
    z = points_at(0.5, 10, seed=6)
    mean = (MIXTURE.weights[:, None] * MIXTURE.means).sum(0)
    # t = 1: every component has the same law N(0, I), so v = E[ε − x0 | ε = z] = z − E[x0]
    assert torch.allclose(marginal_velocity(z, 1.0, MIXTURE), z - mean, atol=1e-10)
    # t = 0: z = x0 and ε is independent of it, so v = E[ε] − z = −z
    assert torch.allclose(marginal_velocity(z, 0.0, MIXTURE), -z, atol=1e-10)
    assert torch.allclose(marginal_velocity(z, 1e-6, MIXTURE), -z, atol=1e-4)


def test_accepts_a_per_sample_time_and_matches_scalar_time():
    z = points_at(0.5, 4, seed=7)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64)
    rows = torch.stack([marginal_velocity(z[i:i + 1], float(t[i]), MIXTURE)[0] for i in range(4)])
    assert torch.allclose(marginal_velocity(z, t, MIXTURE), rows)
    assert torch.allclose(marginal_velocity_field(MIXTURE)(z, t), rows)


def test_integrating_from_noise_reaches_the_mixture():
    mixture = eight_gaussians_mixture()
    gen = make_generator(8)
    noise = torch.randn(2000, 2, generator=gen)
    end = heun(marginal_velocity_field(mixture), noise, 50)
    target = mixture.sample(2000, gen)
    floor = sliced_wasserstein(mixture.sample(2000, gen), target)
    assert sliced_wasserstein(end, target) < floor + 0.1
    assert sliced_wasserstein(noise, target) > 1.0
    # every end point landed on one of the eight Gaussians
    assert torch.cdist(end, mixture.means).min(1).values.max() < 6 * mixture.std
