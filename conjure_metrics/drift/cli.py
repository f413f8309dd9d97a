"""``conjure drift``: the drift report on the command line, a thin shell over :func:`drift_report`.

    conjure drift BASE output/checkpoint-500 output/checkpoint-1000 --prompts prompts.txt \\
        --groups target,preserve --report drift.html --plot drift.png --json drift.json --results drift.jsonl

Prints the group summary and the table; writes each requested file atomically once everything is
computed (output directories are checked before anything loads). User errors print one line and exit
with status 2 (through :func:`conjure_metrics.cli.running.run_command`).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from conjure_metrics.cli.options import (
    add_checkpoint_arguments,
    add_settings_arguments,
    checkpoint_options_from_args,
    settings_from_args,
)
from conjure_metrics.drift.files import check_output_directory, write_atomically
from conjure_metrics.drift.plot import png_bytes
from conjure_metrics.drift.prompts import read_prompts
from conjure_metrics.drift.run import drift_report


def add_drift_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``drift`` to the ``add_subparsers()`` object of a parser; returns the new sub-parser."""
    parser = subparsers.add_parser(
        "drift",
        help="which prompts a fine-tune moved, checkpoint by checkpoint",
        description="Drift of each prompt's meaning from BASE at each checkpoint, per group (target / preserve) "
        "with specificity; a plot, an HTML report and JSON; resumable with --results.",
    )
    parser.add_argument(
        "base", help="the model before fine-tuning: diffusers folder or hub id (conjure-zoo: the embedded model)"
    )
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="checkpoint",
        help="fine-tuned checkpoints: diffusers folders, LoRA / PEFT adapters, training checkpoint "
        "folders or single .safetensors files (sorted by the step in names like checkpoint-500)",
    )
    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help="one prompt per line, optionally 'target: ...' / 'preserve: ...'; or a .tsv with "
        "'prompt' and 'group' columns",
    )
    prompts.add_argument(
        "--groups",
        default=None,
        metavar="LIST",
        help="comma-separated group labels every prompt must carry, e.g. target,preserve",
    )
    estimator = parser.add_argument_group("estimator")
    add_settings_arguments(estimator, exclude=("target_stderr", "max_samples"))
    estimator.add_argument("--chunk-size", type=int, default=32, help="prompts scored at a time (default 32)")
    estimator.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: where the model loads)")
    add_checkpoint_arguments(parser.add_argument_group("checkpoint"))
    output = parser.add_argument_group("output")
    output.add_argument("--json", dest="json_path", default=None, metavar="PATH", help="write everything as JSON")
    output.add_argument("--plot", default=None, metavar="PNG", help="write the drift-vs-checkpoint plot")
    output.add_argument("--report", default=None, metavar="HTML", help="write one self-contained HTML report")
    output.add_argument(
        "--explain-top",
        type=int,
        default=3,
        metavar="N",
        help="in --report, picture the N most-moved prompts, base vs checkpoint (default 3)",
    )
    output.add_argument(
        "--results",
        default=None,
        metavar="JSONL",
        help="per-(checkpoint, prompt) scores, appended chunk by chunk; a rerun skips them",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    parser.set_defaults(run=_run)
    return parser


def _run(args: argparse.Namespace) -> None:
    outputs = {"--json": args.json_path, "--plot": args.plot, "--report": args.report}
    for option, path in outputs.items():
        check_output_directory(option, path)
    named = [os.path.abspath(path) for path in outputs.values() if path]
    if len(set(named)) < len(named):
        raise ValueError("--json, --plot and --report must name different files")
    if args.plot or args.report:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot and --report need matplotlib: pip install 'conjure_metrics[plot]'") from None
    if args.explain_top < 0:
        raise ValueError(f"--explain-top must be >= 0, got {args.explain_top}")
    expected = None if args.groups is None else [g.strip() for g in args.groups.split(",") if g.strip()]
    if expected is not None and not expected:
        raise ValueError("--groups needs at least one label, e.g. --groups target,preserve")
    grouped = read_prompts(args.prompts, expected)
    report = drift_report(
        args.base,
        args.checkpoints,
        list(grouped.prompts),
        list(grouped.groups),
        **settings_from_args(args).record(exclude=("target_stderr", "max_samples")),
        chunk_size=args.chunk_size,
        results_path=args.results,
        explain_top=args.explain_top if args.report else 0,
        progress_bar=False if args.quiet else None,
        **({"device": args.device} if args.device else {}),
        **checkpoint_options_from_args(args),
    )

    print(f"drift from {report.base}")
    print(report.summary())
    print()
    print(report.table())
    # Everything is rendered before anything is written: a failure leaves no partial set of files.
    rendered: dict[str, str | bytes] = {}
    if args.json_path:
        rendered[args.json_path] = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    if args.plot:
        rendered[args.plot] = png_bytes(report.figure())
    if args.report:
        rendered[args.report] = report.html()
    for path, data in rendered.items():
        write_atomically(path, data)
        print(f"wrote {path}")
