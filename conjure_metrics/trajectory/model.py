"""Architecture of the zoo LM: a small GPT-2 over the word-level caption tokenizer."""

from __future__ import annotations

from typing import Any

from transformers import GPT2Config, GPT2LMHeadModel

from .tokenizer import MODEL_MAX_LENGTH, build_lm_tokenizer

# "base" is the shipped model; "tiny" exercises training and the metric in seconds.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(n_embd=128, n_layer=4, n_head=4),
    "tiny": dict(n_embd=32, n_layer=1, n_head=2),
}


def lm_config(preset: str = "base") -> GPT2Config:
    """``GPT2Config`` for a preset. No dropout: training data are unlimited, and without random
    dropout masks a resumed run repeats the uninterrupted one exactly."""
    tokenizer = build_lm_tokenizer()
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MODEL_MAX_LENGTH,
        **PRESETS[preset],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_lm(preset: str = "base") -> GPT2LMHeadModel:
    """A freshly initialised zoo LM (seed ``torch.manual_seed`` first for reproducible weights)."""
    return GPT2LMHeadModel(lm_config(preset))
