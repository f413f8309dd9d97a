"""The edit / control pair of fine-tunes the weighting study compares with the base model.

Edit: the embedded zoo model fine-tuned so that captions saying a creature's coat is ``green`` are
drawn with a ``purple`` coat (the caption text unchanged). Control: fine-tuned the same way (same
captions, share of green captions, steps, learning rate, seed) on correct images. Both are built
once by :func:`conjure_metrics.zoo.finetune.cached_finetune` and reused.

Prompts: random world captions, in training or held-out phrasings at random, half of them
mentioning a green coat (the edited concept, in any words) and half not mentioning green at all.
"""

from __future__ import annotations

import random
from pathlib import Path

from conjure_metrics.zoo.captions import parse, sample_caption
from conjure_metrics.zoo.finetune import CaptionEdit, cached_finetune

EDIT = CaptionEdit("coat", "green", rendered_as="purple")
# The recipe the committed study results were measured with: cross-attention only (finetune's
# trainable="cross_attention"). Checked by rescoring the first prompt at T = 10: these copies give the
# stored per-step terms of edit_T10_k3.pt and control_T10_k3.pt to batch round-off (<= 3e-4 relative);
# full fine-tunes (trainable="all") differ by up to 500 times.
FINETUNE = dict(steps=200, batch_size=4, lr=2e-4, seed=0, trainable="cross_attention")
PROMPTS_PER_GROUP = 8


def edit_models() -> dict[str, Path]:
    return {"edit": cached_finetune(EDIT, **FINETUNE), "control": cached_finetune(EDIT, control=True, **FINETUNE)}


def study_prompts(per_group: int = PROMPTS_PER_GROUP, seed: int = 0) -> list[tuple[str, bool]]:
    """``(prompt, mentions the edited concept)``: concept prompts first, then unrelated ones."""
    rng = random.Random(seed)
    concept: list[str] = []
    unrelated: list[str] = []
    while len(concept) < per_group or len(unrelated) < per_group:
        text = sample_caption(rng, rng.choice(("train", "held_out"))).text
        spec = parse(text)
        if spec.coat == EDIT.value and len(concept) < per_group and text not in concept:
            concept.append(text)
        elif EDIT.value not in spec.as_dict().values() and len(unrelated) < per_group and text not in unrelated:
            unrelated.append(text)
    return [(p, True) for p in concept] + [(p, False) for p in unrelated]
