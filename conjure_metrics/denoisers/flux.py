"""Adapter for Flux.1 (dev and schnell): a ``FluxPipeline``'s transformer on packed latents as a :class:`Denoiser`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain
from conjure_metrics.chains_flow import DEFAULT_FLOW_NOISE_LEVEL
from conjure_metrics.conditioning import Conditioning
from conjure_metrics.denoisers.pipeline import PipelineDenoiser
from conjure_metrics.denoisers.protocol import GUIDANCE_MODES
from conjure_metrics.denoisers.schedules import FLOW_SAMPLERS, flow_matching_chain

MAX_SEQUENCE_LENGTH = 512
"""``FluxPipeline``'s default (and largest) number of T5 tokens."""


class FluxDenoiser(PipelineDenoiser):
    """A ``FluxPipeline`` (FLUX.1-dev or -schnell) as a :class:`~conjure_metrics.Denoiser`.

    Samples are the *packed* latents the transformer sees: ``(image_seq_len, 4 · latent_channels)``,
    2×2 latent patches flattened into tokens (``(4096, 64)`` at 1024×1024). ``predict_noise`` returns
    the transformer's flow velocity; the reverse chain walks the grid ``FluxPipeline`` builds
    (``sigmas = linspace(1, 1/T, T)`` shifted by ``mu = calculate_shift(image_seq_len)``).

    Guidance follows the checkpoint. FLUX.1-dev embeds the scale (``guidance_mode = "embedded"``: the
    metric's ``guidance_scale`` is the transformer's ``guidance`` input, no unconditional pass);
    FLUX.1-schnell takes none (``"none"``: ``guidance_scale`` is not used). With
    ``true_cfg_negative_prompt`` the model runs the pipeline's *true* classifier-free guidance
    instead (``"cfg"``: the metric's ``guidance_scale`` is the pipeline's ``true_cfg_scale``): the
    unconditional prompt ``""`` is then encoded as that negative prompt, and a dev transformer keeps
    getting ``embedded_guidance_scale`` as its ``guidance`` input, as the pipeline does.

    Args:
        pipeline: a ``FluxPipeline`` (its modules are used, never its ``__call__``).
        sampler: ``"sde"`` (default), ``"ancestral"`` or ``"ode"`` (:mod:`conjure_metrics.chains_flow`).
        noise_level: the ``"sde"`` sampler's noise level ``a`` (``0`` is the ODE).
        height: image height in pixels (a multiple of twice the VAE's downsampling); default: the
            VAE's ``sample_size`` (1024 for FLUX.1), else the pipeline's default size.
        width: image width in pixels, as ``height``.
        max_sequence_length: T5 tokens per prompt, as the pipeline's argument (default 512).
        guidance: ``"embedded"``, ``"none"`` or ``"cfg"``; default from the checkpoint (above).
        true_cfg_negative_prompt: the negative prompt of true classifier-free guidance (implies ``"cfg"``).
        embedded_guidance_scale: the dev transformer's ``guidance`` input when the metric does not set
            it (modes ``"cfg"`` and ``"none"``); the pipeline's default 3.5.
        text_encoder_device: as :class:`~conjure_metrics.denoisers.pipeline.PipelineDenoiser`.

    Example (on a machine that has the weights)::

        denoiser = FluxDenoiser.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16,
                                                device="cuda", height=512, width=512, text_encoder_device="cpu")
        conjure_similarity(["a red fox"], ["a blue fox"], denoiser, guidance_scale=3.5)
    """

    pipeline_classes: ClassVar[tuple[str, ...]] = ("FluxPipeline",)
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
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        guidance: str | None = None,
        true_cfg_negative_prompt: str | None = None,
        embedded_guidance_scale: float = 3.5,
        text_encoder_device: torch.device | str | None = None,
    ) -> None:
        super().__init__(pipeline, sampler=sampler, text_encoder_device=text_encoder_device)
        if not 0 <= noise_level:
            raise ValueError(f"noise_level must be non-negative, got {noise_level}")
        if not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH:
            raise ValueError(f"max_sequence_length must be in 1..{MAX_SEQUENCE_LENGTH}, got {max_sequence_length}")
        self.noise_level, self.max_sequence_length = float(noise_level), int(max_sequence_length)
        self.embedded_guidance_scale = float(embedded_guidance_scale)
        self.true_cfg_negative_prompt = true_cfg_negative_prompt
        config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        self.guidance_embeds = bool(config.guidance_embeds)
        self.guidance_mode = self._checked_guidance(guidance)

        # The pipeline's own sizes: latents are 2 * (pixels // (2 * vae_scale_factor)) per side, packed in 2×2 patches.
        patch = 2 * pipeline.vae_scale_factor
        default = self._default_image_size()
        self.height, self.width = (default if height is None else height), (default if width is None else width)
        for name, value in (("height", self.height), ("width", self.width)):
            if not isinstance(value, int) or value <= 0 or value % patch:
                raise ValueError(
                    f"{name} must be a positive multiple of {patch} pixels for this Flux model, got {value!r}"
                )
        scale = pipeline.vae_scale_factor
        self.latent_height, self.latent_width = self.height // scale, self.width // scale
        self.latent_channels = int(config.in_channels) // 4
        self.image_seq_len = (self.latent_height // 2) * (self.latent_width // 2)
        self.sample_shape = (self.image_seq_len, 4 * self.latent_channels)

    def _checked_guidance(self, guidance: str | None) -> str:
        negative = self.true_cfg_negative_prompt
        if guidance is None:
            return "cfg" if negative is not None else ("embedded" if self.guidance_embeds else "none")
        if guidance not in GUIDANCE_MODES:
            raise ValueError(f"guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")
        if guidance == "cfg" and negative is None:
            raise ValueError("guidance='cfg' needs true_cfg_negative_prompt (Flux has no trained unconditional prompt)")
        if guidance != "cfg" and negative is not None:
            raise ValueError(f"true_cfg_negative_prompt is only used with guidance='cfg', got guidance={guidance!r}")
        if guidance == "embedded" and not self.guidance_embeds:
            raise ValueError(
                "guidance='embedded' needs a transformer with guidance_embeds (FLUX.1-dev); this one has none"
            )
        return guidance

    def _default_image_size(self) -> int:
        # FluxPipeline.__call__ defaults to default_sample_size * vae_scale_factor (1024); a FLUX.1 VAE's
        # sample_size is that same 1024, and a smaller (test) model states its own size there.
        vae = getattr(self.pipeline, "vae", None)
        size = getattr(getattr(vae, "config", None), "sample_size", None)
        if isinstance(size, int):
            return size
        return int(self.pipeline.default_sample_size * self.pipeline.vae_scale_factor)

    # --- the Denoiser protocol ------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """``{"encoder_hidden_states": T5 states, "pooled_projections": CLIP pooled}``, one row per prompt.

        Through ``FluxPipeline.encode_prompt``. Under true CFG the empty prompt is encoded as
        ``true_cfg_negative_prompt``. Token ids are not rows (diffusers' are 2-D); ``predict_noise``
        builds them from the shapes.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        prompts = list(prompts)
        if self.true_cfg_negative_prompt is not None:
            prompts = [self.true_cfg_negative_prompt if p == "" else p for p in prompts]
        prompt_embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.encoder_device,
            num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": prompt_embeds.to(self.device), "pooled_projections": pooled.to(self.device)}

    def predict_noise(
        self, x: Tensor, timesteps: Tensor, conditioning: Conditioning, *, guidance_scale: float | None = None
    ) -> Tensor:
        """The transformer's flow velocity for packed latents ``x`` (``(batch, *sample_shape)``).

        Inputs as ``FluxPipeline.__call__`` builds them: timestep / 1000, ``guidance`` a float32 row of
        the scale (dev), text ids zeros and image ids from the pipeline's ``_prepare_latent_image_ids``.
        ``guidance_scale`` (set by the metric in ``"embedded"`` mode) replaces ``embedded_guidance_scale``;
        a transformer without guidance embedding ignores it.
        """
        if not isinstance(conditioning, Mapping):
            raise TypeError(f"conditioning must be the dict encode_prompts returns, got {type(conditioning).__name__}")
        if x.dim() != 3 or tuple(x.shape[1:]) != self.sample_shape:
            tokens, channels = self.sample_shape
            raise ValueError(f"x must be packed latents of shape (batch, {tokens}, {channels}), got {tuple(x.shape)}")
        dtype, device, batch = self.dtype, x.device, x.shape[0]
        parts = cast(Mapping[str, Tensor], conditioning)  # the dict of tensors encode_prompts built
        states = parts["encoder_hidden_states"]
        guidance = None
        if self.guidance_embeds:
            scale = self.embedded_guidance_scale if guidance_scale is None else float(guidance_scale)
            guidance = torch.full([1], scale, device=device, dtype=torch.float32).expand(batch)
        txt_ids = torch.zeros(states.shape[1], 3, device=device, dtype=dtype)
        img_ids = self.pipeline._prepare_latent_image_ids(
            batch, self.latent_height // 2, self.latent_width // 2, device, dtype
        )
        output = self.model(
            hidden_states=x.to(dtype),
            timestep=timesteps.to(device=device, dtype=dtype).expand(batch) / 1000,
            guidance=guidance,
            pooled_projections=parts["pooled_projections"].to(dtype),
            encoder_hidden_states=states.to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return output.to(x.dtype)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        """``sampler``'s chain on ``FluxPipeline``'s grid for ``num_steps`` inference steps at this image size."""
        return flow_matching_chain(
            self.pipeline.scheduler.config,
            self.sampler,
            num_steps,
            sigmas=self.pipeline_sigmas(num_steps),
            mu=self.mu,
            noise_level=self.noise_level,
        )

    def pipeline_sigmas(self, num_steps: int) -> list[float] | None:
        """The ``sigmas`` ``FluxPipeline.__call__`` passes to the scheduler (``None`` for ``use_flow_sigmas``)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        if self.pipeline.scheduler.config.get("use_flow_sigmas", False):
            return None
        return np.linspace(1.0, 1 / num_steps, num_steps).tolist()

    @property
    def mu(self) -> float:
        """The shift ``FluxPipeline.__call__`` computes for this image size (used with dynamic shifting only)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.pipeline.scheduler.config
        return calculate_shift(
            self.image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )

    # --- pictures -------------------------------------------------------------------------------

    def unpack_latents(self, x: Tensor) -> Tensor:
        """Packed ``(batch, tokens, 4 · channels)`` latents back in the VAE's ``(batch, channels, h, w)`` layout."""
        return self.pipeline._unpack_latents(x, self.height, self.width, self.pipeline.vae_scale_factor)
