"""Same precision, fewer denoiser calls: Monte-Carlo variance of estimator variants at equal cost.

On zoo caption pairs (paraphrases and random held-out pairs) with the embedded conjure-zoo model,
each variant is run ``--repeats`` times with different seeds. Reported per variant:

* calls per pair (denoiser rows, counted),
* the true standard error of each pair's estimate (standard deviation across repeats), as a
  mean relative standard error over pairs,
* ranking stability: the mean Spearman correlation between the pair rankings of two repeats,
* the calls needed to match the paper-default estimator's standard error, extrapolated by 1/sqrt(calls).

Variants: ``independent`` (no noise shared between the two prompts of a pair, nor between pairs),
``paper`` (x_T and step noise shared between the two prompts of a pair: the paper's estimator, T=10,
k=5), ``shared`` (also shared across pairs: this package's default), ``antithetic`` (plus
antithetic pairs of samples), and the same at fewer samples.

    python benchmarks/variance_reduction.py [--pairs 16 --repeats 6 --steps 10 --independent]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
from pathlib import Path

import torch
from scipy.stats import spearmanr

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.noise import sample_seed


def zoo_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from conjure_metrics.zoo.captions import paraphrase_pair, sample_caption

    rng = random.Random(seed)
    pairs = [tuple(c.text for c in paraphrase_pair(rng, "held_out")) for _ in range(n // 2)]
    pairs += [(sample_caption(rng, "held_out").text, sample_caption(rng, "held_out").text) for _ in range(n - n // 2)]
    return pairs


def estimate(variant: dict, pairs, model, seed: int, settings: dict) -> tuple[torch.Tensor, int]:
    """Per-pair divergences (simple weighting) for one repeat, and the denoiser rows spent."""
    a, b = [p for p, _ in pairs], [q for _, q in pairs]
    common = dict(
        settings,
        num_steps=variant["steps"],
        num_samples=variant["samples"],
        antithetic=variant.get("antithetic", False),
    )
    counter = InstrumentedDenoiser(model)
    if variant["noise"] in ("shared", "paper"):
        if variant["noise"] == "shared":
            terms = jeffreys_terms(a, b, counter, seed=seed, **common)
            return terms.divergence("simple"), counter.rows
        # Noise shared within a pair only: every pair draws its own seed.
        values = [
            jeffreys_terms([x], [y], counter, seed=sample_seed(seed, 1000 + i), **common).divergence("simple")
            for i, (x, y) in enumerate(pairs)
        ]
        return torch.cat(values), counter.rows
    # Independent: the two directions of a pair come from runs with different seeds, each
    # pair its own; only the half of each run that is used is counted.
    values = []
    for i, (x, y) in enumerate(pairs):
        first = jeffreys_terms([x], [y], counter, seed=sample_seed(seed, 2000 + 2 * i), **common)
        second = jeffreys_terms([x], [y], counter, seed=sample_seed(seed, 2001 + 2 * i), **common)
        values.append(first.simple[:, :, 0].sum(-1).mean(1) + second.simple[:, :, 1].sum(-1).mean(1))
    return torch.cat(values), counter.rows // 2


def variants(steps: int, include_independent: bool) -> list[dict]:
    rows = [
        dict(name=f"paper: shared within pair (T={steps}, k=5)", noise="paper", steps=steps, samples=5),
        dict(name=f"shared across pairs (T={steps}, k=5)", noise="shared", steps=steps, samples=5),
        dict(name=f"shared + antithetic (T={steps}, k=4)", noise="shared", steps=steps, samples=4, antithetic=True),
        dict(name=f"shared (T={steps}, k=2)", noise="shared", steps=steps, samples=2),
        dict(name=f"shared + antithetic (T={steps}, k=2)", noise="shared", steps=steps, samples=2, antithetic=True),
    ]
    if include_independent:
        rows.insert(0, dict(name=f"independent (T={steps}, k=5)", noise="independent", steps=steps, samples=5))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--independent", action="store_true", help="also the variant with no shared noise (costly)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "variance_reduction.json"))
    args = parser.parse_args()

    model = load_denoiser(None)
    pairs = zoo_pairs(args.pairs)
    settings = dict(guidance_scale=args.guidance, max_batch_size=256)
    rows = []
    for variant in variants(args.steps, args.independent):
        estimates, calls = [], 0
        for repeat in range(args.repeats):
            values, spent = estimate(variant, pairs, model, seed=repeat, settings=settings)
            estimates.append(values)
            calls += spent
        table = torch.stack(estimates)  # (repeats, pairs)
        stderr = table.std(dim=0)
        relative = (stderr / table.mean(dim=0).abs().clamp_min(1e-12)).mean().item()
        stability = [
            spearmanr(table[i].numpy(), table[j].numpy()).statistic
            for i, j in itertools.combinations(range(args.repeats), 2)
        ]
        rows.append(
            dict(
                variant,
                calls_per_pair=calls / args.repeats / len(pairs),
                mean_relative_stderr=relative,
                spearman_between_repeats=float(sum(stability) / len(stability)),
            )
        )
        print(f"{variant['name']}: {rows[-1]['calls_per_pair']:.0f} calls/pair, rel. SE {relative:.3f}", flush=True)

    paper = next(r for r in rows if r["noise"] == "paper")
    for r in rows:
        # Calls this variant needs to reach the paper estimator's relative SE (SE ∝ 1/sqrt(calls)).
        r["calls_to_match_paper"] = (
            r["calls_per_pair"] * (r["mean_relative_stderr"] / paper["mean_relative_stderr"]) ** 2
        )
        r["share_of_paper_calls"] = r["calls_to_match_paper"] / paper["calls_per_pair"]
    print(f"\n{len(pairs)} zoo pairs, {args.repeats} repeats, guidance {args.guidance}, simple weighting, conjure-zoo")
    print(f"{'variant':>40} {'calls/pair':>10} {'rel. SE':>8} {'Spearman':>8} {'calls for paper SE':>18} {'share':>6}")
    for r in rows:
        print(
            f"{r['name']:>40} {r['calls_per_pair']:>10.0f} {r['mean_relative_stderr']:>8.3f} "
            f"{r['spearman_between_repeats']:>8.3f} {r['calls_to_match_paper']:>18.0f} {r['share_of_paper_calls']:>6.0%}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": platform.machine(),
                "torch": torch.__version__,
                "settings": vars(args),
                "pairs": pairs,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
