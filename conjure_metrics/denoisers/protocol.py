"""The one interface the estimator needs from a text-conditioned diffusion model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, cast, runtime_checkable

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain
from conjure_metrics.conditioning import Conditioning

GuidanceMode = Literal["cfg", "embedded", "none"]
GUIDANCE_MODES: tuple[str, ...] = ("cfg", "embedded", "none")


@runtime_checkable
class Denoiser(Protocol):
    """A text-conditioned diffusion model, as the estimator sees it.

    Implement these members to plug any model in (see :class:`~conjure_metrics.CallableDenoiser`
    for the shortest way).

    Conditioning is a tensor, or a dict, tuple or list of tensors (SDXL: hidden states, pooled
    embedding and time ids), each with one row per prompt along dimension 0; the estimator only
    selects, concatenates and repeats those rows (:mod:`conjure_metrics.conditioning`).

    ``predict_noise`` returns the model's own output, in the parametrisation that its reverse chain
    declares (``reverse_chain(n).prediction_type``: noise ``epsilon``, ``v_prediction``, ``sample``
    or a flow-matching velocity ``flow_prediction``); the chain converts, no adapter needs to.

    Attributes:
        sample_shape: shape of one sample (e.g. ``(4, 64, 64)`` latents, or ``(3, 32, 32)`` pixels).
        device: where the model runs; the estimator sends its inputs there.
        guidance_mode: optional, how the model is guided (see :func:`guidance_mode`); ``"cfg"`` when absent.
    """

    sample_shape: tuple[int, ...]

    @property
    def device(self) -> torch.device: ...

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning for each prompt, batch first. The empty string is the unconditional prompt."""

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning) -> Tensor:
        """The model output at ``(x, t, y)`` for a batch (``timesteps`` has one entry per row).

        A model with ``guidance_mode = "embedded"`` also takes the keyword argument ``guidance_scale``.
        """

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        """The sampler (and the output it is written for) that draws reverse trajectories with ``num_steps`` steps."""

    def to(self, device: torch.device | str) -> Denoiser:
        """Move the model; returns ``self``."""


def guidance_mode(denoiser: Any) -> GuidanceMode:
    """How ``denoiser`` is guided: its ``guidance_mode`` attribute, ``"cfg"`` when it has none.

    * ``"cfg"`` — classifier-free guidance: the estimator also evaluates the empty prompt and
      combines ``out(∅) + w (out(y) - out(∅))``.
    * ``"embedded"`` — the scale is a model input (guidance-distilled models such as Flux-dev): no
      unconditional evaluations; the estimator calls ``predict_noise(x, t, c, guidance_scale=w)``.
    * ``"none"`` — the model is used as it is (e.g. Flux-schnell): no unconditional evaluations and
      the guidance scale is not used.
    """
    mode = getattr(denoiser, "guidance_mode", "cfg")
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance_mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    return cast(GuidanceMode, mode)


def decode_to_pixels(denoiser: Denoiser, x0: Tensor) -> Tensor:
    """Images in ``[0, 1]`` for predicted clean samples, through the model's ``decode`` when it has one."""
    decode = getattr(denoiser, "decode", None)
    images = decode(x0) if callable(decode) else (x0 + 1) / 2
    return images.clamp(0, 1)
