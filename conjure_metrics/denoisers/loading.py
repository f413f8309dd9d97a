"""Turn whatever the user passed as ``model`` into a :class:`Denoiser`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeGuard, Union, cast

import torch

from conjure_metrics.denoisers.checkpoints import inspect_checkpoint
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.denoisers.registry import adapter_for, check_loading_options, pipeline_class_name

ModelLike = Union[Denoiser, str, os.PathLike, Any, Callable[[], Any], None]  # noqa: UP007  (Denoiser is a Protocol)

_PROTOCOL_MEMBERS = ("encode_prompts", "predict_noise", "reverse_chain", "sample_shape")
HUB_OPTIONS = ("local_files_only", "revision", "cache_dir", "token")
CHECKPOINT_OPTIONS = ("lora_scale", "use_ema")
EMBEDDED_MODEL_NAME = "conjure-zoo"
"""The name that stands for the embedded model wherever a model path is taken (``conjure drift conjure-zoo ...``)."""
"""Loading options of a checkpoint resolved against its base (:func:`load_against_base`)."""


def is_denoiser(obj: Any) -> TypeGuard[Denoiser]:
    return all(hasattr(obj, name) for name in _PROTOCOL_MEMBERS)


def load_denoiser(
    model: ModelLike, argument: str = "model", *, sampler: str | None = None, **load_kwargs: Any
) -> Denoiser:
    """Resolve ``model`` to a :class:`Denoiser`.

    Accepts: ``None`` or ``"conjure-zoo"`` (the embedded model), a :class:`Denoiser`, a local diffusers folder
    or hub id (``str`` / path), a diffusers pipeline object, or a zero-argument callable returning
    any of these (handy for lazy or offline construction, as torchmetrics' ``CLIPScore`` does).
    Folders and pipelines are served by their family's adapter (:mod:`conjure_metrics.denoisers.registry`:
    Stable Diffusion 1/2, SDXL, SD3, Flux, PixArt); another pipeline is an ``UnsupportedModelError``
    (a ``ValueError``). ``load_kwargs`` go to the adapter's ``from_pretrained`` for paths and ids.
    ``sampler`` (the setting) picks the model's reverse process (:func:`use_sampler`).
    """
    denoiser = _resolve(model, argument, load_kwargs)
    return denoiser if sampler is None else use_sampler(denoiser, sampler, argument)


def load_pair(
    model: ModelLike, model_b: ModelLike, sampler: str | None = None, load_kwargs: dict[str, Any] | None = None
) -> tuple[Denoiser, Denoiser | None]:
    """``model`` and ``model_b`` resolved (``model_b`` ``None`` stays ``None``; the same object stays one model).

    ``model_b`` is resolved against the base ``model`` (:func:`load_against_base`): a LoRA / PEFT adapter,
    a training checkpoint folder (``unet/``, ``unet_ema/``, ``transformer/``) or a single-file checkpoint
    loads into or beside the base, which loads once; the loading options ``lora_scale`` (default 1) and
    ``use_ema`` (default ``True``: ``unet_ema/`` when the folder has it) say how. A LoRA then gives two
    views of one model, the adapter off for ``model`` and on for ``model_b``.

    ``sampler`` is the setting; a ``sampler`` among the loading options (how it was passed before it
    was a setting) means the same, and the two must agree.

    Example:
        >>> a, b = load_pair("base-folder", "output/pytorch_lora_weights.safetensors", load_kwargs={"lora_scale": 0.8})  # doctest: +SKIP
    """
    load_kwargs = dict(load_kwargs or {})
    legacy = load_kwargs.pop("sampler", None)
    if legacy is not None and sampler is not None and legacy != sampler:
        raise ValueError(f"sampler={sampler!r} and the loading option sampler={legacy!r} disagree; give one")
    sampler = sampler if sampler is not None else legacy
    options = {name: load_kwargs.pop(name) for name in CHECKPOINT_OPTIONS if name in load_kwargs}
    source = inspect_checkpoint(model_b, "model_b")  # a bad checkpoint is refused before the base loads
    if options and (source is None or not source.relative):
        raise ValueError(
            f"{', '.join(options)} apply to a model_b that is a LoRA / PEFT adapter or a training "
            "checkpoint (loaded against the base); this model_b is a whole model"
        )
    denoiser = load_denoiser(model, "model", sampler=sampler, **load_kwargs)
    if model_b is None or model_b is model:
        return denoiser, None if model_b is None else denoiser
    return load_against_base(denoiser, model_b, base_path=_base_path(model), sampler=sampler, **options, **load_kwargs)


def load_against_base(
    base: Denoiser,
    model_b: ModelLike,
    *,
    base_path: str | os.PathLike | None = None,
    sampler: str | None = None,
    argument: str = "model_b",
    lora_scale: float = 1.0,
    use_ema: bool = True,
    **load_kwargs: Any,
) -> tuple[Denoiser, Denoiser]:
    """``(side A, side B)`` comparing the loaded ``base`` with ``model_b``, which is resolved against it.

    A LoRA / PEFT adapter is loaded into ``base`` (the two sides are views of it, the adapter off and
    on, scaled by ``lora_scale``); a training checkpoint folder or a single file loads only its
    denoising network (``use_ema``: its ``unet_ema/`` when present) and shares every other part of
    ``base``; anything else loads on its own with ``load_kwargs`` and must be of the base's family.
    ``base_path``: the base's folder, the config a single-file checkpoint is read with.

    Example:
        >>> base = load_denoiser("base-folder")  # doctest: +SKIP
        >>> sides = [load_against_base(base, c) for c in ("run/checkpoint-500", "run/checkpoint-1000")]  # doctest: +SKIP
    """
    from conjure_metrics.denoisers.checkpoints import load_checkpoint_pair

    source = inspect_checkpoint(model_b, argument)
    if source is not None and source.relative:
        return load_checkpoint_pair(
            base, source, base_path=base_path, lora_scale=lora_scale, use_ema=use_ema, argument=argument
        )
    other = load_denoiser(model_b, argument, sampler=sampler, **load_kwargs)
    _check_same_family(base, other, argument)
    return base, other


def _check_same_family(base: Denoiser, other: Denoiser, argument: str) -> None:
    """Two diffusers models of different families cannot share a reverse process: say so before scoring."""
    from conjure_metrics.denoisers.registry import FAMILIES

    adapters = {cls for _, cls in FAMILIES.values()}
    names = [type(model).__name__ for model in (base, other)]
    if all(name in adapters for name in names) and names[0] != names[1]:
        raise ValueError(
            f"{argument} is a {names[1]} model, model a {names[0]}: a fine-tune is compared with the "
            "base it was trained from (the same family)"
        )


def _base_path(model: ModelLike) -> str | os.PathLike | None:
    model = named_model(model)
    return model if isinstance(model, (str, os.PathLike)) and os.path.isdir(model) else None


def use_sampler(denoiser: Denoiser, sampler: str, argument: str = "model") -> Denoiser:
    """``denoiser`` drawing its trajectories with ``sampler`` (its modules shared, not copied).

    Only adapters that offer a choice (``with_sampler`` and ``samplers``: every diffusers family) can;
    for any other model the sampler is whatever its ``reverse_chain`` builds, and asking for one is an error.
    """
    if getattr(denoiser, "sampler", None) == sampler:
        return denoiser
    if not callable(getattr(type(denoiser), "with_sampler", None)):
        raise ValueError(
            f"sampler={sampler!r}: {argument} ({type(denoiser).__name__}) offers no choice of sampler "
            "(its reverse_chain defines the process); leave sampler unset"
        )
    chooser: Any = denoiser  # a SamplerChoice adapter: checked just above
    return chooser.with_sampler(sampler)


def named_model(model: ModelLike) -> ModelLike:
    """``model``, but the embedded model's folder for ``None`` or :data:`EMBEDDED_MODEL_NAME` (unless a
    folder of that name exists here)."""
    if model is None or (isinstance(model, str) and model == EMBEDDED_MODEL_NAME and not os.path.exists(model)):
        return embedded_model_path()
    return model


def _resolve(model: ModelLike, argument: str, load_kwargs: dict[str, Any]) -> Denoiser:
    model = named_model(model)
    if load_kwargs and not isinstance(model, (str, os.PathLike)):
        _refuse_loading_options(argument, model, load_kwargs)
    if is_denoiser(model):
        return model
    if isinstance(model, (str, os.PathLike)):
        _refuse_relative_checkpoint(model, argument)
        hub = {name: load_kwargs[name] for name in HUB_OPTIONS if load_kwargs.get(name) is not None}
        adapter = adapter_for(pipeline_class_name(model, argument, **hub), argument)
        check_loading_options(adapter, load_kwargs, argument)
        return adapter.from_pretrained(model, **load_kwargs)
    if _is_diffusers_pipeline(model):
        return adapter_for(type(model).__name__, argument).from_pipeline(model)
    if hasattr(model, "unet") and hasattr(model, "text_encoder"):  # an SD-like object that is not a pipeline
        from conjure_metrics.denoisers.diffusers import DiffusersDenoiser

        # A Denoiser whose predict_noise takes the plain tensor its encode_prompts returns.
        return cast(Denoiser, DiffusersDenoiser.from_pipeline(model))
    if isinstance(model, torch.nn.Module):  # callable, but calling it runs a forward pass
        raise TypeError(
            f"{argument} is a bare {type(model).__name__}; give the whole model: "
            "DiffusersDenoiser(unet, text_encoder, tokenizer, scheduler[, vae]), a pipeline, or a folder"
        )
    if callable(model):
        built = model()
        if built is None or (callable(built) and not is_denoiser(built) and not hasattr(built, "unet")):
            raise TypeError(f"{argument} is a callable that returned {type(built).__name__}, not a model")
        return _resolve(built, argument, load_kwargs)
    raise TypeError(
        f"{argument} must be a Denoiser, a diffusers folder or hub id, a pipeline, or a callable returning one; "
        f"got {type(model).__name__}"
    )


def _refuse_relative_checkpoint(model: str | os.PathLike, argument: str) -> None:
    """A LoRA or a training checkpoint alone is not a model: name the base it needs."""
    try:
        source = inspect_checkpoint(model, argument)
    except ValueError:  # not a checkpoint either: the folder check below says what is missing
        return
    if source is not None and source.relative:
        kind = {
            "adapter": "a LoRA / PEFT adapter",
            "network": "a training checkpoint (its network only)",
            "single_file": "a single-file checkpoint",
        }[source.kind]
        raise ValueError(
            f"{argument}: {os.fspath(model)} is {kind}, which loads against a base model: pass the "
            "base as model and this as model_b (or as a drift checkpoint)"
        )


def _is_diffusers_pipeline(model: Any) -> bool:
    # By class name, so that checking does not import diffusers.
    return any(cls.__name__ == "DiffusionPipeline" for cls in type(model).__mro__)


def _refuse_loading_options(argument: str, model: Any, load_kwargs: dict[str, Any]) -> None:
    """Loading options with a model object would be silently ignored; most often one is a misspelt setting."""
    import difflib
    from dataclasses import fields

    from conjure_metrics.settings import ConjureSettings

    settings = [f.name for f in fields(ConjureSettings)]
    hints = [
        f"{name!r} (did you mean {close[0]!r}?)"
        if (close := difflib.get_close_matches(name, settings, 1))
        else repr(name)
        for name in load_kwargs
    ]
    raise TypeError(
        f"{argument} is a model object ({type(model).__name__}), so {', '.join(hints)} cannot be a "
        "loading option (those apply to a path or hub id); settings are " + ", ".join(settings)
    )


def embedded_model_path() -> os.PathLike:
    """Folder of the embedded conjure-zoo model, or a clear error when this install has none."""
    try:
        from conjure_metrics.zoo import default_model_path
    except ImportError as error:
        raise FileNotFoundError(
            "this install of conjure_metrics has no embedded conjure-zoo model; pass model="
        ) from error
    path = default_model_path()
    if not os.path.isdir(os.path.join(path, "unet")):
        raise FileNotFoundError(f"the embedded conjure-zoo model is missing at {path}; pass model= explicitly")
    return path
