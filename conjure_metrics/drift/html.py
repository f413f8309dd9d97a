"""The drift report as one self-contained HTML page: inline CSS, pictures as base64 data URIs, no links,
so it can be mailed or attached to a model card as a single file."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape

from conjure_metrics.drift.plot import drift_figure, png_bytes
from conjure_metrics.drift.prompts import PRESERVE, TARGET
from conjure_metrics.drift.report import DriftReport, format_number

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
"""


def report_html(report: DriftReport) -> str:
    """The page: settings, group summary, the drift plot, every row, and the explain pictures."""
    plot = png_bytes(drift_figure(report))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>Drift report: {escape(report.base)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>Drift report</h1>",
        f"<p>How far each checkpoint moved each prompt's meaning from the base <code>{escape(report.base)}</code>: "
        "the Jeffreys divergence between the two models' reverse diffusion processes under the prompt "
        "(0: unchanged), ± its Monte-Carlo standard error; similarity is 1 / (1 + drift).</p>",
        "<h2>Checkpoints</h2>",
        _table(
            ["checkpoint", "step"],
            [[escape(c.name), "" if c.step is None else str(c.step)] for c in report.checkpoints],
        ),
        "<h2>Settings</h2>",
        _table(["setting", "value"], [[escape(k), escape(repr(v))] for k, v in report.settings.items()]),
        "<h2>Groups</h2>",
        _table(*_escaped(*report.summary_cells()), numeric=tuple(range(1, len(report.checkpoints) + 2))),
        f'<p class="note">Specificity: mean drift of the {TARGET} group over that of the {PRESERVE} group '
        "(large: the fine-tune moved what it was meant to and left the rest alone)."
        + (
            " Onset: the first checkpoint at which a group's mean drift reaches half its largest value."
            if report.onset
            else ""
        )
        + "</p>",
        "<h2>Drift by checkpoint</h2>",
        _image(plot, "drift against checkpoint"),
        "<h2>Every prompt and checkpoint, largest drift first</h2>",
        _table(*_escaped(*report.row_cells()), numeric=(3, 4, 5), table_id="rows"),
    ]
    if report.explanations:
        parts += [
            "<h2>What the most-moved prompts conjure, before and after</h2>",
            '<p class="note">A is the base, B the checkpoint, both driven by the same noise. Rows: the '
            "base's trajectory denoised by the base and by the checkpoint, the checkpoint's trajectory "
            "likewise, then where they differ; columns are steps from noise to image. The strip below "
            "shows each step's share of the drift (grey steps are below the noise floor and do not "
            "count).</p>",
        ]
        for item in report.explanations:
            title = f"“{escape(item.prompt)}” at {escape(item.checkpoint)}: drift {format_number(item.drift)}"
            parts += [
                f"<h3>{title}</h3>",
                _image(png_bytes(item.explanation.figure()), f"explanation of {item.prompt}"),
            ]
    parts += [
        f'<p class="note">{report.computed} score(s) computed in this run, {report.reused} reused '
        "from the results file.</p>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _escaped(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    return [escape(h) for h in header], [[escape(cell) for cell in row] for row in rows]


def _image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>'


def _table(
    header: list[str], rows: Iterable[list[str]], numeric: tuple[int, ...] = (), table_id: str | None = None
) -> str:
    def cells(row: list[str], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=number' if tag == 'td' and i in numeric else ''}>{cell}</{tag}>"
            for i, cell in enumerate(row)
        )

    opening = f'<table id="{table_id}">' if table_id else "<table>"
    body = "\n".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"{opening}\n<thead><tr>{cells(header, 'th')}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
