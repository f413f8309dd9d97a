"""Turn whatever the user passed as ``model`` into a :class:`Denoiser`."""

from __future__ import annotations

import os
from typing import Any, Callable, Union

import torch

from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.denoisers.registry import adapter_for, pipeline_class_name

ModelLike = Union[Denoiser, str, os.PathLike, Any, Callable[[], Any], None]

_PROTOCOL_MEMBERS = ("encode_prompts", "predict_noise", "reverse_chain", "sample_shape")
HUB_OPTIONS = ("local_files_only", "revision", "cache_dir", "token")


def is_denoiser(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in _PROTOCOL_MEMBERS)


def load_denoiser(model: ModelLike, argument: str = "model", *, sampler: str | None = None, **load_kwargs: Any) -> Denoiser:
    """Resolve ``model`` to a :class:`Denoiser`.

    Accepts: ``None`` (the embedded conjure-zoo model), a :class:`Denoiser`, a local diffusers folder
    or hub id (``str`` / path), a diffusers pipeline object, or a zero-argument callable returning
    any of these (handy for lazy or offline construction, as torchmetrics' ``CLIPScore`` does).
    Folders and pipelines are served by their family's adapter (:mod:`conjure_metrics.denoisers.registry`:
    Stable Diffusion 1/2, SDXL, SD3, Flux, PixArt); another pipeline is an ``UnsupportedModelError``
    (a ``ValueError``). ``load_kwargs`` go to the adapter's ``from_pretrained`` for paths and ids.
    ``sampler`` (the setting) picks the model's reverse process (:func:`use_sampler`).
    """
    denoiser = _resolve(model, argument, load_kwargs)
    return denoiser if sampler is None else use_sampler(denoiser, sampler, argument)


def load_pair(model: ModelLike, model_b: ModelLike, sampler: str | None = None,
              load_kwargs: dict[str, Any] | None = None) -> tuple[Denoiser, Denoiser | None]:
    """``model`` and ``model_b`` resolved (``model_b`` ``None`` stays ``None``; the same object stays one model).

    ``sampler`` is the setting; a ``sampler`` among the loading options (how it was passed before it
    was a setting) means the same, and the two must agree.
    """
    load_kwargs = dict(load_kwargs or {})
    legacy = load_kwargs.pop("sampler", None)
    if legacy is not None and sampler is not None and legacy != sampler:
        raise ValueError(f"sampler={sampler!r} and the loading option sampler={legacy!r} disagree; give one")
    sampler = sampler if sampler is not None else legacy
    denoiser = load_denoiser(model, "model", sampler=sampler, **load_kwargs)
    if model_b is None or model_b is model:
        return denoiser, None if model_b is None else denoiser
    return denoiser, load_denoiser(model_b, "model_b", sampler=sampler, **load_kwargs)


def use_sampler(denoiser: Denoiser, sampler: str, argument: str = "model") -> Denoiser:
    """``denoiser`` drawing its trajectories with ``sampler`` (its modules shared, not copied).

    Only adapters that offer a choice (``with_sampler`` and ``samplers``: every diffusers family) can;
    for any other model the sampler is whatever its ``reverse_chain`` builds, and asking for one is an error.
    """
    if getattr(denoiser, "sampler", None) == sampler:
        return denoiser
    if not callable(getattr(type(denoiser), "with_sampler", None)):
        raise ValueError(f"sampler={sampler!r}: {argument} ({type(denoiser).__name__}) offers no choice of sampler "
                         "(its reverse_chain defines the process); leave sampler unset")
    return denoiser.with_sampler(sampler)


def _resolve(model: ModelLike, argument: str, load_kwargs: dict[str, Any]) -> Denoiser:
    if model is None:
        model = embedded_model_path()
    if load_kwargs and not isinstance(model, (str, os.PathLike)):
        _refuse_loading_options(argument, model, load_kwargs)
    if is_denoiser(model):
        return model
    if isinstance(model, (str, os.PathLike)):
        hub = {name: load_kwargs[name] for name in HUB_OPTIONS if load_kwargs.get(name) is not None}
        adapter = adapter_for(pipeline_class_name(model, argument, **hub), argument)
        return adapter.from_pretrained(model, **load_kwargs)
    if _is_diffusers_pipeline(model):
        return adapter_for(type(model).__name__, argument).from_pipeline(model)
    if hasattr(model, "unet") and hasattr(model, "text_encoder"):  # an SD-like object that is not a pipeline
        from conjure_metrics.denoisers.diffusers import DiffusersDenoiser

        return DiffusersDenoiser.from_pipeline(model)
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


def _is_diffusers_pipeline(model: Any) -> bool:
    # By class name, so that checking does not import diffusers.
    return any(cls.__name__ == "DiffusionPipeline" for cls in type(model).__mro__)


def _refuse_loading_options(argument: str, model: Any, load_kwargs: dict[str, Any]) -> None:
    """Loading options with a model object would be silently ignored; most often one is a misspelt setting."""
    import difflib
    from dataclasses import fields

    from conjure_metrics.settings import ConjureSettings

    settings = [f.name for f in fields(ConjureSettings)]
    hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, settings, 1)) else repr(name)
             for name in load_kwargs]
    raise TypeError(f"{argument} is a model object ({type(model).__name__}), so {', '.join(hints)} cannot be a "
                    "loading option (those apply to a path or hub id); settings are " + ", ".join(settings))


def embedded_model_path() -> os.PathLike:
    """Folder of the embedded conjure-zoo model, or a clear error when this install has none."""
    try:
        from conjure_metrics.zoo import default_model_path
    except ImportError as error:
        raise FileNotFoundError("this install of conjure_metrics has no embedded conjure-zoo model; pass model=") from error
    path = default_model_path()
    if not os.path.isdir(os.path.join(path, "unet")):
        raise FileNotFoundError(f"the embedded conjure-zoo model is missing at {path}; pass model= explicitly")
    return path
