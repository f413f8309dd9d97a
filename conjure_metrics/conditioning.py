"""Conditioning as a structure of tensors that all index prompts along dimension 0.

A model's conditioning is a tensor (SD-1/2: the text encoder's hidden states) or a dict, tuple or
list of them, nested as deep as the model likes (SDXL: hidden states + pooled embedding + time ids;
Flux: hidden states + pooled embedding + token ids; PixArt: hidden states + attention mask). The
estimator and the denoiser wrappers only ever select, concatenate, repeat and pad *rows*, and these
helpers do that to every tensor of the structure alike, so a plain tensor and a structure travel the
same way. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union, cast

import torch
from torch import Tensor

# Union, not |: a recursive alias names itself as a string, which | cannot take at run time.
Conditioning = Union[Tensor, Mapping[str, "Conditioning"], Sequence["Conditioning"]]  # noqa: UP007
RowIndex = int | slice | Tensor


def _map(function: Callable[..., Tensor], *structures: Conditioning) -> Conditioning:
    """``function`` applied leaf by leaf to structures of the same shape (a tensor is a leaf)."""
    first = structures[0]
    if isinstance(first, Tensor):
        return function(*structures)
    if isinstance(first, Mapping):
        mappings = [cast(Mapping[str, Conditioning], s) for s in structures]
        return {key: _map(function, *(m[key] for m in mappings)) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_map(function, *items) for items in zip(*structures))
    raise TypeError(f"conditioning must be a tensor or a dict, tuple or list of tensors, got {type(first).__name__}")


def select_rows(conditioning: Conditioning, index: RowIndex) -> Conditioning:
    """Rows ``index`` (a slice or index tensor) of every tensor; an index tensor follows each tensor's device.

    Examples:
        >>> cond = {"states": torch.arange(6.0).view(3, 2), "pooled": torch.tensor([7.0, 8.0, 9.0])}
        >>> select_rows(cond, torch.tensor([2, 0]))["pooled"].tolist()
        [9.0, 7.0]
    """
    if isinstance(index, Tensor):
        return _map(lambda t: t[index.to(t.device)], conditioning)
    return _map(lambda t: t[index], conditioning)


def concat_rows(parts: Sequence[Conditioning]) -> Conditioning:
    """The rows of all ``parts`` (structures of the same shape), in order.

    Examples:
        >>> concat_rows([(torch.zeros(1, 2), torch.zeros(1)), (torch.ones(2, 2), torch.ones(2))])[1].tolist()
        [0.0, 1.0, 1.0]
    """
    return _map(lambda *tensors: torch.cat(tensors), *parts)


def stack_rows(items: Sequence[Conditioning]) -> Conditioning:
    """One row per item: single-prompt structures stacked along a new dimension 0."""
    return _map(lambda *tensors: torch.stack(tensors), *items)


def repeat_rows(conditioning: Conditioning, repeats: int) -> Conditioning:
    """Each row repeated ``repeats`` times in place (``repeat_interleave`` along dimension 0)."""
    return _map(lambda t: t.repeat_interleave(repeats, dim=0), conditioning)


def pad_rows(conditioning: Conditioning, missing: int) -> Conditioning:
    """``missing`` copies of the last row appended to every tensor.

    The result is always a fresh tensor, even with nothing to pad (see :class:`CompiledDenoiser`).

    Examples:
        >>> pad_rows(torch.tensor([[1.0], [2.0]]), 2).flatten().tolist()
        [1.0, 2.0, 2.0, 2.0]
    """
    return _map(lambda t: torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]), conditioning)


def conditioning_to(conditioning: Conditioning, device: torch.device | str) -> Conditioning:
    """Every tensor moved to ``device``."""
    return _map(lambda t: t.to(device), conditioning)
