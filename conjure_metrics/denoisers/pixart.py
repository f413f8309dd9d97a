"""Adapter for PixArt-Σ and PixArt-α: a T5-conditioned ``PixArtTransformer2DModel`` in a variance-preserving latent space."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.chains import VARIANCE_PRESERVING_PREDICTION_TYPES, ReverseChain
from conjure_metrics.denoisers.pipeline import PipelineDenoiser
from conjure_metrics.denoisers.schedules import VARIANCE_PRESERVING_SAMPLERS, variance_preserving_chain

# Components a PixArt pipeline cannot run without (the VAE only draws pictures).
_REQUIRED_COMPONENTS = ("transformer", "text_encoder", "tokenizer", "scheduler")


class PixArtDenoiser(PipelineDenoiser):
    """A ``PixArtSigmaPipeline`` or ``PixArtAlphaPipeline`` as a :class:`~conjure_metrics.Denoiser`.

    Conditioning is ``{"encoder_hidden_states", "encoder_attention_mask"}``: the T5 hidden states and
    the token mask from the pipeline's own ``encode_prompt`` (padded to ``max_sequence_length``), one
    row per prompt; ``""`` is the unconditional prompt, as in the pipeline's classifier-free guidance.
    Captions are not cleaned (``clean_caption=False``: cleaning needs ``bs4`` and ``ftfy``); the
    pipeline lower-cases and strips them as it always does.

    ``predict_noise`` calls the transformer as the pipeline's ``__call__`` does (Σ: no micro-conditions;
    α at ``sample_size == 128``: the pixel resolution and aspect ratio of ``sample_shape``). PixArt
    transformers predict a learned variance too (``out_channels = 2 × in_channels``); those channels are
    dropped and only the noise prediction is returned, as the pipeline does before its scheduler step.
    The estimator's chains have fixed variances, so the learned variance is not part of the path measure
    whose divergence is estimated.

    The reverse chain is ``ddpm``, ``ddim`` (with ``eta``) or ``euler_ancestral`` on the training schedule
    of the checkpoint's scheduler config (PixArt ships a DPM-Solver config; its betas, spacing and
    ``prediction_type`` are what is used). Steps never clip or threshold the predicted clean latents
    (DPM-Solver does not, for PixArt; diffusers' DDPM/DDIM default ``clip_sample=True`` is meant for pixels).

    Args:
        pipeline: a ``PixArtSigmaPipeline`` or ``PixArtAlphaPipeline`` (its modules are shared).
        sampler: ``"ddpm"`` (the default), ``"ddim"`` or ``"euler_ancestral"``.
        eta: DDIM stochasticity (``0`` is deterministic: use ``weighting="simple"`` then).
        max_sequence_length: T5 tokens per prompt; ``None``: the pipeline's default (300 Σ, 120 α).
        sample_size: latent height and width (an int or a pair); ``None``: the transformer's.
        text_encoder_device: keep T5 on this device (see :class:`PipelineDenoiser`).

    Example (on a machine that has the weights)::

        denoiser = PixArtDenoiser.from_pretrained("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", torch_dtype=torch.float16,
                                                  device="cuda", text_encoder_device="cpu")
        conjure_similarity(["a red fox"], ["a blue fox"], denoiser, guidance_scale=4.5)
    """

    pipeline_classes = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    denoiser_name = "transformer"
    samplers = VARIANCE_PRESERVING_SAMPLERS
    required_components = _REQUIRED_COMPONENTS

    def __init__(
        self,
        pipeline: Any,
        *,
        sampler: str | None = None,
        eta: float = 1.0,
        max_sequence_length: int | None = None,
        sample_size: int | Sequence[int] | None = None,
        text_encoder_device: torch.device | str | None = None,
    ) -> None:
        missing = [name for name in _REQUIRED_COMPONENTS if getattr(pipeline, name, None) is None]
        if missing:
            raise TypeError(f"{type(pipeline).__name__} has no {', '.join(missing)}; PixArtDenoiser needs them")
        super().__init__(pipeline, sampler=sampler, text_encoder_device=text_encoder_device)
        if eta < 0:
            raise ValueError(f"eta must be non-negative, got {eta!r}")
        self.eta = float(eta)
        if max_sequence_length is None:
            max_sequence_length = inspect.signature(pipeline.encode_prompt).parameters["max_sequence_length"].default
        if not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be a positive int, got {max_sequence_length!r}")
        self.max_sequence_length = max_sequence_length
        config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        size = config.sample_size if sample_size is None else sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.sample_shape: tuple[int, ...] = (int(config.in_channels), int(height), int(width))
        self.prediction_type = pipeline.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in VARIANCE_PRESERVING_PREDICTION_TYPES:
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")

    @property
    def is_alpha(self) -> bool:
        """Whether the pipeline is PixArt-α's (it conditions its 1024-pixel model on resolution and aspect ratio)."""
        return any(base.__name__ == "PixArtAlphaPipeline" for base in type(self.pipeline).__mro__)

    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        states, mask, _, _ = self.pipeline.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            device=self.encoder_device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": states.to(self.device), "encoder_attention_mask": mask.to(self.device)}

    def added_cond_kwargs(self, batch_size: int) -> dict[str, Tensor | None]:
        """The micro-conditions the pipeline passes its transformer for ``batch_size`` rows."""
        config: Any = self.model.config  # a diffusers config (attribute access), untyped on nn.Module
        if not (self.is_alpha and config.sample_size == 128):
            return {"resolution": None, "aspect_ratio": None}
        # PixArt-α's pipeline: the (binned) pixel size of the image the latents decode to.
        scale = getattr(self.pipeline, "vae_scale_factor", 8)  # the pipeline's own (8 when loaded without a VAE)
        height, width = self.sample_shape[1] * scale, self.sample_shape[2] * scale
        resolution = torch.tensor([height, width]).repeat(batch_size, 1)
        aspect_ratio = torch.tensor([float(height / width)]).repeat(batch_size, 1)
        return {
            "resolution": resolution.to(device=self.device, dtype=self.dtype),
            "aspect_ratio": aspect_ratio.to(device=self.device, dtype=self.dtype),
        }

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: dict[str, Tensor]) -> Tensor:
        """The transformer's noise prediction (its learned-variance channels dropped) for a batch."""
        dtype, model = self.dtype, self.model
        output = model(
            x.to(dtype),
            encoder_hidden_states=conditioning["encoder_hidden_states"].to(dtype),
            encoder_attention_mask=conditioning["encoder_attention_mask"],
            timestep=timesteps,
            added_cond_kwargs=self.added_cond_kwargs(x.shape[0]),
            return_dict=False,
        )[0]
        config: Any = model.config  # a diffusers config (attribute access), untyped on nn.Module
        if config.out_channels // 2 == config.in_channels:  # the pipeline's "learned sigma" test
            output = output.chunk(2, dim=1)[0]
        return output.to(x.dtype)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        return variance_preserving_chain(
            self.pipeline.scheduler.config, self.sampler, num_steps, eta=self.eta, prediction_type=self.prediction_type
        )
