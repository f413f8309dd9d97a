"""Adapter for Stable Diffusion XL: two CLIP text encoders, a pooled embedding and size/crop time ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.chains import VARIANCE_PRESERVING_PREDICTION_TYPES, ReverseChain
from conjure_metrics.denoisers.pipeline import PipelineDenoiser, warn_if_truncated
from conjure_metrics.denoisers.schedules import VARIANCE_PRESERVING_SAMPLERS, variance_preserving_chain

CONDITIONING_KEYS = ("encoder_hidden_states", "text_embeds", "time_ids")


class SDXLDenoiser(PipelineDenoiser):
    """A ``StableDiffusionXLPipeline`` as a :class:`~conjure_metrics.Denoiser`.

    Prompts go through the pipeline's own ``encode_prompt`` (both CLIP encoders' penultimate hidden
    states, concatenated, and the second encoder's pooled projection). The conditioning is the dict
    ``{"encoder_hidden_states", "text_embeds", "time_ids"}``, one row per prompt; ``time_ids`` are what
    the pipeline builds by default: original and target size the picture size, crop corner ``(0, 0)``.
    With ``force_zeros_for_empty_prompt`` (SDXL base's setting) the empty prompt, which is the
    unconditional prompt of classifier-free guidance, gets all-zero embeddings as the pipeline's
    negative branch does. ``predict_noise`` returns the UNet's raw output, in the scheduler's
    ``prediction_type``.

    Folders without the first text encoder (refiner layout) work when the UNet takes SDXL base's
    six time ids; a UNet that also takes an aesthetic score (the SDXL refiner) is refused.

    Args:
        pipeline: a ``StableDiffusionXLPipeline`` (or ``StableDiffusionXLImg2ImgPipeline``).
        sampler: ``"ddpm"`` (ancestral, the default), ``"ddim"`` (with ``eta``) or ``"euler_ancestral"``,
            on the pipeline scheduler's training schedule and timestep spacing.
        eta: DDIM stochasticity (``0`` is deterministic: use ``weighting="simple"`` then).
        sample_size: latent size (an int or ``(height, width)``); defaults to the UNet's, as the pipeline does.
        text_encoder_device: see :class:`~conjure_metrics.denoisers.pipeline.PipelineDenoiser`.

    Example (on a machine that has the weights)::

        denoiser = SDXLDenoiser.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0",
                                                torch_dtype=torch.float16, device="cuda")
        conjure_similarity(["a red fox"], ["a fox"], denoiser, guidance_scale=5.0)
    """

    pipeline_classes = ("StableDiffusionXLPipeline",)
    denoiser_name = "unet"
    samplers = VARIANCE_PRESERVING_SAMPLERS
    required_components = ("unet", "scheduler", "text_encoder_2", "tokenizer_2")

    def __init__(
        self,
        pipeline: Any,
        *,
        sampler: str | None = None,
        eta: float = 1.0,
        sample_size: int | tuple[int, int] | None = None,
        text_encoder_device: torch.device | str | None = None,
    ) -> None:
        if getattr(pipeline, "text_encoder_2", None) is None or getattr(pipeline, "tokenizer_2", None) is None:
            raise TypeError(f"{type(pipeline).__name__} has no text_encoder_2 and tokenizer_2; SDXL needs both")
        super().__init__(pipeline, sampler=sampler, text_encoder_device=text_encoder_device)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)
        unet_config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        if unet_config.get("time_cond_proj_dim") is not None:
            raise TypeError(
                "the UNet takes a guidance embedding (time_cond_proj_dim, e.g. LCM); SDXLDenoiser "
                "supports classifier-free guided SDXL UNets only"
            )
        self.prediction_type = pipeline.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in VARIANCE_PRESERVING_PREDICTION_TYPES:
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")
        size = unet_config.sample_size if sample_size is None else sample_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.sample_shape: tuple[int, ...] = (int(unet_config.in_channels), int(height), int(width))
        self._time_ids = self._add_time_ids()

    def _add_time_ids(self) -> Tensor:
        """One row of the pipeline's default ``add_time_ids`` (picture size, crop corner ``(0, 0)``)."""
        from diffusers import StableDiffusionXLPipeline

        pipeline = self.pipeline
        if pipeline.config.get("requires_aesthetics_score", False):
            raise TypeError(
                "the pipeline conditions on an aesthetic score (an SDXL refiner); SDXLDenoiser supports "
                "base-style SDXL UNets only"
            )
        scale = pipeline.vae_scale_factor
        pixels = (self.sample_shape[1] * scale, self.sample_shape[2] * scale)
        try:
            # The base pipeline's method: an img2img pipeline's has another signature but, without an
            # aesthetic score, builds the same six ids.
            return StableDiffusionXLPipeline._get_add_time_ids(
                pipeline,
                pixels,
                (0, 0),
                pixels,
                dtype=pipeline.text_encoder_2.dtype,
                text_encoder_projection_dim=pipeline.text_encoder_2.config.projection_dim,
            )
        except ValueError:
            unet: Any = self.model  # a UNet2DConditionModel: its submodules are untyped on nn.Module
            expected = unet.add_embedding.linear_1.in_features
            raise TypeError(
                f"the UNet's added conditioning takes {expected} values, not SDXL's six time ids and the "
                "pooled text embedding (an SDXL refiner with aesthetic score is not supported)"
            ) from None

    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """``{"encoder_hidden_states", "text_embeds", "time_ids"}`` for each prompt, on :attr:`device`."""
        prompts = list(prompts)
        if not all(isinstance(prompt, str) for prompt in prompts):
            raise TypeError("prompts must be strings")
        tokenizer = self.pipeline.tokenizer_2
        warn_if_truncated(tokenizer, prompts, tokenizer.model_max_length)
        hidden, _, pooled, _ = self.pipeline.encode_prompt(
            prompts, device=self.encoder_device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if self.pipeline.config.get("force_zeros_for_empty_prompt", False):
            # The pipeline's unconditional branch is all zeros rather than the encoded "".
            empty = torch.tensor([prompt == "" for prompt in prompts], device=hidden.device)
            hidden = torch.where(empty[:, None, None], torch.zeros_like(hidden), hidden)
            pooled = torch.where(empty.to(pooled.device)[:, None], torch.zeros_like(pooled), pooled)
        time_ids = self._time_ids.repeat(len(prompts), 1)
        device = self.device
        return {
            "encoder_hidden_states": hidden.to(device),
            "text_embeds": pooled.to(device),
            "time_ids": time_ids.to(device),
        }

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Mapping[str, Tensor]) -> Tensor:
        """The UNet's output (in the scheduler's ``prediction_type``) for a batch, called as the pipeline calls it."""
        if not isinstance(conditioning, Mapping) or any(key not in conditioning for key in CONDITIONING_KEYS):
            raise TypeError(f"conditioning must be the dict with keys {CONDITIONING_KEYS} that encode_prompts returns")
        dtype = self.dtype
        hidden = conditioning["encoder_hidden_states"].to(dtype)
        added = {"text_embeds": conditioning["text_embeds"].to(dtype), "time_ids": conditioning["time_ids"].to(dtype)}
        output = self.model(
            x.to(dtype),
            timesteps,
            encoder_hidden_states=hidden,
            timestep_cond=None,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        if output.shape[1] == 2 * x.shape[1]:  # learned-variance UNets append the variance channels
            output = output[:, : x.shape[1]]
        return output.to(x.dtype)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        return variance_preserving_chain(
            self.pipeline.scheduler.config, self.sampler, num_steps, eta=self.eta, prediction_type=self.prediction_type
        )
