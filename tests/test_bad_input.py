"""Wrong input gets a ValueError that names the argument and says what was expected.

Device mismatches use the "meta" device, which every machine has."""
import pytest
import torch

from minisd3 import ddpm, get_device
from minisd3.embeddings import timestep_embedding
from minisd3.marginal_field import marginal_log_density, marginal_velocity
from minisd3.metrics import mmd_rbf, sliced_wasserstein
from minisd3.nets import TimeMLP
from minisd3.ode import integrate, time_grid
from minisd3.rectified_flow import interpolate, rf_loss, sample, straightness, velocity_target
from minisd3.seeding import make_generator
from minisd3.timesteps import (
    make_time_sampler,
    mode_density,
    resolution_shift_alpha,
    sample_cosmap,
    sample_logit_normal,
    sample_mode,
    sample_uniform,
    shift_time,
)
from minisd3.toy2d import GaussianMixture, eight_gaussians_mixture, sample_toy

X = torch.zeros(4, 2)
T4 = torch.full((4,), 0.5)
META = torch.zeros(4, 2, device="meta")
SCHEDULE = ddpm.linear_schedule(100)
K = torch.full((4,), 10)
MIX = eight_gaussians_mixture()


def model(z, t):
    return z


CASES = {
    # rectified flow
    "interpolate x0 int": (lambda: interpolate(X.long(), X, 0.5), "x0"),
    "interpolate x0 not a tensor": (lambda: interpolate([[0.0, 0.0]], X, 0.5), "x0"),
    "interpolate eps shape": (lambda: interpolate(X, torch.zeros(4, 3), 0.5), "eps"),
    "interpolate eps device": (lambda: interpolate(X, META, 0.5), "eps"),
    "interpolate t > 1": (lambda: interpolate(X, X, 1.5), "t"),
    "interpolate t < 0": (lambda: interpolate(X, X, torch.tensor([0.1, -0.1, 0.2, 0.3])), "t"),
    "interpolate t nan": (lambda: interpolate(X, X, float("nan")), "t"),
    "interpolate t batch": (lambda: interpolate(X, X, torch.full((3,), 0.5)), "t"),
    "interpolate t 2-D": (lambda: interpolate(X, X, torch.full((4, 1), 0.5)), "t"),
    "interpolate t int": (lambda: interpolate(X, X, torch.zeros(4, dtype=torch.long)), "t"),
    "interpolate t device": (lambda: interpolate(X, X, torch.full((4,), 0.5, device="meta")), "t"),
    "velocity_target eps shape": (lambda: velocity_target(X, torch.zeros(5, 2)), "eps"),
    "velocity_target x0 int": (lambda: velocity_target(X.int(), X), "x0"),
    "velocity_target eps device": (lambda: velocity_target(X, META), "eps"),
    "rf_loss x0 1-D": (lambda: rf_loss(model, torch.zeros(4)), "x0"),
    "rf_loss x0 int": (lambda: rf_loss(model, X.long()), "x0"),
    "rf_loss eps shape": (lambda: rf_loss(model, X, eps=torch.zeros(4, 3)), "eps"),
    "rf_loss eps device": (lambda: rf_loss(model, X, eps=META), "eps"),
    "rf_loss t range": (lambda: rf_loss(model, X, t=torch.full((4,), 2.0)), "t"),
    "rf_loss t batch": (lambda: rf_loss(model, X, t=torch.full((2,), 0.5)), "t"),
    "rf_loss t device": (lambda: rf_loss(model, X, t=torch.full((4,), 0.5, device="meta")), "t"),
    "sample noise list": (lambda: sample(model, [[0.0, 0.0]], 4), "noise"),
    "sample noise int": (lambda: sample(model, X.long(), 4), "noise"),
    "sample steps 0": (lambda: sample(model, X, 0), "steps"),
    "sample steps float": (lambda: sample(model, X, 2.5), "steps"),
    "sample method": (lambda: sample(model, X, 4, method="rk4"), "method"),
    "sample shift <= 0": (lambda: sample(model, X, 4, shift=0.0), "alpha"),
    "straightness not a trajectory": (lambda: straightness(X), "trajectory"),
    # ODE
    "integrate method": (lambda: integrate(model, X, time_grid(4), "midpoint"), "method"),
    "integrate one time": (lambda: integrate(model, X, torch.ones(1)), "times"),
    "integrate z int": (lambda: integrate(model, X.long(), time_grid(4)), "z"),
    "time_grid steps 0": (lambda: time_grid(0), "steps"),
    # DDPM
    "q_sample k float": (lambda: ddpm.q_sample(X, K.float(), X, SCHEDULE), "k"),
    "q_sample k range": (lambda: ddpm.q_sample(X, torch.full((4,), 100), X, SCHEDULE), "k"),
    "q_sample k negative": (lambda: ddpm.q_sample(X, torch.full((4,), -1), X, SCHEDULE), "k"),
    "q_sample k shape": (lambda: ddpm.q_sample(X, K[:3], X, SCHEDULE), "k"),
    "q_sample k device": (lambda: ddpm.q_sample(X, K.to("meta"), X, SCHEDULE), "k"),
    "q_sample eps shape": (lambda: ddpm.q_sample(X, K, torch.zeros(4, 1), SCHEDULE), "eps"),
    "q_sample eps device": (lambda: ddpm.q_sample(X, K, META, SCHEDULE), "eps"),
    "q_sample x0 int": (lambda: ddpm.q_sample(X.long(), K, X, SCHEDULE), "x0"),
    "eps_loss x0 1-D": (lambda: ddpm.eps_loss(model, torch.zeros(4), SCHEDULE), "x0"),
    "ancestral_step k range": (lambda: ddpm.ancestral_step(model, X, 100, SCHEDULE, X), "k"),
    "ancestral_step noise shape": (lambda: ddpm.ancestral_step(model, X, 5, SCHEDULE, torch.zeros(4, 3)), "noise"),
    "ancestral_sample x_T int": (lambda: ddpm.ancestral_sample(model, X.long(), SCHEDULE), "x_T"),
    "ddim steps too many": (lambda: ddpm.ddim_sample(model, X, SCHEDULE, 101), "steps"),
    "ddim steps 0": (lambda: ddpm.ddim_sample(model, X, SCHEDULE, 0), "steps"),
    "schedule num_steps 0": (lambda: ddpm.linear_schedule(0), "num_steps"),
    "cosine num_steps": (lambda: ddpm.cosine_schedule(-3), "num_steps"),
    "schedule betas range": (lambda: ddpm.NoiseSchedule(torch.tensor([0.1, 1.5])), "betas"),
    "schedule betas 2-D": (lambda: ddpm.NoiseSchedule(torch.full((2, 2), 0.1)), "betas"),
    "make_schedule kind": (lambda: ddpm.make_schedule("quadratic"), "kind"),
    # time samplers and shift
    "uniform n 0": (lambda: sample_uniform(0), "n"),
    "logit-normal n 0": (lambda: sample_logit_normal(0), "n"),
    "logit-normal s 0": (lambda: sample_logit_normal(10, 0.0, 0.0), "s"),
    "logit-normal s < 0": (lambda: sample_logit_normal(10, 0.0, -1.0), "s"),
    "mode n 0": (lambda: sample_mode(0), "n"),
    "mode s too big": (lambda: sample_mode(10, 2.0), "s"),
    "mode s too small": (lambda: sample_mode(10, -1.5), "s"),
    "mode density s": (lambda: mode_density(T4, 3.0), "s"),
    "cosmap n 0": (lambda: sample_cosmap(0), "n"),
    "cosmap n float": (lambda: sample_cosmap(3.0), "n"),
    "make_time_sampler name": (lambda: make_time_sampler("lognormal"), "name"),
    "shift_time alpha 0": (lambda: shift_time(T4, 0.0), "alpha"),
    "shift_time alpha < 0": (lambda: shift_time(T4, -3.0), "alpha"),
    "shift_time t range": (lambda: shift_time(torch.tensor([0.5, 1.2]), 3.0), "t"),
    "shift_time t 2-D": (lambda: shift_time(torch.full((2, 2), 0.5), 3.0), "t"),
    "shift_time t int": (lambda: shift_time(torch.tensor([0, 1]), 3.0), "t"),
    "resolution_shift_alpha": (lambda: resolution_shift_alpha(0, 64), "m_pixels"),
    # embeddings and networks
    "timestep_embedding t 2-D": (lambda: timestep_embedding(torch.zeros(4, 1)), "t"),
    "timestep_embedding t int": (lambda: timestep_embedding(torch.zeros(4, dtype=torch.long)), "t"),
    "timestep_embedding dim odd": (lambda: timestep_embedding(T4, 7), "dim"),
    "timestep_embedding dim 0": (lambda: timestep_embedding(T4, 0), "dim"),
    "TimeMLP x shape": (lambda: TimeMLP((2,), hidden=8, depth=1, time_dim=4)(torch.zeros(4, 3), T4), "x"),
    "TimeMLP t range": (lambda: TimeMLP((2,), hidden=8, depth=1, time_dim=4)(X, T4 * 3), "t"),
    # exact field
    "marginal_velocity z dim": (lambda: marginal_velocity(torch.zeros(4, 3), 0.5, MIX), "z"),
    "marginal_velocity z 1-D": (lambda: marginal_velocity(torch.zeros(4), 0.5, MIX), "z"),
    "marginal_velocity z int": (lambda: marginal_velocity(X.long(), 0.5, MIX), "z"),
    "marginal_velocity t range": (lambda: marginal_velocity(X, 1.01, MIX), "t"),
    "marginal_velocity t batch": (lambda: marginal_velocity(X, torch.full((5,), 0.5), MIX), "t"),
    "marginal_velocity t device": (lambda: marginal_velocity(X, torch.full((4,), 0.5, device="meta"), MIX), "t"),
    "marginal_log_density t range": (lambda: marginal_log_density(X, -0.5, MIX), "t"),
    "mixture means": (lambda: GaussianMixture(torch.zeros(3), 1.0, torch.ones(3) / 3), "means"),
    "mixture weights": (lambda: GaussianMixture(torch.zeros(3, 2), 1.0, torch.ones(2) / 2), "weights"),
    "mixture std": (lambda: GaussianMixture(torch.zeros(3, 2), 0.0, torch.ones(3) / 3), "std"),
    # data and metrics
    "sample_toy name": (lambda: sample_toy("moons", 10), "name"),
    "sample_toy n": (lambda: sample_toy("8gaussians", 0), "n"),
    "mixture sample n": (lambda: MIX.sample(-1), "n"),
    "sliced_wasserstein y dim": (lambda: sliced_wasserstein(X, torch.zeros(4, 3)), "y"),
    "sliced_wasserstein x 1-D": (lambda: sliced_wasserstein(torch.zeros(4), X), "x"),
    "sliced_wasserstein y list": (lambda: sliced_wasserstein(X, [[0.0, 0.0]]), "y"),
    "mmd y dim": (lambda: mmd_rbf(X, torch.zeros(4, 1)), "y"),
    "make_generator seed": (lambda: make_generator(1.5), "seed"),
    "get_device name": (lambda: get_device("tpu"), "device"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, argument = CASES[case]
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"{argument}:"), message
    assert "expected" in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present here")
def test_asking_for_an_absent_gpu():
    with pytest.raises(ValueError) as err:
        get_device("cuda")
    assert str(err.value).startswith("device:") and "expected" in str(err.value)
