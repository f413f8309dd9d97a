"""The linear-Gaussian chains reproduce diffusers' own scheduler steps (mean and noise level), for every prediction type."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler

from conjure_metrics.chains import ddim_chain, ddpm_chain, euler_ancestral_chain

SCHEDULER_CONFIG = dict(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    timestep_spacing="leading",
    steps_offset=1,
)
EULER_CONFIG = {k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"}
SHAPE = (2, 3, 4, 4)
PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]


def _probe(step_fn, seed=0):
    """Split a scheduler step into mean (for x, model output) and noise std, using the same noise twice."""
    torch.manual_seed(1)
    x, output = torch.randn(SHAPE), torch.randn(SHAPE)
    with_inputs = step_fn(output, x, torch.Generator().manual_seed(seed))
    noise_only = step_fn(torch.zeros(SHAPE), torch.zeros(SHAPE), torch.Generator().manual_seed(seed))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    return x, output, with_inputs - noise_only, (noise_only / z).mean().item()


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("num_steps", [4, 10])
def test_ddpm_chain_matches_diffusers_step(num_steps, prediction_type):
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction_type)
    scheduler.set_timesteps(num_steps)
    chain = ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps, prediction_type=prediction_type)
    for i, t in enumerate(scheduler.timesteps):
        x, output, mean, std = _probe(lambda e, s, g: scheduler.step(e, t, s, generator=g).prev_sample)
        expected = chain.x_coef[i] * x + chain.output_coef[i] * output
        torch.testing.assert_close(mean, expected.float(), rtol=1e-4, atol=1e-5)
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_chain_matches_diffusers_step_with_eta(prediction_type):
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction_type)
    scheduler.set_timesteps(8)
    chain = ddim_chain(
        scheduler.alphas_cumprod,
        scheduler.timesteps,
        eta=0.7,
        final_alpha_cumprod=float(scheduler.final_alpha_cumprod),
        prediction_type=prediction_type,
    )
    for i, t in enumerate(scheduler.timesteps):
        x, output, mean, std = _probe(lambda e, s, g: scheduler.step(e, t, s, eta=0.7, generator=g).prev_sample)
        torch.testing.assert_close(
            mean, (chain.x_coef[i] * x + chain.output_coef[i] * output).float(), rtol=1e-4, atol=1e-5
        )
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


# "linspace" spacing gives fractional timesteps: the v conversion must use each step's own sigma.
@pytest.mark.parametrize("timestep_spacing", ["leading", "linspace"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_ancestral_chain_matches_diffusers_step(prediction_type, timestep_spacing):
    config = dict(EULER_CONFIG, prediction_type=prediction_type, timestep_spacing=timestep_spacing)

    def step(index):
        def run(output, sample, generator):
            scheduler = EulerAncestralDiscreteScheduler(**config)
            scheduler.set_timesteps(6)
            scheduler.set_begin_index(index)
            return scheduler.step(output, scheduler.timesteps[index], sample, generator=generator).prev_sample

        return run

    scheduler = EulerAncestralDiscreteScheduler(**config)
    scheduler.set_timesteps(6)
    chain = euler_ancestral_chain(
        scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma), prediction_type
    )
    for i in range(6):
        x, output, mean, std = _probe(step(i))
        torch.testing.assert_close(
            mean, (chain.x_coef[i] * x + chain.output_coef[i] * output).float(), rtol=1e-4, atol=1e-4
        )
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize(
    "sampler, prediction_type",
    [
        ("ddim", "epsilon"),
        ("ddim", "v_prediction"),
        ("ddim", "sample"),
        ("euler_ancestral", "epsilon"),
        ("euler_ancestral", "v_prediction"),
    ],
)
def test_denoised_is_diffusers_prediction_of_the_clean_sample(sampler, prediction_type):
    if sampler == "ddim":
        scheduler = DDIMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction_type)
        scheduler.set_timesteps(6)
        chain = ddim_chain(scheduler.alphas_cumprod, scheduler.timesteps, eta=0.0, prediction_type=prediction_type)
    else:
        scheduler = EulerAncestralDiscreteScheduler(**EULER_CONFIG, prediction_type=prediction_type)
        scheduler.set_timesteps(6)
        chain = euler_ancestral_chain(
            scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma), prediction_type
        )
    generator = torch.Generator().manual_seed(2)
    x, output = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    for i, t in enumerate(scheduler.timesteps):  # each call moves the scheduler's step index on
        expected = scheduler.step(output, t, x, generator=generator).pred_original_sample
        torch.testing.assert_close(chain.denoised(x, output, i), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_eps_factor_turns_output_differences_into_noise_differences(prediction_type):
    # The noise implied by diffusers' own clean-sample prediction, eps = (x - sqrt(abar) x0) / sqrt(1 - abar).
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction_type)
    scheduler.set_timesteps(6)
    chain = ddim_chain(scheduler.alphas_cumprod, scheduler.timesteps, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(3)
    x, output_a, output_b = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    for i, t in enumerate(scheduler.timesteps):
        abar = scheduler.alphas_cumprod[t].double()

        def implied_noise(output):
            x0 = scheduler.step(output, t, x, eta=0.0).pred_original_sample
            return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

        torch.testing.assert_close(
            implied_noise(output_a) - implied_noise(output_b),
            chain.eps_factor[i] * (output_a - output_b),
            rtol=1e-6,
            atol=1e-9,
        )


def test_last_ddpm_step_is_deterministic_and_gets_no_girsanov_weight():
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(10)
    chain = ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps)
    assert chain.noise_std[-1] == 0
    assert chain.girsanov_weight()[-1] == 0
    assert (chain.girsanov_weight()[:-1] > 0).all()


def test_chain_rejects_tensors_of_different_lengths():
    chain = ddpm_chain(torch.linspace(0.99, 0.01, 100), [90, 50, 10])
    with pytest.raises(ValueError, match="same length"):
        type(chain)(
            chain.timesteps, chain.input_scale[:2], chain.x_coef, chain.eps_coef, chain.noise_std, chain.alpha_bar
        )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler_ancestral"])
def test_girsanov_weight_turns_squared_output_differences_into_the_steps_gaussian_kl(sampler, prediction_type):
    # Independent of the chain's own formula: torch.distributions' KL between the two transition
    # kernels (the coefficients themselves are checked against diffusers above).
    if sampler == "euler_ancestral":
        scheduler = EulerAncestralDiscreteScheduler(**EULER_CONFIG)
        scheduler.set_timesteps(6)
        chain = euler_ancestral_chain(
            scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma), prediction_type
        )
    else:
        scheduler = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler)(**SCHEDULER_CONFIG)
        scheduler.set_timesteps(6)
        chain = (
            ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps, prediction_type=prediction_type)
            if sampler == "ddpm"
            else ddim_chain(scheduler.alphas_cumprod, scheduler.timesteps, eta=0.7, prediction_type=prediction_type)
        )
    generator = torch.Generator().manual_seed(0)
    x, output_a, output_b = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    for i in torch.nonzero(chain.stochastic).flatten().tolist():
        std = chain.noise_std[i].double()
        mean_a = chain.x_coef[i] * x + chain.output_coef[i] * output_a
        mean_b = chain.x_coef[i] * x + chain.output_coef[i] * output_b
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mean_a, std), torch.distributions.Normal(mean_b, std)
        )
        weighted = chain.girsanov_weight()[i] * (output_a - output_b).pow(2).sum()
        torch.testing.assert_close(weighted, kl.sum(), rtol=1e-9, atol=0)


def test_eps_coef_is_the_output_coefficient_under_its_former_name():
    chain = ddpm_chain(torch.linspace(0.99, 0.01, 100), [90, 50, 10], prediction_type="v_prediction")
    assert chain.eps_coef is chain.output_coef


def test_a_variance_preserving_chain_refuses_a_flow_velocity():
    with pytest.raises(ValueError, match="prediction_type"):
        ddpm_chain(torch.linspace(0.99, 0.01, 100), [90, 50, 10], prediction_type="flow_prediction")
