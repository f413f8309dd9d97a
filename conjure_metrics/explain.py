"""What differs between two prompts: per-step divergence and the clean images each prompt predicts.

Along the trajectory driven by prompt A and along the one driven by prompt B (same noise), every
step's state is denoised with **both** prompts; where the two predictions disagree, and when, is
what the divergence measures. Rendered in the spirit of the paper's figure: rows are
(trajectory A: x̂₀ | A, x̂₀ | B; trajectory B: x̂₀ | A, x̂₀ | B), columns are steps, with a strip of
per-step contributions below and the largest contributions highlighted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.denoisers.loading import ModelLike, load_pair
from conjure_metrics.denoisers.protocol import Denoiser, decode_to_pixels
from conjure_metrics.estimator import StepState, jeffreys_terms
from conjure_metrics.functional import check_chain_settings, divergence_to_similarity
from conjure_metrics.settings import ConjureSettings, comparison_mode
from conjure_metrics.validation import check_progress_bar, check_prompts
from conjure_metrics.weighting import WEIGHTINGS, Weighting


@dataclass(frozen=True)
class Explanation:
    """The result of :func:`explain` for one pair.

    Attributes:
        prompt_a, prompt_b: the two prompts (or one prompt under two models).
        timesteps: model timestep of each step, ``(steps,)``.
        counted_steps: which steps count towards the divergence (above the noise floor), ``(steps,)``.
        contributions: weighting -> per-step contributions ``(2, steps)``, direction 0 along A's
            trajectory, 1 along B's, averaged over Monte-Carlo samples; they sum to ``divergence``.
            ``"girsanov"`` is absent when no counted step is stochastic (no finite path KL, as in the metric).
        divergence: weighting -> the Monte-Carlo Jeffreys divergence (what the metric reports).
        weighting: the weighting the metric reports with these settings (the figure's default).
        denoised: pixels in ``[0, 1]`` of the predicted clean image, ``(2, 2, steps, 3, H, W)``:
            ``[trajectory (A, B), conditioning prompt (A, B), step]``, for sample ``sample_index``.
        difference: per-pixel disagreement ``|x̂₀|A − x̂₀|B|`` averaged over channels, ``(2, steps, H, W)``.
    """

    prompt_a: str
    prompt_b: str
    timesteps: Tensor
    contributions: dict[str, Tensor]
    divergence: dict[str, float]
    denoised: Tensor
    difference: Tensor
    sample_index: int
    counted_steps: Tensor
    weighting: str = "simple"

    @property
    def similarity(self) -> dict[str, float]:
        return {w: float(divergence_to_similarity(torch.tensor(d))) for w, d in self.divergence.items()}

    def figure(self, weighting: str | None = None, highlight: int = 2, path: str | Path | None = None) -> Any:
        """A matplotlib figure of the explanation (saved as PNG to ``path`` if given).

        ``weighting`` defaults to the one the metric reports with these settings; steps below the
        noise floor are greyed out.
        """
        from conjure_metrics.explain_figure import explanation_figure

        figure = explanation_figure(self, weighting or self.weighting, highlight)
        if path is not None:
            figure.savefig(path, dpi=120, bbox_inches="tight")
        return figure

    def _repr_png_(self) -> bytes:
        """Inline display in Jupyter."""
        import matplotlib.pyplot as plt

        figure = self.figure()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        return buffer.getvalue()


class _Recorder:
    """Keeps the predicted clean samples of one Monte-Carlo sample at every step."""

    def __init__(self, sample_index: int) -> None:
        self.sample_index = sample_index
        self.x0: list[Tensor] = []

    def __call__(self, state: StepState) -> None:
        j = self.sample_index
        x, eps_a, eps_b = state.x[:, 0, j], state.eps_a[:, 0, j], state.eps_b[:, 0, j]
        under_a = state.chain.denoised(x, eps_a, state.step)
        under_b = state.chain.denoised(x, eps_b, state.step)
        self.x0.append(torch.stack([under_a, under_b], dim=1).float().cpu())  # (trajectory, prompt, ...)


def explain(
    prompt_a: str,
    prompt_b: str,
    model: ModelLike = None,
    *,
    model_b: ModelLike = None,
    num_steps: int = 10,
    num_samples: int = 5,
    guidance_scale: float = 7.5,
    weighting: Weighting | None = None,
    min_noise: float | None = None,
    seed: int = 0,
    min_timestep: float = 0,
    sample_index: int = 0,
    max_batch_size: int = 64,
    sampler: str | None = None,
    progress_bar: bool | None = False,
    **load_kwargs: Any,
) -> Explanation:
    """Per-step contributions and predicted clean images for one pair, with the metric's seed and settings.

    The contributions sum to the divergence :func:`~conjure_metrics.conjure_similarity` reports for the
    same seed and settings (every weighting is computed; ``weighting`` and ``min_noise`` default by mode
    as there). Pictures come from Monte-Carlo sample ``sample_index`` and are decoded through the
    model's VAE when it works in latent space.

    Examples:
        >>> import torch
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> model = GaussianConditionals(
        ...     means={"": torch.zeros(3, 4, 4), "tiger": torch.ones(3, 4, 4), "zebra": -torch.ones(3, 4, 4)},
        ...     variances={"": 1.0, "tiger": 0.1, "zebra": 0.1}, alphas_cumprod=torch.cumprod(1 - linear_betas(), 0))
        >>> result = explain("tiger", "zebra", model, num_steps=4, num_samples=2, guidance_scale=1.0)
        >>> result.denoised.shape, result.contributions["simple"].shape
        (torch.Size([2, 2, 4, 3, 4, 4]), torch.Size([2, 4]))
    """
    check_prompts([prompt_a], [prompt_b])
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
        sampler=sampler,
    )
    check_sample_index(sample_index, num_samples)
    denoiser_a, denoiser_b = load_pair(model, model_b, settings.sampler, load_kwargs)
    return explain_with(
        prompt_a, prompt_b, denoiser_a, denoiser_b, settings, sample_index=sample_index, progress_bar=progress_bar
    )


def check_sample_index(sample_index: Any, num_samples: int) -> None:
    if isinstance(sample_index, bool) or not isinstance(sample_index, int):
        raise TypeError(f"sample_index must be an int, got {type(sample_index).__name__}")
    if not 0 <= sample_index < num_samples:
        raise ValueError(f"sample_index must be in [0, num_samples={num_samples}), got {sample_index}")


def explain_with(
    prompt_a: str,
    prompt_b: str,
    denoiser_a: Denoiser,
    denoiser_b: Denoiser | None,
    settings: ConjureSettings,
    *,
    sample_index: int,
    progress_bar: bool | None = False,
) -> Explanation:
    """:func:`explain` on loaded models and checked arguments (the metric's ``explain`` uses it)."""
    settings = settings.for_mode(comparison_mode(denoiser_b, denoiser_a))
    check_chain_settings(denoiser_a, settings)
    recorder = _Recorder(sample_index)
    max_batch_size = settings.max_batch_size
    terms = jeffreys_terms(
        [prompt_a],
        [prompt_b],
        denoiser_a,
        denoiser_b,
        **settings.estimator_kwargs(),
        progress_bar=progress_bar,
        callback=recorder,
    )
    x0 = torch.stack(recorder.x0, dim=2)  # (trajectory, prompt, step, *sample_shape)
    with torch.inference_mode():
        flat = x0.flatten(0, 2).to(denoiser_a.device)
        pixels = torch.cat(
            [
                decode_to_pixels(denoiser_a, flat[i : i + max_batch_size]).float().cpu()
                for i in range(0, len(flat), max_batch_size)
            ]
        )
    pixels = _as_images(pixels).unflatten(0, x0.shape[:3])
    # A sampler without stochastic steps (counted) has no finite path KL: no girsanov view, as in the metric.
    stochastic = denoiser_a.reverse_chain(int(settings.num_steps)).stochastic.cpu() & terms.counted_steps.cpu()
    weightings = WEIGHTINGS if bool(stochastic.any()) else tuple(w for w in WEIGHTINGS if w != "girsanov")
    contributions: dict[str, Tensor] = {w: terms.contributions(w)[0].mean(dim=0) for w in weightings}
    divergence: dict[str, float] = {w: float(terms.divergence(w)[0]) for w in weightings}
    difference = (pixels[:, 0] - pixels[:, 1]).abs().mean(dim=2)
    return Explanation(
        prompt_a,
        prompt_b,
        terms.timesteps,
        contributions,
        divergence,
        pixels.clone(),
        difference.clone(),
        sample_index,
        terms.counted_steps.clone(),
        str(settings.weighting),
    )


def _as_images(pixels: Tensor) -> Tensor:
    """Shape ``(N, C, H, W)`` with 3 channels, whatever the sample shape (vectors become 1-pixel rows)."""
    if pixels.dim() == 2:
        pixels = pixels[:, None, None, :]
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    elif pixels.shape[1] != 3:
        pixels = pixels[:, :3] if pixels.shape[1] > 3 else pixels.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return pixels
