"""Continuations of prompts, sampled at temperature 1 in batches, with common random numbers.

Continuation ``j`` of every prompt is drawn by inverse-CDF sampling from uniforms that depend on
``(seed, j)`` only (:func:`conjure_metrics.noise.sample_seed`), one uniform per generated position.
Which rows share a batch, their order and the rank that runs them therefore change no token
(up to floating-point ties), unlike ``generate`` with one global generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from conjure_metrics.noise import sample_seed


def continuation_uniforms(seed: int, num_continuations: int, max_new_tokens: int) -> Tensor:
    """``(num_continuations, max_new_tokens)`` float64 uniforms; row ``j`` depends on ``(seed, j)`` only."""
    rows = []
    for j in range(num_continuations):
        generator = torch.Generator().manual_seed(sample_seed(seed, j))
        rows.append(torch.rand(max_new_tokens, generator=generator, dtype=torch.float64))
    return torch.stack(rows)


def inverse_cdf_sample(logits: Tensor, uniforms: Tensor) -> Tensor:
    """Token ``i`` with ``cdf[i-1] <= u < cdf[i]`` for each row: a temperature-1 draw from ``softmax(logits)``.

    Zero-probability tokens are never drawn. Computed in float64 so that a token can only flip
    when ``u`` falls within rounding distance of a boundary.
    """
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(dim=-1)
    targets = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp_max(logits.shape[-1] - 1)


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` with the rows right-aligned."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(row)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: Tensor) -> Tensor:
    """Position ids that start at 0 on each row's first real token (left padding shifts nothing)."""
    return (mask.cumsum(dim=-1) - 1).clamp_min(0)


def sample_continuations(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    uniforms: Tensor,
    eos_token_id: int | None,
    pad_id: int,
) -> list[list[int]]:
    """Sample one continuation per row of ``prompts`` (token ids), with the row's ``uniforms``.

    Row ``i`` gets ``uniforms[i]`` (length = most new tokens); generation of a row stops after it
    draws ``eos_token_id`` (kept, as the model's "the text ends here"). One batched forward per
    position, with the model's key/value cache.
    """
    device = _device(model)
    ids, mask = left_padded(prompts, pad_id, device)
    max_new_tokens = uniforms.shape[1]
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True)
    continuations: list[list[int]] = [[] for _ in prompts]
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    for step in range(max_new_tokens):
        tokens = inverse_cdf_sample(output.logits[:, -1], uniforms[:, step]).cpu()
        for i in torch.nonzero(~finished).flatten().tolist():
            continuations[i].append(int(tokens[i]))
        if eos_token_id is not None:
            finished |= tokens == eos_token_id
        if bool(finished.all()) or step + 1 == max_new_tokens:
            break
        next_positions = positions(mask)[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        output = model(
            input_ids=tokens.to(device).unsqueeze(-1),
            attention_mask=mask,
            position_ids=next_positions,
            use_cache=True,
            **_cache_argument(model, output),
        )
    return continuations


def continuation_log_likelihoods(
    model: torch.nn.Module,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    max_batch_size: int,
    on_batch: Callable[[], None] | None = None,
) -> Tensor:
    """Length-normalised log-likelihood ``mean_k log p(c_k | prompt, c_<k)`` of each ``(prompt, continuation)``.

    Rows are batched ``max_batch_size`` at a time (prompts left-padded, continuations right-padded);
    returns float64 of length ``len(rows)``.
    """
    device = _device(model)
    result = torch.empty(len(rows), dtype=torch.float64)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), len(rows[i][1])))  # less padding
    for start in range(0, len(order), max_batch_size):
        chunk = order[start : start + max_batch_size]
        prompt_width = max(len(rows[i][0]) for i in chunk)
        cont_width = max(len(rows[i][1]) for i in chunk)
        ids, mask = left_padded([rows[i][0] for i in chunk], pad_id, torch.device("cpu"))
        targets = torch.full((len(chunk), cont_width), pad_id, dtype=torch.long)
        target_mask = torch.zeros((len(chunk), cont_width), dtype=torch.long)
        for k, i in enumerate(chunk):
            targets[k, : len(rows[i][1])] = torch.as_tensor(rows[i][1])
            target_mask[k, : len(rows[i][1])] = 1
        ids, mask = torch.cat([ids, targets], dim=1).to(device), torch.cat([mask, target_mask], dim=1).to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        # Position t predicts token t + 1: the continuation's logits start one before it.
        predicting = logits[:, prompt_width - 1 : prompt_width - 1 + cont_width]
        predicting = predicting.to(torch.promote_types(predicting.dtype, torch.float32))
        token_log_probs = torch.log_softmax(predicting, dim=-1).gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
        real = target_mask.to(device).bool()
        token_log_probs = torch.where(real, token_log_probs.double(), 0.0)
        means = token_log_probs.sum(dim=1) / real.sum(dim=1)
        result[torch.as_tensor(chunk)] = means.cpu()
        if on_batch is not None:
            on_batch()
    return result


def _cache_argument(model: torch.nn.Module, output) -> dict:
    # transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name still works, with a warning).
    if "cache" in inspect.signature(model.forward).parameters and getattr(output, "cache", None) is not None:
        return {"cache": output.cache}
    return {"past_key_values": output.past_key_values}


def _device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device
