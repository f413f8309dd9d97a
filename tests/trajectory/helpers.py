"""Shared builders for the trajectory tests: a tiny random GPT-2 over the offline zoo tokenizer."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conjure_metrics.noise import sample_seed
from conjure_metrics.trajectory.sampling import inverse_cdf_sample
from conjure_metrics.trajectory.tokenizer import build_lm_tokenizer

SETTINGS = dict(num_continuations=4, max_new_tokens=6, seed=3)
A = ["a red fox", "a striped cat in the snow", "a red fox", "an animal"]
B = ["a crimson fox", "a blue bear", "a red fox", "a zebra at night"]


def tiny_lm(dtype: torch.dtype = torch.float64, seed: int = 0) -> GPT2LMHeadModel:
    """A random 2-layer GPT-2 with large initial weights, so prompts change its predictions a lot."""
    tokenizer = build_lm_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        initializer_range=0.4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(dtype).eval()


def tiny_tokenizer():
    return build_lm_tokenizer()


@torch.no_grad()
def naive_continuation(model, prompt_ids: list[int], seed: int, j: int, max_new_tokens: int, eos: int) -> list[int]:
    """Continuation ``j`` drawn one token at a time, re-reading the whole unpadded text each step (no cache)."""
    uniforms = torch.rand(
        max_new_tokens, generator=torch.Generator().manual_seed(sample_seed(seed, j)), dtype=torch.float64
    )
    tokens: list[int] = []
    for step in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([prompt_ids + tokens])).logits[:, -1]
        tokens.append(int(inverse_cdf_sample(logits, uniforms[step : step + 1])))
        if tokens[-1] == eos:
            break
    return tokens


@torch.no_grad()
def naive_log_likelihood(model, prompt_ids: list[int], continuation: list[int]) -> float:
    """Mean log-probability of the continuation's tokens, one unpadded sequence, summed by hand."""
    logits = model(input_ids=torch.tensor([prompt_ids + continuation])).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    total = sum(float(log_probs[len(prompt_ids) - 1 + k, token]) for k, token in enumerate(continuation))
    return total / len(continuation)
