"""SD3's timestep samplers against their CDFs (Kolmogorov–Smirnov), their densities, and the shift."""
import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from minisd3.seeding import make_generator
from minisd3.timesteps import (
    MODE_S_MAX,
    cosmap_density,
    logit_normal_density,
    make_time_sampler,
    mode_density,
    resolution_shift_alpha,
    sample_cosmap,
    sample_logit_normal,
    sample_mode,
    sample_uniform,
    shift_time,
    uniform_density,
)

N = 20_000


def mode_map(u, s):
    return 1 - u - s * (np.cos(np.pi * u / 2) ** 2 - 1 + u)


def mode_cdf(s):
    """P(f(U) ≤ t) = 1 − f⁻¹(t) since f is decreasing from f(0) = 1 to f(1) = 0; f⁻¹ by Brent."""
    def cdf(t):
        t = np.atleast_1d(t)
        return np.array([1 - optimize.brentq(lambda u: mode_map(u, s) - x, 0, 1, xtol=1e-13) if 0 < x < 1
                         else float(x >= 1) for x in t])
    return cdf


def logit_normal_cdf(m, s):
    return lambda t: stats.norm.cdf((np.log(t) - np.log1p(-t) - m) / s)


def cosmap_cdf(t):
    return 2 / np.pi * np.arctan(t / (1 - t))


CASES = {
    "uniform": (lambda n, g: sample_uniform(n, g), lambda t: np.clip(t, 0, 1), uniform_density),
    "lognorm(0,1)": (lambda n, g: sample_logit_normal(n, 0.0, 1.0, g), logit_normal_cdf(0.0, 1.0),
                     lambda t: logit_normal_density(t, 0.0, 1.0)),
    "lognorm(0.5,0.6)": (lambda n, g: sample_logit_normal(n, 0.5, 0.6, g), logit_normal_cdf(0.5, 0.6),
                         lambda t: logit_normal_density(t, 0.5, 0.6)),
    "lognorm(-1,2)": (lambda n, g: sample_logit_normal(n, -1.0, 2.0, g), logit_normal_cdf(-1.0, 2.0),
                      lambda t: logit_normal_density(t, -1.0, 2.0)),
    "mode(-0.5)": (lambda n, g: sample_mode(n, -0.5, g), mode_cdf(-0.5), lambda t: mode_density(t, -0.5)),
    "mode(0)": (lambda n, g: sample_mode(n, 0.0, g), mode_cdf(0.0), lambda t: mode_density(t, 0.0)),
    "mode(1.29)": (lambda n, g: sample_mode(n, 1.29, g), mode_cdf(1.29), lambda t: mode_density(t, 1.29)),
    "cosmap": (lambda n, g: sample_cosmap(n, g), cosmap_cdf, cosmap_density),
}
NOT_UNIFORM = [name for name in CASES if name not in ("uniform", "mode(0)")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampler_passes_ks_against_its_closed_form_cdf(name):
    sampler, cdf, _ = CASES[name]
    t = sampler(N, make_generator(11))
    assert t.shape == (N,) and t.dtype == torch.float32
    assert t.min() >= 0 and t.max() <= 1
    assert stats.kstest(t.double().numpy(), cdf).pvalue > 0.01


@pytest.mark.parametrize("name", NOT_UNIFORM)
def test_ks_rejects_uniform_for_non_uniform_samplers(name):
    """The test above has power: against the uniform CDF the same draws are rejected."""
    t = CASES[name][0](N, make_generator(11))
    assert stats.kstest(t.double().numpy(), "uniform").pvalue < 1e-6


@pytest.mark.parametrize("name", sorted(CASES))
def test_density_integrates_to_one_and_to_the_cdf(name):
    _, cdf, density = CASES[name]
    grid = torch.linspace(0, 1, 5_001, dtype=torch.float64)[1:-1]
    values = density(grid)
    assert (values >= 0).all() and torch.isfinite(values).all()
    integral = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(values, grid)])
    integral += cdf(grid[:1].numpy())[0]  # the mass below the first grid point
    assert integral[-1].item() + 1 - cdf(grid[-1:].numpy())[0] == pytest.approx(1.0, abs=2e-4)
    probe = np.linspace(0.02, 0.98, 25)
    numeric = np.interp(probe, grid.numpy(), integral.numpy())
    assert np.allclose(numeric, cdf(probe), atol=2e-4)


def test_mode_with_s_zero_is_uniform_and_s_controls_the_middle():
    u = sample_uniform(1000, make_generator(3))
    assert torch.allclose(sample_mode(1000, 0.0, make_generator(3)), 1 - u)
    assert torch.allclose(mode_density(torch.linspace(0.01, 0.99, 9), 0.0), torch.ones(9))
    mid = torch.tensor([0.5])
    assert mode_density(mid, 1.29) > 1 > mode_density(mid, -0.5)
    assert mode_density(torch.tensor([0.3]), MODE_S_MAX).isfinite().all()


def test_logit_normal_density_closed_form():
    t = np.array([0.1, 0.5, 0.8])
    expected = stats.norm.pdf((np.log(t / (1 - t)) - 0.3) / 0.7) / (0.7 * t * (1 - t))
    assert np.allclose(logit_normal_density(torch.from_numpy(t), 0.3, 0.7).numpy(), expected)
    assert logit_normal_density(torch.tensor([0.5]), 0.0, 1.0).item() == pytest.approx(4 / math.sqrt(2 * math.pi))


def test_samplers_are_seeded():
    for sampler, _, _ in CASES.values():
        assert torch.equal(sampler(100, make_generator(1)), sampler(100, make_generator(1)))
        assert not torch.equal(sampler(100, make_generator(1)), sampler(100, make_generator(2)))


@pytest.mark.parametrize("name, reference", [
    ("uniform", lambda n, g: sample_uniform(n, g)),
    ("cosmap", lambda n, g: sample_cosmap(n, g)),
    ("lognorm(0, 1)", lambda n, g: sample_logit_normal(n, 0.0, 1.0, g)),
    ("LogNorm(0.5,0.6)", lambda n, g: sample_logit_normal(n, 0.5, 0.6, g)),
    ("lognorm(-1,2)", lambda n, g: sample_logit_normal(n, -1.0, 2.0, g)),
    ("mode(1.29)", lambda n, g: sample_mode(n, 1.29, g)),
    ("mode( -0.5 )", lambda n, g: sample_mode(n, -0.5, g)),
])
def test_make_time_sampler_parses_the_paper_names(name, reference):
    sampler = make_time_sampler(name)
    assert torch.equal(sampler(500, generator=make_generator(4)), reference(500, make_generator(4)))
    assert sampler(7, generator=make_generator(0), device="cpu").shape == (7,)


@pytest.mark.parametrize("name, argument", [
    ("beta", "name"), ("lognorm(0)", "name"), ("lognorm(0,1,2)", "name"), ("mode(a)", "name"),
    ("mode(1.29", "name"), ("mode()", "name"), ("", "name"), ("lognorm(0,-1)", "s"), ("mode(3)", "s"),
])
def test_make_time_sampler_rejects_bad_names(name, argument):
    with pytest.raises(ValueError) as err:
        make_time_sampler(name)  # refused when made, not first when called
    assert str(err.value).startswith(f"{argument}:") and "expected" in str(err.value)


def test_shift_identity_endpoints_monotone_and_direction():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.equal(shift_time(t, 1.0), t)
    for alpha in (0.5, 3.0):
        shifted = shift_time(t, alpha)
        assert shifted[0] == 0 and shifted[-1] == 1
        assert (shifted[1:] > shifted[:-1]).all()
        # the odds t/(1 − t) are multiplied by α
        inner = slice(1, -1)
        assert torch.allclose(shifted[inner] / (1 - shifted[inner]), alpha * t[inner] / (1 - t[inner]))
    assert (shift_time(t, 3.0)[1:-1] > t[1:-1]).all()  # α > 1 spends more of the grid near noise
    assert (shift_time(t, 0.5)[1:-1] < t[1:-1]).all()


def test_shift_twice_is_one_shift_with_alpha_squared():
    t = torch.linspace(0, 1, 33, dtype=torch.float64)
    twice = shift_time(shift_time(t, 3.0), 3.0)
    assert torch.allclose(twice, shift_time(t, 9.0))
    assert not torch.allclose(twice, shift_time(t, 3.0), atol=1e-2)


def test_resolution_shift_alpha():
    assert resolution_shift_alpha(1024 * 1024, 256 * 256) == pytest.approx(4.0)
    assert resolution_shift_alpha(64, 64) == 1.0
