"""Reverse chains from a diffusers scheduler config: one place for every family that shares a schedule kind.

Variance-preserving families (SD 1/2, SDXL, PixArt) offer ``ddpm``, ``ddim`` and ``euler_ancestral``;
flow-matching families (SD3, Flux) offer ``sde``, ``ancestral`` and ``ode``
(:mod:`conjure_metrics.chains_flow`). The timesteps and sigmas always come from the diffusers scheduler
itself after ``set_timesteps``, so a chain walks exactly the grid the family's pipeline would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from conjure_metrics.chains import PredictionType, ReverseChain, ddim_chain, ddpm_chain, euler_ancestral_chain
from conjure_metrics.chains_flow import DEFAULT_FLOW_NOISE_LEVEL, flow_ancestral_chain, flow_ode_chain, flow_sde_chain

VARIANCE_PRESERVING_SAMPLERS = ("ddpm", "ddim", "euler_ancestral")
FLOW_SAMPLERS = ("sde", "ancestral", "ode")


def variance_preserving_chain(
    scheduler_config: Mapping[str, Any],
    sampler: str,
    num_steps: int,
    *,
    eta: float = 1.0,
    prediction_type: str = "epsilon",
) -> ReverseChain:
    """``sampler``'s chain on the training schedule of ``scheduler_config`` (any DDPM-family scheduler's config)."""
    from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler

    config = dict(scheduler_config)
    output = cast(PredictionType, prediction_type)  # the chain builders check it
    if sampler == "ddpm":
        scheduler = DDPMScheduler.from_config(config)
        scheduler.set_timesteps(num_steps)
        variance = scheduler.config.variance_type
        variance = variance if variance in ("fixed_small", "fixed_large") else "fixed_small"
        return ddpm_chain(scheduler.alphas_cumprod, scheduler.timesteps, variance, output)
    if sampler == "ddim":
        scheduler = DDIMScheduler.from_config(config)
        scheduler.set_timesteps(num_steps)
        return ddim_chain(
            scheduler.alphas_cumprod, scheduler.timesteps, eta, float(scheduler.final_alpha_cumprod), output
        )
    if sampler == "euler_ancestral":
        scheduler = EulerAncestralDiscreteScheduler.from_config(config)
        scheduler.set_timesteps(num_steps)
        return euler_ancestral_chain(scheduler.sigmas, scheduler.timesteps, float(scheduler.init_noise_sigma), output)
    raise ValueError(f"sampler must be one of {VARIANCE_PRESERVING_SAMPLERS}, got {sampler!r}")


def flow_matching_chain(
    scheduler_config: Mapping[str, Any],
    sampler: str,
    num_steps: int,
    *,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
    noise_level: float = DEFAULT_FLOW_NOISE_LEVEL,
) -> ReverseChain:
    """``sampler``'s chain on the grid ``FlowMatchEulerDiscreteScheduler.set_timesteps(num_steps, sigmas=, mu=)`` builds.

    ``sigmas`` and ``mu`` as the family's pipeline passes them (Flux: ``linspace(1, 1/T, T)`` and the
    dynamic shift ``mu`` of its image sequence length; SD3: neither). The timesteps are what the model
    is given.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"sampler must be one of {FLOW_SAMPLERS}, got {sampler!r}")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(scheduler_config))
    options: dict[str, Any] = {}
    if sigmas is not None:
        options["sigmas"] = list(sigmas)
    if mu is not None:
        options["mu"] = mu
    scheduler.set_timesteps(num_steps, **options)
    grid, timesteps = scheduler.sigmas.double(), scheduler.timesteps
    if sampler == "sde":
        return flow_sde_chain(grid, timesteps, noise_level)
    if sampler == "ancestral":
        return flow_ancestral_chain(grid, timesteps)
    return flow_ode_chain(grid, timesteps)
