"""Checkpoints as people have them, each resolved against the base model it was fine-tuned from.

``model_b`` (and each ``conjure drift`` checkpoint) may be, besides a whole diffusers folder or object:

* a **LoRA / PEFT adapter** (``pytorch_lora_weights.safetensors`` as diffusers' training scripts save
  it, a folder holding it, or a PEFT folder with ``adapter_config.json``): loaded into the base once,
  compared through two views that switch it off and on (:mod:`conjure_metrics.denoisers.lora`);
* a **training checkpoint folder** holding only the trained network (``unet/``, ``unet_ema/`` or
  ``transformer/``, e.g. ``output/checkpoint-500/`` with accelerate's state files beside them): that
  network is loaded, every other part (text encoders, tokenizers, scheduler, VAE) is the base's own
  objects, so several checkpoints of one run share them. With both ``unet/`` and ``unet_ema/`` the EMA
  weights are used (``use_ema=True``, the default: what training scripts evaluate and export);
  ``use_ema=False`` takes ``unet/``;
* a **single file** (``.safetensors`` / ``.ckpt``) of the denoising network, in the diffusers or the
  original layout, through diffusers' ``from_single_file`` with the base's own config (so offline). Only
  the network's weights are read: a whole-pipeline file's text encoder and VAE weights are not used (the
  base's are), so a fine-tune that also trained its text encoder is compared through its UNet only.

What a path is, is decided from the files alone (:func:`inspect_checkpoint`), before any weights load.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conjure_metrics.denoisers.lora import LORA_WEIGHT_NAMES, PEFT_CONFIG

CheckpointKind = Literal["pipeline", "adapter", "network", "single_file"]
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
NETWORK_FOLDERS = ("unet_ema", "unet", "transformer_ema", "transformer")
# Scheduler settings that define the training schedule: a fine-tune saved with other values samples
# a different process, and comparing the two would measure the schedule, not the fine-tune.
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "shift",
    "use_dynamic_shifting",
)
# Network settings that must agree for the checkpoint's network to run on the base's inputs.
_SHAPE_KEYS = (
    "in_channels",
    "out_channels",
    "cross_attention_dim",
    "joint_attention_dim",
    "pooled_projection_dim",
    "caption_channels",
    "sample_size",
    "patch_size",
)


@dataclass(frozen=True)
class CheckpointSource:
    """What a checkpoint path holds: ``kind`` and the ``path`` to load it from.

    ``kind``: ``"pipeline"`` (a whole model, loaded on its own), ``"adapter"`` (LoRA / PEFT, loaded into
    the base), ``"network"`` (a training checkpoint folder: ``subfolders`` lists its network folders)
    or ``"single_file"``.
    """

    kind: CheckpointKind
    path: str
    subfolders: tuple[str, ...] = ()

    @property
    def relative(self) -> bool:
        """Whether it needs the base model to load."""
        return self.kind != "pipeline"


def inspect_checkpoint(model: Any, argument: str = "model_b") -> CheckpointSource | None:
    """What ``model`` is as a checkpoint, from its files only; ``None`` for objects and hub ids.

    Examples:
        >>> inspect_checkpoint("output/checkpoint-500").kind  # doctest: +SKIP
        'network'
        >>> inspect_checkpoint("lora/pytorch_lora_weights.safetensors").kind  # doctest: +SKIP
        'adapter'
    """
    if not isinstance(model, (str, os.PathLike)) or not os.path.exists(model):
        return None
    path = Path(model)
    text = os.fspath(model)
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(
                f"{argument}: {text} is a {path.suffix or 'suffix-less'} file, not a checkpoint "
                f"({', '.join(SINGLE_FILE_SUFFIXES)}) or a diffusers folder"
            )
        if _holds_lora_weights(path, argument) or path.name in LORA_WEIGHT_NAMES:
            return CheckpointSource("adapter", text)
        return CheckpointSource("single_file", text)
    if (path / "model_index.json").is_file() or all((path / sub).is_dir() for sub in ("unet", "text_encoder")):
        return CheckpointSource("pipeline", text)
    for weight_name in LORA_WEIGHT_NAMES:
        if (path / weight_name).is_file():
            _holds_lora_weights(path / weight_name, argument)  # a corrupted file: one line now
            return CheckpointSource("adapter", text)
    if (path / PEFT_CONFIG).is_file() or any(
        (child / PEFT_CONFIG).is_file() for child in path.iterdir() if child.is_dir()
    ):
        return CheckpointSource("adapter", text)
    networks = tuple(name for name in NETWORK_FOLDERS if (path / name / "config.json").is_file())
    if networks:
        return CheckpointSource("network", text, networks)
    raise ValueError(
        f"{argument}: {text} holds nothing loadable: no model_index.json, no LoRA weights "
        f"({LORA_WEIGHT_NAMES[0]}), no PEFT adapter ({PEFT_CONFIG}) and no "
        f"{'/, '.join(NETWORK_FOLDERS)}/ folder with a config.json"
    )


def load_checkpoint_pair(
    base: Any,
    source: CheckpointSource,
    *,
    base_path: str | os.PathLike | None = None,
    lora_scale: float = 1.0,
    use_ema: bool = True,
    argument: str = "model_b",
) -> tuple[Any, Any]:
    """``(side A, side B)`` for comparing ``base`` with the relative checkpoint ``source``.

    An adapter gives two views of the one base (off, on); a network folder or single file gives the base
    itself and a denoiser sharing every part of the base but the network. ``base_path`` (the base's
    folder) is the config a single file is read with; without it the base network's own config is used.

    Example:
        >>> base = load_denoiser("runwayml-like-folder")  # doctest: +SKIP
        >>> a, b = load_checkpoint_pair(base, inspect_checkpoint("output/checkpoint-500"))  # doctest: +SKIP
    """
    if source.kind == "adapter":
        from conjure_metrics.denoisers.lora import adapter_pair

        return adapter_pair(base, source.path, lora_scale=lora_scale, argument=argument)
    if source.kind == "network":
        return base, _with_network(base, _load_network_folder(base, source, use_ema, argument), argument)
    if source.kind == "single_file":
        return base, _with_network(base, _load_single_file(base, source.path, base_path, argument), argument)
    raise ValueError(f"{argument}: {source.path} is a whole model; load it on its own")


def network_name(base: Any) -> str:
    """The base's denoising network attribute: ``unet`` or ``transformer``."""
    name = getattr(base, "denoiser_name", None)
    if name is None and hasattr(base, "unet"):
        name = "unet"
    if name is None or getattr(_network_owner(base), name, None) is None:
        raise TypeError(
            f"model is a {type(base).__name__}: checkpoints load only against a diffusers base "
            "(a folder, a pipeline, or a DiffusersDenoiser)"
        )
    return name


def _network_owner(base: Any) -> Any:
    pipeline = getattr(base, "pipeline", None)
    return base if pipeline is None else pipeline


def _network(base: Any) -> Any:
    return getattr(_network_owner(base), network_name(base))


def _load_network_folder(base: Any, source: CheckpointSource, use_ema: bool, argument: str) -> Any:
    if not isinstance(use_ema, bool):
        raise TypeError(f"use_ema must be True or False, got {type(use_ema).__name__}")
    name = network_name(base)
    candidates = [f"{name}_ema", name] if use_ema else [name]
    found = [sub for sub in candidates if sub in source.subfolders]
    if not found:
        held = ", ".join(f"{sub}/" for sub in source.subfolders)
        raise ValueError(
            f"{argument}: {source.path} holds {held} but the base model predicts with a {name}"
            + ("" if use_ema or f"{name}_ema" not in source.subfolders else f" (use_ema=False skips {name}_ema/)")
            + "; a checkpoint must come from the base's family"
        )
    subfolder = found[0]
    folder = Path(source.path)
    _check_network_config(base, folder / subfolder / "config.json", argument)
    _check_schedule(base, folder / "scheduler" / "scheduler_config.json", argument)
    network = _network(base)
    try:
        loaded = type(network).from_pretrained(source.path, subfolder=subfolder, dtype=network.dtype)
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{argument}: cannot load {folder / subfolder}: {_one_line(error)}") from None
    return loaded


def _load_single_file(base: Any, path: str, base_path: str | os.PathLike | None, argument: str) -> Any:
    network = _network(base)
    loader = getattr(type(network), "from_single_file", None)
    if loader is None:
        raise ValueError(
            f"{argument}: diffusers cannot read a single-file {type(network).__name__}; give a diffusers folder"
        )
    if base_path is not None and os.path.isdir(base_path):
        config, subfolder = os.fspath(base_path), network_name(base)
    else:
        config, subfolder = _saved_config(network), None
    try:
        return loader(path, config=config, subfolder=subfolder, local_files_only=True, dtype=network.dtype)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise ValueError(
            f"{argument}: cannot read {path} as a {type(network).__name__} of this base: {_one_line(error)}"
        ) from None


def _saved_config(network: Any) -> str:
    """A folder holding ``network``'s config, for a base given as an object (``from_single_file`` reads a folder)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="conjure-config-")
    network.save_config(folder)
    return folder


def _with_network(base: Any, network: Any, argument: str) -> Any:
    """A denoiser like ``base`` (same parts, same settings) predicting with ``network``."""
    _check_shapes(dict(_network(base).config), dict(network.config), argument)
    network.to(_network(base).device).requires_grad_(False).eval()
    checkpoint = copy.copy(base)
    name = network_name(base)
    pipeline = getattr(base, "pipeline", None)
    if pipeline is None:
        setattr(checkpoint, name, network)
    else:  # a shallow copy of the pipeline: the other components are the base's objects
        checkpoint.pipeline = copy.copy(pipeline)
        setattr(checkpoint.pipeline, name, network)
    return checkpoint


def _check_network_config(base: Any, config_path: Path, argument: str) -> None:
    config = _read_json(config_path, argument)
    expected = type(_network(base)).__name__
    if config.get("_class_name") not in (None, expected):
        raise ValueError(
            f"{argument}: {config_path.parent} is a {config.get('_class_name')}, the base model's "
            f"network a {expected}; a checkpoint must come from the base's family"
        )
    _check_shapes(dict(_network(base).config), config, argument)


def _check_shapes(base_config: dict[str, Any], config: dict[str, Any], argument: str) -> None:
    for key in _SHAPE_KEYS:
        if key in base_config and key in config and _plain(base_config[key]) != _plain(config[key]):
            raise ValueError(
                f"{argument}: its network has {key}={config[key]!r}, the base's {base_config[key]!r}; "
                "a checkpoint must be fine-tuned from this base"
            )


def _check_schedule(base: Any, scheduler_config: Path, argument: str) -> None:
    scheduler = getattr(_network_owner(base), "scheduler", None)
    if not scheduler_config.is_file() or scheduler is None:
        return
    saved, own = _read_json(scheduler_config, argument), dict(scheduler.config)
    for key in _SCHEDULE_KEYS:
        if key in saved and key in own and _plain(saved[key]) != _plain(own[key]):
            raise ValueError(
                f"{argument}: its scheduler has {key}={saved[key]!r}, the base's {own[key]!r}; both "
                "sides of a comparison must share the noise schedule"
            )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _read_json(path: Path, argument: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{argument}: cannot read {path}: {_one_line(error)}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{argument}: {path} is not a JSON object")
    return value


def _holds_lora_weights(path: Path, argument: str) -> bool:
    """Whether a weights file is a LoRA (every tensor name mentions ``lora`` or an alpha); a ``.safetensors``
    file is opened here, so that a corrupted one is one line before anything loads."""
    if path.suffix != ".safetensors":
        return "lora" in path.name.lower()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{argument}: {path} is not a readable safetensors file ({_one_line(error)})") from None
    return bool(keys) and all("lora" in key.lower() or key.endswith(".alpha") for key in keys)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
