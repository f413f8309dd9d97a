"""Score every prompt under the base and each checkpoint, resumably, and assemble the drift report.

The base is loaded once and kept; each checkpoint is loaded in turn and freed before the next. Scores
are computed a chunk of prompts at a time and, with ``results_path``, appended to a JSONL results file
(:class:`~conjure_metrics.sts.results.ResultsFile`) as each chunk finishes: a record counts for a later
run only under the same estimator settings and base (the file's ``settings`` hash) and the same
checkpoint files and prompt (its ``key``), so a killed run picks up where it stopped.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch

from conjure_metrics.denoisers.checkpoints import inspect_checkpoint
from conjure_metrics.denoisers.loading import (
    CHECKPOINT_OPTIONS,
    ModelLike,
    load_against_base,
    load_denoiser,
    named_model,
)
from conjure_metrics.denoisers.lora import release
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.drift.checkpoints import (
    check_model_path,
    model_identity,
    model_name,
    order_checkpoints,
    short_names,
)
from conjure_metrics.drift.progress import Progress, library_bars_off
from conjure_metrics.drift.prompts import group_prompts
from conjure_metrics.drift.report import DriftReport, ExplainedPrompt, assemble_report
from conjure_metrics.explain import explain
from conjure_metrics.functional import score_pairs
from conjure_metrics.settings import ConjureSettings
from conjure_metrics.sts.results import ResultsFile, pair_fingerprint, settings_hash
from conjure_metrics.sts.run import SCORING_VERSION
from conjure_metrics.weighting import Weighting

# Settings that select how scores are computed but not what they are (beyond round-off).
_NOT_SCORE_CHANGING = ("max_batch_size",)


def drift_report(
    base: ModelLike,
    checkpoints: Sequence[ModelLike],
    prompts: Sequence[str],
    groups: Sequence[str | None] | None = None,
    *,
    names: Sequence[str] | None = None,
    num_steps: int = 10,
    num_samples: int = 5,
    guidance_scale: float = 7.5,
    weighting: Weighting | None = None,
    min_noise: float | None = None,
    seed: int = 0,
    max_batch_size: int = 64,
    min_timestep: float = 0.0,
    sampler: str | None = None,
    chunk_size: int = 32,
    results_path: str | os.PathLike | None = None,
    explain_top: int = 0,
    progress_bar: bool | None = None,
    **load_kwargs: Any,
) -> DriftReport:
    """Which prompts each checkpoint moved away from the base, how far, from which checkpoint on, and
    whether the prompts it should have left alone stayed put.

    For every checkpoint and prompt, the drift is the Jeffreys divergence between the base's and the
    checkpoint's reverse diffusion processes under that prompt, exactly what
    ``conjure_similarity(prompts, prompts, base, model_b=checkpoint)`` reports (Monte-Carlo, with a
    standard error). Groups (e.g. ``target`` prompts the fine-tune should change, ``preserve`` prompts
    it should not) get a mean drift per checkpoint with a standard error, and ``target`` over
    ``preserve`` is the report's specificity.

    Args:
        base: the model before fine-tuning: a diffusers folder or hub id (``"conjure-zoo"``: the embedded
            model), or anything :func:`~conjure_metrics.denoisers.loading.load_denoiser` accepts.
        checkpoints: the fine-tuned models, in any order: they are sorted by the training step in their
            names (``checkpoint-500``) when every name carries a distinct one, else kept in this order.
            Each is resolved against the base (:func:`~conjure_metrics.denoisers.loading.load_against_base`):
            a LoRA / PEFT adapter is loaded into the base and removed after its prompts; a training
            checkpoint folder (``unet/``, ``unet_ema/``, ``transformer/``) or a single file loads its
            network only, sharing the base's text encoders, tokenizer, scheduler and VAE.
        prompts: the prompts to measure (each once).
        groups: a group label per prompt (``None``: ungrouped); ``target`` and ``preserve`` give the
            specificity. See :mod:`conjure_metrics.drift.prompts` for reading them from a file.
        names: how the report names each checkpoint (default: the last components of each local path
            that tell the checkpoints apart, a hub id as given, else ``"checkpoint 1"``, ...). An object
            checkpoint is known to the results file by its name only.
        num_steps: reverse steps per trajectory. The estimator's settings (``num_samples``,
            ``guidance_scale``, ``weighting``, ``min_noise``, ``seed``, ``max_batch_size``, ``min_timestep``,
            ``sampler``) are as in :func:`~conjure_metrics.conjure_similarity`; unset ``weighting`` /
            ``min_noise`` take the defaults for comparing two models.
        chunk_size: prompts scored (and appended to the results file) at a time.
        results_path: JSONL file of per-(checkpoint, prompt) scores; a rerun skips what is in it.
        explain_top: picture this many of the most-moved prompts, each at the checkpoint where it moved
            most (:func:`~conjure_metrics.explain.explain`, base as A, checkpoint as B); needs matplotlib
            only to draw them.
        progress_bar: ``None``: a tqdm bar on a terminal, one line per stage on stderr otherwise;
            ``True``: the bar; ``False``: nothing.
        **load_kwargs: for loading models given as paths or ids (e.g. ``device``, ``torch_dtype``), and
            for checkpoints resolved against the base, ``lora_scale`` (default 1) and ``use_ema``
            (default ``True``: a checkpoint folder's ``unet_ema/`` when it has one).

    Example:
        >>> import torch
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> def model(dog_mean):
        ...     means = {"": torch.zeros(4), "a dog": dog_mean * torch.ones(4), "a cat": -torch.ones(4)}
        ...     return GaussianConditionals(means, {k: 0.1 for k in means}, torch.cumprod(1 - linear_betas(), 0))
        >>> report = drift_report(model(1.0), [model(1.5), model(2.0)], ["a dog", "a cat"], ["target", "preserve"],
        ...                       names=["step-100", "step-200"], num_steps=4, num_samples=2, guidance_scale=1.0,
        ...                       min_noise=0.0, progress_bar=False)
        >>> first, second = report.rows[:2]
        >>> first.checkpoint, first.prompt, second.checkpoint, second.prompt
        ('step-200', 'a dog', 'step-100', 'a dog')
        >>> report.rows[-1].drift  # the cat did not move
        0.0
        >>> report.specificity["step-200"] is None  # nothing to divide by: the preserve group stayed put
        True
    """
    settings = ConjureSettings(
        num_steps=num_steps,
        num_samples=num_samples,
        guidance_scale=guidance_scale,
        weighting=weighting,
        min_noise=min_noise,
        seed=seed,
        max_batch_size=max_batch_size,
        min_timestep=min_timestep,
        sampler=sampler,
    ).for_mode("models")
    grouped = group_prompts(prompts, groups)
    checkpoints = _checked_checkpoints(checkpoints)
    names = _checked_names(checkpoints, names)
    for name, value, least in (("chunk_size", chunk_size, 1), ("explain_top", explain_top, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int of at least {least}, got {value!r}")
    base = named_model(base)
    check_model_path(base, "base")
    for checkpoint in checkpoints:
        check_model_path(checkpoint, "checkpoint")
        inspect_checkpoint(checkpoint, "checkpoint")  # a corrupted or empty checkpoint: one line, nothing loaded
    base_kwargs = {k: v for k, v in load_kwargs.items() if k not in CHECKPOINT_OPTIONS}
    checkpoint_options = {k: v for k, v in load_kwargs.items() if k in CHECKPOINT_OPTIONS}

    base_name = model_name(base, "base")
    record = settings.record(exclude=("target_stderr", "max_samples"))
    results_settings = _results_settings(model_identity(base, base_name), record, load_kwargs)
    store = ResultsFile(results_path) if results_path is not None else None
    done = store.read(results_settings, _complete_record(settings.num_samples)) if store is not None else {}
    keys = {
        (name, prompt): pair_fingerprint(model_identity(model, name), prompt)
        for model, name in zip(checkpoints, names)
        for prompt in grouped.prompts
    }
    scores = {where: done[key] for where, key in keys.items() if key in done}
    reused = len(scores)
    ordered = order_checkpoints(names)
    pending = {info.name: [p for p in grouped.prompts if (info.name, p) not in scores] for _, info in ordered}

    progress = Progress(progress_bar, sum(map(len, pending.values())) + min(explain_top, len(grouped.prompts)))
    loaded_base: list[Denoiser] = []

    def base_denoiser() -> Denoiser:
        if not loaded_base:
            loaded_base.append(_load(base, "base", base_name, dict(base_kwargs, sampler=sampler), progress))
        return loaded_base[0]

    try:
        for number, (index, info) in enumerate(ordered, start=1):
            todo = pending[info.name]
            where = f"{info.name} ({number}/{len(ordered)})"
            if not todo:
                progress.stage(f"{where}: all {len(grouped.prompts)} prompt(s) reused from {results_path}")
                continue
            done_here = len(grouped.prompts) - len(todo)
            progress.stage(f"{where}: scoring {len(todo)} prompt(s)" + (f", {done_here} reused" if done_here else ""))
            reference, checkpoint = _load_checkpoint(
                base_denoiser(), base, checkpoints[index], info.name, sampler, base_kwargs, checkpoint_options, progress
            )
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                records = [
                    dict(score, key=keys[info.name, score["prompt"]], settings=results_settings, checkpoint=info.name)
                    for score in _score_chunk(chunk, reference, checkpoint, settings)
                ]
                if store is not None:
                    store.append(records)
                scores.update(((info.name, r["prompt"]), r) for r in records)
                progress.advance(len(chunk))
            release(checkpoint)
            del reference, checkpoint
            _release_memory()

        report = assemble_report(
            base_name,
            [info for _, info in ordered],
            grouped.prompts,
            grouped.groups,
            scores,
            record,
            computed=len(scores) - reused,
            reused=reused,
        )
        if explain_top:
            models = dict(zip(names, checkpoints))
            explained = _explain_most_moved(
                report, explain_top, base_denoiser, base, models, record, base_kwargs, checkpoint_options, progress
            )
            report = replace(report, explanations=explained)
    finally:
        progress.close()
    return report


def _results_settings(base_identity: str, settings: dict[str, Any], load_kwargs: dict[str, Any]) -> str:
    """The results file's ``settings`` hash: what, besides the checkpoint and the prompt, changes a score."""
    loading = {k: str(v) for k, v in sorted(load_kwargs.items()) if k != "device"}
    return settings_hash(
        {
            "report": "drift",
            "base": base_identity,
            "scoring": SCORING_VERSION,
            "load": loading,
            **{k: v for k, v in settings.items() if k not in _NOT_SCORE_CHANGING},
        }
    )


def _score_chunk(
    prompts: list[str], base: Denoiser, checkpoint: Denoiser, settings: ConjureSettings
) -> list[dict[str, Any]]:
    """Each prompt's drift, standard error, similarity and per-sample estimates, as plain values."""
    result = score_pairs(prompts, prompts, base, checkpoint, settings, progress_bar=False)
    weighting = result.settings.weighting
    assert weighting is not None  # score_pairs filled in the mode's default
    per_sample = result.terms.samples(weighting)
    return [
        {
            "prompt": prompt,
            "divergence": float(result.divergence[i]),
            "stderr": _finite_or_none(float(result.stderr[i])),
            "similarity": float(result.similarity[i]),
            "samples": per_sample[i].tolist(),
        }
        for i, prompt in enumerate(prompts)
    ]


def _checked_checkpoints(checkpoints: Any) -> list[ModelLike]:
    if isinstance(checkpoints, (str, os.PathLike)) or not isinstance(checkpoints, Sequence):
        raise TypeError(f"checkpoints must be a list of models, got {type(checkpoints).__name__}")
    if not checkpoints:
        raise ValueError("give at least one checkpoint to compare with the base")
    return list(checkpoints)


def _complete_record(num_samples: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a results record holds what a drift row needs: every sample's estimate and the stderr."""

    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def complete(record: dict[str, Any]) -> bool:
        samples, stderr = record.get("samples"), record.get("stderr")
        return (
            isinstance(samples, list)
            and len(samples) == num_samples
            and all(finite(value) for value in samples)
            and (stderr is None or finite(stderr))
        )

    return complete


def _checked_names(checkpoints: list[ModelLike], names: Sequence[str] | None) -> list[str]:
    if names is None:
        names = short_names(checkpoints)
    names = list(names)
    if len(names) != len(checkpoints):
        raise ValueError(f"names must name every checkpoint: {len(names)} names for {len(checkpoints)} checkpoints")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"checkpoint {repeated[0]!r} is given twice")
    return names


def _explain_most_moved(
    report: DriftReport,
    count: int,
    base_denoiser: Any,
    base: ModelLike,
    models: dict[str, ModelLike],
    settings: dict[str, Any],
    load_kwargs: dict[str, Any],
    checkpoint_options: dict[str, Any],
    progress: Progress,
) -> tuple[ExplainedPrompt, ...]:
    """:func:`explain` pictures of the ``count`` most-moved prompts, loading each checkpoint needed once."""
    chosen = report.most_moved(count)
    pictures: dict[str, ExplainedPrompt] = {}
    for info in report.checkpoints:
        rows = [row for row in chosen if row.checkpoint == info.name]
        if not rows:
            continue
        reference, checkpoint = _load_checkpoint(
            base_denoiser(),
            base,
            models[info.name],
            info.name,
            settings.get("sampler"),
            load_kwargs,
            checkpoint_options,
            progress,
        )
        for row in rows:
            progress.stage(f"explaining {row.prompt!r} at {info.name}")
            explanation = explain(row.prompt, row.prompt, reference, model_b=checkpoint, **settings, progress_bar=False)
            pictures[row.prompt] = ExplainedPrompt(row.prompt, info.name, row.drift, explanation)
            progress.advance()
        release(checkpoint)
        del reference, checkpoint
        _release_memory()
    return tuple(pictures[row.prompt] for row in chosen)


def _load(model: ModelLike, role: str, name: str, load_kwargs: dict[str, Any], progress: Progress) -> Denoiser:
    progress.stage(f"loading {role} {name}")
    # Only paths and ids load through diffusers / transformers; importing them otherwise costs seconds.
    with library_bars_off() if isinstance(model, (str, os.PathLike)) else nullcontext():
        return load_denoiser(model, role, **load_kwargs)


def _load_checkpoint(
    reference: Denoiser,
    base: ModelLike,
    checkpoint: ModelLike,
    name: str,
    sampler: str | None,
    load_kwargs: dict[str, Any],
    options: dict[str, Any],
    progress: Progress,
) -> tuple[Denoiser, Denoiser]:
    """The base side and the checkpoint side for one checkpoint, resolved against the loaded base: a LoRA
    gives two views of the base, a network-only checkpoint shares the base's other parts."""
    progress.stage(f"loading checkpoint {name}")
    base_path = base if isinstance(base, (str, os.PathLike)) and os.path.isdir(base) else None
    with library_bars_off() if isinstance(checkpoint, (str, os.PathLike)) else nullcontext():
        return load_against_base(
            reference, checkpoint, base_path=base_path, sampler=sampler, argument="checkpoint", **options, **load_kwargs
        )


def _release_memory() -> None:
    """Give a freed checkpoint's GPU memory back before the next one loads.

    On the CPU, dropping the last reference frees a checkpoint at once; on a GPU a reference cycle
    (or the allocator's cache) would keep gigabytes the next checkpoint needs, so collect there only
    (a full collection costs about a second)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value  # one sample has no standard error
