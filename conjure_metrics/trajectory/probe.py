"""How well trajectory similarity follows the zoo world's meaning: ``python -m conjure_metrics.trajectory.probe``.

Draws ``num_pairs`` paraphrase pairs (two phrasings of one spec) and as many random pairs (the
paraphrase's first caption against a random caption), scores them all, and reports the mean
similarity of each kind, how often the paraphrase beats its random counterpart, and the Spearman
correlation of the similarity with :func:`conjure_metrics.zoo.truth.ground_truth_similarity`.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import torch
from torchmetrics.functional import spearman_corrcoef

from conjure_metrics.zoo.captions import paraphrase_pair, sample_caption
from conjure_metrics.zoo.truth import ground_truth_similarity

from .functional import trajectory_similarity


def probe_pairs(num_pairs: int, split: str, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(paraphrases, random_pairs)`` of captions on the ``split`` side, reproducible from ``seed``."""
    rng = random.Random(seed)
    pairs = [paraphrase_pair(rng, split) for _ in range(num_pairs)]
    paraphrases = [(a.text, b.text) for a, b in pairs]
    random_pairs = [(a, sample_caption(rng, split).text) for a, _ in paraphrases]
    return paraphrases, random_pairs


def probe(model: Any = None, num_pairs: int = 30, split: str = "train", seed: int = 0, **settings: Any) -> dict:
    """The probe's numbers for ``model`` (default: the embedded zoo LM); ``settings`` go to
    :func:`~conjure_metrics.trajectory.trajectory_similarity`."""
    paraphrases, random_pairs = probe_pairs(num_pairs, split, seed)
    a, b = zip(*(paraphrases + random_pairs))
    similarity = trajectory_similarity(list(a), list(b), model, progress_bar=False, **settings).similarity
    truth = torch.tensor([ground_truth_similarity(x, y) for x, y in zip(a, b)], dtype=torch.float64)
    para, rand = similarity[:num_pairs], similarity[num_pairs:]
    return {
        "split": split,
        "pairs": 2 * num_pairs,
        "paraphrase_mean_similarity": round(float(para.mean()), 4),
        "random_mean_similarity": round(float(rand.mean()), 4),
        "paraphrase_beats_random": round(float((para > rand).double().mean()), 4),
        "spearman_with_ground_truth": round(float(spearman_corrcoef(similarity, truth)), 4),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="causal-LM folder (default: the embedded zoo LM)")
    p.add_argument("--num-pairs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-continuations", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=20)
    args = p.parse_args(argv)
    for split in ("train", "held_out"):
        print(
            json.dumps(
                probe(
                    args.model,
                    args.num_pairs,
                    split,
                    args.seed,
                    num_continuations=args.num_continuations,
                    max_new_tokens=args.max_new_tokens,
                )
            )
        )


if __name__ == "__main__":
    main()
