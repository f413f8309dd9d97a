"""The ``conjure`` command line: similarity of prompt pairs, pictures of what differs, checkpoint comparison.

    conjure similarity "a snow leopard" "a bengal tiger" [--pairs pairs.tsv] [--json out.json]
    conjure compare BASE_DIR FINETUNED_DIR --prompts prompts.txt [--json out.json]
    conjure explain "a snow leopard" "a bengal tiger" --out explain.png
    conjure sts --data sts-test.csv --data SICK.txt --model PATH_OR_ID --steps 10 --samples 3 --guidance 7.5

User errors print one line and exit with status 2; progress bars show on a terminal unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from conjure_metrics.cli_options import add_settings_arguments, settings_from_args
from conjure_metrics.drift.cli import add_drift_command
from conjure_metrics.functional import ConjureResult, conjure_similarity
from conjure_metrics.sts.cli import add_sts_command
from conjure_metrics.sts.formats import split_lines


def _add_estimator_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
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


def _read_text_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file (a byte-order mark, as editors on Windows write, is dropped)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return split_lines(text)


def _read_lines(path: str) -> list[str]:
    lines = [line.strip() for line in _read_text_lines(path)]
    return [line for line in lines if line and not line.startswith("#")]


def _read_pairs(path: str) -> tuple[list[str], list[str]]:
    a, b = [], []
    for number, line in enumerate(_read_text_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected two tab-separated prompts, found {len(fields)} field(s)")
        a.append(fields[0].strip())
        b.append(fields[1].strip())
    return a, b


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


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` torch cannot parse or this machine does not have, before any model loads."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")


def _check_output(option: str, path: str | None) -> None:
    """Fail before minutes of computation, not after, when an output file cannot be written."""
    if path and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{option} {path}: directory {Path(path).resolve().parent} does not exist")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"wrote {path}")


def _similarity(args: argparse.Namespace) -> None:
    if args.pairs:
        first, second = _read_pairs(args.pairs)
    elif len(args.prompts) == 2:
        first, second = [args.prompts[0]], [args.prompts[1]]
    else:
        raise ValueError("give exactly two prompts, or --pairs FILE with one tab-separated pair per line")
    result = conjure_similarity(first, second, args.model, **_settings(args))
    rows = _rows(result, first, second)
    _print_table(rows, [("prompt_a", "prompt A"), ("prompt_b", "prompt B"), ("similarity", "similarity"),
                        ("divergence", "divergence"), ("stderr", "± stderr")])
    _write_json(args.json_path, {"settings": _settings_record(args), "model": args.model or "conjure-zoo",
                                 "mean_similarity": float(result.mean_similarity), "pairs": rows})


def _compare(args: argparse.Namespace) -> None:
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += _read_lines(args.prompts)
    if not prompts:
        raise ValueError("give prompts with --prompts FILE (one per line) or --prompt TEXT")
    result = conjure_similarity(prompts, prompts, args.base, model_b=args.other, **_settings(args))
    rows = [{"prompt": r["prompt_a"], **{k: r[k] for k in ("divergence", "stderr", "similarity")}}
            for r in _rows(result, prompts, prompts)]
    print(f"{args.base}  vs  {args.other}")
    _print_table(rows, [("prompt", "prompt"), ("divergence", "divergence"), ("stderr", "± stderr"),
                        ("similarity", "similarity")])
    _write_json(args.json_path, {"settings": _settings_record(args), "base": args.base, "other": args.other,
                                 "prompts": rows})


def _explain(args: argparse.Namespace) -> None:
    from conjure_metrics.explain import explain

    # matplotlib picks the format from the suffix and adds ".png" when there is none.
    out = args.out if Path(args.out).suffix else f"{args.out}.png"
    _check_output("--out", out)
    result = explain(args.prompt_a, args.prompt_b, args.model, sample_index=args.sample_index, **_settings(args))
    figure = result.figure(highlight=args.highlight, path=out)
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(f"{args.prompt_a!r} vs {args.prompt_b!r}: {result.weighting} divergence {result.divergence[result.weighting]:.4g}")
    print(f"wrote {out}")
    _write_json(args.json_path, {"settings": _settings_record(args), "prompt_a": args.prompt_a, "prompt_b": args.prompt_b,
                                 "divergence": result.divergence, "timesteps": result.timesteps.tolist(),
                                 "contributions": {w: c.tolist() for w, c in result.contributions.items()}})


def _settings_record(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in _settings(args).items() if k != "progress_bar"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conjure", description="Semantic similarity as a diffusion model imagines it.")
    commands = parser.add_subparsers(dest="command", required=True)

    similarity = commands.add_parser("similarity", help="similarity of prompt pairs")
    similarity.add_argument("prompts", nargs="*", help="two prompts")
    similarity.add_argument("--pairs", help="file with one tab-separated pair of prompts per line")
    similarity.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    _add_estimator_options(similarity)
    similarity.set_defaults(run=_similarity)

    explain = commands.add_parser("explain", help="picture what differs between two prompts, step by step")
    explain.add_argument("prompt_a")
    explain.add_argument("prompt_b")
    explain.add_argument("--out", default="conjure_explain.png", help="PNG file to write (default conjure_explain.png)")
    explain.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    explain.add_argument("--sample-index", type=int, default=0, help="which Monte-Carlo sample to picture")
    explain.add_argument("--highlight", type=_non_negative_int, default=2, help="frame the N largest per-step contributions")
    _add_estimator_options(explain, exclude=("target_stderr", "max_samples"))
    explain.set_defaults(run=_explain)

    compare = commands.add_parser("compare", help="how far one checkpoint moved from another, per prompt")
    compare.add_argument("base", help="reference model: diffusers folder or hub id")
    compare.add_argument("other", help="model to compare with it (e.g. the fine-tuned one)")
    compare.add_argument("--prompts", help="file with one prompt per line")
    compare.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    _add_estimator_options(compare)
    compare.set_defaults(run=_compare)

    add_sts_command(commands)
    add_drift_command(commands)
    return parser


USER_ERRORS = (ValueError, TypeError, OSError, ImportError)  # bad input or environment, not a bug


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): what a user error prints."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line on stderr and exit status 2, no traceback."""
    try:
        check_device(getattr(args, "device", None))
        _check_output("--json", getattr(args, "json_path", None))
        args.run(args)
    except USER_ERRORS as error:
        print(f"conjure: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
