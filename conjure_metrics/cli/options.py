"""Command-line options for :class:`~conjure_metrics.settings.ConjureSettings`, shared by every ``conjure`` command.

The options, their defaults and their checks come from the settings object, so the CLI cannot drift
from the Python API.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from conjure_metrics.settings import ConjureSettings
from conjure_metrics.weighting import WEIGHTINGS

# setting -> (option, help); the type and default come from ConjureSettings.
_OPTIONS: dict[str, tuple[str, str]] = {
    "num_steps": ("--steps", "reverse steps per trajectory"),
    "num_samples": ("--samples", "Monte-Carlo samples per pair"),
    "guidance_scale": ("--guidance", "classifier-free guidance scale (1 disables it)"),
    "weighting": ("--weighting", "step weighting (default: simple)"),
    "min_noise": (
        "--min-noise",
        "noise floor: steps landing below this noise level do not count (default: 0 for prompts, 0.2 for two models)",
    ),
    "min_timestep": ("--min-timestep", "steps below this model timestep do not count"),
    "seed": ("--seed", "noise seed"),
    "max_batch_size": ("--max-batch-size", "most rows per model call"),
    "target_stderr": ("--target-stderr", "adaptive sampling: standard error to aim for per pair"),
    "max_samples": ("--max-samples", "adaptive sampling: most samples per pair, pilot included"),
    "sampler": (
        "--sampler",
        "reverse process (default: the model's; ddpm/ddim/euler_ancestral for "
        "SD, SDXL, PixArt; sde/ancestral/ode for SD3, Flux)",
    ),
}
_TYPES = {
    "num_steps": int,
    "num_samples": int,
    "seed": int,
    "max_batch_size": int,
    "max_samples": int,
    "guidance_scale": float,
    "min_noise": float,
    "min_timestep": float,
    "target_stderr": float,
    "sampler": str,
}


def add_settings_arguments(
    parser: argparse.ArgumentParser | Any, exclude: tuple[str, ...] = (), **defaults: Any
) -> None:
    """Add one option per setting to ``parser`` (or an argument group), but those in ``exclude``;
    ``defaults`` override the API's."""
    for field in fields(ConjureSettings):
        if field.name in exclude:
            continue
        option, help_text = _OPTIONS[field.name]
        default = defaults.get(field.name, field.default)
        shown = "" if default is None else f" (default {default})"
        if field.name == "weighting":
            parser.add_argument(option, dest=field.name, choices=WEIGHTINGS, default=default, help=help_text)
        else:
            parser.add_argument(
                option, dest=field.name, type=_TYPES[field.name], default=default, help=help_text + shown
            )


def add_checkpoint_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--lora-scale`` and ``--no-ema``: how a checkpoint that loads against its base is read."""
    parser.add_argument(
        "--lora-scale",
        type=float,
        default=None,
        metavar="SCALE",
        help="scale of a LoRA / PEFT adapter given as the checkpoint (default 1)",
    )
    parser.add_argument(
        "--no-ema",
        dest="use_ema",
        action="store_const",
        const=False,
        default=None,
        help="take a training checkpoint's unet/ even when it has unet_ema/",
    )


def checkpoint_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint loading options given on the command line (none when left unset)."""
    return {name: getattr(args, name) for name in ("lora_scale", "use_ema") if getattr(args, name, None) is not None}


def settings_from_args(args: argparse.Namespace) -> ConjureSettings:
    """The validated settings of parsed options (a bad value raises ``ValueError`` naming the setting)."""
    return ConjureSettings(
        **{field.name: getattr(args, field.name) for field in fields(ConjureSettings) if hasattr(args, field.name)}
    )
