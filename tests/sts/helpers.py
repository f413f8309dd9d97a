"""Builders for the sts tests: an analytic model whose divergences rank word pairs by distance on a line."""

from __future__ import annotations

import torch

from conjure_metrics.analytic import GaussianConditionals
from conjure_metrics.chains import linear_betas
from conjure_metrics.sts import SimilarityDataset

WORDS = ("ant", "bee", "cat", "dog", "elk", "fox", "gnu")
FAST = dict(num_steps=4, num_samples=2, guidance_scale=1.0, progress_bar=False, bootstrap_resamples=200)


def line_model(dim: int = 4) -> GaussianConditionals:
    """Word k has data ``N(0.3 k, 0.2 I)``: the divergence of two words grows with their distance on the line."""
    means = {"": torch.zeros(dim, dtype=torch.float64)}
    means.update({word: 0.3 * k * torch.ones(dim, dtype=torch.float64) for k, word in enumerate(WORDS)})
    variances = {word: 0.2 for word in means}
    variances[""] = 1.0
    return GaussianConditionals(means, variances, torch.cumprod(1 - linear_betas(), 0))


def line_dataset(name: str = "line", pairs: int = 12, group: str = "", offset: int = 0) -> SimilarityDataset:
    """Word pairs scored ``10 - distance``: ``line_model`` ranks them perfectly."""
    a, b = [], []
    for k in range(pairs):
        i, j = (k + offset) % len(WORDS), (3 * k + 1 + offset) % len(WORDS)
        a.append(WORDS[i])
        b.append(WORDS[j])
    scores = tuple(10.0 - abs(WORDS.index(x) - WORDS.index(y)) for x, y in zip(a, b))
    return SimilarityDataset(name, tuple(a), tuple(b), scores, group=group)
