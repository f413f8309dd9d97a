"""Wrap plain functions (analytic models, custom networks) as a :class:`Denoiser`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain
from conjure_metrics.conditioning import Conditioning, conditioning_to, stack_rows
from conjure_metrics.denoisers.protocol import GUIDANCE_MODES, GuidanceMode

NoiseFunction = Callable[..., Tensor]
ChainFactory = Callable[[int], ReverseChain]


class CallableDenoiser:
    """A :class:`Denoiser` made of plain callables.

    Args:
        predict_noise: ``f(x, timesteps, conditioning) -> output`` for a batch, the output in the
            parametrisation of the chain (noise for :func:`~conjure_metrics.chains.ddpm_chain` by default).
        encode_prompts: either a callable ``prompts -> conditioning`` or a mapping from prompt to its
            conditioning (a tensor or array-like, or a dict / tuple of tensors; stacked along a new
            first dimension).
        sample_shape: shape of one sample.
        reverse_chain: ``num_steps -> ReverseChain`` (e.g. ``lambda n: ddpm_chain(abar, leading_timesteps(n))``).
        device: where inputs are sent.
        guidance_mode: ``"cfg"`` (default), ``"embedded"`` (then ``predict_noise`` also gets the keyword
            ``guidance_scale``) or ``"none"``; see :func:`~conjure_metrics.denoisers.protocol.guidance_mode`.

    Examples:
        >>> import torch
        >>> from conjure_metrics.chains import ddpm_chain, leading_timesteps, linear_betas
        >>> abar = torch.cumprod(1 - linear_betas(), 0)
        >>> means = {"": torch.zeros(4), "red": torch.ones(4), "blue": -torch.ones(4)}
        >>> denoiser = CallableDenoiser(
        ...     predict_noise=lambda x, t, c: x - c,  # any function of (x, t, conditioning)
        ...     encode_prompts=means,
        ...     sample_shape=(4,),
        ...     reverse_chain=lambda n: ddpm_chain(abar, leading_timesteps(n)),
        ... )
        >>> denoiser.encode_prompts(["red", "blue"]).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        predict_noise: NoiseFunction,
        encode_prompts: Callable[[Sequence[str]], Conditioning] | Mapping[str, Conditioning],
        sample_shape: Sequence[int],
        reverse_chain: ChainFactory,
        device: torch.device | str = "cpu",
        guidance_mode: GuidanceMode = "cfg",
    ) -> None:
        if not callable(predict_noise):
            raise TypeError("predict_noise must be callable")
        if not (callable(encode_prompts) or isinstance(encode_prompts, Mapping)):
            raise TypeError("encode_prompts must be a callable or a mapping from prompt to tensor")
        if guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance_mode must be one of {GUIDANCE_MODES}, got {guidance_mode!r}")
        self._predict_noise = predict_noise
        self._encode = encode_prompts
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self._reverse_chain = reverse_chain
        self._device = torch.device(device)
        self.guidance_mode = guidance_mode

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> CallableDenoiser:
        self._device = torch.device(device)
        return self

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        if isinstance(self._encode, Mapping):
            missing = [p for p in prompts if p not in self._encode]
            if missing:
                raise ValueError(f"prompts not known to this denoiser's encode_prompts mapping: {missing}")
            return conditioning_to(stack_rows([_as_conditioning(self._encode[p]) for p in prompts]), self._device)
        return self._encode(prompts)

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning, **options: Any) -> Tensor:
        return self._predict_noise(x, timesteps, conditioning, **options)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        return self._reverse_chain(num_steps)


def _as_conditioning(value: Any) -> Conditioning:
    """A structure (tensor, dict, tuple) as it is; anything else (a list of numbers) as a tensor."""
    return value if isinstance(value, (Tensor, Mapping, tuple)) else torch.as_tensor(value)
