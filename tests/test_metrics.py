"""Sliced Wasserstein and MMD: zero for equal sets, the size of a shift, symmetry, and an
independent computation."""
import math

import numpy as np
import pytest
import torch

from minisd3.metrics import mmd_rbf, sliced_wasserstein
from minisd3.seeding import make_generator


def cloud(n=1000, d=2, seed=0):
    return torch.randn(n, d, generator=make_generator(seed))


def test_sliced_wasserstein_is_zero_for_identical_sets_and_ignores_order():
    x = cloud()
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(1000, generator=make_generator(1))]) == pytest.approx(0, abs=1e-6)


def test_sliced_wasserstein_grows_with_a_shift_and_is_symmetric():
    x, y = cloud(500, seed=0), cloud(500, seed=1)
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    values = [sliced_wasserstein(x, y + torch.tensor([s, 0.0])) for s in shifts]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=1e-6)
    assert sliced_wasserstein(x, y, seed=3) == sliced_wasserstein(x, y, seed=3)


def test_one_dimensional_shift_gives_its_size():
    x = cloud(d=1)
    assert sliced_wasserstein(x, x + 0.7) == pytest.approx(0.7, rel=1e-5)
    assert sliced_wasserstein(x - 1.3, x) == pytest.approx(1.3, rel=1e-5)


def test_shift_in_the_plane_projects_to_its_rms_over_directions():
    """A shift c projects onto direction θ as θ·c; averaged over the circle E(θ·c)² = ‖c‖²/2."""
    x = cloud(d=2)
    c = torch.tensor([3.0, -4.0])
    assert sliced_wasserstein(x, x + c, n_projections=512) == pytest.approx(5 / math.sqrt(2), rel=0.1)


def test_one_dimensional_value_is_the_rms_of_sorted_differences():
    x, y = cloud(500, 1, 2), 2 * cloud(500, 1, 3) + 0.3
    expected = np.sqrt(np.mean((np.sort(x.numpy()[:, 0]) - np.sort(y.numpy()[:, 0])) ** 2))
    assert sliced_wasserstein(x, y) == pytest.approx(expected, rel=1e-5)


def test_sliced_w1_is_the_mean_absolute_sorted_difference_and_sits_below_sw2():
    x, y = cloud(500, 1, 2), 2 * cloud(500, 1, 3) + 0.3
    expected = np.mean(np.abs(np.sort(x.numpy()[:, 0]) - np.sort(y.numpy()[:, 0])))
    assert sliced_wasserstein(x, y, p=1) == pytest.approx(expected, rel=1e-5)
    assert sliced_wasserstein(x, x + 0.7, p=1) == pytest.approx(0.7, rel=1e-5)
    a, b = cloud(800, 2, 4), cloud(800, 2, 5) * 1.5
    assert sliced_wasserstein(a, b, p=1) < sliced_wasserstein(a, b, p=2)  # the mean is below the RMS
    with pytest.raises(ValueError, match="p: expected 1 or 2"):
        sliced_wasserstein(a, b, p=3)


def test_the_noise_floor_of_two_draws_is_small_next_to_a_different_distribution():
    """The floor of benchmarks/flows_2d_convergence.py: two independent 4000-point draws of two moons
    differ only by sampling noise, far less than two moons against 8 Gaussians or a slightly bent moons."""
    from minisd3.toy2d import sample_8gaussians, sample_two_moons

    reference = sample_two_moons(4000, make_generator(1))
    floor = sliced_wasserstein(sample_two_moons(4000, make_generator(2)), reference, p=1)
    assert 0 < floor < 0.06
    assert sliced_wasserstein(sample_8gaussians(4000, make_generator(2)), reference, p=1) > 20 * floor
    wider = sample_two_moons(4000, make_generator(2)) * torch.tensor([1.1, 1.0])
    assert sliced_wasserstein(wider, reference, p=1) > 2 * floor


def test_unequal_sizes_and_image_shaped_samples():
    x = torch.randn(300, 1, 2, 2, generator=make_generator(4))
    y = torch.randn(500, 1, 2, 2, generator=make_generator(5))
    assert 0 < sliced_wasserstein(x, y) < 0.3
    assert sliced_wasserstein(x, y + 2) > 1.5


def reference_mmd(x: np.ndarray, y: np.ndarray, bandwidths=(0.5, 1.0, 2.0, 4.0)) -> float:
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s**2)) for s in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(x, y).mean())


def test_mmd_matches_an_independent_computation():
    x, y = cloud(60, 2, 6), cloud(80, 2, 7) + 0.5
    assert mmd_rbf(x, y) == pytest.approx(reference_mmd(x.double().numpy(), y.double().numpy()), rel=1e-4)


def test_mmd_near_zero_for_the_same_distribution_and_positive_for_different():
    x, y = cloud(300, 2, 8), cloud(300, 2, 9)
    same = mmd_rbf(x, y)
    assert abs(same) < 0.01
    assert mmd_rbf(x, y + 1.0) > 0.1 > 10 * abs(same)
    assert mmd_rbf(x, 2 * y) > 0.05
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(y, x), abs=1e-5)
