"""The estimator's settings: one frozen, validated object built at each public boundary and passed inward whole.

The public entry points (the metric, the functional API, ``explain``, the CLI, ``conjure sts`` and the
evaluate module) keep flat keyword arguments, as torchmetrics does, and build a
:class:`ConjureSettings` from them once; a bad value is refused there, by name, before any model
loads or any state changes.

Defaults that depend on what is compared: ``weighting`` and ``min_noise`` left at ``None`` take the
defaults of the comparison's *mode* (:data:`PROMPT_DEFAULTS` when two prompts share one model,
:data:`MODEL_DEFAULTS` when ``model_b`` is another model), chosen from ``benchmarks/weighting_study.py``
(see docs/method.md, "Step weighting").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral, Real
from typing import Any, Literal

from conjure_metrics.weighting import WEIGHTINGS, Weighting

Mode = Literal["prompts", "models"]

# Ten times any training schedule in use (1000 steps): a larger num_steps is a typo, and would otherwise
# overflow the timestep arithmetic (2**63) or build chains for hours (10**6) before any error.
MAX_NUM_STEPS = 10_000
# Samples per pair: the paper uses 1-5; a million is days of model calls per pair, so anything above is a
# typo (10**30 would otherwise loop over seeds with no model call to fail on).
MAX_NUM_SAMPLES = 1_000_000


@dataclass(frozen=True)
class ModeDefaults:
    """The weighting and noise floor a comparison mode uses when the caller leaves them unset."""

    weighting: Weighting
    min_noise: float


# Two prompts under one model: the paper's weighting over every step.
PROMPT_DEFAULTS = ModeDefaults(weighting="simple", min_noise=0.0)
# One prompt under two models: the last, near-noiseless steps measure generic weight drift (an ε
# prediction at almost no noise amplifies any error in x̂₀), so they are left out; with this floor
# an edited concept's drift stands out from a control fine-tune's (docs/method.md, the study).
MODEL_DEFAULTS = ModeDefaults(weighting="simple", min_noise=0.2)


def mode_defaults(mode: Mode) -> ModeDefaults:
    return MODEL_DEFAULTS if mode == "models" else PROMPT_DEFAULTS


@dataclass(frozen=True)
class ConjureSettings:
    """Every setting of the estimator, validated on construction.

    Attributes:
        num_steps: reverse steps per trajectory (paper: about 10), at most :data:`MAX_NUM_STEPS` and at most
            the model's training schedule (checked against the model's chain).
        num_samples: Monte-Carlo samples per pair (paper: 1-5; at most :data:`MAX_NUM_SAMPLES`); the pilot with
            ``target_stderr``.
        guidance_scale: classifier-free guidance ``w`` (``1`` disables guidance; paper: 7.5). Unlike
            diffusers, where any ``w <= 1`` means "no guidance", ``0`` here is the *unconditional* model: two
            prompts under one model then give identical processes and similarity 1.0 for every pair (still
            meaningful for two models: it compares their unconditional processes).
        weighting: ``"simple"``, ``"girsanov"`` or ``"min_snr"`` (:mod:`conjure_metrics.weighting`);
            ``None`` takes the mode's default.
        min_noise: noise floor in ``[0, 1)``: a step counts when the noise level σ = √(1 − ᾱ) it lands on
            is at least this; ``None`` takes the mode's default.
        min_timestep: steps whose model timestep is below this are left out too (0: none).
        seed: noise seed; a pair's score depends on it only.
        max_batch_size: most rows per model call.
        target_stderr: adaptive sampling's target standard error (``None``: a fixed ``num_samples``).
        max_samples: most samples per pair with ``target_stderr``, pilot included (default ``8 * num_samples``).
        sampler: the reverse process trajectories are drawn with (``None``: the model's default).
            The generative process, not only the weights, defines what a prompt means: Stable Diffusion
            1/2, SDXL and PixArt offer ``"ddpm"`` (default), ``"ddim"``, ``"euler_ancestral"``; SD3 and
            Flux ``"sde"`` (default), ``"ancestral"``, ``"ode"`` (see the model-family table in the docs).

    Examples:
        >>> settings = ConjureSettings(num_steps=8)
        >>> settings.for_mode("models").weighting, settings.for_mode("models").min_noise
        ('simple', 0.2)
        >>> ConjureSettings(num_samples=0)
        Traceback (most recent call last):
        ...
        ValueError: num_samples must be at least 1, got 0
    """

    num_steps: int = 10
    num_samples: int = 5
    guidance_scale: float = 7.5
    weighting: Weighting | None = None
    min_noise: float | None = None
    min_timestep: float = 0.0
    seed: int = 0
    max_batch_size: int = 64
    target_stderr: float | None = None
    max_samples: int | None = None
    sampler: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_samples", "max_batch_size"):
            _check_int(name, getattr(self, name), least=1)
        if self.num_steps > MAX_NUM_STEPS:
            raise ValueError(f"num_steps must be at most {MAX_NUM_STEPS}, got {self.num_steps}")
        for name in ("num_samples", "max_samples"):
            value = getattr(self, name)
            if value is not None and isinstance(value, int) and value > MAX_NUM_SAMPLES:
                raise ValueError(f"{name} must be at most {MAX_NUM_SAMPLES}, got {value}")
        _check_int("seed", self.seed)
        for name in ("guidance_scale", "min_timestep"):
            _check_number(name, getattr(self, name))
        if self.min_noise is not None:
            _check_number("min_noise", self.min_noise)
            if self.min_noise >= 1:
                raise ValueError(f"min_noise must be below 1 (pure noise), got {self.min_noise}")
        if self.weighting is not None and self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"weighting must be one of {WEIGHTINGS} (or None for the mode's default), got {self.weighting!r}"
            )
        if self.target_stderr is not None:
            if isinstance(self.target_stderr, bool) or not isinstance(self.target_stderr, Real):
                raise TypeError(f"target_stderr must be a number or None, got {type(self.target_stderr).__name__}")
            if not math.isfinite(self.target_stderr) or self.target_stderr <= 0:
                raise ValueError(f"target_stderr must be finite and positive, got {self.target_stderr}")
            if self.num_samples < 2:
                raise ValueError(
                    f"num_samples must be at least 2 with target_stderr (the pilot round measures "
                    f"the spread), got {self.num_samples}"
                )
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples)
            least = self.num_samples + 2 if self.target_stderr is not None else self.num_samples
            if self.max_samples < least:
                raise ValueError(
                    f"max_samples ({self.max_samples}) must be at least {least}: num_samples "
                    f"({self.num_samples})"
                    + (" for the pilot, then 2 fresh samples" if self.target_stderr is not None else "")
                )
        if self.sampler is not None and not (isinstance(self.sampler, str) and self.sampler):
            raise TypeError(f"sampler must be a sampler name or None, got {self.sampler!r}")
        # One representation per value (4 and 4.0, numpy scalars): records and results keys must agree.
        for name in ("num_steps", "num_samples", "seed", "max_batch_size", "max_samples"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("guidance_scale", "min_noise", "min_timestep", "target_stderr"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_kwargs(cls, **values: Any) -> ConjureSettings:
        """Settings from keyword arguments, refusing names that are not settings (a misspelling)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"unknown setting {unknown[0]!r}; settings are {', '.join(sorted(names))}")
        return cls(**values)

    def for_mode(self, mode: Mode) -> ConjureSettings:
        """These settings with ``weighting`` and ``min_noise`` filled in from the mode's defaults."""
        defaults = mode_defaults(mode)
        return replace(
            self,
            weighting=defaults.weighting if self.weighting is None else self.weighting,
            min_noise=defaults.min_noise if self.min_noise is None else float(self.min_noise),
        )

    def estimator_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`~conjure_metrics.jeffreys_terms` (resolved settings only)."""
        if self.weighting is None or self.min_noise is None:
            raise ValueError("resolve the mode's defaults first: settings.for_mode(mode)")
        return dict(
            num_steps=int(self.num_steps),
            num_samples=int(self.num_samples),
            guidance_scale=float(self.guidance_scale),
            seed=int(self.seed),
            max_batch_size=int(self.max_batch_size),
            min_noise=float(self.min_noise),
            min_timestep=float(self.min_timestep),
        )

    def record(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The settings as plain values (for JSON outputs and results keys), but those in ``exclude``."""
        return {name: value for name, value in asdict(self).items() if name not in exclude}

    def describe(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.record().items())


def comparison_mode(model_b: Any, model: Any = None) -> Mode:
    """``"models"`` when a second model is given (and is not the first), else ``"prompts"``."""
    return "prompts" if model_b is None or model_b is model else "models"


def _check_int(name: str, value: Any, least: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if least is not None and value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value}")
