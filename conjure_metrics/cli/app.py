"""The ``conjure`` command line: similarity of prompt pairs, pictures of what differs, checkpoint comparison.

    conjure similarity "a snow leopard" "a bengal tiger" [--pairs pairs.tsv] [--json out.json]
    conjure compare BASE_DIR FINETUNED_DIR --prompts prompts.txt [--json out.json]
    conjure explain "a snow leopard" "a bengal tiger" --out explain.png
    conjure sts --data sts-test.csv --data SICK.txt --model PATH_OR_ID --steps 10 --samples 3 --guidance 7.5

User errors print one line and exit with status 2; progress bars show on a terminal unless ``--quiet``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from conjure_metrics.cli.commands import (
    add_estimator_options,
    compare_command,
    explain_command,
    non_negative_int,
    similarity_command,
)
from conjure_metrics.cli.options import add_checkpoint_arguments
from conjure_metrics.cli.running import run_command
from conjure_metrics.drift.cli import add_drift_command
from conjure_metrics.sts.cli import add_sts_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conjure", description="Semantic similarity as a diffusion model imagines it."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    similarity = commands.add_parser("similarity", help="similarity of prompt pairs")
    similarity.add_argument("prompts", nargs="*", help="two prompts")
    similarity.add_argument("--pairs", help="file with one tab-separated pair of prompts per line")
    similarity.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    add_estimator_options(similarity)
    similarity.set_defaults(run=similarity_command)

    explain = commands.add_parser("explain", help="picture what differs between two prompts, step by step")
    explain.add_argument("prompt_a")
    explain.add_argument("prompt_b")
    explain.add_argument("--out", default="conjure_explain.png", help="PNG file to write (default conjure_explain.png)")
    explain.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    explain.add_argument("--sample-index", type=int, default=0, help="which Monte-Carlo sample to picture")
    explain.add_argument(
        "--highlight", type=non_negative_int, default=2, help="frame the N largest per-step contributions"
    )
    add_estimator_options(explain, exclude=("target_stderr", "max_samples"))
    explain.set_defaults(run=explain_command)

    compare = commands.add_parser("compare", help="how far one checkpoint moved from another, per prompt")
    compare.add_argument("base", help="reference model: diffusers folder or hub id (conjure-zoo: the embedded model)")
    compare.add_argument(
        "other",
        help="model to compare with it: a diffusers folder, a LoRA / PEFT adapter, a training "
        "checkpoint folder (unet/, unet_ema/ or transformer/) or a single .safetensors file",
    )
    compare.add_argument("--prompts", help="file with one prompt per line")
    compare.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    add_estimator_options(compare)
    add_checkpoint_arguments(compare.add_argument_group("checkpoint"))
    compare.set_defaults(run=compare_command)

    add_sts_command(commands)
    add_drift_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
