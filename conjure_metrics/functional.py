"""One-shot ConjureSimilarity: per-pair divergences, standard errors and similarities, no Metric state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import Tensor

from conjure_metrics.adaptive import adaptive_jeffreys_terms
from conjure_metrics.denoisers.loading import ModelLike, load_denoiser
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.estimator import JeffreysTerms, Weighting, jeffreys_terms
from conjure_metrics.validation import check_prompts, check_settings


def divergence_to_similarity(divergence: Tensor) -> Tensor:
    """The monotone map ``1 / (1 + J)``: 1 for identical processes, towards 0 as they part.

    Rankings (and so Spearman correlations) are the same as those of ``-J``.
    """
    return 1 / (1 + divergence)


@dataclass(frozen=True)
class ConjureResult:
    """Per-pair results of :func:`conjure_similarity` (float64 tensors of length ``num_pairs``)."""

    similarity: Tensor
    divergence: Tensor
    stderr: Tensor
    terms: JeffreysTerms

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
    weighting: Weighting = "simple",
    seed: int = 0,
    max_batch_size: int = 64,
    min_timestep: float = 0,
    target_stderr: float | None = None,
    max_samples: int | None = None,
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
        weighting: ``"simple"`` (paper's uniform ``||Δeps||²``) or ``"girsanov"`` (exact path KL of the chains).
        seed: noise seed; the score of a pair depends on it only, not on batch size or order.
        max_batch_size: most rows per model call.
        min_timestep: steps at lower timesteps are left out of the divergence.
        target_stderr: adaptive sampling (:mod:`conjure_metrics.adaptive`): a pilot of ``num_samples``
            samples (at least 2) measures each pair's spread, then the pair draws as many fresh samples
            as this standard error needs (at least 2); the result comes from the fresh samples only,
            so it stays unbiased (its standard error lands near the target, not always below it).
        max_samples: most samples per pair with ``target_stderr``, pilot included (default ``8 * num_samples``).
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
    check_settings(num_steps, num_samples, guidance_scale, weighting, seed, max_batch_size, min_timestep,
                   target_stderr, max_samples)
    denoiser_a = load_denoiser(model, "model", **load_kwargs)
    denoiser_b = None if model_b is None else load_denoiser(model_b, "model_b", **load_kwargs)
    return score_pairs(
        prompts_a, prompts_b, denoiser_a, denoiser_b, num_steps=num_steps, num_samples=num_samples,
        guidance_scale=guidance_scale, weighting=weighting, seed=seed, max_batch_size=max_batch_size,
        min_timestep=min_timestep, target_stderr=target_stderr, max_samples=max_samples, progress_bar=progress_bar,
    )


def check_chain_settings(denoiser: Denoiser, num_steps: int, min_timestep: float, weighting: Weighting) -> None:
    """Settings that only the model's reverse chain can rule out: a ``min_timestep`` that leaves out
    every step (the divergence would be 0 for any pair), ``girsanov`` on a deterministic sampler."""
    chain = denoiser.reverse_chain(int(num_steps))
    included = chain.timesteps.double() >= min_timestep
    if not included.any():
        raise ValueError(
            f"min_timestep={min_timestep} leaves out every step: this model's {int(num_steps)}-step chain runs "
            f"from timestep {int(chain.timesteps.max())} down to {int(chain.timesteps.min())}"
        )
    if weighting == "girsanov" and not (chain.stochastic & included).any():
        raise ValueError(
            "weighting='girsanov' needs stochastic steps (at or above min_timestep): a deterministic "
            "sampler has no finite path KL; use weighting='simple' or an ancestral sampler"
        )


def score_pairs(
    prompts_a: Sequence[str], prompts_b: Sequence[str], denoiser_a: Denoiser, denoiser_b: Denoiser | None, *,
    num_steps: int, num_samples: int, guidance_scale: float, weighting: Weighting, seed: int, max_batch_size: int,
    min_timestep: float, progress_bar: bool | None, target_stderr: float | None = None, max_samples: int | None = None,
) -> ConjureResult:
    """The computation :func:`conjure_similarity` and the metric share, on checked arguments and loaded models."""
    check_chain_settings(denoiser_a, num_steps, min_timestep, weighting)
    settings = dict(num_steps=int(num_steps), guidance_scale=float(guidance_scale), seed=int(seed),
                    max_batch_size=int(max_batch_size), min_timestep=float(min_timestep), progress_bar=progress_bar)
    if target_stderr is None:
        terms = jeffreys_terms(prompts_a, prompts_b, denoiser_a, denoiser_b, num_samples=int(num_samples), **settings)
    else:
        terms = adaptive_jeffreys_terms(
            prompts_a, prompts_b, denoiser_a, denoiser_b, target_stderr=float(target_stderr), weighting=weighting,
            num_samples=int(num_samples), max_samples=int(max_samples or 8 * num_samples), **settings)
    divergence = terms.divergence(weighting)
    return ConjureResult(divergence_to_similarity(divergence), divergence, terms.stderr(weighting), terms)
