"""Spearman and Pearson correlations with percentile-bootstrap 95 % intervals.

The bootstrap resamples pairs with replacement from a generator seeded by ``seed``, so an interval
is reproducible. :func:`bootstrap_replicates` returns the resampled correlations themselves, so that
an average over datasets gets an interval too (resample every dataset, average, take percentiles).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its bootstrap 95 % interval (``nan`` where undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self, scale: float = 1.0) -> dict[str, float | list[float | None] | None]:
        def number(x: float) -> float | None:
            return None if math.isnan(x) else x * scale

        return {"value": number(self.value), "ci95": [number(self.low), number(self.high)]}


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError:
        raise ImportError("correlations need scipy: pip install scipy (or conjure_metrics[sts])") from None
    return stats


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y`` (``nan`` for a constant row)."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=-1) / denominator, np.nan)


def _scores(predicted: Sequence[float]) -> np.ndarray:
    """Predicted scores with round-off left out of the ranking: equal divergences computed along
    different arithmetic paths (translated pairs, other batches) differ in the last bits, and ties
    broken by those bits are noise. 12 significant digits is far below any Monte-Carlo error."""
    values = np.asarray(predicted, dtype=float)
    return np.array([float(f"{v:.12g}") for v in values]) if values.size else values


def correlations(predicted: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    """``{"spearman": ..., "pearson": ...}`` of ``predicted`` against ``gold`` (``nan`` if undefined).

    Example:
        >>> round(correlations([0.1, 0.4, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0])["spearman"], 6)
        0.8
    """
    stats = _scipy_stats()
    x, y = _scores(predicted), np.asarray(gold, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": math.nan, "pearson": math.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"spearman": float(stats.spearmanr(x, y).statistic), "pearson": float(stats.pearsonr(x, y).statistic)}


def bootstrap_replicates(
    predicted: Sequence[float],
    gold: Sequence[float],
    resamples: int,
    seed: int | Sequence[int],
) -> dict[str, np.ndarray]:
    """Spearman and Pearson of ``resamples`` bootstrap resamples of the pairs (arrays of length ``resamples``).

    ``seed`` seeds :func:`numpy.random.default_rng` (an int or a sequence of ints).
    """
    stats = _scipy_stats()
    x, y = _scores(predicted), np.asarray(gold, dtype=float)
    if len(x) < 2 or resamples < 1:
        return {"spearman": np.full(max(resamples, 0), np.nan), "pearson": np.full(max(resamples, 0), np.nan)}
    indices = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    xs, ys = x[indices], y[indices]
    return {
        "spearman": _pearson_rows(stats.rankdata(xs, axis=-1), stats.rankdata(ys, axis=-1)),
        "pearson": _pearson_rows(xs, ys),
    }


def interval(value: float, replicates: np.ndarray) -> Correlation:
    """``value`` with the 2.5 and 97.5 percentiles of its finite bootstrap ``replicates``."""
    finite = replicates[np.isfinite(replicates)]
    if math.isnan(value) or finite.size == 0:
        return Correlation(value, math.nan, math.nan)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Correlation(value, float(low), float(high))
