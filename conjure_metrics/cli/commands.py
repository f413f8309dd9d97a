"""The ``similarity``, ``compare`` and ``explain`` commands (``sts`` and ``drift`` live with their packages)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

from conjure_metrics.cli.files import read_lines, read_pairs, write_json
from conjure_metrics.cli.options import add_settings_arguments, settings_from_args
from conjure_metrics.cli.running import check_output
from conjure_metrics.functional import ConjureResult, conjure_similarity


def add_estimator_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group("estimator")
    add_settings_arguments(group, exclude)
    group.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: where the model loads)")
    group.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    chosen = settings_from_args(args).record()
    settings = {name: chosen[name] for name in chosen if hasattr(args, name)}
    settings["progress_bar"] = False if args.quiet else None
    if args.device is not None:
        settings["device"] = args.device
    return settings


def _rows(result: ConjureResult, first: Sequence[str], second: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"prompt_a": a, "prompt_b": b, "similarity": float(s), "divergence": float(d),
         "stderr": None if math.isnan(float(e)) else float(e)}
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
    if args.pairs:
        first, second = read_pairs(args.pairs)
    elif len(args.prompts) == 2:
        first, second = [args.prompts[0]], [args.prompts[1]]
    else:
        raise ValueError("give exactly two prompts, or --pairs FILE with one tab-separated pair per line")
    result = conjure_similarity(first, second, args.model, **_settings(args))
    rows = _rows(result, first, second)
    _print_table(rows, [("prompt_a", "prompt A"), ("prompt_b", "prompt B"), ("similarity", "similarity"),
                        ("divergence", "divergence"), ("stderr", "± stderr")])
    write_json(args.json_path, {"settings": _settings_record(args), "model": args.model or "conjure-zoo",
                                 "mean_similarity": float(result.mean_similarity), "pairs": rows})


def compare_command(args: argparse.Namespace) -> None:
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_lines(args.prompts)
    if not prompts:
        raise ValueError("give prompts with --prompts FILE (one per line) or --prompt TEXT")
    result = conjure_similarity(prompts, prompts, args.base, model_b=args.other, **_settings(args))
    rows = [{"prompt": r["prompt_a"], **{k: r[k] for k in ("divergence", "stderr", "similarity")}}
            for r in _rows(result, prompts, prompts)]
    print(f"{args.base}  vs  {args.other}")
    _print_table(rows, [("prompt", "prompt"), ("divergence", "divergence"), ("stderr", "± stderr"),
                        ("similarity", "similarity")])
    write_json(args.json_path, {"settings": _settings_record(args), "base": args.base, "other": args.other,
                                 "prompts": rows})


def explain_command(args: argparse.Namespace) -> None:
    from conjure_metrics.explain import explain

    # matplotlib picks the format from the suffix and adds ".png" when there is none.
    out = args.out if Path(args.out).suffix else f"{args.out}.png"
    check_output("--out", out)
    result = explain(args.prompt_a, args.prompt_b, args.model, sample_index=args.sample_index, **_settings(args))
    figure = result.figure(highlight=args.highlight, path=out)
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(f"{args.prompt_a!r} vs {args.prompt_b!r}: {result.weighting} divergence {result.divergence[result.weighting]:.4g}")
    print(f"wrote {out}")
    write_json(args.json_path, {"settings": _settings_record(args), "prompt_a": args.prompt_a, "prompt_b": args.prompt_b,
                                 "divergence": result.divergence, "timesteps": result.timesteps.tolist(),
                                 "contributions": {w: c.tolist() for w, c in result.contributions.items()}})


def _settings_record(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in _settings(args).items() if k != "progress_bar"}
