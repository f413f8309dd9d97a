"""Adaptive Monte-Carlo: each pair draws samples until its standard error reaches a target.

Rounds double the samples of the pairs still above ``target_stderr`` (first round: ``num_samples``)
until ``max_samples``. Sample ``j`` of a pair always uses the noise seeded by ``(seed, j)``, and a
pair's continuation depends only on its own estimates, so results are reproducible for a seed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.estimator import JeffreysTerms, Weighting, jeffreys_terms


def adaptive_jeffreys_terms(
    prompts_a: Sequence[str], prompts_b: Sequence[str], model_a: Denoiser, model_b: Denoiser | None, *,
    target_stderr: float, max_samples: int, num_samples: int, weighting: Weighting, **settings: Any,
) -> JeffreysTerms:
    """Terms like :func:`jeffreys_terms`, with per-pair sample counts chosen by the standard error."""
    chunks: list[list[JeffreysTerms]] = [[] for _ in prompts_a]
    active = list(range(len(prompts_a)))
    drawn, round_size = 0, num_samples
    while active and drawn < max_samples:
        size = min(round_size, max_samples - drawn)
        terms = jeffreys_terms([prompts_a[i] for i in active], [prompts_b[i] for i in active], model_a, model_b,
                               num_samples=size, first_sample=drawn, **settings)
        for row, pair in enumerate(active):
            chunks[pair].append(_select(terms, row))
        drawn += size
        round_size = drawn
        stderr = {pair: _merge(chunks[pair]).stderr(weighting).item() for pair in active}
        active = [pair for pair in active if not stderr[pair] <= target_stderr]  # NaN (one sample) stays active
    return JeffreysTerms.stack_pairs([_merge(c) for c in chunks])


def _select(terms: JeffreysTerms, row: int) -> JeffreysTerms:
    return JeffreysTerms(terms.simple[row : row + 1], terms.girsanov[row : row + 1], terms.timesteps, terms.included_steps)


def _merge(parts: list[JeffreysTerms]) -> JeffreysTerms:
    first = parts[0]
    return JeffreysTerms(torch.cat([p.simple for p in parts], dim=1), torch.cat([p.girsanov for p in parts], dim=1),
                         first.timesteps, first.included_steps)
