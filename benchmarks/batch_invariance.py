"""How much a pair's divergence moves with the batch it is scored in (float32 round-off), on the embedded model.

Sample ``j`` of every pair uses the same noise whatever the batch, so a pair's score is the same
number up to round-off: the model's kernels sum in another order for another batch shape. Scores
``--pairs`` held-out zoo caption pairs all at once, one at a time, with ``max_batch_size=4``, and in
reversed order, in float32 and in float64, and reports the largest relative difference per
weighting. Writes ``results/batch_invariance.json``.

    python benchmarks/batch_invariance.py [--pairs 8 --steps 10 --samples 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.weighting import WEIGHTINGS


def divergences(model, a, b, args, **changes) -> dict[str, torch.Tensor]:
    settings = dict(
        num_steps=args.steps,
        num_samples=args.samples,
        guidance_scale=args.guidance,
        seed=0,
        max_batch_size=64,
        min_noise=0.0,
    )
    terms = jeffreys_terms(a, b, model, **{**settings, **changes})
    return {w: terms.divergence(w) for w in WEIGHTINGS}


def largest_relative_difference(first: dict, second: dict) -> dict[str, float]:
    return {w: float(((first[w] - second[w]).abs() / first[w].abs().clamp_min(1e-30)).max()) for w in first}


def main() -> None:
    from zoo_sts import zoo_sts_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "batch_invariance.json"))
    args = parser.parse_args()
    started = time.time()
    pairs = zoo_sts_pairs(args.pairs, seed=2)
    a, b = [p.a for p in pairs], [p.b for p in pairs]
    rows = {}
    for precision in ("float32", "float64"):
        model = load_denoiser(None, torch_dtype=getattr(torch, precision))
        whole = divergences(model, a, b, args)
        single = {w: torch.cat([divergences(model, [x], [y], args)[w] for x, y in zip(a, b)]) for w in WEIGHTINGS}
        reversed_order = {w: d.flip(0) for w, d in divergences(model, a[::-1], b[::-1], args).items()}
        rows[precision] = {
            "one at a time": largest_relative_difference(whole, single),
            "max_batch_size=4": largest_relative_difference(whole, divergences(model, a, b, args, max_batch_size=4)),
            "reversed order": largest_relative_difference(whole, reversed_order),
        }
    print(
        f"largest relative difference of a pair's divergence from the all-at-once batch "
        f"({args.pairs} zoo pairs, T={args.steps}, k={args.samples}, guidance {args.guidance})"
    )
    for precision, changes in rows.items():
        for change, by_weighting in changes.items():
            cells = "  ".join(f"{w} {v:.1e}" for w, v in by_weighting.items())
            print(f"  {precision:>7}  {change:>16}:  {cells}")
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                "seconds": time.time() - started,
                "settings": vars(args),
                "largest_relative_difference": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
