"""What every diffusers family adapter shares: loading a pipeline, moving it, eval mode, decoding pictures.

A family adapter (``sdxl.py``, ``sd3.py``, ``flux.py``, ``pixart.py``) subclasses
:class:`PipelineDenoiser` and implements only what differs between families, as k-diffusion's
wrappers override only ``get_eps``:

* ``encode_prompts`` — through the pipeline's own ``encode_prompt`` (never a re-implementation), into a
  conditioning structure whose tensors all have one row per prompt;
* ``predict_noise`` — one call of the pipeline's denoiser (``unet`` or ``transformer``), returning its
  raw output in the parametrisation of the adapter's reverse chain;
* ``reverse_chain`` — the sampler named by ``sampler`` (one of ``samplers``, the first the default);
* ``sample_shape`` and, when latents are packed (Flux), ``unpack_latents``.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor


def loading_options(
    *,
    torch_dtype: torch.dtype | None,
    local_files_only: bool | None,
    revision: str | None,
    variant: str | None,
    cache_dir: str | os.PathLike | None,
    token: str | bool | None,
    use_safetensors: bool | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for diffusers / transformers loaders: ``(hub, weights)``.

    ``hub`` locates files (for tokenizers and schedulers); ``weights`` adds the dtype, variant and
    format of weight files. diffusers loads in float32 by default, transformers 5 in the saved
    precision: one dtype is pinned for all components so that they agree.
    """
    hub: dict[str, Any] = {"revision": revision}
    for name, value in (("local_files_only", local_files_only), ("cache_dir", cache_dir), ("token", token)):
        if value is not None:
            hub[name] = value
    # ``dtype``: the name both libraries read now (diffusers 0.42 deprecates ``torch_dtype``).
    weights = dict(hub, dtype=torch_dtype or torch.float32, variant=variant)
    if use_safetensors is not None:
        weights["use_safetensors"] = use_safetensors
    return hub, weights


class SamplerChoice:
    """A model adapter whose reverse process is one of ``samplers``, chosen by its ``sampler`` attribute."""

    samplers: ClassVar[tuple[str, ...]] = ()
    sampler: str

    def with_sampler(self, sampler: str) -> SamplerChoice:
        """The same model (modules shared, not copied) drawing trajectories with ``sampler``."""
        if sampler not in self.samplers:
            raise ValueError(f"sampler must be one of {self.samplers} for {type(self).__name__}, got {sampler!r}")
        if sampler == self.sampler:
            return self
        view = copy.copy(self)
        view.sampler = sampler
        return view


class PipelineDenoiser(SamplerChoice):
    """Base of the family adapters: a loaded diffusers pipeline used as a :class:`~conjure_metrics.Denoiser`.

    Args:
        pipeline: the family's diffusers pipeline (its modules are used, its ``__call__`` never is).
        sampler: the reverse process trajectories are drawn with; one of the class's ``samplers``
            (the first is the default).
        text_encoder_device: keep the text encoders on this device (e.g. ``"cpu"``) while the denoiser
            runs elsewhere; prompts are encoded once per batch, so big text encoders (T5-XXL) need not
            share the accelerator. ``None``: they follow :meth:`to`.
    """

    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    """diffusers pipeline class names this adapter serves (``model_index.json``'s ``_class_name``)."""
    denoiser_name: ClassVar[str] = "transformer"
    """The pipeline attribute holding the network that predicts (``unet`` or ``transformer``)."""
    samplers: ClassVar[tuple[str, ...]] = ()
    """Reverse processes offered, the default first."""
    required_components: ClassVar[tuple[str, ...]] = ()
    """Components without which the family's prompts cannot be encoded or its model run."""
    guidance_mode: str = "cfg"

    def __init__(
        self, pipeline: Any, *, sampler: str | None = None, text_encoder_device: torch.device | str | None = None
    ) -> None:
        sampler = self.samplers[0] if sampler is None else sampler
        if sampler not in self.samplers:
            raise ValueError(f"sampler must be one of {self.samplers} for {type(self).__name__}, got {sampler!r}")
        if getattr(pipeline, self.denoiser_name, None) is None:
            raise TypeError(f"{type(pipeline).__name__} has no {self.denoiser_name}; {type(self).__name__} needs one")
        self.pipeline, self.sampler = pipeline, sampler
        self.text_encoder_device = None if text_encoder_device is None else torch.device(text_encoder_device)
        if self.text_encoder_device is not None:
            for module in self.text_encoders():
                module.to(self.text_encoder_device)

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        variant: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        use_safetensors: bool | None = None,
        load_vae: bool = True,
        components: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> PipelineDenoiser:
        """Load the family's pipeline from a local diffusers folder or a hub id, frozen and in eval mode.

        Hub and precision options as in diffusers (every component in ``torch_dtype``, float32 by
        default). ``components`` replaces loaded parts (e.g. ``{"transformer": fine_tuned}``, or
        ``{"text_encoder_3": None}`` to run SD3 without T5). ``load_vae=False`` skips the VAE
        (pictures from ``explain`` then show latents). Other keyword arguments go to the constructor.
        """
        import diffusers

        hub, weights = loading_options(
            torch_dtype=torch_dtype,
            local_files_only=local_files_only,
            revision=revision,
            variant=variant,
            cache_dir=cache_dir,
            token=token,
            use_safetensors=use_safetensors,
        )
        class_name, overrides = cls._components_to_load(path_or_id, dict(components or {}), load_vae, hub)
        pipeline = getattr(diffusers, class_name).from_pretrained(path_or_id, **weights, **overrides)
        for module in _modules_of(pipeline):
            module.requires_grad_(False).eval()
        denoiser = cls(pipeline, **kwargs)
        return denoiser.to(device) if device is not None else denoiser

    @classmethod
    def _components_to_load(
        cls, path_or_id: str | os.PathLike, overrides: dict[str, Any], load_vae: bool, hub: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The pipeline class to load with, and the components to pass instead of loading them.

        Checked against ``model_index.json`` before any weights load, so that a wrong or incomplete folder
        is one line naming the problem instead of an error from deep inside diffusers: the family must be
        this adapter's, a required component must be there, and a local folder must hold every component
        its index lists. Components the index records as absent (``[null, null]``, e.g. SD3 saved without
        T5) are passed as ``None``, which diffusers otherwise refuses for non-optional ones.
        """
        from conjure_metrics.denoisers.registry import ALIASES, listed_components, read_model_index

        index = read_model_index(path_or_id, "path_or_id", **hub)
        class_name = str(index.get("_class_name"))
        class_name = class_name if class_name in cls.pipeline_classes else ALIASES.get(class_name, class_name)
        if class_name not in cls.pipeline_classes:
            raise ValueError(
                f"path_or_id: {os.fspath(path_or_id)!r} holds a {index.get('_class_name')}, not a "
                f"{' or '.join(cls.pipeline_classes)} ({cls.__name__})"
            )
        if not load_vae:
            overrides.setdefault("vae", None)
        listed = listed_components(index)
        for name, present in listed.items():
            if not present:
                overrides.setdefault(name, None)
        for name in cls.required_components:
            if name not in overrides and not listed.get(name, False):
                raise ValueError(
                    f"path_or_id: the model_index.json of {os.fspath(path_or_id)!r} lists no {name}, "
                    f"which {cls.__name__} needs"
                )
        if os.path.isdir(path_or_id):
            for name, present in listed.items():
                if present and name not in overrides and not os.path.isdir(os.path.join(path_or_id, name)):
                    raise ValueError(
                        f"path_or_id: {os.fspath(path_or_id)!r} has no {name}/ subfolder, which its "
                        "model_index.json lists"
                    )
        return class_name, overrides

    @classmethod
    def from_pipeline(cls, pipeline: Any, **kwargs: Any) -> PipelineDenoiser:
        """Use an already loaded pipeline of this family (its modules are shared, not copied)."""
        return cls(pipeline, **kwargs)

    # --- modules -------------------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        """The network that predicts: the pipeline's ``unet`` or ``transformer``."""
        return getattr(self.pipeline, self.denoiser_name)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [module for name, module in _named_modules_of(self.pipeline) if name.startswith("text_encoder")]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def encoder_device(self) -> torch.device:
        """Where prompts are encoded (the first text encoder's device)."""
        encoders = self.text_encoders()
        return next(encoders[0].parameters()).device if encoders else self.device

    def to(self, device: torch.device | str) -> PipelineDenoiser:
        encoders = {id(module) for module in self.text_encoders()}
        for module in _modules_of(self.pipeline):
            if self.text_encoder_device is None or id(module) not in encoders:
                module.to(device)
        return self

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Eval mode for the duration of a metric call, restoring each module's training flag afterwards."""
        modules = _modules_of(self.pipeline)
        was_training = [module.training for module in modules]
        for module in modules:
            module.eval()
        try:
            yield
        finally:
            for module, training in zip(modules, was_training):
                module.train(training)

    # --- pictures ------------------------------------------------------------------------------

    def unpack_latents(self, x: Tensor) -> Tensor:
        """Latents in the VAE's ``(channels, height, width)`` layout (Flux overrides: its latents are packed)."""
        return x

    def decode(self, x0: Tensor) -> Tensor:
        """Pixels in ``[0, 1]`` for predicted clean samples, through the VAE (its scaling and shift factors)."""
        latents = self.unpack_latents(x0)
        vae = getattr(self.pipeline, "vae", None)
        if vae is None:  # no VAE loaded: show the first three latent channels
            return ((latents[:, :3] + 1) / 2).float().clamp(0, 1)
        config = vae.config
        latents = latents.to(device=next(vae.parameters()).device, dtype=vae.dtype) / config.scaling_factor
        if getattr(config, "shift_factor", None) is not None:
            latents = latents + config.shift_factor
        return ((vae.decode(latents).sample.float() + 1) / 2).clamp(0, 1)


def _named_modules_of(pipeline: Any) -> list[tuple[str, torch.nn.Module]]:
    """The pipeline's registered components that are torch modules, in a fixed order."""
    names = sorted(getattr(pipeline, "components", {}) or {})
    return [(name, module) for name in names if isinstance(module := getattr(pipeline, name, None), torch.nn.Module)]


def _modules_of(pipeline: Any) -> list[torch.nn.Module]:
    return [module for _, module in _named_modules_of(pipeline)]


def warn_if_truncated(tokenizer: Any, prompts: Sequence[str], max_length: int) -> None:
    """Warn (naming them) about prompts longer than the tokenizer's ``max_length``: the model never sees the rest."""
    lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=False, verbose=False).input_ids]
    too_long = [p for p, n in zip(prompts, lengths) if n > max_length]
    if too_long:
        shown = ", ".join(repr(p[:40] + ("…" if len(p) > 40 else "")) for p in too_long[:3])
        warnings.warn(
            f"{len(too_long)} prompt(s) exceed the tokenizer's {max_length} tokens and were truncated "
            f"(the model never sees the rest): {shown}",
            UserWarning,
            stacklevel=3,
        )
