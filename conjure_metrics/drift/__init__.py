"""``conjure drift``: which prompts a fine-tune changed, how much, from which checkpoint on, and
whether it left the others alone.

:func:`drift_report` scores every prompt under the base and each checkpoint (resumably), and returns a
:class:`DriftReport` with per-prompt drift, group means, specificity, a plot and an HTML page;
:func:`read_prompts` reads grouped prompt files (grammar in :mod:`conjure_metrics.drift.prompts`).
"""

from conjure_metrics.drift.checkpoints import CheckpointInfo
from conjure_metrics.drift.prompts import GroupedPrompts, read_prompts
from conjure_metrics.drift.report import DriftReport, DriftRow, ExplainedPrompt, GroupDrift
from conjure_metrics.drift.run import drift_report
from conjure_metrics.drift.stats import Estimate

__all__ = [
    "CheckpointInfo",
    "DriftReport",
    "DriftRow",
    "Estimate",
    "ExplainedPrompt",
    "GroupDrift",
    "GroupedPrompts",
    "drift_report",
    "read_prompts",
]
