"""How each reverse step's squared prediction difference counts towards the divergence.

The estimator measures, at every step ``i`` of a reverse chain, ``||Δout_w||²``: the squared difference
of the two sides' guided model outputs, summed over elements, in the model's own parametrisation
(noise, v or flow velocity). A *weighting* turns those into a divergence,
``J = Σ_i weight[i] · ||Δout_w||²_i`` (per direction, then summed over both):

* ``simple`` — the paper's: the mean over elements of ``||Δε_w||²``, averaged uniformly over the
  counted steps (the L_simple loss of DDPM); ``Δε = eps_factor · Δout`` (1 for noise predictors), so
  the weight is ``eps_factor²`` over the number of elements and of counted steps, the same quantity
  for every family.
* ``girsanov`` — the exact KL of the two discrete Gaussian chains: ``output_coef² / (2 noise_std²)`` on
  each stochastic counted step (deterministic steps have no finite KL and count 0).
* ``min_snr`` — ``simple`` with each step scaled by ``min(SNR, 5) / SNR`` (the Min-SNR-γ loss
  weighting of Hang et al., ICCV 2023, γ = 5): steps at low noise, where any small weight change moves
  the ε prediction by a lot without changing the image, count less.

Which steps count is the *noise floor*: a step counts when the noise level it lands on is at least
``min_noise``, the variance-preserving noise standard deviation ``σ = √(1 − ᾱ)`` (0 is the data, 1 pure
noise). A floor on noise levels means the same part of the process at any number of steps, unlike a
floor on timesteps, and a floor on where a step *lands* is what bounds the exact KL, which diverges
like ``1 / σ²_landing`` as the chain reaches the data. ``min_timestep`` (a floor on the step's own
model timestep) is kept for compatibility.

Pure torch; :mod:`conjure_metrics.chains` describes the chains.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain

Weighting = Literal["simple", "girsanov", "min_snr"]
WEIGHTINGS: tuple[Weighting, ...] = ("simple", "girsanov", "min_snr")

MIN_SNR_GAMMA = 5.0


def counted_steps(chain: ReverseChain, min_noise: float = 0.0, min_timestep: float = 0.0) -> Tensor:
    """Boolean mask of the steps that count: landing noise level ≥ ``min_noise`` and timestep ≥ ``min_timestep``.

    Examples:
        >>> from conjure_metrics.chains import cosine_betas, ddpm_chain, leading_timesteps
        >>> chain = ddpm_chain(torch.cumprod(1 - cosine_betas(), 0), leading_timesteps(5))
        >>> counted_steps(chain, min_noise=0.3).tolist()  # the last steps land near the data
        [True, True, True, False, False]
    """
    return (chain.landing_noise_level >= min_noise) & (chain.timesteps.double() >= min_timestep)


def step_weights(chain: ReverseChain, weighting: str, sample_numel: int, counted: Tensor) -> Tensor:
    """Per-step factors (float64, zero on steps not counted) that turn ``||Δout_w||²`` into the divergence.

    ``sample_numel`` is the number of elements of one sample (``simple`` and ``min_snr`` average over them).
    """
    counted = counted.cpu()
    if weighting == "girsanov":
        return torch.where(counted, chain.girsanov_weight(), torch.zeros((), dtype=torch.float64))
    uniform = counted.double() * chain.eps_factor**2 / (max(int(counted.sum()), 1) * sample_numel)
    if weighting == "simple":
        return uniform
    if weighting == "min_snr":
        abar = chain.alpha_bar.double()
        snr = abar / (1 - abar).clamp_min(torch.finfo(torch.float64).tiny)
        return uniform * torch.where(snr > MIN_SNR_GAMMA, MIN_SNR_GAMMA / snr, torch.ones_like(snr))
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def all_step_weights(chain: ReverseChain, sample_numel: int, counted: Tensor) -> dict[str, Tensor]:
    """:func:`step_weights` for every weighting, computed once per chain (they share every model call)."""
    return {name: step_weights(chain, name, sample_numel, counted) for name in WEIGHTINGS}
