"""A tiny random Stable Diffusion 3 pipeline (two CLIP encoders with projection, T5, MM-DiT), fully offline.

The same components and folder layout as ``stabilityai/stable-diffusion-3-medium-diffusers``, with
every width shrunk: the transformer sees ``16 × 8 × 8`` latents of a 2× VAE (16 × 16 pictures), the
CLIP encoders are 16 wide (their hidden states concatenated, 32, match T5's width as CLIP-L + CLIP-G
do not: the pipeline pads them), and T5 is 32 wide. The scheduler is SD3's ``shift=3.0`` flow matching.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch

from conjure_metrics.tiny.tokenizers import byte_level_clip_tokenizer, character_t5_tokenizer

CLIP_LENGTH = 16
"""Tokens per CLIP prompt (``tokenizer.model_max_length``, which the pipeline pads and truncates to)."""
T5_LENGTH = 16
"""A T5 length that suits the tiny model (``SD3Denoiser(max_sequence_length=T5_LENGTH)``); any length works."""
SAMPLE_SIZE = 8


def _clip(tokenizer: Any, hidden_size: int, projection_dim: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    # Two layers: the pipeline reads the penultimate hidden state.
    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            projection_dim=projection_dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CLIP_LENGTH,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_pipeline(seed: int = 0) -> Any:
    """A ``StableDiffusion3Pipeline`` of random tiny components (in eval mode), the same for the same ``seed``.

    Examples:
        >>> pipeline = build_pipeline()
        >>> type(pipeline).__name__, pipeline.transformer.config.in_channels, pipeline.vae_scale_factor
        ('StableDiffusion3Pipeline', 16, 2)
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = byte_level_clip_tokenizer(CLIP_LENGTH), byte_level_clip_tokenizer(CLIP_LENGTH)
    tokenizer_3 = character_t5_tokenizer(T5_LENGTH)
    text_encoder, text_encoder_2 = _clip(tokenizer, 16, 16), _clip(tokenizer_2, 16, 16)
    text_encoder_3 = T5EncoderModel(
        T5Config(  # type: ignore[call-arg]  # extra config fields are accepted at run time
            vocab_size=len(tokenizer_3),
            d_model=32,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=tokenizer_3.pad_token_id,
            eos_token_id=tokenizer_3.eos_token_id,
            decoder_start_token_id=0,
        )
    )
    transformer = SD3Transformer2DModel(
        sample_size=SAMPLE_SIZE,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        pos_embed_max_size=SAMPLE_SIZE,
    )
    # SD3's VAE: 16 latent channels, a shift as well as a scale, no quantisation convolutions.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        sample_size=2 * SAMPLE_SIZE,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    # diffusers' top-level classes are its dummy placeholders to a type checker: these are torch modules
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        cast(torch.nn.Module, module).requires_grad_(False).eval()
    return pipeline


def save(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write :func:`build_pipeline`'s pipeline as a diffusers folder (``model_index.json`` names the pipeline)."""
    path = Path(path)
    build_pipeline(seed).save_pretrained(path)
    return path
