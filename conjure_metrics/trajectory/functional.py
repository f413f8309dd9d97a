"""One-shot TrajectorySimilarity: per-pair distances, standard errors and similarities, no Metric state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.functional import divergence_to_similarity
from conjure_metrics.validation import check_progress_bar, check_prompts

from .estimator import Distance, TrajectoryTerms, trajectory_terms
from .loading import LanguageModelLike, TokenizerLike, load_language_model
from .validation import check_trajectory_settings


@dataclass(frozen=True)
class TrajectoryResult:
    """Per-pair results of :func:`trajectory_similarity` (float64 tensors of length ``num_pairs``)."""

    similarity: Tensor
    divergence: Tensor
    stderr: Tensor
    terms: TrajectoryTerms

    @property
    def mean_similarity(self) -> Tensor:
        return self.similarity.mean()


def trajectory_similarity(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model: LanguageModelLike = None,
    *,
    tokenizer: TokenizerLike = None,
    num_continuations: int = 20,
    max_new_tokens: int = 20,
    distance: Distance = "mean_abs",
    seed: int = 0,
    max_batch_size: int = 64,
    progress_bar: bool | None = None,
    **load_kwargs: Any,
) -> TrajectoryResult:
    """Semantic similarity of prompt pairs as a causal language model continues them.

    Each prompt is continued ``num_continuations`` times (temperature 1, up to ``max_new_tokens``
    tokens); every continuation ``t`` is scored under both prompts of its pair with the
    length-normalised log-likelihood ``log M_p(t)`` (mean log-probability per continuation token),
    and the pair's distance is (Liu et al., "Meaning Representations from Trajectories in
    Autoregressive Models", ICLR 2024):

    - ``"mean_abs"`` (the paper's): mean over the ``2n`` continuations of ``|log M_a(t) - log M_b(t)|``;
    - ``"symmetric_kl"``: Monte-Carlo ``KL(M_a||M_b) + KL(M_b||M_a)`` on length-normalised scores, the
      mean of ``log M_a - log M_b`` over a's continuations plus that of ``log M_b - log M_a`` over b's
      (it can come out slightly negative for near-identical prompts).

    Similarity is ``1 / (1 + distance)`` (negative distances count as 0). Continuation ``j`` of any
    prompt uses random numbers seeded by ``(seed, j)`` only: a pair's score does not depend on batch
    size, pair order or world size, and identical prompts score exactly 0.

    Args:
        prompts_a, prompts_b: the pairs, as two lists of equal length.
        model: a transformers causal-LM folder or hub id, a model object (then pass ``tokenizer``),
            a callable returning either or a ``(model, tokenizer)`` tuple, or ``None`` for the
            embedded zoo LM (:func:`~conjure_metrics.trajectory.default_lm_path`).
        tokenizer: the model's tokenizer (object, folder or hub id); ``None`` takes the model's own.
        num_continuations: continuations per prompt, ``n`` (paper: 20).
        max_new_tokens: most tokens per continuation, ``m`` (paper: 20); a continuation also ends at
            the tokenizer's ``eos_token``, which is kept and scored.
        distance: ``"mean_abs"`` or ``"symmetric_kl"``.
        seed: seed of the continuations.
        max_batch_size: most rows per model call.
        progress_bar: show a tqdm bar (``None``: only on a terminal).
        **load_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` when ``model`` is a path or id.

    Example:
        >>> from conjure_metrics.trajectory import trajectory_similarity
        >>> result = trajectory_similarity(["a red fox", "a red fox"], ["a red fox", "a blue bear"],
        ...                                num_continuations=4, max_new_tokens=8)
        >>> result.divergence[0].item(), bool(result.similarity[1] < 1)
        (0.0, True)
    """
    prompts_a, prompts_b = check_prompts(prompts_a, prompts_b)
    check_trajectory_settings(num_continuations, max_new_tokens, distance, seed, max_batch_size)
    check_progress_bar(progress_bar)
    model, tokenizer = load_language_model(model, tokenizer, **load_kwargs)
    return score_pairs(
        prompts_a,
        prompts_b,
        model,
        tokenizer,
        num_continuations=num_continuations,
        max_new_tokens=max_new_tokens,
        distance=distance,
        seed=seed,
        max_batch_size=max_batch_size,
        progress_bar=progress_bar,
    )


def score_pairs(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    num_continuations: int,
    max_new_tokens: int,
    distance: Distance,
    seed: int,
    max_batch_size: int,
    progress_bar: bool | None,
) -> TrajectoryResult:
    """The computation :func:`trajectory_similarity` and the metric share, on checked arguments and a loaded model.

    The model runs in eval mode (its previous mode is restored afterwards) under ``torch.inference_mode()``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            terms = trajectory_terms(
                prompts_a,
                prompts_b,
                model,
                tokenizer,
                num_continuations=int(num_continuations),
                max_new_tokens=int(max_new_tokens),
                seed=int(seed),
                max_batch_size=int(max_batch_size),
                progress_bar=progress_bar,
            )
    finally:
        model.train(was_training)
    return result_from_terms(terms, distance)


def result_from_terms(terms: TrajectoryTerms, distance: Distance) -> TrajectoryResult:
    """Per-pair distance, standard error and similarity; a slightly negative Monte-Carlo
    ``symmetric_kl`` (near-identical prompts) counts as 0, so similarity stays in ``(0, 1]``."""
    divergence = terms.divergence(distance)
    return TrajectoryResult(
        divergence_to_similarity(divergence.clamp_min(0)), divergence, terms.stderr(distance), terms
    )
