"""A tiny random PixArt-Σ (or PixArt-α) pipeline, built from configs, fully offline.

The same layout and the same kinds of parts as the real checkpoints: a ``PixArtTransformer2DModel``
with learned variance (``out_channels = 2 × in_channels``), a T5 encoder with a character-level T5
tokenizer, PixArt's own DPM-Solver scheduler config (its training schedule: linear betas
``1e-4 … 0.02``, epsilon prediction) and a tiny ``AutoencoderKL`` (2× downsampling).

Examples:
    >>> pipeline = build_pipeline()
    >>> type(pipeline).__name__, pipeline.transformer.config.out_channels
    ('PixArtSigmaPipeline', 8)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, cast

import torch

from conjure_metrics.tiny.tokenizers import character_t5_tokenizer

Kind = Literal["sigma", "alpha"]
KINDS: tuple[str, ...] = ("sigma", "alpha")

# The scheduler config the PixArt-Σ / PixArt-α checkpoints ship (only the training schedule matters here).
PIXART_SCHEDULER_CONFIG: dict[str, Any] = dict(
    algorithm_type="dpmsolver++",
    beta_end=0.02,
    beta_schedule="linear",
    beta_start=0.0001,
    num_train_timesteps=1000,
    prediction_type="epsilon",
    solver_order=2,
    solver_type="midpoint",
    steps_offset=0,
    thresholding=False,
    timestep_spacing="linspace",
    lower_order_final=True,
    use_karras_sigmas=False,
    variance_type=None,
)


def build_pipeline(
    seed: int = 0, *, kind: Kind = "sigma", sample_size: int = 8, patch_size: int = 2, model_max_length: int = 32
) -> Any:
    """A random ``PixArtSigmaPipeline`` (``kind="sigma"``) or ``PixArtAlphaPipeline`` (``kind="alpha"``).

    ``sample_size`` is the latent size (PixArt-α passes resolution and aspect ratio to its
    transformer only at ``sample_size=128``, the 1024-pixel model; a large ``patch_size`` keeps that cheap).
    """
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    torch.manual_seed(seed)
    tokenizer = character_t5_tokenizer(model_max_length)
    text_encoder = T5EncoderModel(
        T5Config(  # type: ignore[call-arg]  # extra config fields are accepted at run time
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    transformer = PixArtTransformer2DModel(
        # inner dim 3 × 8: PixArt-α's resolution and aspect-ratio embeddings split it in thirds.
        num_attention_heads=3,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        cross_attention_dim=24,
        sample_size=sample_size,
        patch_size=patch_size,
        caption_channels=32,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        # Σ checkpoints say so explicitly; α infers it from sample_size (True at 128) as its checkpoints do.
        use_additional_conditions=False if kind == "sigma" else None,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        sample_size=2 * sample_size,
        scaling_factor=0.13025,
    )
    scheduler = DPMSolverMultistepScheduler(**PIXART_SCHEDULER_CONFIG)
    pipeline_class = PixArtSigmaPipeline if kind == "sigma" else PixArtAlphaPipeline
    pipeline = pipeline_class(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    # diffusers' top-level classes are its dummy placeholders to a type checker: these are torch modules
    for module in (text_encoder, transformer, vae):
        cast(torch.nn.Module, module).eval()
    return pipeline


def save(path: str | os.PathLike, seed: int = 0, *, kind: Kind = "sigma", **options: Any) -> Path:
    """Write :func:`build_pipeline`'s pipeline as a diffusers folder (``model_index.json`` names its class)."""
    path = Path(path)
    build_pipeline(seed, kind=kind, **options).save_pretrained(path)
    return path
