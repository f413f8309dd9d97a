"""Standard error of the ConjureSimilarity estimate against the number of Monte-Carlo samples k.

On an analytic Gaussian pair (exact answer known) it reports, for each k: the exact divergence,
the mean estimate over many seeds, the empirical standard deviation of the estimate across seeds
(the true standard error), and the mean standard error the estimator reports for itself.

    python benchmarks/stderr_vs_samples.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from conjure_metrics import conjure_similarity
from conjure_metrics.analytic import GaussianConditionals
from conjure_metrics.chains import linear_betas


def gaussian_pair(dim: int = 16) -> GaussianConditionals:
    generator = torch.Generator().manual_seed(0)
    means = {p: 0.5 * torch.randn(dim, generator=generator, dtype=torch.float64) for p in ("a", "b")}
    means[""] = torch.zeros(dim, dtype=torch.float64)
    return GaussianConditionals(means, {"": 1.0, "a": 0.2, "b": 0.5}, torch.cumprod(1 - linear_betas(), 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "stderr_vs_samples.json"))
    args = parser.parse_args()

    model = gaussian_pair()
    rows = []
    for weighting in ("simple", "girsanov"):
        exact = model.exact_divergence("a", "b", args.steps, args.guidance, weighting)
        for k in (1, 4, 16):
            results = [
                conjure_similarity(
                    ["a"],
                    ["b"],
                    model,
                    num_steps=args.steps,
                    num_samples=k,
                    guidance_scale=args.guidance,
                    weighting=weighting,
                    seed=s,
                    progress_bar=False,
                )
                for s in range(args.seeds)
            ]
            estimates = torch.cat([r.divergence for r in results])
            reported = torch.cat([r.stderr for r in results])
            rows.append(
                {
                    "weighting": weighting,
                    "num_samples": k,
                    "exact": exact,
                    "mean_estimate": estimates.mean().item(),
                    "empirical_stderr": estimates.std().item(),
                    "mean_reported_stderr": None if k == 1 else reported.mean().item(),
                    "relative_stderr": estimates.std().item() / exact,
                }
            )

    print(f"Gaussian pair, d=16, {args.steps} DDPM steps, guidance {args.guidance}, {args.seeds} seeds per row")
    print(
        f"{'weighting':>9} {'k':>3} {'exact':>10} {'mean est.':>10} {'SE (seeds)':>11} {'SE (reported)':>13} {'SE/exact':>8}"
    )
    for r in rows:
        reported = "n/a (k=1)" if r["mean_reported_stderr"] is None else f"{r['mean_reported_stderr']:.4g}"
        print(
            f"{r['weighting']:>9} {r['num_samples']:>3} {r['exact']:>10.4g} {r['mean_estimate']:>10.4g} "
            f"{r['empirical_stderr']:>11.4g} {reported:>13} {r['relative_stderr']:>8.2%}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "settings": vars(args),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
