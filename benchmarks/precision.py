"""Divergences with the model in reduced precision against float32: same pairs, same seed.

Rounding errors of the two predictions ε(x, a) and ε(x, b) do not cancel in their difference, so
each squared difference gains their variance: a positive bias, largest relative to small
divergences (similar prompts). This measures it on the embedded conjure-zoo model for zoo caption
pairs (paraphrases and random pairs), next to the Monte-Carlo standard error for scale.

    python benchmarks/precision.py [--pairs 16 --steps 10 --samples 3 --guidance 7.5 --dtypes bfloat16 float16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from conjure_metrics import DiffusersDenoiser, jeffreys_terms
from conjure_metrics.denoisers.loading import embedded_model_path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    from variance_reduction import zoo_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    parser.add_argument("--out", default=str(RESULTS / "precision.json"))
    args = parser.parse_args()

    pairs = zoo_pairs(args.pairs, seed=2)
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    settings = dict(
        num_steps=args.steps, num_samples=args.samples, guidance_scale=args.guidance, seed=0, max_batch_size=32
    )
    runs = {}
    for dtype in ["float32", *args.dtypes]:
        model = DiffusersDenoiser.from_pretrained(embedded_model_path(), torch_dtype=getattr(torch, dtype))
        start = time.perf_counter()
        terms = jeffreys_terms(a, b, model, **settings)
        runs[dtype] = dict(
            seconds=time.perf_counter() - start,
            divergence=terms.divergence("simple").tolist(),
            stderr=terms.stderr("simple").tolist(),
        )
        print(f"{dtype}: {runs[dtype]['seconds']:.0f} s", flush=True)

    full = torch.tensor(runs["float32"]["divergence"])
    relative_se = float((torch.tensor(runs["float32"]["stderr"]) / full).median())
    print(
        f"\n{len(pairs)} zoo pairs, T={args.steps}, k={args.samples}, guidance {args.guidance}, simple weighting; "
        f"median Monte-Carlo relative SE (float32) {relative_se:.1%}"
    )
    print(
        f"{'dtype':>9} {'seconds':>8} {'median rel. diff':>16} {'largest |rel. diff|':>19} {'Spearman vs float32':>19}"
    )
    for dtype, run in runs.items():
        relative = (torch.tensor(run["divergence"]) - full) / full
        run.update(
            median_rel_diff=float(relative.median()),
            max_abs_rel_diff=float(relative.abs().max()),
            spearman_vs_float32=float(spearmanr(run["divergence"], full.numpy()).statistic),
        )
        print(
            f"{dtype:>9} {run['seconds']:>8.0f} {run['median_rel_diff']:>+16.1%} {run['max_abs_rel_diff']:>19.1%} "
            f"{run['spearman_vs_float32']:>19.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": platform.machine(),
                "torch": torch.__version__,
                "settings": vars(args),
                "pairs": pairs,
                "median_relative_stderr_float32": relative_se,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
