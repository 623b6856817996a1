"""DDPM: schedules against independent products and closed forms, forward moments, the reverse
step against the posterior mean, and samplers that recover a Gaussian with the exact ε."""
import math

import numpy as np
import pytest
import torch

from minisd3.ddpm import (
    ancestral_sample,
    ancestral_step,
    cosine_schedule,
    ddim_sample,
    ddim_timesteps,
    eps_loss,
    linear_schedule,
    make_schedule,
    q_sample,
)
from minisd3.ode import Trajectory
from minisd3.seeding import make_generator

T = 1000



def independent_linear_alpha_bars(num_steps=T):
    betas = np.linspace(1e-4, 0.02, num_steps, dtype=np.float64) * (1000 / num_steps)
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return np.array(out)


def test_linear_alpha_bar_is_the_running_product():
    schedule = linear_schedule()
    assert schedule.num_steps == T
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(0.02)
    expected = independent_linear_alpha_bars()
    assert np.allclose(schedule.alpha_bars.numpy(), expected, rtol=1e-4, atol=1e-7)
    assert expected[-1] == pytest.approx(4.04e-5, rel=0.01)  # the well-known ᾱ_T of Ho et al.


def test_linear_schedule_at_fewer_steps_keeps_the_end_comparable():
    end_1000 = math.log(linear_schedule(1000).alpha_bars[-1].item())
    end_100 = math.log(linear_schedule(100).alpha_bars[-1].item())
    assert end_100 == pytest.approx(end_1000, rel=0.1)
    assert np.allclose(linear_schedule(100).alpha_bars.numpy(), independent_linear_alpha_bars(100), rtol=1e-4)


def test_cosine_alpha_bar_matches_the_closed_form():
    schedule, s = cosine_schedule(), 0.008
    k = np.arange(T)
    f = lambda tau: np.cos((tau + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    expected = f((k + 1) / T) / f(0.0)
    unclipped = schedule.betas.numpy() < 0.999
    unclipped[-1] = False  # the last β is clipped to 0.999, so ᾱ_T differs from the closed form
    got = schedule.alpha_bars.numpy()
    assert np.allclose(got[unclipped], expected[unclipped], rtol=1e-4, atol=1e-6)
    assert schedule.betas.max().item() == pytest.approx(0.999)
    assert got[-1] < 1e-6


def test_make_schedule_by_name():
    assert torch.equal(make_schedule("linear", 50).betas, linear_schedule(50).betas)
    assert torch.equal(make_schedule("cosine", 50).betas, cosine_schedule(50).betas)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("k", [0, 300, 999])
def test_q_sample_moments(kind, k):
    schedule = make_schedule(kind)
    n = 100_000
    gen = make_generator(k)
    x0 = torch.tensor([[1.5, -2.0]]).expand(n, 2)
    eps = torch.randn(n, 2, generator=gen)
    xk = q_sample(x0, torch.full((n,), k), eps, schedule).double()
    ab = schedule.alpha_bars[k].item()
    assert torch.allclose(xk.mean(0), math.sqrt(ab) * x0[0].double(), atol=4 * math.sqrt((1 - ab) / n) + 1e-6)
    assert torch.allclose(xk.var(0), torch.full((2,), 1 - ab, dtype=torch.float64), rtol=0.02, atol=1e-8)


def test_q_sample_per_sample_steps():
    schedule = linear_schedule()
    x0, eps = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    k = torch.tensor([0, 10, 500])
    out = q_sample(x0, k, eps, schedule)
    assert out.shape == x0.shape
    assert torch.allclose(out[:, 0, 0, 0], schedule.alpha_bars[k].sqrt())


def test_model_time_runs_from_1_over_t_to_1():
    schedule = linear_schedule()
    assert torch.allclose(schedule.model_time(torch.tensor([0, 499, 999])), torch.tensor([0.001, 0.5, 1.0]))


class RecordingOracle:
    """Returns a known ε and remembers the times it was called with."""

    def __init__(self, eps):
        self.eps, self.times = eps, []

    def __call__(self, x, t):
        self.times.append(t.clone())
        return self.eps


@pytest.mark.parametrize("k", [1, 500, 999])
def test_ancestral_step_is_the_posterior_mean_plus_posterior_noise(k):
    schedule = linear_schedule()
    ab = independent_linear_alpha_bars()
    beta = np.linspace(1e-4, 0.02, T)[k]
    gen = make_generator(0)
    x0, eps, noise = (torch.randn(8, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    xk = q_sample(x0, torch.full((8,), k), eps, schedule)
    oracle = RecordingOracle(eps)
    # μ̃(x_k, x0) = √ᾱ_{k−1}·β_k/(1 − ᾱ_k)·x0 + √α_k·(1 − ᾱ_{k−1})/(1 − ᾱ_k)·x_k
    mean = (math.sqrt(ab[k - 1]) * beta / (1 - ab[k]) * x0
            + math.sqrt(1 - beta) * (1 - ab[k - 1]) / (1 - ab[k]) * xk)
    assert torch.allclose(ancestral_step(oracle, xk, k, schedule, torch.zeros_like(xk)), mean, atol=1e-4)
    assert torch.allclose(oracle.times[0], torch.full((8,), (k + 1) / T))
    posterior_std = math.sqrt((1 - ab[k - 1]) / (1 - ab[k]) * beta)
    assert torch.allclose(ancestral_step(oracle, xk, k, schedule, noise), mean + posterior_std * noise, atol=1e-4)


def test_last_ancestral_step_returns_x0_without_noise():
    schedule = linear_schedule()
    gen = make_generator(1)
    x0, eps = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    x_first = q_sample(x0, torch.zeros(4, dtype=torch.long), eps, schedule)
    out = ancestral_step(RecordingOracle(eps), x_first, 0, schedule, torch.full_like(x0, 100.0))
    assert torch.allclose(out, x0, atol=1e-5)


class GaussianOracle:
    """The exact ε̂ for x0 ~ N(μ, σ²I): E[ε | x_k] = √(1 − ᾱ_k)/(ᾱ_kσ² + 1 − ᾱ_k)·(x_k − √ᾱ_k·μ)."""

    def __init__(self, schedule, mu, std):
        self.alpha_bars, self.T = schedule.alpha_bars.double(), schedule.num_steps
        self.mu, self.std = mu, std

    def __call__(self, x, t):
        k = torch.round(t.double() * self.T).long() - 1  # t = (k + 1)/T
        ab = self.alpha_bars[k][:, None]
        return ((1 - ab).sqrt() / (ab * self.std**2 + 1 - ab) * (x - ab.sqrt() * self.mu)).to(x.dtype)


MU, STD = torch.tensor([2.0, -1.0]), 0.5


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ancestral_sampling_with_the_exact_eps_recovers_the_gaussian(kind):
    schedule = make_schedule(kind)
    gen = make_generator(2)
    out = ancestral_sample(GaussianOracle(schedule, MU, STD), torch.randn(4000, 2, generator=gen), schedule, gen)
    assert torch.allclose(out.mean(0), MU, atol=0.04)
    assert torch.allclose(out.std(0), torch.full((2,), STD), rtol=0.06)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_with_the_exact_eps_recovers_the_gaussian_and_is_deterministic(kind):
    schedule = make_schedule(kind)
    noise = torch.randn(4000, 2, generator=make_generator(3))
    oracle = GaussianOracle(schedule, MU, STD)
    out = ddim_sample(oracle, noise, schedule, 50)
    assert torch.allclose(out.mean(0), MU, atol=0.04)
    assert torch.allclose(out.std(0), torch.full((2,), STD), rtol=0.06)
    assert torch.equal(out, ddim_sample(oracle, noise.clone(), schedule, 50))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_converges_to_the_exact_gaussian_transport(kind):
    """Between isotropic Gaussians the probability-flow ODE is affine: x_T ~ N(√ᾱ_T·μ, v_T I) is
    carried to x0 = μ + σ·(x_T − √ᾱ_T·μ)/√v_T, v_T = ᾱ_Tσ² + 1 − ᾱ_T."""
    schedule = make_schedule(kind)
    noise = torch.randn(500, 2, generator=make_generator(3))
    ab = schedule.alpha_bars[-1].double()
    exact = (MU + STD * (noise - ab.sqrt() * MU) / (ab * STD**2 + 1 - ab).sqrt()).float()
    oracle = GaussianOracle(schedule, MU, STD)
    errors = [(ddim_sample(oracle, noise, schedule, steps) - exact).abs().max().item() for steps in (50, 200, 1000)]
    assert errors[0] > 2 * errors[1] > 4 * errors[2]
    assert errors[2] < 0.01


def test_ancestral_sampling_is_random_but_seeded():
    schedule = linear_schedule(100)
    oracle = GaussianOracle(schedule, MU, STD)
    noise = torch.randn(10, 2, generator=make_generator(0))
    a = ancestral_sample(oracle, noise, schedule, make_generator(1))
    b = ancestral_sample(oracle, noise, schedule, make_generator(1))
    c = ancestral_sample(oracle, noise, schedule, make_generator(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    path = ancestral_sample(oracle, noise, schedule, make_generator(1), return_trajectory=True)
    assert path.shape == (101, 10, 2) and torch.equal(path[0], noise) and torch.equal(path[-1], a)


def test_ddim_timesteps_and_trajectory():
    schedule = linear_schedule()
    ks = ddim_timesteps(schedule, 10)
    assert ks[0] == T - 1 and ks[-1] == 0 and len(ks) == 10 and (ks[1:] < ks[:-1]).all()
    assert torch.equal(ddim_timesteps(schedule, T), torch.arange(T - 1, -1, -1))
    noise = torch.randn(5, 2, generator=make_generator(4))
    path = ddim_sample(GaussianOracle(schedule, MU, STD), noise, schedule, 10, return_trajectory=True)
    assert isinstance(path, Trajectory)
    assert path.states.shape == (11, 5, 2) and path.velocities.shape == (10, 5, 2)
    assert torch.allclose(path.times, torch.cat([schedule.model_time(ks), torch.zeros(1)]))
    h = (path.times[1:] - path.times[:-1])[:, None, None]
    assert torch.allclose(path.states[1:], path.states[:-1] + h * path.velocities, atol=1e-5)


def test_ddim_last_step_returns_the_predicted_x0():
    schedule = linear_schedule()
    x0, eps = torch.randn(6, 2, generator=make_generator(5)), torch.randn(6, 2, generator=make_generator(6))
    ks = ddim_timesteps(schedule, 1)
    xk = q_sample(x0, ks.expand(6), eps, schedule)
    assert torch.allclose(ddim_sample(RecordingOracle(eps), xk, schedule, 1), x0, atol=1e-3)


def test_eps_loss_of_zero_model_and_of_the_exact_eps():
    schedule = linear_schedule()
    x0 = MU + STD * torch.randn(200_000, 2, generator=make_generator(7))
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert eps_loss(zero, x0, schedule, make_generator(8)).item() == pytest.approx(1.0, abs=0.01)
    # the optimum's per-element error is Var(ε | x_k) = ᾱσ²/(ᾱσ² + 1 − ᾱ), averaged over uniform k
    ab = torch.tensor(independent_linear_alpha_bars())
    floor = (ab * STD**2 / (ab * STD**2 + 1 - ab)).mean().item()
    got = eps_loss(GaussianOracle(schedule, MU, STD), x0, schedule, make_generator(8)).item()
    assert got == pytest.approx(floor, rel=0.03)


def test_ddim_clip_keeps_samples_in_range_and_is_inert_for_in_range_predictions():
    schedule = linear_schedule()
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    wild = lambda x, t: 30 * torch.ones_like(x)  # noqa: E731  a badly wrong ε̂: x̂0 far outside [−1, 1]
    assert ddim_sample(wild, x_T, schedule, 10).abs().max() > 10
    assert ddim_sample(wild, x_T, schedule, 10, clip_x0=1.0).abs().max() <= 1.0 + 1e-5
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    small = 0.001 * x_T
    assert torch.allclose(ddim_sample(zero, small, schedule, 5), ddim_sample(zero, small, schedule, 5, clip_x0=1.0))
