"""Rectified flow: path, target, loss, sampling, straightness and reflow pairs (t = 0 data, t = 1 noise)."""
import pytest
import torch

from minisd3.marginal_field import marginal_velocity_field
from minisd3.ode import Trajectory, euler
from minisd3.rectified_flow import (
    interpolate,
    reflow_pairs,
    rf_loss,
    sample,
    sampling_times,
    straightness,
    velocity_target,
)
from minisd3.seeding import make_generator
from minisd3.timesteps import shift_time
from minisd3.toy2d import eight_gaussians_mixture


def pair(n=16, shape=(2,), seed=0, dtype=torch.float32):
    gen = make_generator(seed)
    return torch.randn((n, *shape), generator=gen, dtype=dtype), torch.randn((n, *shape), generator=gen, dtype=dtype)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_interpolate_endpoints_and_midpoint(shape):
    x0, eps = pair(shape=shape)
    assert torch.equal(interpolate(x0, eps, 0.0), x0)
    assert torch.equal(interpolate(x0, eps, 1.0), eps)
    assert torch.allclose(interpolate(x0, eps, 0.25), 0.75 * x0 + 0.25 * eps)
    t = torch.linspace(0, 1, 16)
    z = interpolate(x0, eps, t)
    for i in range(16):
        assert torch.allclose(z[i], (1 - t[i]) * x0[i] + t[i] * eps[i])


def test_velocity_target_is_the_time_derivative_of_the_path():
    x0, eps = pair(dtype=torch.float64)
    t = torch.rand(16, generator=make_generator(1), dtype=torch.float64) * 0.8 + 0.1
    h = 1e-6
    derivative = (interpolate(x0, eps, t + h) - interpolate(x0, eps, t - h)) / (2 * h)
    assert torch.allclose(velocity_target(x0, eps), derivative, atol=1e-8)
    assert torch.equal(velocity_target(x0, eps), eps - x0)


def test_loss_is_zero_for_an_oracle_that_knows_the_pair():
    x0, eps = pair(64)
    oracle = lambda z, t: eps - x0  # noqa: E731
    assert rf_loss(oracle, x0, eps=eps, generator=make_generator(0)).item() == 0.0
    assert rf_loss(oracle, x0, eps=eps, weight=lambda t: 1 / (t + 0.1)).item() == 0.0
    # any other field pays ‖v̂ − (ε − x0)‖² averaged over elements and batch
    t = torch.full((64,), 0.3)
    zero_loss = rf_loss(lambda z, tt: torch.zeros_like(z), x0, eps=eps, t=t)
    assert zero_loss.item() == pytest.approx(((eps - x0) ** 2).mean().item(), rel=1e-6)


def test_loss_matches_an_independent_computation_with_weight():
    x0, eps = pair(32, shape=(1, 2, 2))
    t = torch.rand(32, generator=make_generator(3))
    model = lambda z, tt: 2 * z * tt[:, None, None, None]  # noqa: E731
    z = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
    per_sample = ((model(z, t) - (eps - x0)) ** 2).mean(dim=(1, 2, 3))
    assert rf_loss(model, x0, eps=eps, t=t).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    weighted = rf_loss(model, x0, eps=eps, t=t, weight=lambda tt: tt**2)
    assert weighted.item() == pytest.approx((per_sample * t**2).mean().item(), rel=1e-6)


def test_loss_draws_t_and_eps_from_the_generator():
    x0 = torch.randn(8, 2, generator=make_generator(0))
    model = lambda z, t: z  # noqa: E731
    a = rf_loss(model, x0, generator=make_generator(5))
    b = rf_loss(model, x0, generator=make_generator(5))
    c = rf_loss(model, x0, generator=make_generator(6))
    assert a == b and a != c


def test_one_euler_step_with_the_exact_velocity_of_one_pair_lands_on_x0():
    x0, eps = pair(32, seed=4)
    constant = lambda z, t: eps - x0  # noqa: E731
    assert torch.allclose(sample(constant, eps, steps=1), x0, atol=1e-6)
    # the exact field of a single data point needs no knowledge of ε: v(z, t) = (z − x0)/t
    point = x0[:1]
    field = lambda z, t: (z - point) / t[:, None]  # noqa: E731
    assert torch.allclose(sample(field, eps, steps=1), point.expand_as(eps), atol=1e-6)


def test_sample_runs_from_noise_at_1_to_data_at_0():
    noise = torch.randn(10, 2, generator=make_generator(0))
    path = sample(lambda z, t: z, noise, steps=4, return_trajectory=True)
    assert isinstance(path, Trajectory)
    assert torch.allclose(path.times, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert torch.equal(path.start, noise)
    # dz/dt = z from t = 1 down to 0 with Euler: each step multiplies by 1 − 1/4
    assert torch.allclose(path.end, noise * 0.75**4)
    heun_end = sample(lambda z, t: z, noise, steps=4, method="heun")
    assert torch.allclose(heun_end, noise * (1 - 0.25 + 0.25**2 / 2) ** 4)


def test_shifted_sampling_times_apply_the_shift_once():
    grid = torch.linspace(1, 0, 11)
    once = shift_time(grid, 3.0)
    assert torch.allclose(sampling_times(10, shift=3.0), once)
    assert not torch.allclose(sampling_times(10, shift=3.0), shift_time(once, 3.0), atol=1e-3)
    assert torch.equal(sampling_times(10), grid)
    path = sample(lambda z, t: z, torch.ones(2, 2), 10, shift=3.0, return_trajectory=True)
    assert torch.allclose(path.times, once)


def test_straightness_is_zero_for_a_straight_path():
    x0, eps = pair(64, seed=5)
    path = sample(lambda z, t: eps - x0, eps, steps=8, method="heun", return_trajectory=True)
    assert straightness(path) == pytest.approx(0.0, abs=1e-10)


def variance_of_velocities(path: Trajectory) -> float:
    """Σ|h_i|·‖v_i‖² − ‖Σ|h_i|·v_i‖², with v_i = (z_{i+1} − z_i)/h_i, averaged over the batch."""
    h = path.times[1:] - path.times[:-1]
    v = (path.states[1:] - path.states[:-1]) / h[:, None, None]
    w = h.abs()[:, None]
    mean_v = (w[:, :, None] * v).sum(0)
    return float(((w * (v**2).sum(2)).sum(0) - (mean_v**2).sum(1)).mean())


def test_straightness_is_positive_for_the_curved_marginal_field_and_is_a_velocity_variance():
    noise = torch.randn(500, 2, generator=make_generator(6))
    path = sample(marginal_velocity_field(eight_gaussians_mixture()), noise, 50, return_trajectory=True)
    s = straightness(path)
    assert s > 0.5
    assert s == pytest.approx(variance_of_velocities(path), rel=1e-3)


def test_straightness_with_uneven_steps_weights_by_step_length():
    noise = torch.randn(100, 2, generator=make_generator(7))
    path = sample(lambda z, t: z * torch.cos(3 * t)[:, None], noise, 12, shift=3.0, return_trajectory=True)
    assert straightness(path) == pytest.approx(variance_of_velocities(path), rel=1e-3)
    assert straightness(path) > 0


def test_reflow_pairs_returns_the_noise_and_the_flow_end_point():
    noise = torch.randn(20, 2, generator=make_generator(8))
    field = marginal_velocity_field(eight_gaussians_mixture())
    eps, x0_hat = reflow_pairs(field, noise, steps=20)
    assert eps.shape == x0_hat.shape == (20, 2)
    assert torch.equal(eps, noise)
    assert torch.allclose(x0_hat, sample(field, noise, 20, "heun"))
    assert torch.allclose(reflow_pairs(field, noise, steps=20, method="euler")[1], euler(field, noise, 20))
