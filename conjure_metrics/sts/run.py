"""Score human-annotated pairs with the conjure estimator and correlate with the human scores.

:func:`run_benchmark` loads the model once, scores the pairs in chunks through
:func:`conjure_metrics.functional.score_pairs`, appends each chunk's per-pair results to a JSONL
file (:mod:`.results`) so that a restarted run skips what is done, and reports Spearman and Pearson
with bootstrap 95 % intervals per column of the paper's table (:class:`BenchmarkReport`).

Under ``torchrun --nproc_per_node N`` (or any initialised ``torch.distributed`` group) the pending
pairs are cut into N contiguous shards, one per rank; rank 0 gathers every chunk's results with
``gather_object``, is the only one to write the results file, and every rank returns the same report.
A pair's score depends on the seed only (not on batch, chunk or rank), so N processes give the table
of one.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from conjure_metrics.denoisers.loading import ModelLike, load_denoiser
from conjure_metrics.functional import score_pairs
from conjure_metrics.settings import ConjureSettings
from conjure_metrics.sts.formats import SimilarityDataset
from conjure_metrics.sts.results import ResultsFile, pair_fingerprint, record_key, settings_hash
from conjure_metrics.sts.stats import Correlation, bootstrap_replicates, correlations, interval
from conjure_metrics.weighting import Weighting

_METRICS = ("spearman", "pearson")
# Raised when the same settings start giving other scores (version 2: components loaded in one
# dtype, float64 noise drawn as float32), so a results file never mixes scores of two versions.
SCORING_VERSION = 2
_NOT_SCORE_CHANGING = ("device", "local_files_only", "cache_dir", "token")


@dataclass(frozen=True)
class ColumnScore:
    """Correlations of one table column (a dataset, or a pooled SentEval year) with human scores."""

    name: str
    num_pairs: int
    spearman: Correlation
    pearson: Correlation
    datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchmarkReport:
    """What :func:`run_benchmark` measured; ``columns`` are the table's, ``datasets`` each input dataset."""

    model: str
    settings: dict[str, Any]
    columns: tuple[ColumnScore, ...]
    datasets: tuple[ColumnScore, ...]
    average: dict[str, Correlation]
    computed_pairs: int
    reused_pairs: int
    bootstrap_resamples: int = 1000

    def table(self) -> str:
        """The paper's layout: one column per dataset and the average, correlations × 100 with 95 % intervals."""
        header = ["", *(c.name for c in self.columns), "Avg."]
        rows = [["pairs", *(str(c.num_pairs) for c in self.columns), str(sum(c.num_pairs for c in self.columns))]]
        for metric, title in (("spearman", "Spearman ρ×100"), ("pearson", "Pearson r×100")):
            cells = [_percent(getattr(c, metric)) for c in self.columns]
            rows.append([title, *cells, _percent(self.average[metric])])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        settings = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        lines = [
            f"model {self.model}: {settings}",
            "  ".join(h.ljust(w) for h, w in zip(header, widths)),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.append(
            f"[low, high]: bootstrap 95 % interval ({self.bootstrap_resamples} resamples of the pairs); "
            f"{self.computed_pairs} pair(s) scored now, {self.reused_pairs} reused from the results file"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: correlations × 100 with ``ci95`` intervals, ``None`` where undefined."""

        def column(c: ColumnScore) -> dict[str, Any]:
            return {
                "name": c.name,
                "pairs": c.num_pairs,
                "datasets": list(c.datasets),
                "spearman_x100": c.spearman.to_dict(100),
                "pearson_x100": c.pearson.to_dict(100),
            }

        return {
            "model": self.model,
            "settings": self.settings,
            "columns": [column(c) for c in self.columns],
            "average": {f"{m}_x100": self.average[m].to_dict(100) for m in _METRICS},
            "datasets": [column(d) for d in self.datasets],
            "computed_pairs": self.computed_pairs,
            "reused_pairs": self.reused_pairs,
            "bootstrap_resamples": self.bootstrap_resamples,
        }


def _percent(correlation: Correlation) -> str:
    if math.isnan(correlation.value):
        return "n/a"
    if math.isnan(correlation.low):
        return f"{100 * correlation.value:.1f}"
    return f"{100 * correlation.value:.1f} [{100 * correlation.low:.1f}, {100 * correlation.high:.1f}]"


def evenly_spaced(num_pairs: int, max_pairs: int | None) -> list[int]:
    """Indices of at most ``max_pairs`` pairs spread over the whole dataset (files are often sorted by genre).

    Example:
        >>> evenly_spaced(10, 4)
        [0, 2, 5, 7]
    """
    if max_pairs is None or max_pairs >= num_pairs:
        return list(range(num_pairs))
    return [k * num_pairs // max_pairs for k in range(max_pairs)]


@contextmanager
def _process_group() -> Iterator[tuple[int, int]]:
    """(rank, world size): an existing group, one set up from torchrun's environment, or a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        yield dist.get_rank(), dist.get_world_size()
        return
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0, 1
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
        # No rank may tear the group down while another is still in its last collective: gloo
        # aborts the process ("terminate called without an active exception") when a peer vanishes.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Contiguous shard of ``items`` for ``rank``; shard sizes differ by at most one."""
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def _broadcast(value: Any, world_size: int) -> Any:
    if world_size == 1:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _gather(records: list[dict[str, Any]], rank: int, world_size: int) -> list[dict[str, Any]]:
    """Every rank's records on rank 0, in rank order (so the file reads as one process would write it)."""
    if world_size == 1:
        return records
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(records, gathered, dst=0)
    return [r for part in gathered for r in part] if gathered is not None else []  # None off rank 0


def _model_name(model: ModelLike) -> str:
    if model is None:
        return "conjure-zoo"
    if isinstance(model, (str, os.PathLike)):
        return os.path.abspath(model) if os.path.exists(model) else str(model)
    return type(model).__name__


def run_benchmark(
    datasets: Sequence[SimilarityDataset],
    model: ModelLike = None,
    *,
    model_name: str | None = None,
    num_steps: int = 10,
    num_samples: int = 3,
    guidance_scale: float = 7.5,
    weighting: Weighting | None = None,
    seed: int = 0,
    min_timestep: float = 0,
    max_batch_size: int = 64,
    min_noise: float | None = None,
    sampler: str | None = None,
    max_pairs: int | None = None,
    chunk_size: int = 32,
    results_path: str | os.PathLike | None = None,
    bootstrap_resamples: int = 1000,
    bootstrap_seed: int = 0,
    progress_bar: bool | None = None,
    **load_kwargs: Any,
) -> BenchmarkReport:
    """Correlation of conjure similarity with human scores on ``datasets`` (see :mod:`conjure_metrics.sts`).

    Args:
        datasets: from :func:`conjure_metrics.sts.load_datasets`; names must be distinct.
        model: anything :func:`conjure_metrics.conjure_similarity` accepts (``None``: the embedded conjure-zoo model).
        model_name: how the results file identifies the model (default: the absolute path, hub id,
            ``"conjure-zoo"`` or the object's type name). Results are reused only under the same name, estimator
            settings and loading options; give two model objects of the same type different names.
        num_steps, num_samples, guidance_scale, weighting, seed, min_timestep, max_batch_size, min_noise: the
            estimator's settings, as in :func:`conjure_metrics.conjure_similarity` (paper: 10 steps, 1–5 samples,
            guidance 7.5); unset ``weighting`` / ``min_noise`` take the prompt-comparison defaults.
        max_pairs: score at most this many pairs per dataset, evenly spaced through it.
        chunk_size: pairs scored (and appended to the results file) at a time, per rank.
        results_path: JSONL file of per-pair results; a rerun with the same settings skips the pairs in it.
        bootstrap_resamples, bootstrap_seed: for the 95 % intervals.
        progress_bar: tqdm bar on rank 0 (``None``: only on a terminal).
        **load_kwargs: for loading ``model`` (e.g. ``device``, ``torch_dtype``). Under torchrun with CUDA the
            device defaults to ``cuda:LOCAL_RANK``.

    Example:
        >>> import torch
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> from conjure_metrics.sts import SimilarityDataset
        >>> means = {"": torch.zeros(4), "tiger": torch.ones(4), "lion": 0.9 * torch.ones(4),
        ...          "cat": 0.5 * torch.ones(4), "zebra": -torch.ones(4)}
        >>> model = GaussianConditionals(means=means, variances={k: 0.1 for k in means},
        ...                              alphas_cumprod=torch.cumprod(1 - linear_betas(), 0))
        >>> animals = SimilarityDataset("animals", ("tiger", "tiger", "tiger"), ("lion", "cat", "zebra"), (9.0, 6.0, 1.0))
        >>> report = run_benchmark([animals], model, num_steps=5, num_samples=2, guidance_scale=1.0, progress_bar=False)
        >>> report.columns[0].spearman.value
        1.0
    """
    checked = ConjureSettings(
        num_steps=num_steps,
        num_samples=num_samples,
        guidance_scale=guidance_scale,
        weighting=weighting,
        min_noise=min_noise,
        seed=seed,
        max_batch_size=max_batch_size,
        min_timestep=min_timestep,
        sampler=sampler,
    ).for_mode("prompts")
    for name, value, least in (
        ("chunk_size", chunk_size, 1),
        ("max_pairs", max_pairs, 1),
        ("bootstrap_resamples", bootstrap_resamples, 0),
    ):
        if value is None and name == "max_pairs":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int of at least {least}, got {value!r}")
    names = [d.name for d in datasets]
    if not names:
        raise ValueError("no datasets to benchmark")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two datasets are named {duplicates[0]!r}: results are keyed by dataset name, rename one")

    model_name = model_name or _model_name(model)
    # What changes scores; the batch size does not (beyond round-off).
    estimator = {
        k: v for k, v in checked.record().items() if k not in ("max_batch_size", "target_stderr", "max_samples")
    }
    # The precision and the loading options (sampler, eta, revision, ...) change scores; the device,
    # batch size, chunking and how the files are fetched do not (beyond round-off).
    loading = {k: str(v) for k, v in sorted(load_kwargs.items()) if k not in _NOT_SCORE_CHANGING and v is not None}
    dtype = {"dtype": loading.pop("torch_dtype")} if "torch_dtype" in loading else {}
    settings = settings_hash(
        {
            "model": model_name,
            **estimator,
            **dtype,
            **({"load": loading} if loading else {}),
            "scoring": SCORING_VERSION,
        }
    )
    selected = [(d, i) for d in datasets for i in evenly_spaced(len(d), max_pairs)]
    store = ResultsFile(results_path) if results_path is not None else None

    with _process_group() as (rank, world_size):
        # Rank 0 alone reads and writes the results file; the others learn what is pending from it.
        done: dict[str, dict[str, Any]] = {}
        pending = None
        if rank == 0:
            done = store.read(settings) if store is not None else {}
            pending = [n for n, (d, i) in enumerate(selected) if not _reusable(done, d, i, settings)]
        todo = [selected[n] for n in _broadcast(pending, world_size)]

        new_records: list[dict[str, Any]] = []
        if todo:
            if (
                world_size > 1
                and torch.cuda.is_available()
                and "device" not in load_kwargs
                and (model is None or isinstance(model, (str, os.PathLike)))
            ):
                load_kwargs["device"] = f"cuda:{torch.cuda.current_device()}"
            denoiser = load_denoiser(model, "model", sampler=checked.sampler, **load_kwargs)
            shard = _shard(todo, rank, world_size)
            num_chunks = math.ceil(math.ceil(len(todo) / world_size) / chunk_size)
            show = rank == 0 and (progress_bar if progress_bar is not None else sys.stderr.isatty())
            with tqdm(total=len(todo), desc="pairs", disable=not show) as bar:
                for c in range(num_chunks):
                    chunk = shard[c * chunk_size : (c + 1) * chunk_size]
                    records = _score_chunk(chunk, denoiser, checked, settings) if chunk else []
                    records = _gather(records, rank, world_size)
                    if rank == 0:
                        if store is not None:
                            store.append(records)
                        new_records += records
                        bar.update(len(records))

        report = None
        if rank == 0:
            for record in new_records:
                done[record["key"]] = record
            report = _report(
                datasets,
                selected,
                done,
                settings,
                model_name,
                estimator,
                computed=len(new_records),
                resamples=bootstrap_resamples,
                bootstrap_seed=bootstrap_seed,
            )
        return _broadcast(report, world_size)


def _reusable(done: dict[str, dict[str, Any]], dataset: SimilarityDataset, index: int, settings: str) -> bool:
    record = done.get(record_key(dataset.name, index, settings))
    return record is not None and record.get("pair") == pair_fingerprint(
        dataset.sentences_a[index], dataset.sentences_b[index]
    )


def _score_chunk(
    chunk: list[tuple[SimilarityDataset, int]], denoiser: Any, estimator: ConjureSettings, settings: str
) -> list[dict[str, Any]]:
    first = [d.sentences_a[i] for d, i in chunk]
    second = [d.sentences_b[i] for d, i in chunk]
    result = score_pairs(first, second, denoiser, None, estimator, progress_bar=False)
    records = []
    for (dataset, index), similarity, divergence, stderr in zip(
        chunk, result.similarity, result.divergence, result.stderr
    ):
        records.append(
            {
                "key": record_key(dataset.name, index, settings),
                "dataset": dataset.name,
                "index": index,
                "settings": settings,
                "pair": pair_fingerprint(dataset.sentences_a[index], dataset.sentences_b[index]),
                "gold": dataset.scores[index],
                "similarity": float(similarity),
                "divergence": float(divergence),
                "stderr": None if math.isnan(float(stderr)) else float(stderr),
            }
        )
    return records


def _column(
    name: str, predicted: list[float], gold: list[float], datasets: tuple[str, ...], resamples: int, seed: Sequence[int]
) -> tuple[ColumnScore, dict[str, np.ndarray]]:
    values = correlations(predicted, gold)
    replicates = bootstrap_replicates(predicted, gold, resamples, list(seed))
    score = ColumnScore(
        name,
        len(gold),
        interval(values["spearman"], replicates["spearman"]),
        interval(values["pearson"], replicates["pearson"]),
        datasets,
    )
    return score, replicates


def _report(
    datasets: Sequence[SimilarityDataset],
    selected: list[tuple[SimilarityDataset, int]],
    records: dict[str, dict[str, Any]],
    settings: str,
    model_name: str,
    estimator: dict[str, Any],
    *,
    computed: int,
    resamples: int,
    bootstrap_seed: int,
) -> BenchmarkReport:
    scored: dict[str, tuple[list[float], list[float]]] = {d.name: ([], []) for d in datasets}
    for dataset, index in selected:
        record = records[record_key(dataset.name, index, settings)]
        scored[dataset.name][0].append(record["similarity"])
        scored[dataset.name][1].append(dataset.scores[index])

    per_dataset = tuple(
        _column(d.name, *scored[d.name], (d.name,), resamples, (bootstrap_seed, k))[0] for k, d in enumerate(datasets)
    )
    groups: dict[str, list[SimilarityDataset]] = {}
    for dataset in datasets:
        groups.setdefault(dataset.group, []).append(dataset)
    columns, replicates = [], []
    for k, (group, members) in enumerate(groups.items()):
        predicted = [p for d in members for p in scored[d.name][0]]
        gold = [g for d in members for g in scored[d.name][1]]
        column, column_replicates = _column(
            group, predicted, gold, tuple(d.name for d in members), resamples, (bootstrap_seed, len(datasets) + k)
        )
        columns.append(column)
        replicates.append(column_replicates)
    average = {}
    for metric in _METRICS:
        value = float(np.mean([getattr(c, metric).value for c in columns]))
        average[metric] = interval(value, np.mean([r[metric] for r in replicates], axis=0))
    reused = len(selected) - computed
    return BenchmarkReport(
        model_name, dict(estimator), tuple(columns), per_dataset, average, computed, reused, resamples
    )
