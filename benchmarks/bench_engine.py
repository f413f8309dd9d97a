"""Engine efficiency: batched ConjureSimilarity against the naive loop, on CPU.

For 1, 16 and 64 pairs of distinct prompts (no trajectory can be shared), and for the 21 pairs of a
7-prompt similarity matrix, on the embedded conjure-zoo model and on a tiny random model, it reports
pairs/s, denoiser calls (and rows), the share of wall time spent inside the denoiser, and the peak
working memory, for two ``max_batch_size`` settings; and the naive one-call-per-prompt loop
(``tests/naive_reference.py``, the tests' oracle) at 1 and 16 pairs, as a ratio. Each measurement
runs in its own process so that peak memory is its own.

Two more measurements say what limits the ratio. ``ceiling``: the bare model's rows/s at batch
sizes 1, 8, 32 and 256. An engine that spent no time outside the model and ran every row at the best
of those rates (up to its ``max_batch_size``) would take (engine rows / best rate) seconds; the
naive loop's measured time over that is the ``bound`` on the speed-up this model allows, and the
table reports the engine's speed-up as a share of it. ``bf16``: the engine with bfloat16 weights
(fast on CPUs with AVX512-BF16 or AMX), and how far its divergences move from float32's.
Prints a table and writes ``benchmarks/results/bench_engine.json``.

    python benchmarks/bench_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser

RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = ["red", "blue", "white", "black", "orange", "grey", "green", "yellow"]
CREATURES = ["cat", "fox", "horse", "dog", "bear", "tiger", "zebra", "leopard"]
PATTERNS = ["with stripes", "with spots", "with patches", "plain"]
MATRIX_PROMPTS = [
    "a snow leopard",
    "a bengal tiger",
    "a zebra",
    "a red fox",
    "a dalmatian",
    "a panther",
    "a polar bear",
]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _load(model: str, dtype: str = "float32"):
    from conjure_metrics import DiffusersDenoiser
    from conjure_metrics.denoisers.loading import embedded_model_path
    from conjure_metrics.tiny import build_tiny_components

    if model == "conjure-zoo":
        return DiffusersDenoiser.from_pretrained(embedded_model_path(), torch_dtype=getattr(torch, dtype))
    denoiser = DiffusersDenoiser(**build_tiny_components(sample_size=32))
    if dtype != "float32":
        denoiser.unet.to(getattr(torch, dtype))
        denoiser.text_encoder.to(getattr(torch, dtype))
    return denoiser


def _pairs(n: int, workload: str) -> tuple[list[str], list[str]]:
    """``distinct``: 2n different prompts (no sharing possible); ``matrix``: all pairs of a few prompts."""
    if workload == "matrix":
        pairs = [(a, b) for i, a in enumerate(MATRIX_PROMPTS) for b in MATRIX_PROMPTS[i + 1 :]][:n]
        return [a for a, _ in pairs], [b for _, b in pairs]
    prompts = [f"a {c} {k} {p}" for p in PATTERNS for c in COLOURS for k in CREATURES]
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(0)).tolist()
    prompts = [prompts[i] for i in order]
    return prompts[0 : 2 * n : 2], prompts[1 : 2 * n : 2]


def measure(config: dict) -> dict:
    """One measurement, meant to run in a fresh process."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # The naive loop is the tests' oracle (tests/naive_reference.py): the baseline here is the very
    # loop the engine is checked against, not a copy that could drift from it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_gpu import unet_ceiling

    from conjure_metrics import jeffreys_terms
    from tests.naive_reference import naive_divergence

    torch.manual_seed(0)
    denoiser = InstrumentedDenoiser(_load(config["model"], config.get("dtype", "float32")))
    if config["engine"] == "ceiling":
        return dict(config, rows_per_s=unet_ceiling(denoiser, "cpu", config["max_batch_size"], 1, config["seconds"]))
    settings = dict(
        num_steps=config["num_steps"], num_samples=config["num_samples"], guidance_scale=config["guidance"], seed=0
    )
    a, b = _pairs(config["pairs"], config["workload"])
    jeffreys_terms(a[:1], b[:1], denoiser, max_batch_size=8, **dict(settings, num_steps=1, num_samples=1))  # warm-up
    denoiser.reset()
    baseline = _rss_bytes()
    start = time.perf_counter()
    if config["engine"] == "batched":
        divergence = jeffreys_terms(a, b, denoiser, max_batch_size=config["max_batch_size"], **settings).divergence(
            "simple"
        )
    else:
        divergence = torch.stack([naive_divergence(x, y, denoiser, **settings).mean() for x, y in zip(a, b)])
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(
        config,
        wall_s=wall,
        pairs_per_s=config["pairs"] / wall,
        denoiser_calls=denoiser.calls,
        denoiser_rows=denoiser.rows,
        denoiser_share=denoiser.seconds / wall,
        peak_working_mb=max(peak - baseline, 0) / 2**20,
        divergence=divergence.tolist(),
    )


def _run_isolated(config: dict) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(measure, config).result()


def _compare_with_naive(row: dict, naive: dict, ceilings: list[dict]) -> None:
    """Speed-up over the naive loop, the bound the model's batching allows, and the divergence error."""
    row["speedup_vs_naive"] = row["pairs_per_s"] / naive["pairs_per_s"]
    row["max_rel_diff_vs_naive"] = max(abs(x - y) / abs(y) for x, y in zip(row["divergence"], naive["divergence"]))
    rates = [
        c["rows_per_s"]
        for c in ceilings
        if c["engine"] == "ceiling" and c["model"] == row["model"] and c["max_batch_size"] <= row["max_batch_size"]
    ]
    if row["engine"] == "batched" and row.get("dtype", "float32") == "float32" and rates:
        fastest_engine_s = row["denoiser_rows"] / max(rates)
        bound = naive["wall_s"] / fastest_engine_s
        row["attainable_speedup"] = bound
        row["share_of_attainable"] = row["speedup_vs_naive"] / bound


def _compare_with_float32(row: dict, reference: dict) -> None:
    """How far reduced-precision divergences move from the float32 engine's, for the same pairs and seed."""
    from scipy.stats import spearmanr

    low, full = torch.tensor(row["divergence"]), torch.tensor(reference["divergence"])
    relative = (low - full) / full.abs()
    row["median_rel_diff_vs_float32"] = float(relative.median())
    row["max_abs_rel_diff_vs_float32"] = float(relative.abs().max())
    row["spearman_vs_float32"] = float(spearmanr(low.numpy(), full.numpy()).statistic)


def _print_table(args: argparse.Namespace, rows: list[dict]) -> None:
    print(f"T={args.steps}, k={args.samples}, guidance {args.guidance}, torch threads {torch.get_num_threads()}")
    print(f"{'model':>16} {'batch':>6} {'bare model rows/s':>18}")
    for r in rows:
        if r["engine"] == "ceiling":
            print(f"{r['model']:>16} {r['max_batch_size']:>6} {r['rows_per_s']:>18.1f}")
    print(
        f"{'model':>16} {'workload':>8} {'pairs':>5} {'engine':>7} {'dtype':>8} {'max_bs':>6} {'pairs/s':>8} {'calls':>6} "
        f"{'rows':>7} {'in model':>8} {'peak MB':>8} {'vs naive':>8} {'bound':>6} {'of bound':>8} {'max rel diff':>12}"
    )
    for r in rows:
        if r["engine"] == "ceiling":
            continue

        def fmt(key, spec):
            return format(r[key], spec) if key in r else "n/a"

        print(
            f"{r['model']:>16} {r['workload']:>8} {r['pairs']:>5} {r['engine']:>7} {r.get('dtype', 'float32'):>8} "
            f"{r['max_batch_size']:>6} {r['pairs_per_s']:>8.3f} {r['denoiser_calls']:>6} {r['denoiser_rows']:>7} "
            f"{r['denoiser_share']:>8.1%} {r['peak_working_mb']:>8.1f} {fmt('speedup_vs_naive', '7.2f'):>8} "
            f"{fmt('attainable_speedup', '5.2f'):>6} {fmt('share_of_attainable', '8.0%'):>8} {fmt('max_rel_diff_vs_naive', '12.1e'):>12}"
        )
    for r in rows:
        if "spearman_vs_float32" in r:
            print(
                f"{r['model']} {r['dtype']} vs float32, {r['pairs']} pairs: median relative difference "
                f"{r['median_rel_diff_vs_float32']:+.1%}, largest {r['max_abs_rel_diff_vs_float32']:.1%}, "
                f"Spearman {r['spearman_vs_float32']:.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer pairs (a smoke run)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", default=str(RESULTS / "bench_engine.json"))
    args = parser.parse_args()

    from conjure_metrics.denoisers.loading import embedded_model_path

    models = ["tiny-random-32px"]
    if not args.quick:
        try:
            embedded_model_path()
            models.insert(0, "conjure-zoo")
        except FileNotFoundError:
            print("no embedded conjure-zoo model in this install: measuring the tiny random model only")
    workloads = (
        [("distinct", 1), ("distinct", 4)]
        if args.quick
        else [("distinct", 1), ("distinct", 16), ("distinct", 64), ("matrix", 21)]
    )
    base = dict(num_steps=args.steps, num_samples=args.samples, guidance=args.guidance)
    rows = []
    for model in models:
        for batch in (1, 8, 32, 256):
            rows.append(
                _run_isolated(
                    dict(
                        base,
                        model=model,
                        workload="bare model",
                        pairs=0,
                        engine="ceiling",
                        max_batch_size=batch,
                        seconds=1.0 if args.quick else 8.0,
                    )
                )
            )
        for workload, pairs in workloads:
            group = []
            for max_batch_size in (32, 256):
                group.append(
                    _run_isolated(
                        dict(
                            base,
                            model=model,
                            workload=workload,
                            pairs=pairs,
                            engine="batched",
                            max_batch_size=max_batch_size,
                        )
                    )
                )
            if pairs <= 21:
                group.append(
                    _run_isolated(
                        dict(base, model=model, workload=workload, pairs=pairs, engine="naive", max_batch_size=1)
                    )
                )
            if model == "conjure-zoo" and (workload, pairs) == ("distinct", 16):
                group.append(
                    _run_isolated(
                        dict(
                            base,
                            model=model,
                            workload=workload,
                            pairs=pairs,
                            engine="batched",
                            max_batch_size=32,
                            dtype="bfloat16",
                        )
                    )
                )
            naive = next((r for r in group if r["engine"] == "naive"), None)
            for row in group:
                if naive is not None:
                    _compare_with_naive(row, naive, rows)
                if row.get("dtype", "float32") != "float32":
                    _compare_with_float32(row, group[0])
            rows += group

    _print_table(args, rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()} {mp.cpu_count()} cores",
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
