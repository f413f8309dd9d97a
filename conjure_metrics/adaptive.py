"""Adaptive Monte-Carlo: a pilot round sizes each pair's run; the estimate comes from fresh samples.

Two stages (Stein's two-stage design). A pilot of ``num_samples`` samples per pair estimates the
spread of that pair's per-sample values; the pair then draws ``n`` fresh samples, enough for
``target_stderr`` by that spread (at least 2, at most ``max_samples - num_samples``, rounded up to
a short grid so pairs share model calls), and its estimate and standard error come from those
``n`` alone. Reusing the pilot, or stopping as soon as the running error looks small, would bias
the estimate low: with skewed per-sample values a small spread comes with a small mean. Here ``n``
depends on the pilot only, so the estimate is unbiased and its standard error valid.

Sample ``j`` of a pair always uses the noise seeded by ``(seed, j)`` (pilot ``0 .. num_samples-1``,
then ``num_samples ..``), and ``n`` depends only on the pair's own pilot, so results are
reproducible for a seed and do not depend on the other pairs of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.estimator import JeffreysTerms, Weighting, jeffreys_terms

MIN_FRESH_SAMPLES = 2  # the fewest samples that have a standard error


def fresh_sample_count(pilot_stderr: float, pilot_samples: int, target_stderr: float, budget: int) -> int:
    """Samples a pair draws after its pilot: the standard error scales as ``1 / sqrt(n)``, rounded up
    to the grid 2, 3, 4, 6, 8, 12, ... (at most 1.5x) and capped at ``budget``. A pilot whose spread
    is not a finite number (NaN, inf) gets the whole budget.

    Example:
        >>> fresh_sample_count(0.2, pilot_samples=4, target_stderr=0.1, budget=64)  # needs 16
        16
        >>> fresh_sample_count(0.2, pilot_samples=4, target_stderr=0.09, budget=64)  # needs 20 -> 24
        24
    """
    ratio = pilot_stderr / target_stderr
    if not math.isfinite(ratio) or ratio * ratio * pilot_samples >= budget:
        return budget
    needed = math.ceil(pilot_samples * ratio * ratio)
    return next(level for level in sample_grid(budget) if level >= needed)  # the grid ends at budget > needed


def sample_grid(budget: int) -> list[int]:
    """2, 3, 4, 6, 8, 12, 16, ... up to ``budget`` (included): the fresh-sample counts pairs may get."""
    levels, level = [], MIN_FRESH_SAMPLES
    while level < budget:
        levels.append(level)
        level = level * 3 // 2 if level & (level - 1) == 0 else level * 4 // 3
    return levels + [budget]


def adaptive_jeffreys_terms(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model_a: Denoiser,
    model_b: Denoiser | None,
    *,
    target_stderr: float,
    max_samples: int,
    num_samples: int,
    weighting: Weighting,
    **settings: Any,
) -> JeffreysTerms:
    """Terms like :func:`jeffreys_terms` from each pair's fresh samples, their number set by its pilot."""
    pilot = jeffreys_terms(prompts_a, prompts_b, model_a, model_b, num_samples=num_samples, **settings)
    budget = max_samples - num_samples
    counts = [fresh_sample_count(float(error), num_samples, target_stderr, budget) for error in pilot.stderr(weighting)]
    # Nested levels: every pair that needs at least `level` samples draws the slice up to it in one
    # call, so pairs share model batches (and prompts their trajectories) whatever their counts.
    chunks: list[list[JeffreysTerms]] = [[] for _ in prompts_a]
    drawn = 0
    for level in sample_grid(budget):
        group = [i for i, count in enumerate(counts) if count >= level]
        if not group:
            break
        terms = jeffreys_terms(
            [prompts_a[i] for i in group],
            [prompts_b[i] for i in group],
            model_a,
            model_b,
            num_samples=level - drawn,
            first_sample=num_samples + drawn,
            **settings,
        )
        for row, pair in enumerate(group):
            chunks[pair].append(terms.select(slice(row, row + 1)))
        drawn = level
    return JeffreysTerms.stack_pairs([JeffreysTerms.concat_samples(parts) for parts in chunks])
