"""``ConjureSimilarity``: the torchmetrics Metric that accumulates Monte-Carlo Jeffreys terms over batches."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from conjure_metrics.denoisers.loading import ModelLike, load_denoiser
from conjure_metrics.estimator import Weighting
from conjure_metrics.functional import score_pairs
from conjure_metrics.validation import check_prompts, check_settings

_SUM_STATES = ("similarity_sum", "divergence_sum", "num_pairs")
_PAIR_STATES = ("pair_similarity", "pair_divergence", "pair_stderr")


class ConjureSimilarity(Metric):
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
        num_steps, num_samples, guidance_scale, weighting, seed, max_batch_size, min_timestep, target_stderr,
            max_samples: estimator settings, as in :func:`~conjure_metrics.conjure_similarity`.
        model_b: model for the second prompt of each pair (defaults to ``model``): compare checkpoints.
        progress_bar: show a tqdm bar per batch.
        load_kwargs: passed to ``DiffusersDenoiser.from_pretrained`` (e.g. ``{"torch_dtype": torch.float16}``).
        kwargs: torchmetrics ``Metric`` arguments (``sync_on_compute``, ``process_group``, ...).

    Example:
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

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    similarity_sum: Tensor
    divergence_sum: Tensor
    num_pairs: Tensor
    pair_similarity: list[Tensor]
    pair_divergence: list[Tensor]
    pair_stderr: list[Tensor]

    def __init__(
        self,
        model: ModelLike = None,
        num_steps: int = 10,
        num_samples: int = 5,
        guidance_scale: float = 7.5,
        weighting: Weighting = "simple",
        seed: int = 0,
        max_batch_size: int = 64,
        min_timestep: float = 0,
        target_stderr: Optional[float] = None,
        max_samples: Optional[int] = None,
        model_b: ModelLike = None,
        progress_bar: bool = False,
        load_kwargs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_settings(num_steps, num_samples, guidance_scale, weighting, seed, max_batch_size, min_timestep,
                       target_stderr, max_samples)
        self.settings = dict(num_steps=num_steps, num_samples=num_samples, guidance_scale=guidance_scale,
                             weighting=weighting, seed=seed, max_batch_size=max_batch_size, min_timestep=min_timestep,
                             target_stderr=target_stderr, max_samples=max_samples)
        self.progress_bar = progress_bar
        load_kwargs = load_kwargs or {}
        # A tuple, not attributes: nn.Module would register module-typed denoisers, and their weights
        # would land in state_dict and in every Lightning checkpoint (Lightning #4361).
        self._denoisers = (
            load_denoiser(model, "model", **load_kwargs),
            None if model_b is None else load_denoiser(model_b, "model_b", **load_kwargs),
        )
        # Persistent: a checkpoint taken mid-epoch resumes with the exact accumulated state.
        for name in _SUM_STATES:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        for name in _PAIR_STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat", persistent=True)

    @property
    def denoiser(self):
        """The model scoring ``prompts_a`` (and ``prompts_b`` unless ``model_b`` was given)."""
        return self._denoisers[0]

    def update(self, prompts_a: Sequence[str], prompts_b: Sequence[str]) -> None:
        """Score a batch of pairs ``(prompts_a[i], prompts_b[i])`` and accumulate the results."""
        prompts_a, prompts_b = check_prompts(prompts_a, prompts_b)
        self._unshare_accumulators()
        result = score_pairs(prompts_a, prompts_b, *self._denoisers, progress_bar=self.progress_bar, **self.settings)
        # Everything that can fail has run: only now touch the accumulators.
        values = {name: v.to(device=self.device, dtype=torch.float64).clone()
                  for name, v in (("similarity", result.similarity), ("divergence", result.divergence), ("stderr", result.stderr))}
        self.similarity_sum += values["similarity"].sum()
        self.divergence_sum += values["divergence"].sum()
        self.num_pairs += len(prompts_a)
        self.pair_similarity.append(values["similarity"])
        self.pair_divergence.append(values["divergence"])
        self.pair_stderr.append(values["stderr"])

    def _unshare_accumulators(self) -> None:
        # Lightning's ddp_spawn pickles the module through shared memory: every rank would then add
        # into the same sum tensors until the first reset(). Own private copies instead.
        for name in _SUM_STATES:
            value = getattr(self, name)
            if value.is_shared():
                setattr(self, name, value.clone())

    def compute(self) -> Tensor:
        """Mean similarity over every pair seen (on every rank); NaN before any update."""
        return self.similarity_sum / self.num_pairs

    def pair_results(self) -> dict[str, Tensor]:
        """Per-pair ``similarity``, ``divergence`` and ``stderr``, in update order (rank-major under DDP).

        Like ``compute()`` this synchronises across ranks: call it on every rank.
        """
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return {key: _concat(getattr(self, name)) for key, name in zip(("similarity", "divergence", "stderr"), _PAIR_STATES)}

    def plot(self, val: Optional[Tensor | Sequence[Tensor]] = None, ax: Optional[Any] = None) -> Any:
        """Plot a single value or a sequence of values (e.g. one per epoch), as torchmetrics metrics do."""
        return self._plot(val, ax)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> torch.nn.Module:
        # Let torchmetrics move everything else, then move the accumulators ourselves: device only,
        # so Lightning's precision="bf16-true" (module.to(dtype)) cannot round the float64 sums.
        states = tuple(self._defaults)
        this = super()._apply(fn, exclude_state=tuple(exclude_state) + states)
        device = this._device
        for name in states:
            this._defaults[name] = _to_device(this._defaults[name], device)
            setattr(this, name, _to_device(getattr(this, name), device))
        for denoiser in getattr(this, "_denoisers", ()):
            if denoiser is not None and denoiser.device != device:
                denoiser.to(device)
        return this

    def _sync_dist(self, dist_sync_fn: Callable = None, process_group: Optional[Any] = None) -> None:
        # A rank that saw no pair must still send float64 (torchmetrics would send an empty
        # tensor of the metric's default dtype, which mismatches the other ranks' float64).
        for name in _PAIR_STATES:
            if not getattr(self, name):
                setattr(self, name, [torch.zeros(0, dtype=torch.float64, device=self.device)])
        kwargs = {} if dist_sync_fn is None else {"dist_sync_fn": dist_sync_fn}
        super()._sync_dist(process_group=process_group, **kwargs)


def _to_device(value: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    if isinstance(value, Tensor):
        return value.to(device)
    return [v.to(device) for v in value]


def _concat(value: Tensor | list[Tensor]) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return torch.cat(value) if value else torch.zeros(0, dtype=torch.float64)
