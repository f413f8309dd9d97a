"""Adapter for Stable Diffusion 3 and 3.5 (``StableDiffusion3Pipeline``): an MM-DiT on flow-matching latents."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain
from conjure_metrics.chains_flow import DEFAULT_FLOW_NOISE_LEVEL
from conjure_metrics.conditioning import Conditioning
from conjure_metrics.denoisers.pipeline import PipelineDenoiser
from conjure_metrics.denoisers.schedules import FLOW_SAMPLERS, flow_matching_chain

OPTIONAL_T5 = ("text_encoder_3", "tokenizer_3")
"""Components an SD3 pipeline runs without (diffusers then gives T5's tokens as zeros)."""
PIPELINE_MAX_SEQUENCE_LENGTH = 256
"""T5 tokens per prompt that ``StableDiffusion3Pipeline.__call__`` uses by default."""
T5_LIMIT = 512
"""The longest ``max_sequence_length`` the pipeline accepts (``check_inputs``)."""


class SD3Denoiser(PipelineDenoiser):
    """A Stable Diffusion 3 / 3.5 pipeline as a :class:`~conjure_metrics.Denoiser`.

    Prompts go through the pipeline's own ``encode_prompt`` (CLIP-L, CLIP-G and T5, the CLIP
    hidden states padded to T5's width and joined along the sequence), into the conditioning
    ``{"encoder_hidden_states", "pooled_projections"}`` with one row per prompt; ``""`` is the
    unconditional prompt, as the pipeline's default negative prompt. ``predict_noise`` is one call of
    the transformer as the pipeline's denoising loop makes it, returning its flow-matching velocity,
    and the reverse chains walk the scheduler's own (shifted) sigma grid.

    Without T5 (a folder saved without ``text_encoder_3``, or
    ``from_pretrained(..., components={"text_encoder_3": None, "tokenizer_3": None})``) the pipeline
    fills T5's tokens with zeros, as diffusers does: cheaper, but the model then sees other inputs
    than the full model, so its scores differ (a ``UserWarning`` says so once).

    Args:
        pipeline: a ``StableDiffusion3Pipeline`` (its modules are used, its ``__call__`` never is).
        sampler: ``"sde"`` (the default; the flow's marginal-preserving SDE), ``"ancestral"``
            (diffusers' ``stochastic_sampling`` step) or ``"ode"`` (diffusers' default Euler step,
            deterministic: only ``weighting="simple"``); see :mod:`conjure_metrics.chains_flow`.
        noise_level: the SDE's noise scale ``a`` (``"sde"`` only).
        max_sequence_length: T5 tokens per prompt (the pipeline's default 256; at most 512).
        sample_size: latent height and width (an int or a pair); the transformer's ``sample_size``
            (the pipeline's default picture size) when ``None``.
        text_encoder_device: keep the three text encoders on this device (e.g. ``"cpu"`` for T5-XXL).

    Example (on a machine that has the weights)::

        denoiser = SD3Denoiser.from_pretrained("stabilityai/stable-diffusion-3.5-medium",
                                               torch_dtype=torch.bfloat16, device="cuda", text_encoder_device="cpu")
        result = conjure_similarity(["a tiger"], ["a lion"], denoiser, guidance_scale=4.5)
    """

    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusion3Pipeline",)
    required_components: ClassVar[tuple[str, ...]] = (
        "transformer",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
    )
    denoiser_name: ClassVar[str] = "transformer"
    samplers: ClassVar[tuple[str, ...]] = FLOW_SAMPLERS

    def __init__(
        self,
        pipeline: Any,
        *,
        sampler: str | None = None,
        noise_level: float = DEFAULT_FLOW_NOISE_LEVEL,
        max_sequence_length: int = PIPELINE_MAX_SEQUENCE_LENGTH,
        sample_size: int | tuple[int, int] | None = None,
        text_encoder_device: torch.device | str | None = None,
    ) -> None:
        super().__init__(pipeline, sampler=sampler, text_encoder_device=text_encoder_device)
        if not noise_level > 0:
            raise ValueError(f"noise_level must be positive (0 is the ODE: use sampler='ode'), got {noise_level}")
        if (
            isinstance(max_sequence_length, bool)
            or not isinstance(max_sequence_length, int)
            or not 1 <= max_sequence_length <= T5_LIMIT
        ):
            raise ValueError(f"max_sequence_length must be an int in [1, {T5_LIMIT}], got {max_sequence_length!r}")
        missing = [
            name
            for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
            if getattr(pipeline, name, None) is None
        ]
        if missing:
            raise TypeError(f"pipeline has no {', '.join(missing)}; SD3Denoiser needs both CLIP text encoders")
        if getattr(pipeline, "text_encoder_3", None) is None:
            warnings.warn(
                "SD3 pipeline has no T5 text encoder (text_encoder_3): its tokens are zeros, as diffusers "
                "does, so scores differ from the full model's",
                UserWarning,
                stacklevel=2,
            )
        self.noise_level, self.max_sequence_length = float(noise_level), max_sequence_length
        config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        size = config.sample_size if sample_size is None else sample_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if height % config.patch_size or width % config.patch_size or min(height, width) < 1:
            raise ValueError(
                f"sample_size must be positive multiples of the patch size {config.patch_size}, got {(height, width)}"
            )
        self.sample_shape: tuple[int, ...] = (int(config.in_channels), height, width)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """``{"encoder_hidden_states": (n, CLIP tokens + T5 tokens, T5 width), "pooled_projections": (n, pooled)}``."""
        hidden_states, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=self.encoder_device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": hidden_states.to(self.device), "pooled_projections": pooled.to(self.device)}

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning) -> Tensor:
        """The transformer's velocity for a batch (``timesteps``: the scheduler's, one per row, as the pipeline's)."""
        dtype = self.dtype
        parts = cast(Mapping[str, Tensor], conditioning)  # the dict encode_prompts built
        output = self.model(
            hidden_states=x.to(dtype),
            timestep=timesteps.to(x.device),
            encoder_hidden_states=parts["encoder_hidden_states"].to(dtype),
            pooled_projections=parts["pooled_projections"].to(dtype),
            return_dict=False,
        )[0]
        return output.to(x.dtype)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        return flow_matching_chain(
            self.pipeline.scheduler.config, self.sampler, num_steps, mu=self.shift_mu(), noise_level=self.noise_level
        )

    def shift_mu(self) -> float | None:
        """The dynamic shift ``mu`` the pipeline computes for these latents when the scheduler asks for one
        (``use_dynamic_shifting``; SD3 and SD3.5 use a static ``shift`` instead: ``None``)."""
        config = self.pipeline.scheduler.config
        if not config.get("use_dynamic_shifting", None):
            return None
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        model_config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        patch = model_config.patch_size
        _, height, width = self.sample_shape
        return calculate_shift(
            (height // patch) * (width // patch),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )
