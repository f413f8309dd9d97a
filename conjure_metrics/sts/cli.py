"""``conjure sts``: the benchmark table on local human-annotated data.

    conjure sts --data sts-test.csv --data SICK_test_annotated.txt --data STS12-en-test \\
        --model CompVis/stable-diffusion-v1-4 --results results.jsonl --json table.json
    torchrun --nproc_per_node 8 -m conjure_metrics.sts.cli --data ... (same options)

:func:`add_sts_command` registers the command on the ``conjure`` parser; running this module
directly gives the same command on its own (what ``torchrun -m`` needs). User errors print one
line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from conjure_metrics.cli.options import add_settings_arguments, settings_from_args
from conjure_metrics.cli.running import run_command
from conjure_metrics.drift.progress import library_bars_off
from conjure_metrics.sts.formats import FORMATS, load_datasets
from conjure_metrics.sts.run import run_benchmark


def add_sts_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sts`` to the ``add_subparsers()`` object of a parser; returns the new sub-parser."""
    parser = subparsers.add_parser(
        "sts",
        help="Spearman / Pearson correlation with human similarity scores",
        description="Benchmark on local STS-B, STS12-16, SICK-R, WordSim353, SimLex-999 "
        "or Lee files; resumable with --results, shards over torchrun ranks.",
    )
    _add_arguments(parser)
    parser.set_defaults(run=_run)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="a dataset file or SentEval / Lee directory (repeatable)",
    )
    data.add_argument(
        "--format",
        default="auto",
        choices=["auto", *FORMATS],
        help="format of every --data (default: detected from names and headers)",
    )
    data.add_argument(
        "--max-pairs", type=int, default=None, metavar="N", help="at most N pairs per dataset, evenly spaced through it"
    )
    estimator = parser.add_argument_group("estimator")
    estimator.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    add_settings_arguments(estimator, exclude=("target_stderr", "max_samples"), num_samples=3)
    estimator.add_argument("--chunk-size", type=int, default=32, help="pairs per chunk, per rank (default 32)")
    estimator.add_argument(
        "--device", default=None, help="e.g. cpu, cuda (default: where the model loads; cuda:LOCAL_RANK under torchrun)"
    )
    estimator.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="load the model in this precision (default: float32; float16 is for GPUs, bfloat16 biases the metric)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--results",
        default=None,
        metavar="JSONL",
        help="per-pair results, appended chunk by chunk; a rerun skips the pairs already in it",
    )
    output.add_argument("--json", dest="json_path", default=None, help="also write the table to this JSON file")
    output.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    output.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> None:
    datasets = [dataset for path in args.data for dataset in load_datasets(path, args.format)]
    load_kwargs: dict[str, Any] = {}
    if args.device is not None:
        load_kwargs["device"] = args.device
    if args.dtype is not None:
        import torch

        load_kwargs["torch_dtype"] = getattr(torch, args.dtype)
    # --quiet silences the libraries' loading bars too, not only ours.
    with library_bars_off() if args.quiet else nullcontext():
        report = run_benchmark(
            datasets,
            args.model,
            **settings_from_args(args).record(exclude=("target_stderr", "max_samples")),
            max_pairs=args.max_pairs,
            chunk_size=args.chunk_size,
            results_path=args.results,
            bootstrap_resamples=args.bootstrap,
            progress_bar=False if args.quiet else None,
            **load_kwargs,
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(report.table())
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        print(f"wrote {args.json_path}")


def main(argv: Sequence[str] | None = None) -> int:
    """``conjure sts`` on its own: ``python -m conjure_metrics.sts.cli`` or ``torchrun -m conjure_metrics.sts.cli``."""
    parser = argparse.ArgumentParser(prog="conjure sts", description="Benchmark on human similarity scores.")
    _add_arguments(parser)
    parser.set_defaults(run=_run)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
