"""Meaning as trajectories: cross-scored continuations and the distances built on them.

For a pair of prompts ``(u, v)``, ``n`` continuations are sampled from each, and every one is
scored under both prompts with the length-normalised log-likelihood ``log M_p(t)`` (Liu et al.,
"Meaning Representations from Trajectories in Autoregressive Models", ICLR 2024). Within a batch,
each distinct prompt is continued once and each (prompt, continuation) score computed once, so
pairs that share a prompt share its trajectories, and a prompt paired with itself scores exactly 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .sampling import continuation_log_likelihoods, continuation_uniforms, sample_continuations

Distance = Literal["mean_abs", "symmetric_kl"]
DISTANCES = ("mean_abs", "symmetric_kl")


@dataclass(frozen=True)
class TrajectoryTerms:
    """Cross-scores of every pair's continuations, float64 ``(pairs, 2, 2, n)``.

    ``log_likelihood[i, s, k, j]`` is ``log M_k(t_j)`` for continuation ``t_j`` of side ``s`` of pair
    ``i`` (0: ``prompts_a[i]``, 1: ``prompts_b[i]``) scored under the prompt of side ``k``.
    ``continuations[s][i]`` are side ``s``'s continuations of pair ``i`` as text.
    """

    log_likelihood: Tensor
    continuations: tuple[list[list[str]], list[list[str]]]

    @property
    def num_continuations(self) -> int:
        return self.log_likelihood.shape[-1]

    def per_continuation(self, distance: Distance) -> Tensor:
        """``(pairs, 2, n)``: each continuation's term of ``distance``, per side.

        ``mean_abs``: ``|log M_a(t) - log M_b(t)|``. ``symmetric_kl``: ``log M_own(t) - log M_other(t)``.
        """
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        own_minus_other = torch.stack(
            [
                self.log_likelihood[:, 0, 0] - self.log_likelihood[:, 0, 1],
                self.log_likelihood[:, 1, 1] - self.log_likelihood[:, 1, 0],
            ],
            dim=1,
        )
        return own_minus_other.abs() if distance == "mean_abs" else own_minus_other

    def divergence(self, distance: Distance) -> Tensor:
        """Per pair: the mean over all ``2n`` continuations (``mean_abs``), or
        ``KL(a||b) + KL(b||a)`` estimated along each side's own continuations (``symmetric_kl``)."""
        side_means = self.per_continuation(distance).mean(dim=-1)
        total = side_means[:, 0] + side_means[:, 1]  # a + b == b + a: swapping the pair changes no bit
        return total / 2 if distance == "mean_abs" else total

    def stderr(self, distance: Distance) -> Tensor:
        """Standard error of :meth:`divergence`, stratified by side (NaN with one continuation)."""
        terms = self.per_continuation(distance)
        n = terms.shape[-1]
        if n < 2:
            return torch.full(terms.shape[:1], float("nan"), dtype=torch.float64)
        variance = terms.var(dim=-1).sum(dim=1) / n
        return (variance / 4 if distance == "mean_abs" else variance).sqrt()


def trajectory_terms(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model: torch.nn.Module,
    tokenizer,
    *,
    num_continuations: int,
    max_new_tokens: int,
    seed: int,
    max_batch_size: int,
    progress_bar: bool | None = False,
) -> TrajectoryTerms:
    """Sample continuations of every distinct prompt and cross-score them within each pair.

    ``model`` is a causal LM called as ``model(input_ids=, attention_mask=, position_ids=, ...)``
    (transformers style), ``tokenizer`` its tokenizer. Call under ``torch.inference_mode()`` with
    the model in eval mode (the functional API and the metric do).
    """
    prompt_ids = {prompt: encode_prompt(tokenizer, prompt) for prompt in dict.fromkeys([*prompts_a, *prompts_b])}
    _check_lengths(prompt_ids, max_new_tokens, model, tokenizer)
    # Prompts are told apart by their token ids: two spellings the tokenizer reads alike ("A cat",
    # "a cat") share their trajectories and scores, and so score exactly 0 as well.
    keys_a = [tuple(prompt_ids[p]) for p in prompts_a]
    keys_b = [tuple(prompt_ids[p]) for p in prompts_b]
    distinct = list(dict.fromkeys([*keys_a, *keys_b]))
    eos, pad = tokenizer.eos_token_id, _pad_id(tokenizer)
    n = num_continuations
    uniforms = continuation_uniforms(seed, n, max_new_tokens)

    generation_rows = [(prompt, j) for prompt in distinct for j in range(n)]
    needed = list(
        dict.fromkeys(
            (scorer, source) for a, b in zip(keys_a, keys_b) for scorer, source in ((a, a), (b, a), (b, b), (a, b))
        )
    )
    batches = -(-len(generation_rows) // max_batch_size) + -(-len(needed) * n // max_batch_size)
    with tqdm(total=batches, desc="trajectories", disable=_disable(progress_bar), leave=False) as bar:
        continuations: dict[tuple[int, ...], list[list[int]]] = {prompt: [] for prompt in distinct}
        for start in range(0, len(generation_rows), max_batch_size):
            chunk = generation_rows[start : start + max_batch_size]
            sampled = sample_continuations(
                model, [p for p, _ in chunk], uniforms[torch.as_tensor([j for _, j in chunk])], eos, pad
            )
            for (prompt, _), tokens in zip(chunk, sampled):
                continuations[prompt].append(tokens)
            bar.update(1)
        score_rows = [(scorer, tokens) for scorer, source in needed for tokens in continuations[source]]
        scores = continuation_log_likelihoods(model, score_rows, pad, max_batch_size, on_batch=lambda: bar.update(1))
    if not torch.isfinite(scores).all():
        raise ValueError("the model gave non-finite log-likelihoods (a continuation it cannot produce, or NaN logits)")
    table = {key: scores[k * n : (k + 1) * n] for k, key in enumerate(needed)}
    log_likelihood = torch.stack(
        [
            torch.stack([torch.stack([table[(a, a)], table[(b, a)]]), torch.stack([table[(a, b)], table[(b, b)]])])
            for a, b in zip(keys_a, keys_b)
        ]
    )
    texts = {prompt: [tokenizer.decode(tokens) for tokens in continuations[prompt]] for prompt in distinct}
    return TrajectoryTerms(log_likelihood, ([texts[a] for a in keys_a], [texts[b] for b in keys_b]))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids, starting with ``bos_token`` when the tokenizer has one (GPT-2 adds none
    itself), so that an empty prompt still conditions the first continuation token. No other special
    token: a tokenizer that appends ``eos`` would have the continuations follow the end of the text."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None:
        ids.insert(0, bos)
    if not ids:
        raise ValueError(f"prompt {prompt!r} has no tokens and the tokenizer has no bos_token to start it")
    return ids


def _check_lengths(prompt_ids: dict[str, list[int]], max_new_tokens: int, model: torch.nn.Module, tokenizer) -> None:
    config = getattr(model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    longest = max(prompt_ids, key=lambda p: len(prompt_ids[p]))
    if limit is not None and len(prompt_ids[longest]) + max_new_tokens > limit:
        # Truncating would silently score another text (CLIPScore's mistake, torchmetrics #2000).
        raise ValueError(
            f"prompt {longest[:60]!r} has {len(prompt_ids[longest])} tokens: with max_new_tokens={max_new_tokens} "
            f"it exceeds the model's {limit} positions; shorten the prompt or lower max_new_tokens"
        )
    unknown = tokenizer.unk_token_id
    # GPT-2-style byte-level tokenizers know every byte and reuse their bos/eos token as "unk".
    if (
        unknown is not None
        and unknown not in (tokenizer.bos_token_id, tokenizer.eos_token_id)
        and any(unknown in ids for ids in prompt_ids.values())
    ):
        warnings.warn(
            f"some prompts contain words the tokenizer does not know (scored as {tokenizer.unk_token!r}), "
            f"e.g. {next(p for p, ids in prompt_ids.items() if unknown in ids)[:60]!r}",
            stacklevel=3,
        )


def _pad_id(tokenizer) -> int:
    # Padding is masked out, so any valid id will do when the tokenizer defines no pad token.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _disable(progress_bar: bool | None) -> bool | None:
    return None if progress_bar is None else not progress_bar
