"""The linear-Gaussian chains reproduce diffusers' own scheduler steps (mean and noise level)."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler

from conjure_metrics.chains import ddim_chain, ddpm_chain, euler_ancestral_chain

SCHEDULER_CONFIG = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                        timestep_spacing="leading", steps_offset=1)
SHAPE = (2, 3, 4, 4)


def _probe(step_fn, seed=0):
    """Split a scheduler step into mean (for x, eps) and noise std, using the same noise twice."""
    torch.manual_seed(1)
    x, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    with_inputs = step_fn(eps, x, torch.Generator().manual_seed(seed))
    noise_only = step_fn(torch.zeros(SHAPE), torch.zeros(SHAPE), torch.Generator().manual_seed(seed))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    return x, eps, with_inputs - noise_only, (noise_only / z).mean().item()


@pytest.mark.parametrize("num_steps", [4, 10])
def test_ddpm_chain_matches_diffusers_step(num_steps):
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(num_steps)
    chain = ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        x, eps, mean, std = _probe(lambda e, s, g: scheduler.step(e, t, s, generator=g).prev_sample)
        expected = chain.x_coef[i] * x + chain.eps_coef[i] * eps
        torch.testing.assert_close(mean, expected.float(), rtol=1e-4, atol=1e-5)
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


def test_ddim_chain_matches_diffusers_step_with_eta():
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(8)
    chain = ddim_chain(scheduler.alphas_cumprod, scheduler.timesteps, eta=0.7, final_alpha_cumprod=float(scheduler.final_alpha_cumprod))
    for i, t in enumerate(scheduler.timesteps):
        x, eps, mean, std = _probe(lambda e, s, g: scheduler.step(e, t, s, eta=0.7, generator=g).prev_sample)
        torch.testing.assert_close(mean, (chain.x_coef[i] * x + chain.eps_coef[i] * eps).float(), rtol=1e-4, atol=1e-5)
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


def test_euler_ancestral_chain_matches_diffusers_step():
    def step(index):
        def run(eps, sample, generator):
            scheduler = EulerAncestralDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"})
            scheduler.set_timesteps(6)
            scheduler.set_begin_index(index)
            return scheduler.step(eps, scheduler.timesteps[index], sample, generator=generator).prev_sample
        return run

    scheduler = EulerAncestralDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"})
    scheduler.set_timesteps(6)
    chain = euler_ancestral_chain(scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma))
    for i in range(6):
        x, eps, mean, std = _probe(step(i))
        torch.testing.assert_close(mean, (chain.x_coef[i] * x + chain.eps_coef[i] * eps).float(), rtol=1e-4, atol=1e-4)
        assert std == pytest.approx(float(chain.noise_std[i]), rel=1e-3, abs=1e-6)


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
        type(chain)(chain.timesteps, chain.input_scale[:2], chain.x_coef, chain.eps_coef, chain.noise_std, chain.alpha_bar)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler_ancestral"])
def test_girsanov_weight_turns_squared_noise_differences_into_the_steps_gaussian_kl(sampler):
    # Independent of the chain's own formula: torch.distributions' KL between the two transition
    # kernels (the coefficients themselves are checked against diffusers above).
    if sampler == "euler_ancestral":
        scheduler = EulerAncestralDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"})
        scheduler.set_timesteps(6)
        chain = euler_ancestral_chain(scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma))
    else:
        scheduler = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler)(**SCHEDULER_CONFIG)
        scheduler.set_timesteps(6)
        chain = (ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps) if sampler == "ddpm"
                 else ddim_chain(scheduler.alphas_cumprod, scheduler.timesteps, eta=0.7))
    generator = torch.Generator().manual_seed(0)
    x, eps_a, eps_b = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    for i in torch.nonzero(chain.stochastic).flatten().tolist():
        std = chain.noise_std[i].double()
        mean_a = chain.x_coef[i] * x + chain.eps_coef[i] * eps_a
        mean_b = chain.x_coef[i] * x + chain.eps_coef[i] * eps_b
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean_a, std), torch.distributions.Normal(mean_b, std))
        weighted = chain.girsanov_weight()[i] * (eps_a - eps_b).pow(2).sum()
        torch.testing.assert_close(weighted, kl.sum(), rtol=1e-9, atol=0)
