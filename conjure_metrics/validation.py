"""Argument checks shared by the functional API and the metric (they run before any state changes)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

from conjure_metrics.estimator import WEIGHTINGS


def check_prompts(prompts_a: Any, prompts_b: Any) -> tuple[list[str], list[str]]:
    """Both prompt lists as ``list[str]`` of the same, non-zero length."""
    checked = []
    for name, prompts in (("prompts_a", prompts_a), ("prompts_b", prompts_b)):
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"{name} must be a list of str, got {type(prompts).__name__}")
        bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"{name} must contain only str, found {bad[0]}")
        checked.append(list(prompts))
    if len(checked[0]) != len(checked[1]):
        raise ValueError(f"prompts_a and prompts_b must have the same length, got {len(checked[0])} and {len(checked[1])}")
    if not checked[0]:
        raise ValueError("prompts_a and prompts_b are empty: pass at least one pair")
    return checked[0], checked[1]


def check_settings(
    num_steps: Any, num_samples: Any, guidance_scale: Any, weighting: Any, seed: Any, max_batch_size: Any,
    min_timestep: Any = 0, target_stderr: Any = None, max_samples: Any = None,
) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the first bad estimator setting."""
    for name, value in (("num_steps", num_steps), ("num_samples", num_samples), ("max_batch_size", max_batch_size)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    for name, value in (("guidance_scale", guidance_scale), ("min_timestep", min_timestep)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and non-negative, got {value}")
    if target_stderr is not None:
        if isinstance(target_stderr, bool) or not isinstance(target_stderr, Real):
            raise TypeError(f"target_stderr must be a number or None, got {type(target_stderr).__name__}")
        if not math.isfinite(target_stderr) or target_stderr <= 0:
            raise ValueError(f"target_stderr must be finite and positive, got {target_stderr}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 with target_stderr (the pilot round measures the "
                             f"spread), got {num_samples}")
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, Integral):
            raise TypeError(f"max_samples must be an int or None, got {type(max_samples).__name__}")
        least = num_samples + 2 if target_stderr is not None else num_samples
        if max_samples < least:
            raise ValueError(f"max_samples ({max_samples}) must be at least {least}: num_samples ({num_samples})"
                             + (" for the pilot, then 2 fresh samples" if target_stderr is not None else ""))
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
