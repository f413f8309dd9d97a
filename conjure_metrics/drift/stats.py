"""Group means of drift and their ratio, with Monte-Carlo standard errors.

Every prompt is scored with the same noise for sample ``j`` (the estimator's common random numbers),
so the prompts' errors are correlated: a group's standard error comes from the spread of the
per-sample group means, not from the prompts' standard errors as if they were independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate and its standard error (``None`` with a single sample)."""

    value: float
    stderr: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "stderr": self.stderr}


def group_mean(samples: np.ndarray) -> Estimate:
    """Mean drift of a group from its ``(prompts, samples)`` per-sample divergences.

    Example:
        >>> group_mean(np.array([[1.0, 3.0], [2.0, 2.0]]))
        Estimate(value=2.0, stderr=0.5)
    """
    per_sample = samples.mean(axis=0)
    stderr = float(per_sample.std(ddof=1) / math.sqrt(len(per_sample))) if len(per_sample) > 1 else None
    return Estimate(float(per_sample.mean()), stderr)


def ratio_of_means(numerator: np.ndarray, denominator: np.ndarray) -> Estimate | None:
    """``mean(numerator) / mean(denominator)`` of two groups' ``(prompts, samples)`` divergences, with
    the delta-method standard error over the shared samples; ``None`` when the denominator is 0.

    Example:
        >>> ratio_of_means(np.array([[4.0, 4.0]]), np.array([[1.0, 1.0]]))
        Estimate(value=4.0, stderr=0.0)
    """
    top, bottom = numerator.mean(axis=0), denominator.mean(axis=0)
    if bottom.mean() == 0:
        return None
    value = float(top.mean() / bottom.mean())
    count = len(top)
    if count < 2:
        return Estimate(value, None)
    covariance = np.cov(top, bottom, ddof=1) / count  # of the two means
    variance = (covariance[0, 0] - 2 * value * covariance[0, 1] + value**2 * covariance[1, 1]) / bottom.mean() ** 2
    return Estimate(value, float(math.sqrt(max(variance, 0.0))))
