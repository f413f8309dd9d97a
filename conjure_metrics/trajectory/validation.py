"""Checks of the trajectory settings (they run before any model call or state change)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from .estimator import DISTANCES


def check_trajectory_settings(
    num_continuations: Any, max_new_tokens: Any, distance: Any, seed: Any, max_batch_size: Any
) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the first bad setting."""
    for name, value in (
        ("num_continuations", num_continuations),
        ("max_new_tokens", max_new_tokens),
        ("max_batch_size", max_batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
