"""Argument checks shared by the functional API and the metric (they run before any state changes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conjure_metrics.settings import ConjureSettings


def check_prompts(prompts_a: Any, prompts_b: Any) -> tuple[list[str], list[str]]:
    """Both prompt lists as ``list[str]`` of the same, non-zero length, every prompt valid Unicode text.

    Example:
        >>> check_prompts(["a cat"], ["a dog"])
        (['a cat'], ['a dog'])
        >>> check_prompts(["a cat"], ["a \\ud800 dog"])
        Traceback (most recent call last):
        ...
        ValueError: prompts_b[0] is not valid text: lone surrogate '\\ud800' at character 2
    """
    checked = []
    for name, prompts in (("prompts_a", prompts_a), ("prompts_b", prompts_b)):
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"{name} must be a list of str, got {type(prompts).__name__}")
        bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"{name} must contain only str, found {bad[0]}")
        for index, prompt in enumerate(prompts):
            _check_encodable(name, index, prompt)
        checked.append(list(prompts))
    if len(checked[0]) != len(checked[1]):
        raise ValueError(
            f"prompts_a and prompts_b must have the same length, got {len(checked[0])} and {len(checked[1])}"
        )
    if not checked[0]:
        raise ValueError("prompts_a and prompts_b are empty: pass at least one pair")
    return checked[0], checked[1]


def check_settings(
    num_steps: Any,
    num_samples: Any,
    guidance_scale: Any,
    weighting: Any,
    seed: Any,
    max_batch_size: Any,
    min_timestep: Any = 0,
    target_stderr: Any = None,
    max_samples: Any = None,
    min_noise: Any = None,
) -> ConjureSettings:
    """Raise ``TypeError`` / ``ValueError`` naming the first bad estimator setting; the checked settings."""
    return ConjureSettings(
        num_steps=num_steps,
        num_samples=num_samples,
        guidance_scale=guidance_scale,
        weighting=weighting,
        seed=seed,
        max_batch_size=max_batch_size,
        min_noise=min_noise,
        min_timestep=min_timestep,
        target_stderr=target_stderr,
        max_samples=max_samples,
    )


def _check_encodable(name: str, index: int, prompt: str) -> None:
    # A lone surrogate (from bad JSON or a mis-decoded file) is a Python str but not text: tokenizers
    # fail on it with a TypeError that names neither the argument nor the prompt.
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name}[{index}] is not valid text: lone surrogate {prompt[error.start]!r} at character {error.start}"
        ) from None


def check_progress_bar(progress_bar: Any) -> None:
    """Refuse a ``progress_bar`` that is not ``True``, ``False`` or ``None`` (``"no"`` would be truthy).

    Example:
        >>> check_progress_bar(None)
        >>> check_progress_bar("no")
        Traceback (most recent call last):
        ...
        TypeError: progress_bar must be a bool or None, got str
    """
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise TypeError(f"progress_bar must be a bool or None, got {type(progress_bar).__name__}")
