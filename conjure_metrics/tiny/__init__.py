"""Tiny, randomly initialised models of each supported diffusers family, built from configs, fully offline.

For tests, benchmarks and demos on machines without pretrained weights: the same diffusers folder
layout (``unet``, ``text_encoder``, ``tokenizer``, ``scheduler``, optional ``vae``) as a real
checkpoint, so they load through the very code path that loads Stable Diffusion. The other families
(SDXL, SD3, Flux, PixArt) have a module each here; :func:`save_tiny_model` builds any of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from conjure_metrics.tiny.tokenizers import byte_level_clip_tokenizer, character_t5_tokenizer


def build_tiny_components(
    latent: bool = False, seed: int = 0, sample_size: int = 8, model_max_length: int = 32
) -> dict:
    """Random ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` (and ``vae`` if ``latent``).

    Pixel space: the UNet sees ``3 × sample_size²`` images. Latent space: ``4 × sample_size²`` latents
    of a tiny ``AutoencoderKL`` with a 2× downsampling.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = byte_level_clip_tokenizer(model_max_length)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    channels = 4 if latent else 3
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    )
    components = {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    if latent:
        components["vae"] = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            norm_num_groups=4,
            sample_size=2 * sample_size,
        )
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return components


__all__ = [
    "FAMILIES",
    "build_tiny_components",
    "byte_level_clip_tokenizer",
    "character_t5_tokenizer",
    "save_tiny_model",
]

FAMILIES = ("sd", "sdxl", "sd3", "flux", "pixart")


def save_tiny_model(
    path: str | os.PathLike, latent: bool = False, seed: int = 0, sample_size: int = 8, family: str = "sd"
) -> Path:
    """Write a tiny random model in the diffusers folder layout and return its path.

    ``family`` ``"sd"`` (the default; pixel space unless ``latent``) or one of ``"sdxl"``, ``"sd3"``,
    ``"flux"``, ``"pixart"``, each a whole pipeline folder (with a tiny VAE) from
    ``conjure_metrics.tiny.<family>``.
    """
    if family != "sd":
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        import importlib

        return importlib.import_module(f"conjure_metrics.tiny.{family}").save(path, seed=seed)
    path = Path(path)
    components = build_tiny_components(latent=latent, seed=seed, sample_size=sample_size)
    for name, component in components.items():
        component.save_pretrained(path / name)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1"}
    index.update(
        {
            name: ["diffusers" if name in ("unet", "scheduler", "vae") else "transformers", type(c).__name__]
            for name, c in components.items()
        }
    )
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
