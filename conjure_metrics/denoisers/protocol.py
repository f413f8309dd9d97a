"""The one interface the estimator needs from a text-conditioned diffusion model."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain


@runtime_checkable
class Denoiser(Protocol):
    """A text-conditioned noise predictor, as the estimator sees it.

    Implement these members to plug any model in (see :class:`~conjure_metrics.CallableDenoiser`
    for the shortest way). Conditioning is a tensor whose first dimension indexes prompts; the
    estimator concatenates and indexes it along that dimension only.

    Attributes:
        sample_shape: shape of one sample (e.g. ``(4, 64, 64)`` latents, or ``(3, 32, 32)`` pixels).
        device: where the model runs; the estimator sends its inputs there.
    """

    sample_shape: tuple[int, ...]

    @property
    def device(self) -> torch.device: ...

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """Conditioning for each prompt, batch first. The empty string is the unconditional prompt."""

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """Noise prediction ``eps(x, t, y)`` for a batch (``timesteps`` has one entry per row)."""

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        """The ancestral sampler used to draw reverse trajectories with ``num_steps`` steps."""

    def to(self, device: torch.device | str) -> "Denoiser":
        """Move the model; returns ``self``."""


def decode_to_pixels(denoiser: Denoiser, x0: Tensor) -> Tensor:
    """Images in ``[0, 1]`` for predicted clean samples, through the model's ``decode`` when it has one."""
    decode = getattr(denoiser, "decode", None)
    images = decode(x0) if callable(decode) else (x0 + 1) / 2
    return images.clamp(0, 1)
