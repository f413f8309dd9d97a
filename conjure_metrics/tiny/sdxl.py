"""A tiny random Stable Diffusion XL pipeline, built from configs, fully offline.

Both CLIP text encoders (the second with a projection, whose pooled output feeds the UNet's
``text_time`` embedding), byte-level tokenizers, a UNet that takes SDXL's added conditioning, SDXL's
Euler scheduler configuration and a tiny ``AutoencoderKL`` with a 2× downsampling: ``4 × 8 × 8``
latents of ``16 × 16`` pictures.

Examples:
    >>> pipeline = build_pipeline()
    >>> type(pipeline).__name__, pipeline.unet.config.addition_embed_type, pipeline.vae_scale_factor
    ('StableDiffusionXLPipeline', 'text_time', 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch

from conjure_metrics.tiny.tokenizers import byte_level_clip_tokenizer

SAMPLE_SIZE = 8
MODEL_MAX_LENGTH = 16
HIDDEN_SIZE = 16  # per text encoder; the UNet attends to both, concatenated
PROJECTION_DIM = 16
TIME_EMBED_DIM = 8  # per time id; SDXL has six (original size, crop corner, target size)
# stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json. The keys Euler does not use
# (clip_sample, set_alpha_to_one) are kept in its config and matter to DDPM/DDIM built from it.
SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def _clip_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_pipeline(seed: int = 0, force_zeros_for_empty_prompt: bool = True, text_encoder: bool = True) -> Any:
    """A random ``StableDiffusionXLPipeline`` with every module tiny and in eval mode.

    ``text_encoder=False`` leaves out the first CLIP encoder and its tokenizer, as refiner checkpoints
    do (the UNet then attends to the second encoder's hidden states only).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = byte_level_clip_tokenizer(MODEL_MAX_LENGTH), byte_level_clip_tokenizer(MODEL_MAX_LENGTH)
    first_encoder = CLIPTextModel(_clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, projection_dim=PROJECTION_DIM))
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(2 if text_encoder else 1) * HIDDEN_SIZE,
        attention_head_dim=(2, 4),
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + PROJECTION_DIM,
    )
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        sample_size=2 * SAMPLE_SIZE,
        scaling_factor=0.13025,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=first_encoder if text_encoder else None,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer if text_encoder else None,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    # diffusers' top-level classes are its dummy placeholders to a type checker: these are torch modules
    for module in (vae, first_encoder, text_encoder_2, unet):
        cast(torch.nn.Module, module).requires_grad_(False).eval()
    return pipeline


def save(path: str | os.PathLike, seed: int = 0, **options: Any) -> Path:
    """Write the tiny pipeline as a diffusers folder (``model_index.json`` and one subfolder per part).

    ``options`` go to :func:`build_pipeline` (``force_zeros_for_empty_prompt``, ``text_encoder``).
    """
    path = Path(path)
    build_pipeline(seed, **options).save_pretrained(path)
    return path
