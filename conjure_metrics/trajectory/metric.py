"""``TrajectorySimilarity``: the torchmetrics Metric that accumulates trajectory distances over batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conjure_metrics.accumulators import PairSimilarityMetric, SharedModels
from conjure_metrics.validation import check_progress_bar, check_prompts

from .estimator import Distance
from .functional import score_pairs
from .loading import LanguageModelLike, TokenizerLike, load_language_model
from .validation import check_trajectory_settings


class TrajectorySimilarity(PairSimilarityMetric):
    """Mean semantic similarity of prompt pairs, as a causal language model continues them.

    Each pair's score is ``1 / (1 + d)``, where ``d`` compares how likely each prompt finds the
    continuations sampled from both (Liu et al., "Meaning Representations from Trajectories in
    Autoregressive Models", ICLR 2024); see :func:`~conjure_metrics.trajectory.trajectory_similarity`.
    ``compute()`` returns the mean over all pairs seen on all ranks; :meth:`pair_results` gives
    per-pair similarities, distances and standard errors.

    The model is kept out of ``state_dict``, called in eval mode under ``torch.inference_mode()``,
    and follows the metric's device. Accumulators are float64 sums and per-pair ``cat`` lists that
    no dtype cast touches. A pair's score depends on ``seed`` only, not on batch size, pair order
    or the number of ranks.

    Args:
        model: causal-LM folder or hub id, model object (with ``tokenizer``), a callable returning
            either or ``(model, tokenizer)``, or ``None`` for the embedded zoo LM.
        tokenizer: the model's tokenizer; ``None`` takes the one saved with the model.
        num_continuations, max_new_tokens, distance, seed, max_batch_size: as in
            :func:`~conjure_metrics.trajectory.trajectory_similarity` (paper: ``n = m = 20``).
        progress_bar: show a tqdm bar per batch.
        load_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (e.g. ``{"dtype": torch.bfloat16}``).
        kwargs: torchmetrics ``Metric`` arguments (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> from conjure_metrics.trajectory import TrajectorySimilarity
        >>> metric = TrajectorySimilarity(num_continuations=4, max_new_tokens=8)
        >>> metric.update(["a red fox", "a striped cat"], ["a crimson fox", "a blue bear in the snow"])
        >>> pairs = metric.pair_results()
        >>> pairs["similarity"].shape, metric.compute().dtype
        (torch.Size([2]), torch.float64)
    """

    def __init__(
        self,
        model: LanguageModelLike = None,
        tokenizer: TokenizerLike = None,
        num_continuations: int = 20,
        max_new_tokens: int = 20,
        distance: Distance = "mean_abs",
        seed: int = 0,
        max_batch_size: int = 64,
        progress_bar: bool = False,
        load_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_trajectory_settings(num_continuations, max_new_tokens, distance, seed, max_batch_size)
        self.settings: dict[str, Any] = dict(
            num_continuations=num_continuations,
            max_new_tokens=max_new_tokens,
            distance=distance,
            seed=seed,
            max_batch_size=max_batch_size,
        )
        check_progress_bar(progress_bar)
        self.progress_bar = progress_bar
        language_model, self.tokenizer = load_language_model(model, tokenizer, **(load_kwargs or {}))
        # A tuple, not an attribute: nn.Module would register the LM, and its weights would land in
        # state_dict and in every Lightning checkpoint (Lightning #4361).
        self._models = SharedModels((language_model,))

    @property
    def language_model(self):
        """The causal LM that continues and scores the prompts."""
        return self._models[0]

    def update(self, prompts_a: Sequence[str], prompts_b: Sequence[str]) -> None:
        """Score a batch of pairs ``(prompts_a[i], prompts_b[i])`` and accumulate the results."""
        prompts_a, prompts_b = check_prompts(prompts_a, prompts_b)
        result = score_pairs(
            prompts_a, prompts_b, self.language_model, self.tokenizer, progress_bar=self.progress_bar, **self.settings
        )
        self._accumulate(result.similarity, result.divergence, result.stderr)
