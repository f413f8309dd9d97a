"""One-shot ConjureSimilarity: per-pair divergences, standard errors and similarities, no Metric state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.adaptive import adaptive_jeffreys_terms
from conjure_metrics.denoisers.loading import ModelLike, load_pair
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.estimator import JeffreysTerms, jeffreys_terms
from conjure_metrics.settings import ConjureSettings, comparison_mode
from conjure_metrics.validation import check_progress_bar, check_prompts
from conjure_metrics.weighting import Weighting, counted_steps, step_weights


def divergence_to_similarity(divergence: Tensor) -> Tensor:
    """The monotone map ``1 / (1 + J)``: 1 for identical processes, towards 0 as they part.

    Rankings (and so Spearman correlations) are the same as those of ``-J``.
    """
    return 1 / (1 + divergence)


@dataclass(frozen=True)
class ConjureResult:
    """Per-pair results of :func:`conjure_similarity` (float64 tensors of length ``num_pairs``).

    ``settings`` are the ones used, with the mode's defaults filled in (``weighting``, ``min_noise``).
    """

    similarity: Tensor
    divergence: Tensor
    stderr: Tensor
    terms: JeffreysTerms
    settings: ConjureSettings

    @property
    def mean_similarity(self) -> Tensor:
        return self.similarity.mean()


def conjure_similarity(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model: ModelLike = None,
    *,
    model_b: ModelLike = None,
    num_steps: int = 10,
    num_samples: int = 5,
    guidance_scale: float = 7.5,
    weighting: Weighting | None = None,
    min_noise: float | None = None,
    seed: int = 0,
    max_batch_size: int = 64,
    min_timestep: float = 0,
    target_stderr: float | None = None,
    max_samples: int | None = None,
    sampler: str | None = None,
    progress_bar: bool | None = None,
    **load_kwargs: Any,
) -> ConjureResult:
    """Semantic similarity of prompt pairs as a text-to-image diffusion model imagines them.

    For each pair, the Jeffreys divergence ``J`` between the reverse diffusion processes that
    ``model`` runs under ``prompts_a[i]`` and under ``prompts_b[i]`` is estimated by Monte-Carlo
    (Liu & Soatto, "Conjuring Semantic Similarity", ICLR 2026), with its standard error, and mapped
    to a similarity ``1 / (1 + J)``.

    Args:
        prompts_a: the first prompt of each pair.
        prompts_b: the second prompt of each pair (same length as ``prompts_a``).
        model: a :class:`Denoiser`, a diffusers folder or hub id, a pipeline, a callable returning
            one, or ``None`` for the embedded conjure-zoo model.
        model_b: the model for ``prompts_b`` (defaults to ``model``). With ``prompts_b = prompts_a``
            this compares two checkpoints on the same prompts.
        num_steps: reverse steps per trajectory (paper: ~10).
        num_samples: Monte-Carlo samples per pair (the same noise for every pair; paper: 1-5).
        guidance_scale: classifier-free guidance ``w`` (``1`` disables guidance; paper: 7.5).
        weighting: ``"simple"`` (paper's uniform ``||Δeps||²``), ``"girsanov"`` (exact path KL of the
            chains) or ``"min_snr"`` (:mod:`conjure_metrics.weighting`). Default: ``"simple"``.
        min_noise: noise floor: a step counts when the noise level σ = √(1 − ᾱ) it lands on is at least
            this (0 counts every step). Default (``None``): 0 for two prompts under one model,
            0.2 with ``model_b`` (checkpoint comparison), where the near-noiseless last steps measure
            generic weight drift rather than meaning (see docs/method.md, "Step weighting").
        seed: noise seed; the score of a pair depends on it only, not on batch size or order.
        max_batch_size: most rows per model call.
        min_timestep: steps at lower model timesteps are left out too (prefer ``min_noise``, which
            means the same part of the process at any number of steps).
        target_stderr: adaptive sampling (:mod:`conjure_metrics.adaptive`): a pilot of ``num_samples``
            samples (at least 2) measures each pair's spread, then the pair draws as many fresh samples
            as this standard error needs (at least 2); the result comes from the fresh samples only,
            so it stays unbiased (its standard error lands near the target, not always below it).
        max_samples: most samples per pair with ``target_stderr``, pilot included (default ``8 * num_samples``).
        sampler: the reverse process trajectories are drawn with (``None``: the model's default): ``"ddpm"``,
            ``"ddim"``, ``"euler_ancestral"`` for Stable Diffusion 1/2, SDXL, PixArt; ``"sde"``, ``"ancestral"``,
            ``"ode"`` for SD3 and Flux. The generative process is part of what a prompt means.
        progress_bar: show a tqdm bar (``None``: only on a terminal).
        **load_kwargs: passed to ``DiffusersDenoiser.from_pretrained`` when a model is a path or id
            (e.g. ``torch_dtype``, ``device``).

    Examples:
        >>> import torch
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> model = GaussianConditionals(
        ...     means={"": torch.zeros(4), "tiger": torch.ones(4), "lion": 0.8 * torch.ones(4), "zebra": -torch.ones(4)},
        ...     variances={"": 1.0, "tiger": 0.1, "lion": 0.1, "zebra": 0.1},
        ...     alphas_cumprod=torch.cumprod(1 - linear_betas(), 0))
        >>> result = conjure_similarity(["tiger", "tiger"], ["lion", "zebra"], model, guidance_scale=1.0)
        >>> bool(result.similarity[0] > result.similarity[1])
        True
    """
    prompts_a, prompts_b = check_prompts(prompts_a, prompts_b)
    check_progress_bar(progress_bar)
    settings = ConjureSettings(
        num_steps=num_steps,
        num_samples=num_samples,
        guidance_scale=guidance_scale,
        weighting=weighting,
        min_noise=min_noise,
        seed=seed,
        max_batch_size=max_batch_size,
        min_timestep=min_timestep,
        target_stderr=target_stderr,
        max_samples=max_samples,
        sampler=sampler,
    )
    denoiser_a, denoiser_b = load_pair(model, model_b, settings.sampler, load_kwargs)
    return score_pairs(prompts_a, prompts_b, denoiser_a, denoiser_b, settings, progress_bar=progress_bar)


def check_chain_settings(denoiser: Denoiser, settings: ConjureSettings) -> None:
    """Settings that only the model's reverse chain can rule out (on resolved settings): a noise floor
    or ``min_timestep`` that leaves out every step (the divergence would be 0 for any pair),
    ``girsanov`` on a deterministic sampler, a ``num_steps`` beyond what the schedule resolves (the chain
    repeats a timestep, so steps collapse and the divergence is off by their count)."""
    chain = denoiser.reverse_chain(int(settings.num_steps))
    if len(torch.unique(chain.timesteps)) < chain.num_steps:
        raise ValueError(
            f"num_steps={int(settings.num_steps)} is more steps than this model's schedule resolves: its "
            f"chain repeats timesteps ({len(torch.unique(chain.timesteps))} distinct of {chain.num_steps})"
        )
    counted = counted_steps(chain, settings.min_noise or 0.0, settings.min_timestep)
    if not counted.any():
        raise ValueError(
            f"min_noise={settings.min_noise} and min_timestep={settings.min_timestep} leave out every step: this "
            f"model's {int(settings.num_steps)}-step chain lands on noise levels "
            f"{float(chain.landing_noise_level.max()):.3g} down to {float(chain.landing_noise_level.min()):.3g} "
            f"(timesteps {int(chain.timesteps.max())} down to {int(chain.timesteps.min())})"
        )
    if settings.weighting == "girsanov" and not (chain.stochastic & counted).any():
        raise ValueError(
            "weighting='girsanov' needs stochastic steps (above the noise floor): a deterministic "
            "sampler has no finite path KL; use weighting='simple' or an ancestral sampler"
        )
    # A flow model's first step starts from pure noise, where a velocity difference is no noise-prediction
    # difference (factor 0): with few steps and a floor it can be the only step left, and every pair
    # would score exactly 0 without a word.
    if not (step_weights(chain, str(settings.weighting), 1, counted) > 0).any():
        raise ValueError(
            f"num_steps={int(settings.num_steps)} with min_noise={settings.min_noise} and "
            f"min_timestep={settings.min_timestep} leaves only steps that weighting={settings.weighting!r} gives "
            "weight 0 (this model's first step starts from pure noise, where no difference of its outputs is a "
            "difference of noise predictions); use more steps or a lower min_noise"
        )


def score_pairs(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    denoiser_a: Denoiser,
    denoiser_b: Denoiser | None,
    settings: ConjureSettings,
    *,
    progress_bar: bool | None = False,
) -> ConjureResult:
    """The computation :func:`conjure_similarity` and the metric share, on checked settings and loaded models.

    Unset ``weighting`` / ``min_noise`` take the defaults of the comparison's mode.
    """
    settings = settings.for_mode(comparison_mode(denoiser_b, denoiser_a))
    weighting = settings.weighting
    assert weighting is not None  # for_mode filled in the mode's default
    check_chain_settings(denoiser_a, settings)
    estimator = dict(settings.estimator_kwargs(), progress_bar=progress_bar)
    if settings.target_stderr is None:
        terms = jeffreys_terms(prompts_a, prompts_b, denoiser_a, denoiser_b, **estimator)
    else:
        estimator["max_samples"] = int(settings.max_samples or 8 * settings.num_samples)
        terms = adaptive_jeffreys_terms(
            prompts_a,
            prompts_b,
            denoiser_a,
            denoiser_b,
            target_stderr=float(settings.target_stderr),
            weighting=weighting,
            **estimator,
        )
    divergence = terms.divergence(weighting)
    return ConjureResult(divergence_to_similarity(divergence), divergence, terms.stderr(weighting), terms, settings)
