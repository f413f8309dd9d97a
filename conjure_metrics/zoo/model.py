"""Architecture of conjure-zoo: a pixel-space conditional UNet and a small CLIP text encoder.

Both are trained together from scratch (see ``docs/zoo_model_card.md``), so the text
encoder learns that two words mean the same thing only from the images they go with.
"""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import BOS, EOS, MODEL_MAX_LENGTH, build_tokenizer
from .world import IMAGE_SIZE

TEXT_WIDTH = 128

# "base" is the shipped model; "tiny" exercises the whole pipeline in seconds on a CPU.
PRESETS = {
    "base": dict(block_out_channels=(64, 128, 192), layers_per_block=1, text_layers=4),
    "tiny": dict(block_out_channels=(32, 32, 64), layers_per_block=1, text_layers=1),
}


def unet_config(preset: str = "base") -> dict:
    """``UNet2DConditionModel`` config: 32→16→8 px, cross-attention at 16 and 8 px."""
    p = PRESETS[preset]
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=p["block_out_channels"],
        layers_per_block=p["layers_per_block"],
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=32,
        norm_num_groups=32,
    )


def text_config(preset: str = "base", vocab_size: int | None = None) -> dict:
    """``CLIPTextConfig`` kwargs for a small causal CLIP text transformer."""
    tokenizer = build_tokenizer()
    return dict(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=PRESETS[preset]["text_layers"],
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(EOS),
    )


def scheduler_config() -> dict:
    """DDPM, 1000 steps, epsilon prediction, cosine schedule (suits 32×32 pixel space)."""
    return dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=True,
        clip_sample_range=1.0,
    )


def build_models(preset: str = "base") -> tuple[UNet2DConditionModel, CLIPTextModel, DDPMScheduler]:
    """Freshly initialised UNet, text encoder and noise scheduler."""
    unet = UNet2DConditionModel(**unet_config(preset))
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(preset)))
    return unet, text_encoder, DDPMScheduler(**scheduler_config())


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())
