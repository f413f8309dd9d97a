"""The ``similarity``, ``compare`` and ``explain`` commands (``sts`` and ``drift`` live with their packages)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conjure_metrics.cli.files import check_regular_file, read_lines, read_pairs, write_json
from conjure_metrics.cli.options import add_settings_arguments, checkpoint_options_from_args, settings_from_args
from conjure_metrics.cli.running import Stages, check_output
from conjure_metrics.denoisers.loading import load_pair
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.drift.progress import library_bars_off
from conjure_metrics.functional import ConjureResult, score_pairs
from conjure_metrics.settings import ConjureSettings
from conjure_metrics.validation import check_prompts


def add_estimator_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group("estimator")
    add_settings_arguments(group, exclude)
    group.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: where the model loads)")
    group.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a command ran with (and its device), as its JSON output records them."""
    chosen = settings_from_args(args).record()
    settings = {name: chosen[name] for name in chosen if hasattr(args, name)}
    if args.device is not None:
        settings["device"] = args.device
    return settings


def _load(
    args: argparse.Namespace,
    stages: Stages,
    model: str | None,
    model_b: str | None = None,
) -> tuple[ConjureSettings, Denoiser, Denoiser | None]:
    """The checked settings and the loaded model(s), the loading announced as a stage."""
    settings = settings_from_args(args)
    stages.stage(f"loading {model or 'conjure-zoo'}" + (f" and {model_b}" if model_b else ""))
    with library_bars_off():
        options = {"device": args.device} if args.device is not None else {}
        denoiser_a, denoiser_b = load_pair(
            model, model_b, settings.sampler, {**options, **checkpoint_options_from_args(args)}
        )
    return settings, denoiser_a, denoiser_b


def _scoring(stages: Stages, what: str, settings: ConjureSettings) -> None:
    stages.stage(
        f"scoring {what}: {settings.num_steps} steps x {settings.num_samples} sample(s)"
        + ("" if stages.bar else " (no bar: not a terminal)")
    )


def _rows(result: ConjureResult, first: Sequence[str], second: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "prompt_a": a,
            "prompt_b": b,
            "similarity": float(s),
            "divergence": float(d),
            "stderr": None if math.isnan(float(e)) else float(e),
        }
        for a, b, s, d, e in zip(first, second, result.similarity, result.divergence, result.stderr)
    ]


def _print_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]
        if value is None:
            return "n/a"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    widths = [max(len(title), *(len(cell(r, key)) for r in rows)) for key, title in columns]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell(row, key).ljust(w) for (key, _), w in zip(columns, widths)))


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def similarity_command(args: argparse.Namespace) -> None:
    if args.pairs is not None and args.prompts:
        raise ValueError(
            f"give either two prompts or --pairs FILE, not both (got {len(args.prompts)} prompt(s) "
            f"and --pairs {args.pairs})"
        )
    if args.pairs is not None:
        check_regular_file(args.pairs, "--pairs")
        first, second = read_pairs(args.pairs)
        if not first:
            raise ValueError(f"--pairs {args.pairs}: no pairs in the file")
    elif len(args.prompts) == 2:
        first, second = [args.prompts[0]], [args.prompts[1]]
    else:
        raise ValueError("give exactly two prompts, or --pairs FILE with one tab-separated pair per line")
    first, second = check_prompts(first, second)
    stages = Stages(args.quiet)
    settings, denoiser_a, denoiser_b = _load(args, stages, args.model)
    _scoring(stages, f"{len(first)} pair(s)", settings)
    result = score_pairs(first, second, denoiser_a, denoiser_b, settings, progress_bar=stages.bar)
    rows = _rows(result, first, second)
    _print_table(
        rows,
        [
            ("prompt_a", "prompt A"),
            ("prompt_b", "prompt B"),
            ("similarity", "similarity"),
            ("divergence", "divergence"),
            ("stderr", "± stderr"),
        ],
    )
    write_json(
        args.json_path,
        {
            "settings": _settings(args),
            "model": args.model or "conjure-zoo",
            "mean_similarity": float(result.mean_similarity),
            "pairs": rows,
        },
    )


def compare_command(args: argparse.Namespace) -> None:
    prompts = list(args.prompt or [])
    if args.prompts is not None:
        check_regular_file(args.prompts, "--prompts")
        prompts += read_lines(args.prompts)
    if not prompts:
        raise ValueError("give prompts with --prompts FILE (one per line) or --prompt TEXT")
    prompts, _ = check_prompts(prompts, prompts)
    stages = Stages(args.quiet)
    settings, denoiser_a, denoiser_b = _load(args, stages, args.base, args.other)
    _scoring(stages, f"{len(prompts)} prompt(s) under both models", settings)
    result = score_pairs(prompts, prompts, denoiser_a, denoiser_b, settings, progress_bar=stages.bar)
    rows = [
        {"prompt": r["prompt_a"], **{k: r[k] for k in ("divergence", "stderr", "similarity")}}
        for r in _rows(result, prompts, prompts)
    ]
    print(f"{args.base}  vs  {args.other}")
    _print_table(
        rows, [("prompt", "prompt"), ("divergence", "divergence"), ("stderr", "± stderr"), ("similarity", "similarity")]
    )
    write_json(args.json_path, {"settings": _settings(args), "base": args.base, "other": args.other, "prompts": rows})


def explain_command(args: argparse.Namespace) -> None:
    from conjure_metrics.explain import check_sample_index, explain_with

    # Checked as given: "" or a directory would otherwise become ".png" or "DIR.png" below.
    check_output("--out", args.out)
    if Path(args.out).name.lower() in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):  # a suffix with no name
        raise ValueError(f"--out {args.out}: give a file name, e.g. explain{Path(args.out).name}")
    # matplotlib picks the format from the suffix and adds ".png" when there is none.
    out = args.out if Path(args.out).suffix else f"{args.out}.png"
    check_output("--out", out)
    check_prompts([args.prompt_a], [args.prompt_b])
    check_sample_index(args.sample_index, args.num_samples)
    stages = Stages(args.quiet)
    settings, denoiser_a, denoiser_b = _load(args, stages, args.model)
    _scoring(stages, "1 pair", settings)
    result = explain_with(
        args.prompt_a,
        args.prompt_b,
        denoiser_a,
        denoiser_b,
        settings,
        sample_index=args.sample_index,
        progress_bar=stages.bar,
    )
    stages.stage(f"drawing {out}")
    figure = result.figure(highlight=args.highlight, path=out)
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(
        f"{args.prompt_a!r} vs {args.prompt_b!r}: {result.weighting} divergence {result.divergence[result.weighting]:.4g}"
    )
    print(f"wrote {out}")
    write_json(
        args.json_path,
        {
            "settings": _settings(args),
            "prompt_a": args.prompt_a,
            "prompt_b": args.prompt_b,
            "divergence": result.divergence,
            "timesteps": result.timesteps.tolist(),
            "contributions": {w: c.tolist() for w, c in result.contributions.items()},
        },
    )
