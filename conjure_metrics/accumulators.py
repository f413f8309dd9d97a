"""Accumulators shared by the pair-similarity metrics: float64 sums and per-pair lists that sync under DDP.

Subclasses score a batch of pairs and call :meth:`PairSimilarityMetric._accumulate`; everything about
state (distributed reduction, dtype protection, checkpoint persistence, devices) lives here once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric

_SUM_STATES = ("similarity_sum", "divergence_sum", "num_pairs")
_PAIR_STATES = ("pair_similarity", "pair_divergence", "pair_stderr")
# What torchmetrics' forward() changes before calling update(): restored if update() raises.
_FORWARD_ATTRIBUTES = (
    "_update_count",
    "_computed",
    "_forward_cache",
    "_cache",
    "_is_synced",
    "_to_sync",
    "_should_unsync",
    "_enable_grad",
    "compute_on_cpu",
)


class SharedModels(tuple):
    """The models a metric uses but does not own: ``metric.clone()`` / ``deepcopy`` (MetricTracker,
    MetricCollection) share them instead of copying a whole diffusion model or language model."""

    def __deepcopy__(self, memo: dict) -> SharedModels:
        return self


class PairSimilarityMetric(Metric):
    """Base class: mean similarity over pairs, with per-pair similarity, divergence and standard error.

    States are float64 sums (``dist_reduce_fx="sum"``) and per-pair ``cat`` lists; no dtype cast
    touches them, and they follow the device. Like torchmetrics' own metrics they stay out of
    ``state_dict`` unless ``metric.persistent(True)``: Lightning saves a checkpoint after validation
    and before it resets logged metrics, so persistent states would count a finished validation's
    pairs again after a resume. With ``persistent(True)`` a checkpoint resumes them exactly. Models
    a subclass keeps in ``self._models`` (a tuple, so their weights stay out of ``state_dict``) move
    with the metric's device and are shared, not copied, by ``clone()``.

    A call that raises (bad prompts, an unknown prompt, a model returning NaN), through ``update()``
    or ``forward()``, leaves every accumulator and counter as it was.
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._models: tuple = SharedModels()
        for name in _SUM_STATES:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in _PAIR_STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # torchmetrics' forward() resets the state to score the batch alone and merges the global
        # state back only after update() succeeds: if update() raises, put everything back.
        states = {
            name: list(value) if isinstance(value, list) else value
            for name, value in ((name, getattr(self, name)) for name in self._defaults)
        }
        attributes = {name: getattr(self, name) for name in _FORWARD_ATTRIBUTES}
        try:
            return super().forward(*args, **kwargs)
        except Exception:
            for name, value in {**states, **attributes}.items():
                setattr(self, name, value)
            raise

    def _wrap_update(self, update: Callable) -> Callable:
        wrapped = super()._wrap_update(update)

        @functools.wraps(update)
        def keep_counters_on_failure(*args: Any, **kwargs: Any) -> None:
            # torchmetrics counts the update before running it; a failed one did not happen.
            count, computed = self._update_count, self._computed
            try:
                wrapped(*args, **kwargs)
            except Exception:
                self._update_count, self._computed = count, computed
                raise

        return keep_counters_on_failure

    def _accumulate(self, similarity: Tensor, divergence: Tensor, stderr: Tensor) -> None:
        """Add one batch of per-pair results (call only once everything that can fail has run)."""
        self._unshare_accumulators()
        values = [v.to(device=self.device, dtype=torch.float64).clone() for v in (similarity, divergence, stderr)]
        self.similarity_sum += values[0].sum()
        self.divergence_sum += values[1].sum()
        self.num_pairs += len(values[0])
        for name, value in zip(_PAIR_STATES, values):
            getattr(self, name).append(value)

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
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return {
                key: _concat(getattr(self, name))
                for key, name in zip(("similarity", "divergence", "stderr"), _PAIR_STATES)
            }

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any | None = None) -> Any:
        """Plot a single value or a sequence of values (e.g. one per epoch), as torchmetrics metrics do."""
        return self._plot(val, ax)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> torch.nn.Module:
        # Let torchmetrics move everything else, then move the accumulators ourselves: device only,
        # so Lightning's precision="bf16-true" (module.to(dtype)) cannot round the float64 sums.
        states = tuple(self._defaults)
        device_before = self._device
        this = cast(PairSimilarityMetric, super()._apply(fn, exclude_state=tuple(exclude_state) + states))
        device = this._device
        for name in states:
            this._defaults[name] = _to_device(this._defaults[name], device)
            setattr(this, name, _to_device(getattr(this, name), device))
        # Models follow device moves only: a dtype cast or share_memory() keeps the device, and must
        # not pull a model the user put on a GPU back to the metric's (default CPU) device.
        if device != device_before:
            this._move_models(device)
        return this

    def to(self, *args: Any, **kwargs: Any) -> PairSimilarityMetric:
        # A device given to .to() moves the models even when the metric already is there: a model
        # loaded on another device follows the metric, as the docs promise. Dtypes never reach them.
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        this = super().to(*args, **kwargs)
        if device is not None:
            this._move_models(torch.device(device))
        return this

    def _move_models(self, device: torch.device) -> None:
        for model in getattr(self, "_models", ()):
            if model is not None and _model_device(model) != device:
                model.to(device)

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        # A rank that saw no pair must still send float64 (torchmetrics would send an empty
        # tensor of the metric's default dtype, which mismatches the other ranks' float64).
        for name in _PAIR_STATES:
            if not getattr(self, name):
                setattr(self, name, [torch.zeros(0, dtype=torch.float64, device=self.device)])
        kwargs = {} if dist_sync_fn is None else {"dist_sync_fn": dist_sync_fn}
        super()._sync_dist(process_group=process_group, **kwargs)


def _model_device(model: Any) -> torch.device | None:
    """A denoiser's ``device``; for a plain ``nn.Module`` language model, its parameters' device."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return None if parameter is None else parameter.device


def _to_device(value: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    if isinstance(value, Tensor):
        return value.to(device)
    return [v.to(device) for v in value]


def _concat(value: Tensor | list[Tensor]) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return torch.cat(value) if value else torch.zeros(0, dtype=torch.float64)
