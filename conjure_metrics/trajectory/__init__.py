"""Meaning as trajectories: semantic similarity of text as a causal language model continues it.

The autoregressive sibling of :class:`~conjure_metrics.ConjureSimilarity` (Liu et al., "Meaning
Representations from Trajectories in Autoregressive Models", ICLR 2024): two prompts are close when
the continuations each one leads to are about as likely under the other. Ships a small GPT-2
trained on the conjure-zoo world's captions (:func:`default_lm_path`); see ``docs/trajectory.md``.

Modules: :mod:`.sampling` (batched seeded continuations, scoring), :mod:`.estimator` (cross-scores,
distances), :mod:`.functional`, :mod:`.metric`, :mod:`.loading`; the zoo LM's :mod:`.tokenizer`,
:mod:`.model`, :mod:`.corpus`, :mod:`.train` and :mod:`.probe`.
"""

from .estimator import DISTANCES, TrajectoryTerms, trajectory_terms
from .functional import TrajectoryResult, trajectory_similarity
from .loading import default_lm_path, load_language_model
from .metric import TrajectorySimilarity

__all__ = [
    "DISTANCES",
    "TrajectoryResult",
    "TrajectorySimilarity",
    "TrajectoryTerms",
    "default_lm_path",
    "load_language_model",
    "trajectory_similarity",
    "trajectory_terms",
]
