"""What ``conjure drift`` measured: rows per (checkpoint, prompt), group means, specificity, onset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from conjure_metrics.drift.checkpoints import CheckpointInfo
from conjure_metrics.drift.prompts import PRESERVE, TARGET
from conjure_metrics.drift.stats import Estimate, group_mean, ratio_of_means

if TYPE_CHECKING:
    from conjure_metrics.explain import Explanation


@dataclass(frozen=True)
class DriftRow:
    """How far one checkpoint moved one prompt from the base.

    ``drift`` is the Jeffreys divergence between the base's and the checkpoint's reverse processes
    under the prompt, ``stderr`` its Monte-Carlo standard error (``None`` with one sample),
    ``similarity`` ``1 / (1 + drift)`` and ``samples`` the per-sample estimates behind ``drift``.
    """

    checkpoint: str
    step: int | None
    prompt: str
    group: str
    drift: float
    stderr: float | None
    similarity: float
    samples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "step": self.step,
            "prompt": self.prompt,
            "group": self.group,
            "drift": self.drift,
            "stderr": self.stderr,
            "similarity": self.similarity,
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class GroupDrift:
    """Mean drift of a group's prompts at one checkpoint."""

    group: str
    checkpoint: str
    num_prompts: int
    mean: Estimate


@dataclass(frozen=True)
class ExplainedPrompt:
    """The :func:`~conjure_metrics.explain.explain` pictures of one prompt, base (A) vs ``checkpoint`` (B)."""

    prompt: str
    checkpoint: str
    drift: float
    explanation: Explanation


@dataclass(frozen=True)
class DriftReport:
    """The result of :func:`~conjure_metrics.drift.drift_report`.

    Attributes:
        base: the base model's name.
        checkpoints: in training order (by the step in their names when each has a distinct one).
        settings: the estimator settings used (the "models" mode defaults filled in).
        prompts: ``(prompt, group)`` in the order given.
        rows: one per (checkpoint, prompt), largest drift first.
        groups: one per (group, checkpoint), groups in order of first appearance, checkpoints in order.
        specificity: checkpoint -> mean drift of the ``target`` group over that of the ``preserve``
            group (with a delta-method standard error; ``None`` where the preserve group did not move);
            empty unless both groups exist.
        onset: group -> the first checkpoint at which its mean drift reaches half its largest value
            (``None`` for a group that never moved); empty unless the checkpoints are in training order
            (two or more, each name carrying its step).
        explanations: pictures of the most-moved prompts (see ``explain_top``).
        computed, reused: (checkpoint, prompt) scores computed now and taken from the results file.
    """

    base: str
    checkpoints: tuple[CheckpointInfo, ...]
    settings: dict[str, Any]
    prompts: tuple[tuple[str, str], ...]
    rows: tuple[DriftRow, ...]
    groups: tuple[GroupDrift, ...]
    specificity: dict[str, Estimate | None]
    onset: dict[str, str | None]
    explanations: tuple[ExplainedPrompt, ...] = ()
    computed: int = 0
    reused: int = 0

    def row_cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted cells of every row, largest drift first (the text and HTML tables)."""
        header = ["checkpoint", "group", "prompt", "drift", "± stderr", "similarity"]
        return header, [
            [
                r.checkpoint,
                r.group,
                r.prompt,
                format_number(r.drift),
                format_number(r.stderr),
                format_number(r.similarity),
            ]
            for r in self.rows
        ]

    def summary_cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted cells of the group summary: mean drift per group and checkpoint, the
        onset, and a specificity line when there are target and preserve groups."""
        with_onset = bool(self.onset)
        header = ["group", "prompts", *(c.name for c in self.checkpoints)] + (["onset"] if with_onset else [])
        lines = []
        for group in dict.fromkeys(g.group for g in self.groups):
            means = {g.checkpoint: g for g in self.groups if g.group == group}
            count = next(iter(means.values())).num_prompts
            lines.append(
                [group, str(count), *(format_estimate(means[c.name].mean) for c in self.checkpoints)]
                + ([self.onset[group] or "-"] if with_onset else [])
            )
        if self.specificity:
            lines.append(
                [
                    f"specificity ({TARGET} / {PRESERVE})",
                    "",
                    *(format_estimate(self.specificity[c.name]) for c in self.checkpoints),
                ]
                + ([""] if with_onset else [])
            )
        return header, lines

    def table(self) -> str:
        """The rows as a text table, largest drift first."""
        return _text_table(*self.row_cells())

    def summary(self) -> str:
        """The group summary as a text table."""
        return _text_table(*self.summary_cells())

    def most_moved(self, count: int) -> list[DriftRow]:
        """The ``count`` prompts that moved most, each at the checkpoint where it moved most."""
        chosen: dict[str, DriftRow] = {}
        for row in self.rows:
            if len(chosen) == count:
                break
            chosen.setdefault(row.prompt, row)
        return list(chosen.values())

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pictures, JSON-ready."""
        return {
            "base": self.base,
            "checkpoints": [{"name": c.name, "step": c.step, "position": c.position} for c in self.checkpoints],
            "settings": self.settings,
            "prompts": [{"prompt": p, "group": g} for p, g in self.prompts],
            "rows": [r.to_dict() for r in self.rows],
            "groups": [
                {
                    "group": g.group,
                    "checkpoint": g.checkpoint,
                    "prompts": g.num_prompts,
                    "mean_drift": g.mean.value,
                    "stderr": g.mean.stderr,
                }
                for g in self.groups
            ],
            "specificity": [
                {"checkpoint": name, **(value.to_dict() if value else {"value": None, "stderr": None})}
                for name, value in self.specificity.items()
            ],
            "onset": self.onset,
            "explained": [
                {
                    "prompt": e.prompt,
                    "checkpoint": e.checkpoint,
                    "drift": e.drift,
                    "divergence_by_weighting": e.explanation.divergence,
                }
                for e in self.explanations
            ],
            "computed": self.computed,
            "reused": self.reused,
        }

    def figure(self) -> Any:
        """Drift against checkpoint, one line per group (and per prompt when there are few): a matplotlib figure."""
        from conjure_metrics.drift.plot import drift_figure

        return drift_figure(self)

    def html(self) -> str:
        """The whole report as one self-contained HTML page (pictures embedded)."""
        from conjure_metrics.drift.html import report_html

        return report_html(self)


def assemble_report(
    base: str,
    checkpoints: Sequence[CheckpointInfo],
    prompts: Sequence[str],
    groups: Sequence[str],
    scores: dict[tuple[str, str], dict[str, Any]],
    settings: dict[str, Any],
    *,
    computed: int,
    reused: int,
) -> DriftReport:
    """The report from the scores of each (checkpoint name, prompt): dicts with ``divergence``,
    ``stderr``, ``similarity`` and ``samples`` (as the results file holds them)."""
    rows = [
        DriftRow(c.name, c.step, p, g, s["divergence"], s["stderr"], s["similarity"], tuple(s["samples"]))
        for c in checkpoints
        for p, g in zip(prompts, groups)
        for s in [scores[c.name, p]]
    ]
    group_names = list(dict.fromkeys(groups))
    samples = {
        (c.name, g): np.array([r.samples for r in rows if r.checkpoint == c.name and r.group == g])
        for c in checkpoints
        for g in group_names
    }
    group_rows = tuple(
        GroupDrift(g, c.name, groups.count(g), group_mean(samples[c.name, g])) for g in group_names for c in checkpoints
    )
    specificity: dict[str, Estimate | None] = {}
    if TARGET in group_names and PRESERVE in group_names:
        specificity = {c.name: ratio_of_means(samples[c.name, TARGET], samples[c.name, PRESERVE]) for c in checkpoints}
    # Onset needs a training order: checkpoints named by their step (an edit and a control are not one).
    in_training_order = len(checkpoints) > 1 and all(c.step is not None for c in checkpoints)
    onset = (
        {g: _onset([r.mean.value for r in group_rows if r.group == g], checkpoints) for g in group_names}
        if in_training_order
        else {}
    )
    ordered = sorted(rows, key=lambda r: -r.drift)  # stable: ties keep checkpoint, then prompt order
    return DriftReport(
        base,
        tuple(checkpoints),
        settings,
        tuple(zip(prompts, groups)),
        tuple(ordered),
        group_rows,
        specificity,
        onset,
        computed=computed,
        reused=reused,
    )


def _onset(means: list[float], checkpoints: Sequence[CheckpointInfo]) -> str | None:
    largest = max(means)
    if largest <= 0:
        return None
    return next(c.name for c, m in zip(checkpoints, means) if m >= largest / 2)


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_estimate(estimate: Estimate | None) -> str:
    if estimate is None:
        return "n/a"
    return format_number(estimate.value) + ("" if estimate.stderr is None else f" ± {estimate.stderr:.2g}")


def _text_table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *lines]]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)
