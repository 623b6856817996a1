"""Euler and Heun: convergence orders on a field with a known solution, and trajectory bookkeeping."""
import math

import pytest
import torch

from minisd3.ode import Trajectory, euler, heun, integrate, time_grid


def linear_in_time(z, t):
    """dz/dt = t·z, solved by z(t) = z(t₀)·exp((t² − t₀²)/2)."""
    return t[:, None] * z


def exact(z_start, t_start, t_end):
    return z_start * math.exp((t_end**2 - t_start**2) / 2)


def global_error(method, steps, t_start=1.0, t_end=0.0):
    z = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    times = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    end = integrate(linear_in_time, z, times, method)
    return (end - exact(z, t_start, t_end)).abs().max().item()


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2)])
@pytest.mark.parametrize("t_start, t_end", [(1.0, 0.0), (0.0, 1.0)])
def test_convergence_order(method, order, t_start, t_end):
    errors = [global_error(method, n, t_start, t_end) for n in (16, 32, 64, 128)]
    slopes = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(order - 0.15 < s < order + 0.15 for s in slopes), (errors, slopes)
    assert errors[-1] < (0.05 if order == 1 else 1e-4)


def test_heun_beats_euler_at_the_same_number_of_evaluations():
    assert global_error("heun", 10) < global_error("euler", 20) / 10


def test_euler_and_heun_wrappers_use_an_even_grid():
    z = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(euler(linear_in_time, z, 50), integrate(linear_in_time, z, time_grid(50), "euler"))
    assert torch.allclose(heun(linear_in_time, z, 50, 0.0, 1.0), exact(z, 0.0, 1.0), rtol=1e-4)
    grid = time_grid(4)
    assert torch.allclose(grid, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("t_start, t_end", [(1.0, 0.0), (0.0, 1.0), (0.8, 0.3)])
def test_trajectory_is_consistent(method, t_start, t_end):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 2, generator=gen)
    times = torch.linspace(t_start, t_end, 7)
    path = integrate(linear_in_time, z, times, method, return_trajectory=True)
    assert isinstance(path, Trajectory)
    assert path.times.shape == (7,) and path.states.shape == (7, 5, 2) and path.velocities.shape == (6, 5, 2)
    assert torch.equal(path.start, z)
    assert torch.equal(path.end, integrate(linear_in_time, z, times, method))
    h = (path.times[1:] - path.times[:-1])[:, None, None]
    assert torch.allclose(path.states[1:], path.states[:-1] + h * path.velocities, atol=1e-6)
    # the recorded velocity is the one the method prescribes, recomputed here
    for i in range(6):
        zi, ti, tn = path.states[i], path.times[i], path.times[i + 1]
        v = linear_in_time(zi, ti.expand(5))
        if method == "heun":
            v = 0.5 * (v + linear_in_time(zi + (tn - ti) * v, tn.expand(5)))
        assert torch.allclose(path.velocities[i], v, atol=1e-6)


def test_forward_then_backward_returns_to_the_start():
    z = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    there = heun(linear_in_time, z, 200, 0.0, 1.0)
    back = heun(linear_in_time, there, 200, 1.0, 0.0)
    assert torch.allclose(back, z, atol=1e-5)
    assert not torch.allclose(there, z, atol=0.1)


def test_works_on_image_shaped_states():
    z = torch.ones(3, 1, 4, 4)
    end = euler(lambda x, t: -x, z, 10)  # dz/dt = −z, from t = 1 to 0 grows by (1 + 0.1)^10
    assert end.shape == z.shape
    assert torch.allclose(end, torch.full_like(z, 1.1**10))
