"""Where the Monte-Carlo variance of the estimator comes from, and estimators that need fewer calls.

Stage 1 (``--collect``, slow): for 32 zoo caption pairs (paraphrases and random held-out pairs)
draws 24 Monte-Carlo samples each at T=10, guidance 3, on the embedded conjure-zoo model, and keeps
every per-step term (pairs × samples × direction × step) in ``results/variance_terms.pt``;
``--steps 5`` does the same for a coarser chain (``results/variance_terms_T5.pt``), and
``--steps 25 --pairs 16 --samples 12`` gives the weighting study its T = 25 precision. Resumable:
pairs are added in chunks.

Stage 2 (default): from those terms alone, for each weighting,

* how the variance splits over steps (and how much is covariance between steps),
* the calls each estimator needs to reach the paper estimator's standard error (T=10, k=5, 6
  calls per step = 300 per pair), computed exactly from each pair's step covariance matrix rather
  than from a handful of repeats; and the Spearman correlation between two independent runs,
* a per-step sample allocation (step ``t`` measured on the first ``M_t`` samples only, each
  sample run only as deep as it is measured), fitted on half of the pairs and judged on the other,
* one shared chain for both prompts, reweighted by importance sampling (half the calls per sample):
  how many more samples its weights would cost, from each pair's measured path KL,
* with the T=5 terms: rankings of the coarser chain against the T=10 estimand and the ground truth.

    python benchmarks/variance_study.py --collect [--pairs 32 --samples 24 --steps 10]
    python benchmarks/variance_study.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from conjure_metrics.denoisers.loading import load_denoiser

RESULTS = Path(__file__).resolve().parent / "results"


def terms_file(steps: int) -> Path:
    return RESULTS / ("variance_terms.pt" if steps == 10 else f"variance_terms_T{steps}.pt")


def collect(args: argparse.Namespace) -> None:
    from variance_reduction import zoo_pairs

    pairs = zoo_pairs(args.pairs, seed=1)
    path = terms_file(args.steps)
    store = (
        torch.load(path) if path.exists() else {"pairs": [], "simple": [], "girsanov": [], "rows": 0, "seconds": 0.0}
    )
    settings = dict(
        num_steps=args.steps, num_samples=args.samples, guidance_scale=args.guidance, seed=args.seed, max_batch_size=32
    )
    if store["pairs"] and store.get("settings") != settings:
        raise SystemExit(f"{path} holds terms for other settings {store.get('settings')}; move it away first")
    store["settings"] = settings
    model = InstrumentedDenoiser(load_denoiser(None))
    while len(store["pairs"]) < len(pairs):
        chunk = pairs[len(store["pairs"]) : len(store["pairs"]) + args.chunk]
        start, rows = time.perf_counter(), model.rows
        terms = jeffreys_terms([a for a, _ in chunk], [b for _, b in chunk], model, **settings)
        store["pairs"] += chunk
        store["simple"].append(terms.simple)
        store["girsanov"].append(terms.girsanov)
        store["rows"] += model.rows - rows
        store["seconds"] += time.perf_counter() - start
        store["machine"], store["torch"] = platform.machine(), str(torch.__version__)
        torch.save(store, path)
        print(f"{len(store['pairs'])}/{len(pairs)} pairs, {store['seconds']:.0f} s", flush=True)


# --- cost model: denoiser rows per pair (distinct prompts), as the engine spends them ---------------

PAPER_ROWS_PER_SAMPLE_STEP = 6  # the paper: 2 states x (prompt a, prompt b, empty prompt)


def rows_for(measured: torch.Tensor) -> torch.Tensor:
    """Rows one pair costs when step ``t``'s term is measured on the first ``measured[t]`` samples.

    A sample is run through step ``t`` when it is measured there or at a later step. At a step each
    trajectory of a pair needs its own prompt's prediction (to measure or to move on), the empty
    prompt's (only to move on: it cancels in the difference) and the partner prompt's (only to
    measure); at step 0 both trajectories share x_T, so one prediction per prompt serves both.
    """
    later = torch.stack(
        [measured[t + 1 :].max() if t + 1 < len(measured) else measured.new_zeros(()) for t in range(len(measured))]
    )
    run = torch.maximum(measured, later)
    first = 2 * run[0] + later[0]
    rest = 2 * (run[1:] + later[1:] + measured[1:])
    return first + rest.sum()


def nested_variance(cov: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """Variance of sum_t (mean of step t's term over the first ``measured[t]`` samples)."""
    return (cov / torch.maximum(measured[:, None], measured[None, :])).sum()


def step_covariances(terms: torch.Tensor) -> torch.Tensor:
    """(pairs, steps, steps) covariance across samples of each step's term (both directions summed)."""
    per_step = terms.sum(dim=2)  # (pairs, samples, steps)
    centred = per_step - per_step.mean(dim=1, keepdim=True)
    return torch.einsum("psi,psj->pij", centred, centred) / (per_step.shape[1] - 1)


def optimal_shape(cov: torch.Tensor, restarts: int = 8) -> torch.Tensor:
    """Measured-sample counts per step (up to scale) minimising variance x rows, for a covariance."""
    from scipy.optimize import minimize

    def work(log_shape):
        shape = torch.as_tensor(log_shape, dtype=torch.float64).exp()
        return float(nested_variance(cov, shape) * rows_for(shape))

    generator = torch.Generator().manual_seed(0)
    best = None
    for restart in range(restarts):
        start = torch.zeros(len(cov)) if restart == 0 else torch.randn(len(cov), generator=generator)
        found = minimize(work, start.numpy(), method="Nelder-Mead", options=dict(maxiter=4000, xatol=1e-4, fatol=1e-10))
        if best is None or found.fun < best.fun:
            best = found
    shape = torch.as_tensor(best.x, dtype=torch.float64).exp()
    return shape / shape.max()


def integer_counts(shape: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Whole sample counts (at least 1 per step, so every step is measured) in proportion to
    ``shape``, as many as ``budget`` rows allow."""
    best = torch.ones_like(shape)
    for scale in torch.arange(1.0, 200.0, 0.25, dtype=torch.float64):
        counts = (shape * scale).round().clamp_min(1)
        if rows_for(counts) > budget:
            break
        best = counts
    return best


def split_half_spearman(terms: torch.Tensor, measured: torch.Tensor, repeats: int = 50) -> float:
    """Mean Spearman correlation between two runs on disjoint halves of the samples.

    Each run measures step ``t`` of pair ``p`` on its first ``measured[p, t]`` samples (sample
    order shuffled per repeat, the same for all pairs, as the engine shares noise across pairs).
    """
    from scipy.stats import spearmanr

    per_step = terms.sum(dim=2)  # (pairs, samples, steps)
    half = per_step.shape[1] // 2
    if int(measured.max()) > half:
        return float("nan")
    generator = torch.Generator().manual_seed(0)
    steps = torch.arange(per_step.shape[1])[:, None]
    values = []
    for _ in range(repeats):
        order = torch.randperm(per_step.shape[1], generator=generator)
        runs = []
        for part in (order[:half], order[half:]):
            chosen = per_step[:, part]  # (pairs, half, steps)
            mask = steps[:half] < measured[:, None, :]  # (pairs, half, steps)
            runs.append(((chosen * mask).sum(dim=1) / measured).sum(dim=1))
        values.append(spearmanr(runs[0].numpy(), runs[1].numpy()).statistic)
    return float(sum(values) / len(values))


def analyse(args: argparse.Namespace) -> None:
    store = torch.load(terms_file(10))
    settings = store["settings"]
    steps, paper_k = settings["num_steps"], 5
    paper_rows = PAPER_ROWS_PER_SAMPLE_STEP * steps * paper_k
    report = {
        "settings": settings,
        "pairs": store["pairs"],
        "machine": store["machine"],
        "torch": store["torch"],
        "collect_rows": store["rows"],
        "collect_seconds": store["seconds"],
        "weightings": {},
    }
    for weighting in ("simple", "girsanov"):
        terms = torch.cat(store[weighting])  # (pairs, samples, 2, steps)
        cov = step_covariances(terms)
        mean = terms.sum(dim=(2, 3)).mean(dim=1)
        total_var = cov.sum(dim=(1, 2))
        paper_var = total_var / paper_k
        keep = mean > 0  # identical-looking pairs can have zero divergence: no relative SE to speak of
        rows = []
        budget = rows_for(torch.full((steps,), float(paper_k), dtype=torch.float64))

        def add(name: str, measured_per_pair: torch.Tensor, note: str) -> None:
            """Share of the paper's calls each pair needs to reach the paper's standard error, and the
            Spearman correlation between the rankings of two independent runs of the estimator."""
            shares, calls, rel_se = [], [], []
            for p in torch.nonzero(keep).flatten().tolist():
                measured = measured_per_pair[p]
                var, spent = nested_variance(cov[p], measured), rows_for(measured)
                shares.append(float(spent * var / paper_var[p] / paper_rows))
                calls.append(float(spent))
                rel_se.append(float(var.sqrt() / mean[p]))
            shares_t = torch.tensor(shares)
            rows.append(
                dict(
                    estimator=name,
                    note=note,
                    calls_per_pair=sum(calls) / len(calls),
                    mean_relative_stderr=sum(rel_se) / len(rel_se),
                    share_of_paper_calls_mean=float(shares_t.mean()),
                    share_of_paper_calls_median=float(shares_t.median()),
                    pairs_at_or_below_half=int((shares_t <= 0.5).sum()),
                    pairs=len(shares),
                    spearman_between_runs=split_half_spearman(terms, measured_per_pair),
                )
            )

        uniform = torch.full((len(mean), steps), float(paper_k), dtype=torch.float64)
        add(
            "paper estimator (T=10, k=5)",
            uniform,
            "the paper's 6 calls per step less the engine's savings "
            "(x_T evaluated once per prompt, no empty prompt at the last step)",
        )
        # Odd/even split of pairs: the allocation is chosen on one half and judged on the other.
        relative = cov / total_var[:, None, None].clamp_min(1e-300)
        halves = [torch.arange(len(mean)) % 2 == h for h in (0, 1)]
        chosen = torch.zeros(len(mean), steps, dtype=torch.float64)
        shapes = []
        for fit, judge in ((halves[0], halves[1]), (halves[1], halves[0])):
            shape = optimal_shape(relative[fit & keep].mean(dim=0))
            shapes.append(shape.tolist())
            chosen[judge] = integer_counts(shape, budget)
        add(
            "per-step sample allocation (fit on other half)",
            chosen,
            "step t measured on the first M_t samples; M_t fitted on the other half of the pairs, same calls",
        )
        oracle = torch.stack(
            [integer_counts(optimal_shape(relative[p]), budget) if keep[p] else uniform[p] for p in range(len(mean))]
        )
        add(
            "per-step allocation, oracle per pair", oracle, "each pair's own best allocation: a bound, not an estimator"
        )
        if weighting == "simple":
            report["cheap_predictors"] = cheap_predictors(terms[keep], settings)
        step_var = torch.diagonal(relative, dim1=1, dim2=2)[keep].mean(dim=0)
        report["weightings"][weighting] = dict(
            rows=rows,
            allocation_shapes=shapes,
            step_share_of_variance=step_var.tolist(),
            step_share_of_mean=(terms.sum(dim=2).mean(dim=1)[keep] / mean[keep, None]).mean(dim=0).tolist(),
            per_sample_relative_sd=float((total_var.sqrt() / mean)[keep].mean()),
        )
    report["shared_midpoint_chain"] = shared_chain(torch.cat(store["girsanov"]))
    report["fewer_steps"] = fewer_steps(store)
    _print_report(report, paper_rows)
    out = RESULTS / "variance_study.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def cheap_predictors(terms: torch.Tensor, settings: dict) -> dict:
    """Could something cheap predict a sample's total, as a control variate? Three candidates.

    * the step-0 term (x_T only): its correlation with the total;
    * the initial noise's per-channel means and their squares (known mean, free): R² of a per-pair
      least-squares fit, against the R² that 7 regressors reach by chance, p / (n - 1);
    * the trajectory cut after m steps (a prefix, perfectly coupled): the best two-level
      multi-fidelity estimator's variance at equal cost relative to plain sampling,
      (sqrt(1 - rho²) + sqrt(rho² w))² with w the prefix's share of a sample's calls (1 = no gain).
    """
    from conjure_metrics.noise import trajectory_noise

    per_step = terms.sum(dim=2)  # (pairs, samples, steps)
    total = per_step.sum(dim=2)
    pairs, samples, steps = per_step.shape

    def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
        return (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-300)

    step0 = correlation(per_step[..., 0], total)
    initial, _ = trajectory_noise(settings["seed"], samples, steps, (3, 32, 32))  # as drawn: float32
    initial = initial.double()
    means = initial.mean(dim=(2, 3)) * 32  # unit variance
    design = torch.cat([torch.ones(samples, 1, dtype=torch.float64), means, means.pow(2)], dim=1)
    fitted = design @ torch.linalg.lstsq(design, total.T).solution
    r2 = 1 - (total.T - fitted).var(dim=0) / total.T.var(dim=0)
    full_rows = rows_for(torch.ones(steps, dtype=torch.float64))
    prefix = []
    for m in range(1, steps):
        rho2 = correlation(per_step[..., :m].sum(dim=2), total).pow(2).clamp(max=1 - 1e-12)
        w = rows_for(torch.cat([torch.ones(m), torch.zeros(steps - m)]).double()) / full_rows
        gain = ((1 - rho2).sqrt() + (rho2 * w).sqrt()).pow(2).clamp(max=1.0)
        prefix.append(
            dict(
                steps=m, mean_rho=float(rho2.sqrt().mean()), cost_share=float(w), mean_variance_ratio=float(gain.mean())
            )
        )
    return dict(
        step0_correlation_mean=float(step0.mean()),
        noise_means_r2_mean=float(r2.mean()),
        noise_means_r2_chance=(design.shape[1] - 1) / (samples - 1),
        prefixes=prefix,
    )


def midpoint_weight_relative_variance(jeffreys: torch.Tensor) -> torch.Tensor:
    """log(1 + relative variance) of the importance weights ``(dP1/dQ + dP2/dQ) / 2`` of a chain ``Q``
    whose Gaussian transitions are the midpoint of the two prompts' (3 calls per state, one trajectory
    instead of two), for pairs with Jeffreys divergence ``jeffreys`` in nats.

    Each step's log-likelihood ratio is Gaussian with variance ``|Δμ|² / (4 σ²)``; summed over the path
    that is ``s² = J / 4`` (exact when Δμ does not depend on the path, the leading term otherwise), so
    the weights are ``exp(-s²/2) cosh(M)``, ``M ~ N(0, s²)``: mean 1, second moment
    ``(1 + exp(2 s²)) / (2 exp(s²)) = cosh(s²)``. An importance-sampling estimate needs about that
    many times the samples (Kong's effective sample size), log-space because ``J`` reaches thousands.
    """
    s2 = jeffreys.double() / 4
    return torch.logaddexp(s2, -s2) - torch.log(torch.tensor(2.0, dtype=torch.float64))


def shared_chain(girsanov: torch.Tensor) -> dict:
    """Importance sampling from one midpoint chain, judged by the pairs' measured path KL (nats)."""
    jeffreys = girsanov.sum(dim=(2, 3)).mean(dim=1)  # (pairs,) exact Jeffreys divergence of the chains
    log_factor = midpoint_weight_relative_variance(jeffreys) + torch.log(torch.tensor(0.5, dtype=torch.float64))
    return dict(
        jeffreys_nats_min=float(jeffreys.min()),
        jeffreys_nats_median=float(jeffreys.median()),
        log10_calls_factor_best_pair=float(log_factor.min() / torch.log(torch.tensor(10.0))),
        log10_calls_factor_median_pair=float(log_factor.median() / torch.log(torch.tensor(10.0))),
    )


def fewer_steps(store10: dict, repeats: int = 200) -> list[dict] | None:
    """Rankings from a coarser chain (T=5) against the T=10 estimand, at fewer and at equal calls.

    Samples 12.. of the T=10 run form the reference ranking; every estimator draws its samples
    from indices 0..11 (T=5 samples share x_T with T=10 samples of the same index, so the two sets
    stay disjoint). Also reported: Spearman with the zoo's ground-truth similarity.
    """
    from scipy.stats import spearmanr

    from conjure_metrics.zoo.truth import ground_truth_similarity

    path = terms_file(5)
    if not path.exists():
        return None
    store5 = torch.load(path)
    if store5["pairs"] != store10["pairs"]:
        raise SystemExit(f"{path} was collected on other pairs")
    per_sample = {10: torch.cat(store10["simple"]).sum(dim=(2, 3)), 5: torch.cat(store5["simple"]).sum(dim=(2, 3))}
    pool, reference = 12, per_sample[10][:, 12:].mean(dim=1)
    truth = torch.tensor([ground_truth_similarity(a, b) for a, b in store10["pairs"]])
    generator = torch.Generator().manual_seed(0)
    rows = []
    for steps, k in ((10, 5), (5, 5), (5, 11)):
        calls = float(rows_for(torch.full((steps,), float(k), dtype=torch.float64)))
        with_reference, with_truth = [], []
        for _ in range(repeats):
            chosen = torch.randperm(pool, generator=generator)[:k]
            estimate = per_sample[steps][:, chosen].mean(dim=1)
            with_reference.append(spearmanr(estimate.numpy(), reference.numpy()).statistic)
            with_truth.append(spearmanr(-estimate.numpy(), truth.numpy()).statistic)
        rows.append(
            dict(
                estimator=f"T={steps}, k={k}",
                calls_per_pair=calls,
                share_of_paper_calls=calls / (PAPER_ROWS_PER_SAMPLE_STEP * 10 * 5),
                spearman_with_T10_reference=sum(with_reference) / repeats,
                spearman_with_ground_truth=sum(with_truth) / repeats,
            )
        )
    return rows


def _print_report(report: dict, paper_rows: int) -> None:
    s = report["settings"]
    print(
        f"{len(report['pairs'])} zoo pairs, T={s['num_steps']}, guidance {s['guidance_scale']}, "
        f"{s['num_samples']} samples each; paper default = {paper_rows} calls/pair"
    )
    for weighting, found in report["weightings"].items():
        print(f"\n[{weighting}] per-sample relative SD {found['per_sample_relative_sd']:.3f}")
        print("  step share of variance: " + " ".join(f"{v:.2f}" for v in found["step_share_of_variance"]))
        print("  step share of the mean: " + " ".join(f"{v:.2f}" for v in found["step_share_of_mean"]))
        print(
            f"  {'estimator':>48} {'calls/pair':>10} {'rel. SE':>8} {'Spearman':>8} "
            f"{'calls for paper SE (mean, median)':>34} {'pairs <= 1/2':>12}"
        )
        for r in found["rows"]:
            print(
                f"  {r['estimator']:>48} {r['calls_per_pair']:>10.0f} {r['mean_relative_stderr']:>8.3f} "
                f"{r['spearman_between_runs']:>8.3f} {r['share_of_paper_calls_mean']:>22.0%} "
                f"{r['share_of_paper_calls_median']:>10.0%} {r['pairs_at_or_below_half']:>8}/{r['pairs']}"
            )
    cheap = report["cheap_predictors"]
    print(
        f"\n[simple] cheap predictors of a sample's total: step-0 term correlation {cheap['step0_correlation_mean']:.2f}; "
        f"R² on the initial noise's channel means {cheap['noise_means_r2_mean']:.2f} "
        f"(chance {cheap['noise_means_r2_chance']:.2f})"
    )
    print(
        "  prefix steps / mean correlation / cost share / multi-fidelity variance at equal cost: "
        + "; ".join(
            f"{c['steps']}: {c['mean_rho']:.2f}/{c['cost_share']:.2f}/{c['mean_variance_ratio']:.2f}"
            for c in cheap["prefixes"]
        )
    )
    shared = report["shared_midpoint_chain"]
    print(
        f"\n[both] one midpoint chain for both prompts, importance-weighted (half the calls per sample): path "
        f"Jeffreys {shared['jeffreys_nats_min']:.0f} nats (closest pair) to {shared['jeffreys_nats_median']:.0f} (median), "
        f"so its weights need 10^{shared['log10_calls_factor_best_pair']:.1f} (closest pair) to "
        f"10^{shared['log10_calls_factor_median_pair']:.0f} times the paper's calls"
    )
    if report.get("fewer_steps"):
        print("\n[simple] fewer steps: rankings against the T=10 estimand (12-sample reference) and the ground truth")
        print(
            f"  {'estimator':>12} {'calls/pair':>10} {'share of paper calls':>20} {'Spearman vs T=10':>16} {'Spearman vs truth':>17}"
        )
        for r in report["fewer_steps"]:
            print(
                f"  {r['estimator']:>12} {r['calls_per_pair']:>10.0f} {r['share_of_paper_calls']:>20.0%} "
                f"{r['spearman_with_T10_reference']:>16.3f} {r['spearman_with_ground_truth']:>17.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", action="store_true", help="draw the samples (slow) instead of analysing them")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=4, help="pairs per saved chunk when collecting")
    args = parser.parse_args()
    if args.collect:
        collect(args)
    else:
        analyse(args)


if __name__ == "__main__":
    main()
