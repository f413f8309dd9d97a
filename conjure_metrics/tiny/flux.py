"""A tiny, randomly initialised Flux.1 pipeline (dev or schnell layout), built from configs, fully offline.

Same components and folder layout as ``black-forest-labs/FLUX.1-dev`` / ``-schnell``: a
``FluxTransformer2DModel`` on 2×2-packed latents, a CLIP text encoder (pooled embedding) and a T5
encoder (token embeddings), a flow-matching scheduler and an ``AutoencoderKL`` with 16 latent channels
and Flux's shift and scaling factors. Only the sizes are tiny: 16×16-pixel images, 8×8 latents, so
``4 × 4 = 16`` packed tokens of ``16 × 4 = 64`` channels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch

from conjure_metrics.tiny.tokenizers import byte_level_clip_tokenizer, character_t5_tokenizer

IMAGE_SIZE = 16
"""Pixels per side: the VAE's ``sample_size``, the size :class:`~conjure_metrics.denoisers.flux.FluxDenoiser` uses."""


def build_pipeline(seed: int = 0, guidance_embeds: bool = True) -> Any:
    """A tiny ``FluxPipeline``: FLUX.1-dev's layout with ``guidance_embeds``, FLUX.1-schnell's without.

    The scheduler follows the real configs: dev shifts its grid dynamically with the image size
    (``use_dynamic_shifting=True``, ``shift=3``), schnell does not (``shift=1``).

    Examples:
        >>> pipeline = build_pipeline(guidance_embeds=False)
        >>> pipeline.transformer.config.in_channels, pipeline.transformer.config.guidance_embeds
        (64, False)
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = byte_level_clip_tokenizer(model_max_length=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            projection_dim=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    tokenizer_2 = character_t5_tokenizer(model_max_length=32)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0 if guidance_embeds else 1.0,
        use_dynamic_shifting=guidance_embeds,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipeline = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    # diffusers' top-level classes are its dummy placeholders to a type checker: these are torch modules
    for module in (text_encoder, text_encoder_2, transformer, vae):
        cast(torch.nn.Module, module).requires_grad_(False).eval()
    return pipeline


def save(path: str | os.PathLike, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Write :func:`build_pipeline`'s pipeline as a diffusers folder (``model_index.json`` names ``FluxPipeline``)."""
    path = Path(path)
    build_pipeline(seed=seed, guidance_embeds=guidance_embeds).save_pretrained(path)
    return path
