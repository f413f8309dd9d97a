"""The README's main job: similarities between a few prompts on the embedded model, as a table.

Run ``python -m conjure_metrics.demo`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence

from conjure_metrics.cli.options import add_settings_arguments, settings_from_args
from conjure_metrics.cli.running import USER_ERRORS, one_line
from conjure_metrics.denoisers.loading import embedded_model_path
from conjure_metrics.functional import conjure_similarity

ZOO_PROMPTS = ("a snow leopard", "a bengal tiger", "a zebra", "a pale grey cat with dark spots")


def _model_and_notice(model: str | None):
    if model is not None:
        return model, f"model: {model}"
    try:
        return embedded_model_path(), "model: embedded conjure-zoo"
    except FileNotFoundError:
        from conjure_metrics.denoisers.diffusers import DiffusersDenoiser
        from conjure_metrics.tiny import build_tiny_components

        notice = (
            "NOTE: no embedded conjure-zoo model in this install; using a tiny RANDOMLY INITIALISED model, "
            "so the numbers below mean nothing about language"
        )
        return DiffusersDenoiser(**build_tiny_components()), notice


def format_table(prompts: Sequence[str], similarity: dict, stderr: dict) -> str:
    """A similarity matrix, each similarity with its standard error (delta method from the divergence's)."""
    width = max(len(p) for p in prompts)
    lines = [" " * width + " | " + " | ".join(f"{i:>15}" for i in range(len(prompts)))]
    for i, row in enumerate(prompts):
        cells = []
        for j in range(len(prompts)):
            key = (min(i, j), max(i, j))
            cells.append(f"{'1':>15}" if i == j else f"{similarity[key]:>7.3f} ±{stderr[key]:<6.3f}")
        lines.append(f"{row:>{width}} | " + " | ".join(cells) + f"   [{i}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompts", nargs="*", default=list(ZOO_PROMPTS))
    parser.add_argument("--model", default=None, help="diffusers folder or hub id (default: embedded conjure-zoo)")
    add_settings_arguments(
        parser.add_argument_group("estimator"),
        exclude=("target_stderr", "max_samples"),
        num_samples=4,
        guidance_scale=3.0,
    )
    args = parser.parse_args(argv)
    if len(args.prompts) < 2:
        parser.error("give at least two prompts")

    pairs = list(itertools.combinations(range(len(args.prompts)), 2))
    try:
        settings = settings_from_args(args)
        model, notice = _model_and_notice(args.model)
        print(notice)
        result = conjure_similarity(
            [args.prompts[i] for i, _ in pairs],
            [args.prompts[j] for _, j in pairs],
            model,
            **settings.record(exclude=("target_stderr", "max_samples")),
            progress_bar=None,
        )
    except USER_ERRORS as error:  # one line, like `conjure`
        parser.error(one_line(error))
    # The stderr shown is that of the similarity, by the delta method on 1 / (1 + J).
    similarity = {pair: float(s) for pair, s in zip(pairs, result.similarity)}
    stderr = {pair: float(e * s**2) for pair, e, s in zip(pairs, result.stderr, result.similarity)}
    used = result.settings
    print(
        f"ConjureSimilarity ({used.weighting}, noise floor {used.min_noise}, {used.num_steps} steps, "
        f"{used.num_samples} samples, guidance {used.guidance_scale}, seed {used.seed})"
    )
    print(format_table(args.prompts, similarity, stderr))
    best = max(pairs, key=similarity.__getitem__)
    print(f"most similar: {args.prompts[best[0]]!r} ~ {args.prompts[best[1]]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
