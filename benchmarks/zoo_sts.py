"""zoo-sts: Spearman correlation with known-truth similarities of held-out conjure-zoo captions.

Pairs are drawn (deterministically from ``--seed``) from **held-out phrasings** only: a caption
and, with fixed probabilities, a paraphrase of it (same meaning, other words), a copy with one or
two attributes changed, or an unrelated caption; each side is phrased independently, with random
synonyms. The true similarity is :func:`conjure_metrics.zoo.truth.ground_truth_similarity` of the
two captions. The *synonym/paraphrase subset* holds the pairs where the captions say something
they share with different words (a paraphrase, or a synonym such as "crimson"/"red" for a shared
attribute).

Scored: ConjureSimilarity with the embedded model (``simple`` and ``girsanov`` weightings from
the same Monte-Carlo run, and ``girsanov`` with the steps below t = 100 left out), the cosine of
the model's own text-encoder states (mean over all positions of the padded context the UNet attends
to, mean over the prompt's tokens, and the EOS state), a bag-of-words (Jaccard) overlap, and, when available,
TrajectorySimilarity with the embedded zoo LM. Spearman ρ with bootstrap 95 % intervals, overall
and on the subset. Prints a table and writes ``benchmarks/results/zoo_sts.json``.

    python benchmarks/zoo_sts.py [--pairs 600 --samples 3 --guidance 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.functional import divergence_to_similarity

KINDS = (("paraphrase", 0.3), ("one attribute changed", 0.25), ("two attributes changed", 0.2), ("unrelated", 0.25))


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    kind: str
    truth: float
    synonym_or_paraphrase: bool


def _changed(spec, count: int, rng: random.Random):
    """``spec`` with ``count`` of its specified attributes set to other valid values (None if impossible)."""
    from conjure_metrics.zoo.captions import Spec
    from conjure_metrics.zoo.world import ATTRIBUTES

    fields = list(spec.as_dict())
    if len(fields) < count:
        return None
    for _ in range(50):
        values = spec.as_dict()
        for field in rng.sample(fields, count):
            values[field] = rng.choice([v for v in ATTRIBUTES[field] if v != values[field]])
        try:
            return Spec(**values)
        except ValueError:
            continue
    return None


def _words_for_shared_values(a: str, b: str) -> bool:
    """Whether the captions name a shared attribute value with different words (a synonym)."""
    from conjure_metrics.zoo.captions import _tokens

    words_a = {(kind, value): word for kind, value, word in _tokens(a)}
    words_b = {(kind, value): word for kind, value, word in _tokens(b)}
    return any(words_a[key] != words_b[key] for key in words_a.keys() & words_b.keys())


def zoo_sts_pairs(count: int, seed: int = 0) -> list[Pair]:
    from conjure_metrics.zoo.captions import paraphrase_pair, random_spec, realise, sample_caption
    from conjure_metrics.zoo.truth import ground_truth_similarity

    rng = random.Random(seed)
    kinds, weights = zip(*KINDS)
    pairs: list[Pair] = []
    while len(pairs) < count:
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind == "paraphrase":
                first, second = paraphrase_pair(rng, "held_out")
                a, b = first.text, second.text
            elif kind == "unrelated":
                a, b = sample_caption(rng, "held_out").text, sample_caption(rng, "held_out").text
            else:
                spec, _ = random_spec(rng, p_creature=0.0)
                other = _changed(spec, 1 if kind.startswith("one") else 2, rng)
                if other is None:
                    continue
                a, b = realise(spec, rng, "held_out").text, realise(other, rng, "held_out").text
        except ValueError:
            continue  # a spec with no held-out phrasing
        if a == b:
            continue
        pairs.append(
            Pair(a, b, kind, ground_truth_similarity(a, b), kind == "paraphrase" or _words_for_shared_values(a, b))
        )
    return pairs


def text_encoder_cosines(model, pairs: list[Pair]) -> dict[str, np.ndarray]:
    """Cosines of the text-encoder states of the model that draws the images, pooled three ways.

    ``all positions`` averages the hidden states over the whole padded context, which is what the
    UNet attends to; ``tokens`` averages over the prompt's own tokens (attention mask); ``EOS`` is
    CLIP's pooled end-of-text state.
    """
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    with torch.inference_mode():
        tokens = model.tokenizer(
            texts,
            padding="max_length",
            max_length=model.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        output = model.text_encoder(tokens.input_ids)
        mask = tokens.attention_mask[..., None].to(output.last_hidden_state.dtype)
        pooled = {
            "text-encoder cosine, all positions (zoo CLIP)": output.last_hidden_state.mean(dim=1),
            "text-encoder cosine, prompt tokens (zoo CLIP)": (output.last_hidden_state * mask).sum(1) / mask.sum(1),
            "text-encoder cosine, EOS (zoo CLIP)": output.pooler_output,
        }
    index = {t: i for i, t in enumerate(texts)}
    a, b = [index[p.a] for p in pairs], [index[p.b] for p in pairs]
    return {
        name: torch.nn.functional.cosine_similarity(states[a].flatten(1), states[b].flatten(1)).numpy()
        for name, states in pooled.items()
    }


def bag_of_words(pairs: list[Pair]) -> np.ndarray:
    def words(text: str) -> set[str]:
        return set(text.replace(",", " ").lower().split())

    return np.array([len(words(p.a) & words(p.b)) / len(words(p.a) | words(p.b)) for p in pairs])


def spearman_with_interval(scores: np.ndarray, truth: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    rho = spearmanr(scores, truth).statistic
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        index = rng.integers(0, len(truth), len(truth))
        value = spearmanr(scores[index], truth[index]).statistic
        if np.isfinite(value):
            boot.append(value)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"rho": float(rho), "low": float(low), "high": float(high), "n": int(len(truth))}


def conjure_scores(model, pairs: list[Pair], args) -> dict[str, np.ndarray]:
    scores = {
        "ConjureSimilarity simple": [],
        "ConjureSimilarity girsanov": [],
        "ConjureSimilarity girsanov (t >= 100)": [],
    }
    for start in range(0, len(pairs), args.chunk):
        chunk = pairs[start : start + args.chunk]
        terms = jeffreys_terms(
            [p.a for p in chunk],
            [p.b for p in chunk],
            model,
            num_steps=args.steps,
            num_samples=args.samples,
            guidance_scale=args.guidance,
            seed=args.seed,
            max_batch_size=args.max_batch_size,
            progress_bar=None,
        )
        bounded = terms.girsanov[..., terms.timesteps >= 100].sum(dim=(-1, -2)).mean(dim=1)
        for name, divergence in (
            ("ConjureSimilarity simple", terms.divergence("simple")),
            ("ConjureSimilarity girsanov", terms.divergence("girsanov")),
            ("ConjureSimilarity girsanov (t >= 100)", bounded),
        ):
            scores[name].append(divergence_to_similarity(divergence).numpy())
        print(f"  scored {start + len(chunk)}/{len(pairs)} pairs", flush=True)
    return {name: np.concatenate(values) for name, values in scores.items()}


def trajectory_scores(pairs: list[Pair], args) -> dict[str, np.ndarray]:
    try:
        from conjure_metrics.trajectory import trajectory_similarity
    except ImportError:
        return {}
    result = trajectory_similarity([p.a for p in pairs], [p.b for p in pairs], seed=args.seed, progress_bar=None)
    return {"TrajectorySimilarity (zoo LM)": result.similarity.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--no-trajectory", action="store_true", help="skip the TrajectorySimilarity row")
    parser.add_argument(
        "--rescore-baselines",
        action="store_true",
        help="keep the ConjureSimilarity and TrajectorySimilarity scores of --out and recompute the "
        "text baselines (same pairs, no diffusion)",
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "zoo_sts.json"))
    args = parser.parse_args()

    started = time.time()
    pairs = zoo_sts_pairs(args.pairs, args.seed)
    model = load_denoiser(None)
    truth = np.array([p.truth for p in pairs])
    subset = np.array([p.synonym_or_paraphrase for p in pairs])
    if args.rescore_baselines:
        stored = json.loads(Path(args.out).read_text())
        if stored["settings"]["pairs"] != args.pairs or stored["settings"]["seed"] != args.seed:
            raise SystemExit(f"{args.out} holds other pairs; give its --pairs and --seed")
        args = argparse.Namespace(
            **{**stored["settings"], "out": args.out, "no_trajectory": True, "rescore_baselines": True}
        )
        started -= stored["seconds"]  # the diffusion scores' time is the run's
        kept = [name for name in stored["results"] if "Similarity" in name]
        scores = {name: np.array([p[name] for p in stored["pairs"]]) for name in kept}
    else:
        scores = conjure_scores(model, pairs, args)
    scores.update(text_encoder_cosines(model, pairs))
    scores["bag-of-words Jaccard"] = bag_of_words(pairs)
    if not args.no_trajectory:
        scores.update(trajectory_scores(pairs, args))

    rows = {
        name: {
            "overall": spearman_with_interval(values, truth),
            "synonym_or_paraphrase": spearman_with_interval(values[subset], truth[subset]),
        }
        for name, values in scores.items()
    }
    print(
        f"\nzoo-sts: {len(pairs)} held-out pairs ({int(subset.sum())} in the synonym/paraphrase subset); "
        f"T={args.steps}, k={args.samples}, guidance {args.guidance}, seed {args.seed}; Spearman ρ [95% bootstrap CI]"
    )
    print(f"{'scorer':>46} {'overall':>22} {'synonym/paraphrase':>22}")
    for name, row in rows.items():
        cells = [
            f"{r['rho']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in (row["overall"], row["synonym_or_paraphrase"])
        ]
        print(f"{name:>46} {cells[0]:>22} {cells[1]:>22}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                "seconds": time.time() - started,
                "settings": vars(args),
                "results": rows,
                "pairs": [
                    dict(p.__dict__, **{name: float(v[i]) for name, v in scores.items()}) for i, p in enumerate(pairs)
                ],
            },
            indent=2,
        )
    )
    print(f"wrote {args.out} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
