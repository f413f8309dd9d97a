"""``ConjureSimilarity``: the torchmetrics Metric that accumulates Monte-Carlo Jeffreys terms over batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conjure_metrics.accumulators import PairSimilarityMetric, SharedModels
from conjure_metrics.denoisers.loading import ModelLike, load_pair
from conjure_metrics.functional import check_chain_settings, score_pairs
from conjure_metrics.settings import ConjureSettings, comparison_mode
from conjure_metrics.validation import check_progress_bar, check_prompts
from conjure_metrics.weighting import Weighting

if TYPE_CHECKING:
    from conjure_metrics.explain import Explanation


class ConjureSimilarity(PairSimilarityMetric):
    """Mean semantic similarity of prompt pairs, as a text-to-image diffusion model imagines them.

    Each pair's score is ``1 / (1 + J)`` where ``J`` is the Monte-Carlo Jeffreys divergence between
    the reverse diffusion processes the model runs under the two prompts (Liu & Soatto, "Conjuring
    Semantic Similarity", ICLR 2026). ``compute()`` returns the mean over all pairs seen on all ranks;
    :meth:`pair_results` gives per-pair similarities, divergences and standard errors.

    The model is kept out of ``state_dict`` (checkpoints stay small), called in eval mode under
    ``torch.inference_mode()``, and follows the metric's device. Accumulators are float64 sums
    (``dist_reduce_fx="sum"``) and per-pair ``cat`` lists; no dtype cast (``.half()``,
    ``.to(torch.bfloat16)``, ``set_dtype``) touches them. A pair's score depends on ``seed`` only,
    not on batch size, pair order or the number of ranks.

    Args:
        model: a :class:`~conjure_metrics.Denoiser`, a diffusers folder or hub id, a pipeline, a
            callable returning one, or ``None`` for the embedded conjure-zoo model. Models loaded
            here from a path are frozen; objects you pass keep their ``requires_grad`` flags.
        num_steps: reverse steps per trajectory.
        num_samples: Monte-Carlo samples per pair.
        guidance_scale: classifier-free guidance scale (``1`` disables guidance).
        weighting: ``"simple"``, ``"girsanov"`` or ``"min_snr"``; default ``"simple"``.
        min_noise: noise floor: a step counts when the noise level σ = √(1 − ᾱ) it lands on is at least
            this. Default (``None``) by mode: 0 when both prompts share ``model``; 0.2 with ``model_b``
            (checkpoint comparison), where the near-noiseless last steps measure generic weight drift.
            ``repr(metric)`` shows the settings in force.
        seed: noise seed (a pair's score depends on it only).
        max_batch_size: most rows per model call.
        min_timestep: steps below this model timestep are left out too (prefer ``min_noise``).
        target_stderr: adaptive sampling target (see :func:`~conjure_metrics.conjure_similarity`).
        max_samples: most samples per pair with ``target_stderr``.
        sampler: the reverse process (``None``: the model's default; ``"ddpm"``, ``"ddim"``,
            ``"euler_ancestral"`` for SD 1/2, SDXL, PixArt; ``"sde"``, ``"ancestral"``, ``"ode"`` for SD3, Flux).
        model_b: model for the second prompt of each pair (defaults to ``model``): compare checkpoints.
        progress_bar: show a tqdm bar per batch.
        load_kwargs: passed to the family adapter's ``from_pretrained`` (e.g. ``{"torch_dtype": torch.float16}``).
        kwargs: torchmetrics ``Metric`` arguments (``sync_on_compute``, ``process_group``, ...).

    Examples:
        >>> import torch
        >>> from conjure_metrics import ConjureSimilarity
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> model = GaussianConditionals(
        ...     means={"": torch.zeros(4), "tiger": torch.ones(4), "lion": 0.8 * torch.ones(4), "zebra": -torch.ones(4)},
        ...     variances={"": 1.0, "tiger": 0.1, "lion": 0.1, "zebra": 0.1},
        ...     alphas_cumprod=torch.cumprod(1 - linear_betas(), 0))
        >>> metric = ConjureSimilarity(model, guidance_scale=1.0)
        >>> metric.update(["tiger"], ["lion"])
        >>> metric.update(["tiger"], ["zebra"])
        >>> pairs = metric.pair_results()
        >>> bool(pairs["similarity"][0] > pairs["similarity"][1])
        True
        >>> metric.compute().shape
        torch.Size([])
    """

    def __init__(
        self,
        model: ModelLike = None,
        num_steps: int = 10,
        num_samples: int = 5,
        guidance_scale: float = 7.5,
        weighting: Weighting | None = None,
        min_noise: float | None = None,
        seed: int = 0,
        max_batch_size: int = 64,
        min_timestep: float = 0,
        target_stderr: float | None = None,
        max_samples: int | None = None,
        sampler: str | None = None,
        model_b: ModelLike = None,
        progress_bar: bool = False,
        load_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        settings = ConjureSettings(
            num_steps=num_steps,
            num_samples=num_samples,
            guidance_scale=guidance_scale,
            weighting=weighting,
            min_noise=min_noise,
            seed=seed,
            max_batch_size=max_batch_size,
            min_timestep=min_timestep,
            target_stderr=target_stderr,
            max_samples=max_samples,
            sampler=sampler,
        )
        check_progress_bar(progress_bar)
        self.progress_bar = progress_bar
        load_kwargs = load_kwargs or {}
        # A tuple, not attributes: nn.Module would register module-typed denoisers, and their weights
        # would land in state_dict and in every Lightning checkpoint (Lightning #4361).
        self._models = SharedModels(load_pair(model, model_b, settings.sampler, load_kwargs))
        self.mode = comparison_mode(self._models[1], self._models[0])
        self.settings = settings.for_mode(self.mode)
        check_chain_settings(self._models[0], self.settings)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, {self.settings.describe()}"

    @property
    def denoiser(self):
        """The model scoring ``prompts_a`` (and ``prompts_b`` unless ``model_b`` was given)."""
        return self._models[0]

    def explain(self, prompt_a: str, prompt_b: str, sample_index: int = 0) -> Explanation:
        """Per-step contributions and predicted clean images for one pair, with this metric's model and settings.

        Does not touch the accumulated state. See :func:`conjure_metrics.explain`. Its contributions sum
        to the divergence of the first ``num_samples`` samples: without ``target_stderr`` that is the
        metric's; with it, those samples are the metric's pilot and its estimate comes from later ones.
        """
        from conjure_metrics.explain import check_sample_index, explain_with

        check_prompts([prompt_a], [prompt_b])
        check_sample_index(sample_index, self.settings.num_samples)
        denoiser_a, denoiser_b = self._models
        return explain_with(prompt_a, prompt_b, denoiser_a, denoiser_b, self.settings, sample_index=sample_index)

    def update(self, prompts_a: Sequence[str], prompts_b: Sequence[str]) -> None:
        """Score a batch of pairs ``(prompts_a[i], prompts_b[i])`` and accumulate the results."""
        prompts_a, prompts_b = check_prompts(prompts_a, prompts_b)
        denoiser_a, denoiser_b = self._models
        result = score_pairs(
            prompts_a, prompts_b, denoiser_a, denoiser_b, self.settings, progress_bar=self.progress_bar
        )
        self._accumulate(result.similarity, result.divergence, result.stderr)
