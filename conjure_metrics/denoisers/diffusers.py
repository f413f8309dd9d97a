"""Adapter for diffusers text-to-image models: a repo on disk or the hub, components, or a pipeline."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.chains import VARIANCE_PRESERVING_PREDICTION_TYPES, ReverseChain
from conjure_metrics.denoisers.pipeline import SamplerChoice, loading_options, warn_if_truncated
from conjure_metrics.denoisers.schedules import VARIANCE_PRESERVING_SAMPLERS, variance_preserving_chain

SAMPLERS = VARIANCE_PRESERVING_SAMPLERS


class DiffusersDenoiser(SamplerChoice):
    """A diffusers UNet + CLIP-style text encoder + tokenizer + scheduler (+ optional VAE) as a :class:`Denoiser`.

    With a ``vae`` the model works in its latent space (Stable Diffusion); without one in pixel space.
    ``predict_noise`` returns the UNet's raw output, which the scheduler's ``prediction_type`` names
    (``epsilon``, ``v_prediction`` or ``sample``); the reverse chain is built for that output, so the
    conversion is exact at every step (also at Euler's fractional timesteps).

    Args:
        unet: a ``UNet2DConditionModel`` (or any module with the same call signature).
        text_encoder: e.g. ``CLIPTextModel``; its first output (last hidden state) is the conditioning.
        tokenizer: the matching tokenizer. Prompts longer than ``tokenizer.model_max_length`` are
            truncated with a warning.
        scheduler: the model's diffusers scheduler; only its config (training schedule, spacing,
            prediction type) is used.
        vae: optional ``AutoencoderKL``; used only to decode pictures for ``explain``.
        sample_size: spatial size of the samples (latent size with a VAE); defaults to the UNet's.
        sampler: reverse chain used for trajectories: ``"ddpm"`` (ancestral, the default),
            ``"ddim"`` (with ``eta``) or ``"euler_ancestral"``.
        eta: DDIM stochasticity (``0`` is deterministic: use ``weighting="simple"`` then).

    Example (on a machine that has the weights)::

        denoiser = DiffusersDenoiser.from_pretrained("CompVis/stable-diffusion-v1-4", torch_dtype=torch.float16, device="cuda")
    """

    samplers = SAMPLERS

    def __init__(
        self,
        unet: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        scheduler: Any,
        vae: torch.nn.Module | None = None,
        *,
        sample_size: int | None = None,
        sampler: str = "ddpm",
        eta: float = 1.0,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.unet, self.text_encoder, self.tokenizer, self.scheduler, self.vae = (
            unet,
            text_encoder,
            tokenizer,
            scheduler,
            vae,
        )
        self.sampler, self.eta = sampler, eta
        config: Any = unet.config  # a diffusers model's config (attribute access), untyped on nn.Module
        size = sample_size if sample_size is not None else config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.sample_shape: tuple[int, ...] = (int(config.in_channels), int(height), int(width))
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in VARIANCE_PRESERVING_PREDICTION_TYPES:
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        variant: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        use_safetensors: bool | None = None,
        load_vae: bool = True,
        **kwargs: Any,
    ) -> DiffusersDenoiser:
        """Load the ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` (and ``vae`` if present) subfolders.

        ``path_or_id`` is a local diffusers folder or a hub id (downloaded by ``huggingface_hub`` on
        machines that can reach it; set ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` to use the
        cache only; ``cache_dir``, ``token``, ``revision`` and ``variant`` as in diffusers). Every
        component is loaded in ``torch_dtype`` (default ``torch.float32``, whatever precision the files
        were saved in, so the text encoder and the UNet always agree). Extra keyword arguments go to the
        constructor (``sampler``, ``eta``, ``sample_size``). The loaded model is frozen and put in eval mode.
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        common, weights = loading_options(
            torch_dtype=torch_dtype,
            local_files_only=local_files_only,
            revision=revision,
            variant=variant,
            cache_dir=cache_dir,
            token=token,
            use_safetensors=use_safetensors,
        )
        unet = UNet2DConditionModel.from_pretrained(path_or_id, subfolder="unet", **weights)
        text_encoder = CLIPTextModel.from_pretrained(path_or_id, subfolder="text_encoder", **weights)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, subfolder="tokenizer", **common)
        scheduler = DDPMScheduler.from_pretrained(path_or_id, subfolder="scheduler", **common)
        vae = None
        if load_vae and _has_subfolder(path_or_id, "vae", common):
            vae = AutoencoderKL.from_pretrained(path_or_id, subfolder="vae", **weights)
        for module in (unet, text_encoder, vae):
            if module is not None:
                module.requires_grad_(False).eval()
        denoiser = cls(unet, text_encoder, tokenizer, scheduler, vae, **kwargs)
        return denoiser.to(device) if device is not None else denoiser

    @classmethod
    def from_pipeline(cls, pipeline: Any, **kwargs: Any) -> DiffusersDenoiser:
        """Use the components of a loaded ``StableDiffusionPipeline`` (or any pipeline with the same parts)."""
        missing = [
            name for name in ("unet", "text_encoder", "tokenizer", "scheduler") if getattr(pipeline, name, None) is None
        ]
        if missing:
            raise TypeError(f"pipeline has no {', '.join(missing)}; pass the components to DiffusersDenoiser directly")
        return cls(
            pipeline.unet,
            pipeline.text_encoder,
            pipeline.tokenizer,
            pipeline.scheduler,
            getattr(pipeline, "vae", None),
            **kwargs,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: torch.device | str) -> DiffusersDenoiser:
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.to(device)
        return self

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Eval mode for the duration of a metric call, restoring each module's training flag afterwards."""
        modules = [m for m in (self.unet, self.text_encoder, self.vae) if m is not None]
        was_training = [m.training for m in modules]
        for module in modules:
            module.eval()
        try:
            yield
        finally:
            for module, training in zip(modules, was_training):
                module.train(training)

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_tensors="pt",
            return_overflowing_tokens=False,
        )
        warn_if_truncated(self.tokenizer, prompts, max_length)
        encoder_device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(encoder_device))[0].to(self.device)

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """The UNet's output (in the scheduler's ``prediction_type``) for a batch."""
        dtype = self.dtype
        output = self.unet(x.to(dtype), timesteps, encoder_hidden_states=conditioning.to(dtype)).sample
        if output.shape[1] == 2 * x.shape[1]:  # learned-variance UNets append the variance channels
            output = output[:, : x.shape[1]]
        return output.to(x.dtype)

    def decode(self, x0: Tensor) -> Tensor:
        """Pixels in ``[0, 1]`` for predicted clean samples (through the VAE in latent space)."""
        if self.vae is None:
            return ((x0 + 1) / 2).clamp(0, 1)
        vae: Any = self.vae  # an AutoencoderKL: its dtype, config and decode are untyped on nn.Module
        latents = x0.to(vae.dtype) / vae.config.scaling_factor
        return ((vae.decode(latents).sample.float() + 1) / 2).clamp(0, 1)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        return variance_preserving_chain(
            self.scheduler.config, self.sampler, num_steps, eta=self.eta, prediction_type=self.prediction_type
        )


def _has_subfolder(path_or_id: str | os.PathLike, subfolder: str, hub_kwargs: dict[str, Any]) -> bool:
    if os.path.isdir(path_or_id):
        return os.path.isdir(os.path.join(path_or_id, subfolder))
    from huggingface_hub import file_exists

    try:
        return file_exists(
            str(path_or_id),
            f"{subfolder}/config.json",
            revision=hub_kwargs.get("revision"),
            token=hub_kwargs.get("token"),
        )
    except Exception:  # offline or unreachable hub: fall back to what the local cache holds
        try:
            from huggingface_hub import hf_hub_download

            hf_hub_download(
                str(path_or_id),
                "config.json",
                subfolder=subfolder,
                local_files_only=True,
                revision=hub_kwargs.get("revision"),
                cache_dir=hub_kwargs.get("cache_dir"),
            )
            return True
        except Exception:
            return False
