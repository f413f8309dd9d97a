"""Which adapter serves a diffusers model: one registry keyed by the pipeline class name.

A diffusers folder names its pipeline in ``model_index.json`` (``"_class_name"``); a loaded pipeline is
an instance of it. Each supported family has one adapter module; anything else is refused with the list
of what is supported, before any weights load.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

# pipeline class name -> (adapter module, adapter class)
FAMILIES: dict[str, tuple[str, str]] = {
    "StableDiffusionPipeline": ("conjure_metrics.denoisers.diffusers", "DiffusersDenoiser"),
    "StableDiffusionXLPipeline": ("conjure_metrics.denoisers.sdxl", "SDXLDenoiser"),
    "StableDiffusion3Pipeline": ("conjure_metrics.denoisers.sd3", "SD3Denoiser"),
    "FluxPipeline": ("conjure_metrics.denoisers.flux", "FluxDenoiser"),
    "PixArtSigmaPipeline": ("conjure_metrics.denoisers.pixart", "PixArtDenoiser"),
    "PixArtAlphaPipeline": ("conjure_metrics.denoisers.pixart", "PixArtDenoiser"),
}
# Pipelines that load the same checkpoints as a supported one (a folder saved from an img2img pipeline).
ALIASES: dict[str, str] = {
    "StableDiffusionImg2ImgPipeline": "StableDiffusionPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLPipeline",
    "StableDiffusion3Img2ImgPipeline": "StableDiffusion3Pipeline",
    "FluxImg2ImgPipeline": "FluxPipeline",
}


class UnsupportedModelError(ValueError):
    """The model is not a text-to-image family conjure_metrics has an adapter for."""


def supported_pipelines() -> list[str]:
    return sorted(FAMILIES)


def adapter_for(pipeline_class_name: str, argument: str = "model") -> type[Any]:
    """The adapter class for a diffusers pipeline class name, or :class:`UnsupportedModelError`."""
    name = ALIASES.get(pipeline_class_name, pipeline_class_name)
    if name not in FAMILIES:
        raise UnsupportedModelError(
            f"{argument} is a {pipeline_class_name}, which conjure_metrics does not support; supported pipelines: "
            f"{', '.join(supported_pipelines())} (or wrap the model in a CallableDenoiser)"
        )
    module, cls = FAMILIES[name]
    return getattr(importlib.import_module(module), cls)


def pipeline_class_name(path_or_id: str | os.PathLike, argument: str = "model", **hub: Any) -> str:
    """``_class_name`` of a folder's or hub repo's ``model_index.json``.

    A local folder without ``model_index.json`` but with ``unet/`` and ``text_encoder/`` is taken for the
    Stable Diffusion layout (hand-assembled folders written before this registry existed).
    """
    if os.path.isdir(path_or_id) and not os.path.isfile(os.path.join(path_or_id, "model_index.json")):
        if all(os.path.isdir(os.path.join(path_or_id, sub)) for sub in ("unet", "text_encoder")):
            return "StableDiffusionPipeline"
    index = read_model_index(path_or_id, argument, **hub)
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise ValueError(
            f"{argument}: the model_index.json of {os.fspath(path_or_id)!r} names no pipeline class (_class_name)"
        )
    return name


def read_model_index(path_or_id: str | os.PathLike, argument: str = "model", **hub: Any) -> dict[str, Any]:
    """The parsed ``model_index.json`` of a local diffusers folder or a hub repo, or a one-line error."""
    if not os.fspath(path_or_id).strip():
        raise ValueError(
            f"{argument} is an empty string: give a diffusers folder, a hub id (owner/name), "
            "or None for the embedded conjure-zoo model"
        )
    if os.path.isdir(path_or_id):
        index_path = os.path.join(path_or_id, "model_index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"{argument}: {os.fspath(path_or_id)!r} is a folder without model_index.json "
                "(not a diffusers pipeline folder)"
            )
    elif os.path.exists(path_or_id):
        raise ValueError(f"{argument}: {os.fspath(path_or_id)!r} is a file, not a diffusers folder")
    elif _looks_like_path(os.fspath(path_or_id)):
        raise FileNotFoundError(
            f"{argument}: no such folder {os.fspath(path_or_id)!r} (expected a diffusers folder "
            "with model_index.json, or a hub id owner/name)"
        )
    else:
        index_path = _hub_model_index(str(path_or_id), argument, hub)
    try:
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{argument}: cannot read {index_path}: {error}") from None
    if not isinstance(index, dict):
        raise ValueError(f"{argument}: {index_path} is not a model index (a JSON object)")
    return index


def listed_components(index: dict[str, Any]) -> dict[str, bool]:
    """Component name -> whether the index records it as present (``["diffusers", "Class"]``) or absent (``[null, null]``)."""
    return {
        name: bool(entry[0] is not None)
        for name, entry in index.items()
        if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2
    }


def _hub_model_index(repo_id: str, argument: str, hub: dict[str, Any]) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(
            repo_id,
            "model_index.json",
            revision=hub.get("revision"),
            cache_dir=hub.get("cache_dir"),
            token=hub.get("token"),
            local_files_only=bool(hub.get("local_files_only", False)),
        )
    except Exception as error:  # offline, unknown repo, gated: say which, in one line
        if type(error).__name__ == "HFValidationError":  # not even the shape of a hub id
            raise FileNotFoundError(
                f"{argument}: no such folder {repo_id!r}, and not a hub id (owner/name); expected "
                "a diffusers folder with model_index.json"
            ) from None
        if type(error).__name__ == "LocalEntryNotFoundError":
            raise FileNotFoundError(
                f"{argument}: {repo_id!r} is no local folder, and no hub model of that name is in "
                "the cache (offline: HF_HUB_OFFLINE or local_files_only); expected a diffusers "
                "folder with model_index.json"
            ) from None
        raise FileNotFoundError(
            f"{argument}: {repo_id!r} is neither a local folder nor a reachable hub model ({type(error).__name__})"
        ) from None


def _looks_like_path(text: str) -> bool:
    # A hub id is "name" or "owner/name"; anything anchored or deeper is a path the user meant to exist.
    return (
        os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text or text.endswith("/")
    )


# Constructor arguments from_pretrained itself fills in from the loaded folder.
_FILLED_BY_LOADING = frozenset(
    {"self", "path_or_id", "pipeline", "unet", "text_encoder", "tokenizer", "scheduler", "vae"}
)


def check_loading_options(adapter: type[Any], load_kwargs: dict[str, Any], argument: str = "model") -> None:
    """Refuse, before any weights load, keyword arguments that ``adapter.from_pretrained`` (or the adapter's
    constructor, which gets the rest) does not take: most often a misspelt setting (``num_step=``).

    Example:
        >>> from conjure_metrics.denoisers.diffusers import DiffusersDenoiser
        >>> check_loading_options(DiffusersDenoiser, {"torch_dtype": None, "eta": 0.5})
        >>> check_loading_options(DiffusersDenoiser, {"num_step": 3})
        Traceback (most recent call last):
        ...
        TypeError: model: unknown keyword argument 'num_step' (did you mean the setting 'num_steps'?); ...
    """
    import difflib
    import inspect
    from dataclasses import fields

    from conjure_metrics.settings import ConjureSettings

    accepted: set[str] = set()
    for function in (adapter.from_pretrained, adapter):  # a class's signature is its constructor's
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                accepted.add(name)
    accepted -= _FILLED_BY_LOADING
    unknown = [name for name in load_kwargs if name not in accepted]
    if not unknown:
        return
    settings = [f.name for f in fields(ConjureSettings)]
    name = unknown[0]
    # A setting of which the keyword is one whole word ("samples" -> num_samples, "guidance" ->
    # guidance_scale) before a spelling match, which would take "samples" for "sampler".
    close = (
        [s for s in settings if name in s.split("_")]
        or difflib.get_close_matches(name, settings, 1)
        or difflib.get_close_matches(name, sorted(accepted), 1)
    )
    hint = f" (did you mean {'the setting ' if close and close[0] in settings else ''}{close[0]!r}?)" if close else ""
    raise TypeError(
        f"{argument}: unknown keyword argument {name!r}{hint}; settings are {', '.join(settings)}; "
        f"loading options for a {adapter.__name__} are {', '.join(sorted(accepted))}"
    )
