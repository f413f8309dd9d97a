"""Drift against checkpoint: one line per group, and one per prompt when there are few."""

from __future__ import annotations

import io
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conjure_metrics.drift.report import DriftReport

# More per-prompt lines than this hide the group lines they surround.
MAX_PROMPT_LINES = 8


def drift_figure(report: DriftReport) -> Any:
    """A matplotlib ``Figure``: mean drift per group at each checkpoint with ± standard-error bars
    (bold), each prompt's drift (thin, in its group's colour) when there are at most
    :data:`MAX_PROMPT_LINES` prompts. Built without pyplot, so nothing needs closing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("drift plots need matplotlib: pip install 'conjure_metrics[plot]'") from error

    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    steps = all(c.step is not None for c in report.checkpoints)
    # Lines join checkpoints of one run; unordered ones (an edit and its control) get markers only.
    line = "-" if steps else "none"
    positions = [c.position for c in report.checkpoints]
    group_names = list(dict.fromkeys(g.group for g in report.groups))
    colours = {g: f"C{i % 10}" for i, g in enumerate(group_names)}
    if len(report.prompts) <= MAX_PROMPT_LINES:
        for prompt, group in report.prompts:
            rows = {r.checkpoint: r for r in report.rows if r.prompt == prompt}
            ax.errorbar(
                positions,
                [rows[c.name].drift for c in report.checkpoints],
                yerr=[rows[c.name].stderr or 0.0 for c in report.checkpoints],
                color=colours[group],
                linewidth=0.8,
                linestyle=line,
                alpha=0.45,
                capsize=2,
                marker=".",
                label=_short(prompt),
            )
    for group in group_names:
        means = {g.checkpoint: g.mean for g in report.groups if g.group == group}
        ax.errorbar(
            positions,
            [means[c.name].value for c in report.checkpoints],
            yerr=[means[c.name].stderr or 0.0 for c in report.checkpoints],
            color=colours[group],
            linewidth=2.5,
            linestyle=line,
            capsize=4,
            marker="o",
            markersize=7,
            label=f"{group} (mean)",
        )
    ax.set_xticks(positions, [str(c.step) if steps else _short(c.name, 24) for c in report.checkpoints])
    if not steps:
        ax.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    ax.set_xlabel("training step" if steps else "checkpoint")
    ax.set_ylabel("drift from base (Jeffreys divergence)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Drift from {_short(PurePath(report.base).name or report.base, 40)}", fontsize=10)
    return figure


def png_bytes(figure: Any, dpi: int = 110) -> bytes:
    """A figure as PNG bytes (closed afterwards when it came from pyplot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if figure.canvas.manager is not None:  # made by pyplot, which keeps it alive until closed
        import matplotlib.pyplot as plt

        plt.close(figure)
    return buffer.getvalue()


def _short(text: str, length: int = 32) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
