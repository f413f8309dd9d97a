"""Flow-matching reverse chains: diffusers' own steps, the marginal-preserving SDE, exact divergences."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from conjure_metrics import conjure_similarity, jeffreys_terms
from conjure_metrics.chains_flow import flow_ancestral_chain, flow_ode_chain, flow_sde_chain, flow_sigmas
from tests.helpers import flow_gaussian_model

SHAPE = (2, 4, 8, 8)
SCHEDULES = {"static shift": {"shift": 3.0}, "dynamic shift": {"mu": 1.15}}


def _scheduler(schedule, num_steps=10, **config):
    """diffusers' flow-matching scheduler with SD3's static shift or Flux's dynamic shift ``mu``."""
    if "mu" in schedule:
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, **config)
        scheduler.set_timesteps(num_steps, mu=schedule["mu"])
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=schedule["shift"], **config)
        scheduler.set_timesteps(num_steps)
    return scheduler


def _state_and_velocity(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)


def _step(chain, i, x, output, z):
    return chain.x_coef[i] * x.double() + chain.output_coef[i] * output.double() + chain.noise_std[i] * z.double()


@pytest.mark.parametrize("schedule", [{"shift": 1.0}, *SCHEDULES.values()], ids=["no shift", *SCHEDULES])
def test_flow_sigmas_are_diffusers_schedule(schedule):
    args = {"mu": schedule["mu"]} if "mu" in schedule else {"shift": schedule["shift"]}
    torch.testing.assert_close(flow_sigmas(10, **args).float(), _scheduler(schedule).sigmas)


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES)
def test_ancestral_flow_step_is_diffusers_stochastic_sampling_step(schedule):
    scheduler = _scheduler(schedule, stochastic_sampling=True)
    chain = flow_ancestral_chain(scheduler.sigmas, scheduler.timesteps)
    x, velocity = _state_and_velocity()
    for i, t in enumerate(scheduler.timesteps):  # each call moves the scheduler's step index on
        stepped = scheduler.step(velocity, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(stepped, _step(chain, i, x, velocity, z).float())
    assert chain.stochastic.tolist() == [True] * 9 + [False]  # the last step lands on x0_hat


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES)
def test_ode_flow_step_is_diffusers_default_step(schedule):
    scheduler = _scheduler(schedule)
    chain = flow_ode_chain(scheduler.sigmas, scheduler.timesteps)
    x, velocity = _state_and_velocity()
    for i, t in enumerate(scheduler.timesteps):
        stepped = scheduler.step(velocity, t, x).prev_sample
        torch.testing.assert_close(stepped, _step(chain, i, x, velocity, torch.zeros(SHAPE)).float())
    assert not chain.stochastic.any()


def test_eps_factor_turns_velocity_differences_into_noise_differences():
    # From diffusers' clean-sample prediction x0 = x - sigma u and x = (1 - sigma) x0 + sigma eps.
    scheduler = _scheduler(SCHEDULES["static shift"])
    chain = flow_ode_chain(scheduler.sigmas, scheduler.timesteps)
    x, velocity = (v.double() for v in _state_and_velocity())
    other = velocity.flip(0)
    for i, sigma in enumerate(scheduler.sigmas[:-1].double()):

        def implied_noise(u):
            return (x - (1 - sigma) * (x - sigma * u)) / sigma

        torch.testing.assert_close(
            implied_noise(velocity) - implied_noise(other), chain.eps_factor[i] * (velocity - other)
        )
    assert chain.eps_factor[0] == 0  # at pure noise eps = x, whatever the model says


def test_flow_chain_signal_level_is_the_variance_preserving_equivalent():
    sigmas = flow_sigmas(6, shift=3.0)
    chain = flow_sde_chain(sigmas, 1000 * sigmas[:-1])
    snr = (1 - sigmas[:-1]) ** 2 / sigmas[:-1] ** 2
    torch.testing.assert_close(chain.alpha_bar / (1 - chain.alpha_bar), snr)
    assert chain.landing_noise_level[-1] == 0 and chain.final_alpha_bar == 1


def test_sde_step_is_euler_maruyama_of_the_sde_written_with_the_score():
    # dx = [u - g²/2 · score] dsigma + g dW, score = -(x + (1 - sigma) u) / sigma, g² = a² sigma / (1 - sigma).
    noise_level = 0.9
    sigmas = flow_sigmas(8, shift=3.0)
    chain = flow_sde_chain(sigmas, 1000 * sigmas[:-1], noise_level)
    generator = torch.Generator().manual_seed(4)
    x, velocity, z = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    for i in range(1, 8):  # the step from sigma = 1 is the next test's
        sigma, step = sigmas[i], sigmas[i + 1] - sigmas[i]
        diffusion_squared = noise_level**2 * sigma / (1 - sigma)
        score = -(x + (1 - sigma) * velocity) / sigma
        expected = x + step * (velocity - diffusion_squared / 2 * score) + (diffusion_squared * -step).sqrt() * z
        torch.testing.assert_close(_step(chain, i, x, velocity, z), expected, rtol=1e-12, atol=1e-12)


def test_sde_step_from_pure_noise_is_the_ancestral_step():
    sigmas = flow_sigmas(8, shift=3.0)
    assert sigmas[0] == 1
    sde, ancestral = flow_sde_chain(sigmas, 1000 * sigmas[:-1]), flow_ancestral_chain(sigmas, 1000 * sigmas[:-1])
    for field in ("x_coef", "output_coef", "noise_std"):
        assert getattr(sde, field)[0] == getattr(ancestral, field)[0]
        assert torch.isfinite(getattr(sde, field)).all()


@pytest.mark.parametrize("noise_level", [0.7, 1.0])
def test_sde_chain_keeps_the_flow_marginals(noise_level):
    # Driven by the exact velocity of Gaussian data, the state stays distributed as (1 - sigma) x0 + sigma eps,
    # up to Euler-Maruyama error. That error is large just below pure noise, where g² |Δ| is not small at
    # any number of steps, and relaxes as the chain goes on: checked from sigma = 0.5 down (at 200 steps
    # about 1 %). The affine velocity is read off the model.
    model = flow_gaussian_model("sde", dim=3, shift=3.0, noise_level=noise_level)
    prompt, num_steps = "zebra", 200
    chain = model.reverse_chain(num_steps)
    sigmas = flow_sigmas(num_steps, shift=3.0)
    conditioning = model.encode_prompts([prompt])
    mean, variance = torch.zeros(3, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for i in range(num_steps):
        timestep = chain.timesteps[i : i + 1]
        offset = model.predict_noise(torch.zeros(1, 3, dtype=torch.float64), timestep, conditioning)[0]
        slope = model.predict_noise(torch.ones(1, 3, dtype=torch.float64), timestep, conditioning)[0] - offset
        gain = chain.x_coef[i] + chain.output_coef[i] * slope
        mean = gain * mean + chain.output_coef[i] * offset
        variance = gain[0] ** 2 * variance + chain.noise_std[i] ** 2
        landing = sigmas[i + 1]
        true_variance = (1 - landing) ** 2 * model.variances[prompt] + landing**2
        torch.testing.assert_close(mean, (1 - landing) * model.means[prompt], rtol=0, atol=1e-9)
        if landing <= 0.5:
            assert abs(variance / true_variance - 1) < 0.02, (i, float(variance / true_variance))


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@pytest.mark.parametrize("weighting", ["girsanov", "simple"])
@pytest.mark.parametrize("sampler", ["sde", "ancestral"])
def test_estimate_is_within_three_standard_errors_of_exact_flow_chain_divergence(sampler, weighting, guidance_scale):
    model = flow_gaussian_model(sampler)
    terms = jeffreys_terms(
        ["tiger"], ["zebra"], model, num_steps=10, num_samples=256, guidance_scale=guidance_scale, seed=3
    )
    estimate, stderr = terms.divergence(weighting).item(), terms.stderr(weighting).item()
    exact = model.exact_divergence("tiger", "zebra", 10, guidance_scale, weighting)
    assert abs(estimate - exact) < 3 * stderr
    assert stderr < 0.1 * exact  # the check above is not vacuous


def test_dynamic_shift_estimate_is_within_three_standard_errors_of_exact_divergence():
    model = flow_gaussian_model("sde", shift=1.0, mu=1.15)
    terms = jeffreys_terms(["leopard"], ["fox"], model, num_steps=8, num_samples=256, guidance_scale=2.0, seed=5)
    exact = model.exact_divergence("leopard", "fox", 8, 2.0, "girsanov")
    assert abs(terms.divergence("girsanov").item() - exact) < 3 * terms.stderr("girsanov").item()


def test_ode_simple_estimate_is_within_three_standard_errors_of_exact_divergence():
    model = flow_gaussian_model("ode")
    terms = jeffreys_terms(["tiger"], ["zebra"], model, num_steps=10, num_samples=256, guidance_scale=3.0, seed=3)
    exact = model.exact_divergence("tiger", "zebra", 10, 3.0, "simple")
    assert abs(terms.divergence("simple").item() - exact) < 3 * terms.stderr("simple").item()


def test_flow_ode_is_refused_for_girsanov_weighting():
    model = flow_gaussian_model("ode")
    with pytest.raises(ValueError, match="weighting='girsanov' needs stochastic steps"):
        conjure_similarity(["tiger"], ["zebra"], model, num_steps=6, guidance_scale=1.0, weighting="girsanov")
    assert (
        conjure_similarity(
            ["tiger"], ["zebra"], model, num_steps=6, num_samples=2, guidance_scale=1.0, weighting="simple"
        ).divergence[0]
        > 0
    )


@pytest.mark.parametrize(
    "sigmas, timesteps",
    [([1.0, 0.5, 0.6, 0.0], [1000, 500, 600]), ([1.2, 0.5, 0.0], [1200, 500]), ([1.0, 0.5], [1000, 500])],
    ids=["rising", "above one", "no end"],
)
def test_flow_chain_refuses_sigmas_that_do_not_step_down_within_zero_and_one(sigmas, timesteps):
    with pytest.raises(ValueError, match="sigmas"):
        flow_ancestral_chain(sigmas, timesteps)


def test_sde_chain_refuses_a_non_positive_noise_level():
    sigmas = flow_sigmas(4)
    with pytest.raises(ValueError, match="noise_level"):
        flow_sde_chain(sigmas, 1000 * sigmas[:-1], noise_level=0.0)
