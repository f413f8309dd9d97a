"""Training batches rendered on the fly: (caption token ids, image) pairs from the world.

Batch ``step`` of a run with seed ``seed`` depends on nothing else, so training resumes
exactly and needs no dataset files.
"""

from __future__ import annotations

import random

import torch

from .captions import Spec, parse, sample_caption
from .world import ATTRIBUTES, COLOURS, render


def step_seed(seed: int, step: int) -> int:
    """The seed of every random choice made for training step ``step``."""
    return (seed * 1_000_003 + step) % (2**63)


def specified_attributes(specs: list[Spec]) -> torch.Tensor:
    """``(N, 6)`` attribute indices of each spec, -1 where it leaves the attribute to chance."""
    rows = [
        [values.index(getattr(spec, name)) if getattr(spec, name) else -1 for name, values in ATTRIBUTES.items()]
        for spec in specs
    ]
    return torch.tensor(rows, dtype=torch.long).view(len(specs), len(ATTRIBUTES))


def render_captions(captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """Images the world draws for captions of its grammar (unspecified attributes at random).

    Example:
        >>> import torch
        >>> render_captions(["a zebra", "a red cat"], torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 32])
    """
    generator = generator or torch.Generator().manual_seed(0)
    specified = specified_attributes([parse(c) for c in captions]).to(generator.device)
    return render(fill_attributes(specified, generator), generator)


def caption_batch(batch_size: int, seed: int, step: int, drop_rate: float = 0.1) -> tuple[list[str], torch.Tensor]:
    """Training-split captions and their specified attributes (-1 where the caption is silent).

    A ``drop_rate`` share of captions is replaced by "" (kept attributes still render), which
    trains the unconditional branch that classifier-free guidance needs.
    """
    rng = random.Random(step_seed(seed, step))
    captions, texts = [], []
    for _ in range(batch_size):  # one caption, then its dropout draw: the stream the shipped model saw
        captions.append(sample_caption(rng, "train"))
        texts.append("" if rng.random() < drop_rate else captions[-1].text)
    specified = specified_attributes([c.spec for c in captions])
    return texts, specified


def fill_attributes(specified: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw the unspecified attributes uniformly; the pattern colour never equals the coat."""
    n, device, k = specified.shape[0], specified.device, len(COLOURS)
    names = list(ATTRIBUTES)
    attrs = {}
    for j, (name, values) in enumerate(ATTRIBUTES.items()):
        drawn = torch.randint(len(values), (n,), generator=generator, device=device)
        attrs[name] = torch.where(specified[:, j] >= 0, specified[:, j], drawn)
    offset = 1 + torch.randint(k - 1, (n,), generator=generator, device=device)
    coat_given = specified[:, names.index("coat")] >= 0
    mark_given = specified[:, names.index("pattern_colour")] >= 0
    attrs["coat"] = torch.where(~coat_given & mark_given, (attrs["pattern_colour"] + offset) % k, attrs["coat"])
    attrs["pattern_colour"] = torch.where(mark_given, attrs["pattern_colour"], (attrs["coat"] + offset) % k)
    return attrs


def training_batch(
    tokenizer, batch_size: int, seed: int, step: int, device: torch.device | str = "cpu", drop_rate: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids (B, L), images (B, 3, 32, 32))`` for one training step, on ``device``."""
    texts, specified = caption_batch(batch_size, seed, step, drop_rate)
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    generator = torch.Generator(device=device).manual_seed(step_seed(seed, step))
    attrs = fill_attributes(specified.to(device), generator)
    return ids.to(device), render(attrs, generator)
