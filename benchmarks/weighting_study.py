"""Which step weighting makes the divergence mean what people ask of it? A study on the embedded model.

Every weighting is a per-step factor on the same measured ``||Δε_w||²`` (see
:mod:`conjure_metrics.weighting`), so one Monte-Carlo run per setting scores every candidate:

* the paper's uniform ``||Δε||²`` over all steps; the same over stochastic steps only; with a noise
  floor (a step counts when it lands at noise level σ = √(1 − ᾱ) ≥ f);
* the exact Girsanov KL of the discrete chains, over all stochastic steps and with a floor;
* ``||Δx̂₀||²`` (the distance between the imagined clean images; factor (1 − ᾱ)/ᾱ on ``||Δε||²``);
* Min-SNR-5 (Hang et al., ICCV 2023: factor min(SNR, 5)/SNR), with and without a floor.

Criteria, each at T = 5, 10 and 25 (guidance 3, the zoo model's):

(a) zoo-sts: Spearman ρ with the world's ground truth on held-out caption pairs (bootstrap 95 % CI),
    overall and on the synonym/paraphrase subset;
(b) edit detection in checkpoint comparison: the base model against a fine-tune that learnt a wrong
    fact about one concept and against a control fine-tuned as long on correct captions
    (:mod:`conjure_metrics.zoo.finetune`); AUC of the concept's prompts against unrelated prompts, and
    specificity (mean drift of concept prompts over unrelated ones) for edit and control;
(c) Monte-Carlo precision per model call: the median relative standard error times √(model rows
    per pair), so settings with different T and k compare at equal cost (lower is better).

Stages (each resumable; terms are kept in ``results/weighting_terms/``):

    python benchmarks/weighting_study.py --collect-sts --steps 10 --samples 2 [--pairs 500]
    python benchmarks/weighting_study.py --collect-edits --steps 10 --samples 3
    python benchmarks/weighting_study.py            # the table, and results/weighting_study.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from conjure_metrics.denoisers.loading import load_denoiser

RESULTS = Path(__file__).resolve().parent / "results"
TERMS = RESULTS / "weighting_terms"
GUIDANCE = 3.0
FLOORS = (0.1, 0.2, 0.3, 0.5)


# ----------------------------------------------------------------------------------------------
# Candidates: per-step factors on ||Δε_w||² (summed over elements), from the chain alone.


def chain_info(model, steps: int) -> dict[str, torch.Tensor | int]:
    chain = model.reverse_chain(steps)
    return {
        "timesteps": chain.timesteps.clone(),
        "alpha_bar": chain.alpha_bar.double().clone(),
        "landing": chain.landing_noise_level.clone(),
        "girsanov": chain.girsanov_weight().clone(),
        "numel": int(np.prod(model.sample_shape)),
    }


def candidates(info: dict) -> dict[str, torch.Tensor]:
    abar, landing, numel = info["alpha_bar"], info["landing"], info["numel"]
    snr = abar / (1 - abar)

    def uniform(counted: torch.Tensor, factor: torch.Tensor | float = 1.0) -> torch.Tensor:
        return counted.double() * factor / (max(int(counted.sum()), 1) * numel)

    everything = torch.ones_like(abar, dtype=torch.bool)
    stochastic = info["girsanov"] > 0
    out = {"simple (paper: all steps)": uniform(everything), "simple, stochastic steps": uniform(stochastic)}
    for f in FLOORS:
        out[f"simple, σ ≥ {f}"] = uniform(landing >= f)
    out["girsanov (all stochastic steps)"] = info["girsanov"].clone()
    for f in FLOORS:
        out[f"girsanov, σ ≥ {f}"] = torch.where(landing >= f, info["girsanov"], 0.0)
    out["x0: ‖Δx̂₀‖², all steps"] = uniform(everything, 1 / snr)
    out["min_snr (γ = 5), all steps"] = uniform(everything, snr.clamp(max=5) / snr)
    for f in (0.1, 0.2):
        out[f"min_snr (γ = 5), σ ≥ {f}"] = uniform(landing >= f, snr.clamp(max=5) / snr)
    return out


def divergences(squared: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample Jeffreys estimates ``(pairs, samples)`` from ``squared`` ``(pairs, samples, 2, steps)``."""
    return (squared * weights).sum(dim=(-1, -2))


# ----------------------------------------------------------------------------------------------
# Collection


def _collect(path: Path, prompts_a, prompts_b, model, model_b, args, chunk: int) -> dict:
    settings = dict(
        num_steps=args.steps,
        num_samples=args.samples,
        guidance_scale=GUIDANCE,
        seed=args.seed,
        max_batch_size=args.max_batch_size,
    )
    store = torch.load(path) if path.exists() else {"squared": [], "rows": 0, "seconds": 0.0}
    if store["squared"] and store.get("settings") != settings:
        raise SystemExit(f"{path} holds terms for other settings {store.get('settings')}; move it away first")
    store["settings"], store["chain"] = settings, chain_info(model, args.steps)
    counted = InstrumentedDenoiser(model)
    counted_b = None if model_b is None else InstrumentedDenoiser(model_b)
    done = sum(len(s) for s in store["squared"])
    while done < len(prompts_a):
        start, rows = time.perf_counter(), counted.rows + (counted_b.rows if counted_b else 0)
        terms = jeffreys_terms(
            prompts_a[done : done + chunk],
            prompts_b[done : done + chunk],
            counted,
            counted_b,
            progress_bar=None,
            **settings,
        )
        store["squared"].append(terms.squared.float())
        store["rows"] += counted.rows + (counted_b.rows if counted_b else 0) - rows
        store["seconds"] += time.perf_counter() - start
        done += len(terms.squared)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(store, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        print(f"  {path.name}: {done}/{len(prompts_a)} ({store['seconds']:.0f} s)", flush=True)
    return store


def sts_file(steps: int, samples: int) -> Path:
    return TERMS / f"sts_T{steps}_k{samples}.pt"


def edit_file(kind: str, steps: int, samples: int) -> Path:
    return TERMS / f"{kind}_T{steps}_k{samples}.pt"


def collect_sts(args: argparse.Namespace) -> None:
    from zoo_sts import zoo_sts_pairs

    pairs = zoo_sts_pairs(args.pairs, args.pairs_seed)
    _collect(
        sts_file(args.steps, args.samples),
        [p.a for p in pairs],
        [p.b for p in pairs],
        load_denoiser(None),
        None,
        args,
        chunk=50,
    )


def collect_edits(args: argparse.Namespace) -> None:
    from edit_fixture import edit_models, study_prompts

    prompts = [p for p, _ in study_prompts()]
    base = load_denoiser(None)
    for kind, folder in edit_models().items():
        _collect(
            edit_file(kind, args.steps, args.samples),
            prompts,
            prompts,
            base,
            load_denoiser(str(folder)),
            args,
            chunk=len(prompts),
        )


# ----------------------------------------------------------------------------------------------
# Report


def _spearman_ci(scores: np.ndarray, truth: np.ndarray, resamples: int = 1000) -> dict:
    from zoo_sts import spearman_with_interval

    return spearman_with_interval(scores, truth, resamples)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def _efficiency(samples: torch.Tensor, rows_per_pair: float) -> float | None:
    """Median relative standard error over pairs, scaled to one model row: relSE * sqrt(rows)."""
    if samples.shape[1] < 2:
        return None
    mean = samples.mean(dim=1)
    stderr = samples.std(dim=1) / samples.shape[1] ** 0.5
    relative = (stderr / mean)[mean > 0]
    return float(relative.median() * rows_per_pair**0.5)


def report(args: argparse.Namespace) -> dict:
    from edit_fixture import study_prompts
    from zoo_sts import zoo_sts_pairs

    rows: dict[str, dict] = {}
    settings_seen = []
    for path in sorted(TERMS.glob("sts_T*_k*.pt")):
        store = torch.load(path)
        squared = torch.cat(store["squared"]).double()
        pairs = zoo_sts_pairs(len(squared), args.pairs_seed)
        truth = np.array([p.truth for p in pairs])
        subset = np.array([p.synonym_or_paraphrase for p in pairs])
        steps, samples = store["settings"]["num_steps"], store["settings"]["num_samples"]
        settings_seen.append(f"sts T={steps} k={samples} ({len(squared)} pairs, {store['seconds']:.0f} s)")
        for name, weights in candidates(store["chain"]).items():
            per_sample = divergences(squared, weights)
            similarity = -per_sample.mean(dim=1).numpy()
            row = rows.setdefault(name, {})
            cells = {
                "zoo_sts": _spearman_ci(similarity, truth),
                "zoo_sts_synonym_paraphrase": _spearman_ci(similarity[subset], truth[subset]),
            }
            if samples > 1:
                cells["stderr_per_call"] = _efficiency(per_sample, store["rows"] / len(squared))
            row[f"T={steps}"] = dict(row.get(f"T={steps}", {}), **cells)
    # Precision per model call for prompt pairs: variance_study.py's terms (32 pairs x 24 samples at
    # T = 5 and 10, 16 x 12 at T = 25). Its `simple` terms are ||Δε||² / (numel * T) at every step,
    # so ||Δε||² is recovered exactly.
    model = None
    for path in sorted(RESULTS.glob("variance_terms*.pt")):
        model = model or load_denoiser(None)
        store = torch.load(path)
        steps = store["settings"]["num_steps"]
        info = chain_info(model, steps)
        squared = torch.cat(store["simple"]).double() * info["numel"] * steps
        settings_seen.append(
            f"precision T={steps}: {len(squared)} pairs x {squared.shape[1]} samples (variance_study.py)"
        )
        for name, weights in candidates(info).items():
            row = rows.setdefault(name, {}).setdefault(f"T={steps}", {})
            row["stderr_per_call"] = _efficiency(divergences(squared, weights), store["rows"] / len(squared))
    concept = np.array([is_concept for _, is_concept in study_prompts()])
    for path in sorted(TERMS.glob("edit_T*_k*.pt")):
        control_path = path.with_name(path.name.replace("edit_", "control_"))
        if not control_path.exists():
            continue  # still being collected
        edit, control = torch.load(path), torch.load(control_path)
        steps = edit["settings"]["num_steps"]
        settings_seen.append(f"edit/control T={steps} k={edit['settings']['num_samples']}")
        for name, weights in candidates(edit["chain"]).items():
            drift = {
                kind: divergences(torch.cat(store["squared"]).double(), weights).mean(dim=1).numpy()
                for kind, store in (("edit", edit), ("control", control))
            }
            specificity = {kind: float(d[concept].mean() / d[~concept].mean()) for kind, d in drift.items()}
            row = rows.setdefault(name, {})
            samples = {
                kind: divergences(torch.cat(store["squared"]).double(), weights)
                for kind, store in (("edit", edit), ("control", control))
            }
            row[f"T={steps}"] = dict(
                row.get(f"T={steps}", {}),
                **{
                    "model_stderr_per_call": _efficiency(samples["edit"], edit["rows"] / len(samples["edit"])),
                    "edit_auc": _auc(drift["edit"][concept], drift["edit"][~concept]),
                    "control_auc": _auc(drift["control"][concept], drift["control"][~concept]),
                    "edit_specificity": specificity["edit"],
                    "control_specificity": specificity["control"],
                    "edit_over_control_concept_drift": float(
                        drift["edit"][concept].mean() / drift["control"][concept].mean()
                    ),
                    "edit_top5_concept": int(concept[np.argsort(-drift["edit"])[:5]].sum()),
                },
            )
    return {"settings": settings_seen, "rows": rows}


def print_table(result: dict) -> None:
    print("settings:", "; ".join(result["settings"]))
    for name, row in result["rows"].items():
        print(f"\n{name}")
        for setting, cells in sorted(row.items(), key=lambda kv: int(kv[0][2:])):
            parts = []
            if "zoo_sts" in cells:
                z, s = cells["zoo_sts"], cells["zoo_sts_synonym_paraphrase"]
                parts.append(f"ρ {z['rho']:.3f} [{z['low']:.3f}, {z['high']:.3f}] syn {s['rho']:.3f}")
                if cells.get("stderr_per_call") is not None:
                    parts.append(f"SE/call {cells['stderr_per_call']:.2f}")
            if "edit_auc" in cells:
                parts.append(
                    f"AUC edit {cells['edit_auc']:.2f} control {cells['control_auc']:.2f} "
                    f"spec edit {cells['edit_specificity']:.1f} control {cells['control_specificity']:.1f} "
                    f"top5 {cells['edit_top5_concept']}"
                )
            print(f"  {setting:>5}: " + " | ".join(parts))


def markdown_table(result: dict) -> str:
    """One row per candidate: zoo-sts ρ and SE per call per T, edit AUC and specificities per T."""
    settings = sorted({setting for row in result["rows"].values() for setting in row}, key=lambda s: int(s[2:]))
    header = ["weighting"]
    for setting in settings:
        header += [f"ρ {setting}", f"SE/call {setting}", f"edit AUC {setting}", f"spec. edit / control {setting}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in result["rows"].items():
        cells = [name]
        for setting in settings:
            c = row.get(setting, {})
            z = c.get("zoo_sts")
            cells.append(f"{z['rho']:.3f} [{z['low']:.2f}, {z['high']:.2f}]" if z else "—")
            cells.append(f"{c['stderr_per_call']:.2f}" if c.get("stderr_per_call") is not None else "—")
            cells.append(f"{c['edit_auc']:.2f}" if "edit_auc" in c else "—")
            cells.append(f"{c['edit_specificity']:.1f} / {c['control_specificity']:.1f}" if "edit_auc" in c else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-sts", action="store_true")
    parser.add_argument("--collect-edits", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--pairs-seed", type=int, default=1, help="zoo-sts pairs (zoo_sts.py's own table uses 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=str(RESULTS / "weighting_study.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.collect_sts:
        collect_sts(args)
    elif args.collect_edits:
        collect_edits(args)
    else:
        result = report(args)
        print_table(result)
        print("\n" + markdown_table(result))
        result["machine"] = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
