"""``ConceptDrift``: a Lightning callback that logs how far training has moved each prompt group.

At the end of validation (every ``every_n_epochs`` epochs) it compares the diffusion model being
trained with its starting point on fixed prompts, exactly as :func:`~conjure_metrics.drift.drift_report`
compares a checkpoint with its base, and logs each group's mean drift (``drift/target``,
``drift/preserve``, ...) and the specificity ``drift/specificity`` (target over preserve).

Example (``denoiser_fn`` defaults to the module's ``denoiser`` attribute)::

    from conjure_metrics import ConceptDrift  # needs the [lightning] extra

    drift = ConceptDrift(["a red cat", "a red dog", "a blue cat", "a green dog"],
                         groups=["target", "target", "preserve", "preserve"], num_steps=10, num_samples=2)
    trainer = L.Trainer(callbacks=[drift], max_epochs=5)
    trainer.fit(module)          # logs drift/target, drift/preserve, drift/specificity each validation
    drift.last_report.summary()  # the full DriftReport of the latest measurement
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

try:
    import lightning as L
except ImportError as error:  # an optional extra
    raise ImportError("ConceptDrift needs lightning: pip install 'conjure_metrics[lightning]'") from error

from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.drift.checkpoints import CheckpointInfo
from conjure_metrics.drift.prompts import group_prompts
from conjure_metrics.drift.report import DriftReport, assemble_report
from conjure_metrics.functional import score_pairs
from conjure_metrics.settings import ConjureSettings

DenoiserFn = Callable[[L.LightningModule], Denoiser]

_BASE_NAME, _TRAINED_NAME = "start", "trained"


def _module_denoiser(pl_module: L.LightningModule) -> Denoiser:
    denoiser = getattr(pl_module, "denoiser", None)
    if denoiser is None:
        raise AttributeError(
            f"{type(pl_module).__name__} has no `denoiser` attribute; pass denoiser_fn to "
            "ConceptDrift (a function of the LightningModule returning a Denoiser)"
        )
    return denoiser


def _networks(denoiser: Any) -> list[torch.nn.Module]:
    """The ``nn.Module`` attributes of a denoiser (a diffusers adapter: unet, text encoder, vae)."""
    if isinstance(denoiser, torch.nn.Module):
        return [denoiser]
    return [value for value in vars(denoiser).values() if isinstance(value, torch.nn.Module)]


def _adapter_layers(modules: Sequence[torch.nn.Module]) -> list[Any]:
    """PEFT adapter layers (LoRA and its kin) inside ``modules``; empty when PEFT is not installed."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    layers: dict[int, Any] = {}
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer):
                layers[id(sub)] = sub
    return list(layers.values())


@contextmanager
def _adapters_off(layers: Sequence[Any]) -> Iterator[None]:
    """The networks without their adapters for the duration; each layer's state and ``requires_grad``
    restored afterwards (PEFT's ``enable_adapters`` also freezes and unfreezes the adapter weights,
    which must not leak into training)."""
    states = [(layer, layer.disable_adapters, [(p, p.requires_grad) for p in layer.parameters()]) for layer in layers]
    try:
        for layer in layers:
            layer.enable_adapters(False)
        yield
    finally:
        for layer, disabled, grads in states:
            layer.enable_adapters(not disabled)
            for parameter, requires_grad in grads:
                parameter.requires_grad_(requires_grad)


class _WithoutAdapters:
    """A view of a denoiser with its PEFT adapters switched off around every model call: the base model
    an adapter is trained on, sharing every weight with the trained model."""

    def __init__(self, denoiser: Denoiser, layers: Sequence[Any]) -> None:
        self._denoiser = denoiser
        self._layers = list(layers)

    def encode_prompts(self, prompts: Sequence[str]) -> Any:
        with _adapters_off(self._layers):
            return self._denoiser.encode_prompts(prompts)

    def predict_noise(self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Any, **kwargs: Any) -> torch.Tensor:
        with _adapters_off(self._layers):
            return self._denoiser.predict_noise(x, timesteps, conditioning, **kwargs)

    def to(self, device: torch.device | str) -> _WithoutAdapters:
        self._denoiser.to(device)
        return self

    def __getattr__(self, name: str) -> Any:  # sample_shape, device, reverse_chain, eval_mode, ...
        return getattr(self._denoiser, name)


def _frozen_copy(denoiser: Denoiser) -> Denoiser:
    """A deep copy of ``denoiser`` whose trainable weights are copied and frozen; weights that do not
    require gradients (a frozen text encoder) are shared, not copied, since training cannot move them."""
    memo: dict[int, Any] = {}
    for network in _networks(denoiser):
        for parameter in network.parameters():
            if not parameter.requires_grad:
                memo[id(parameter)] = parameter
    frozen = copy.deepcopy(denoiser, memo)
    for network in _networks(frozen):
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        network.eval()
    return frozen


class ConceptDrift(L.Callback):
    """Log how far training moved each group of prompts from the model's starting point.

    At the end of every ``every_n_epochs``-th validation epoch (not during the sanity check), each
    prompt's drift, the Jeffreys divergence between the starting model's and the current model's
    reverse processes under it, is estimated as :func:`~conjure_metrics.drift.drift_report` does (same
    settings, defaults and seed give the same numbers), and logged through the LightningModule:
    ``drift/<group>`` the mean drift of each group and ``drift/specificity`` the mean of ``target``
    over that of ``preserve`` (when both groups exist and preserve moved). :attr:`last_report` holds
    the full :class:`~conjure_metrics.drift.DriftReport` (per-prompt rows, standard errors).

    The starting point:

    * when the model carries PEFT adapters (LoRA), the same networks with the adapters switched off:
      no copy, no memory cost. This is the start of training when the adapter starts at zero (LoRA's
      default) and the base weights are frozen.
    * otherwise a frozen copy of the denoiser's networks taken at ``on_fit_start``: it costs the
      memory of the *trainable* weights once more (weights that do not require gradients then are
      shared, not copied), on the model's device. A resumed fit starts the comparison from the
      resumed weights.

    The copy is held by the callback only: it never enters a checkpoint (``state_dict()`` of the
    callback is empty, and the LightningModule's is unchanged).

    Under DDP each rank scores a contiguous share of the prompts and the scores are gathered to every
    rank (a collective: it runs on all ranks), so all ranks log the same values, equal to one process
    up to round-off of the batch shapes.

    Args:
        prompts: the prompts to measure, each once.
        groups: a group label per prompt (``target`` and ``preserve`` give the specificity); ``None``:
            one group ``all``.
        every_n_epochs: measure after every n-th validation epoch (counted by ``current_epoch``).
        denoiser_fn: ``denoiser_fn(pl_module) -> Denoiser``: a denoiser view of the model being trained
            (e.g. ``DiffusersDenoiser(module.unet, module.text_encoder, module.tokenizer, module.scheduler)``);
            default: the module's ``denoiser`` attribute.
        **settings: the estimator's settings (``num_steps``, ``num_samples``, ``guidance_scale``, ``seed``,
            ...), with the defaults of :func:`~conjure_metrics.drift.drift_report` (``min_noise=0.2``).

    Example:
        >>> drift = ConceptDrift(["a red cat", "a blue cat"], ["target", "preserve"], num_steps=4, num_samples=1)
        >>> drift.state_dict()
        {}
    """

    def __init__(
        self,
        prompts: Sequence[str],
        groups: Sequence[str | None] | None = None,
        every_n_epochs: int = 1,
        denoiser_fn: DenoiserFn | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.grouped = group_prompts(prompts, groups)
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int of at least 1, got {every_n_epochs!r}")
        if denoiser_fn is not None and not callable(denoiser_fn):
            raise TypeError(f"denoiser_fn must be callable, got {type(denoiser_fn).__name__}")
        self.every_n_epochs = every_n_epochs
        self.denoiser_fn: DenoiserFn = denoiser_fn or _module_denoiser
        self.settings = ConjureSettings(**settings).for_mode("models")
        self.last_report: DriftReport | None = None
        self._start: Denoiser | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        denoiser = self.denoiser_fn(pl_module)
        layers = _adapter_layers(_networks(denoiser))
        self._start = _WithoutAdapters(denoiser, layers) if layers else _frozen_copy(denoiser)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None  # free the copy

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._start is None or trainer.current_epoch % self.every_n_epochs:
            return
        report = self.measure(self.denoiser_fn(pl_module), trainer.global_rank, trainer.world_size)
        for group in report.groups:
            pl_module.log(f"drift/{group.group}", group.mean.value, sync_dist=False)
        specificity = report.specificity.get(_TRAINED_NAME)
        if specificity is not None:
            pl_module.log("drift/specificity", specificity.value, sync_dist=False)
        self.last_report = report

    def measure(self, trained: Denoiser, rank: int = 0, world_size: int = 1) -> DriftReport:
        """The drift report of ``trained`` against the starting point (on every rank: a collective when
        ``world_size > 1``)."""
        if self._start is None:
            raise RuntimeError("ConceptDrift has no starting point before on_fit_start")
        prompts = list(self.grouped.prompts)
        share = -(-len(prompts) // world_size)
        mine = prompts[rank * share : (rank + 1) * share]
        scores = self._score(mine, trained) if mine else {}
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, scores)
            scores = {k: v for part in gathered for k, v in part.items()}
        info = CheckpointInfo(_TRAINED_NAME, None, 1)
        return assemble_report(
            _BASE_NAME,
            [info],
            prompts,
            list(self.grouped.groups),
            scores,
            self.settings.record(exclude=("target_stderr", "max_samples")),
            computed=len(scores),
            reused=0,
        )

    def _score(self, prompts: list[str], trained: Denoiser) -> dict[tuple[str, str], dict[str, Any]]:
        # The same computation, per prompt, as drift_report's (score_pairs of base vs checkpoint).
        assert self._start is not None  # measure() checked it
        result = score_pairs(prompts, prompts, self._start, trained, self.settings, progress_bar=False)
        weighting = result.settings.weighting
        assert weighting is not None  # score_pairs filled in the mode's default
        per_sample = result.terms.samples(weighting)
        stderr = [float(s) for s in result.stderr]
        return {
            (_TRAINED_NAME, prompt): {
                "divergence": float(result.divergence[i]),
                "stderr": None if stderr[i] != stderr[i] else stderr[i],
                "similarity": float(result.similarity[i]),
                "samples": per_sample[i].tolist(),
            }
            for i, prompt in enumerate(prompts)
        }

    def state_dict(self) -> dict[str, Any]:
        """Empty: the starting point is rebuilt at each fit start and never enters a checkpoint."""
        return {}


__all__ = ["ConceptDrift"]
