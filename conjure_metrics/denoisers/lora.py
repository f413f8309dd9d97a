"""LoRA / PEFT adapters on a loaded base model, compared with that base without loading it twice.

An adapter is injected into the base's modules once (:func:`load_adapter`); two thin views then serve
the comparison (:func:`adapter_pair`): one runs the base with the adapter switched off, the other with it
switched on. The estimator calls each side in turn (side A's rows, then side B's, for prompt encoding
and for every step), so each view switches the adapter to its own state around each call and restores
the previous state afterwards, also when the call raises. Between calls every adapter loaded here is
off, so the base object the user passed still behaves as the base.

Two adapter formats load:

* diffusers ``load_lora_weights`` files (``pytorch_lora_weights.safetensors``, as diffusers' training
  scripts save it, or a folder holding it), through the family's own LoRA loader (UNet and text encoder);
* PEFT adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``) for the model's
  denoising network, or with one such folder per component (``unet/``, ``transformer/``,
  ``text_encoder/``, ...).

Both need ``peft`` (``pip install conjure_metrics[lora]``). A base that already carries adapters of its
own should have them fused first: the views switch every adapter of the layers they touch.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

LORA_WEIGHT_NAMES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
PEFT_CONFIG = "adapter_config.json"
_PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_names = itertools.count()


def require_peft(argument: str = "model_b") -> None:
    """An ``ImportError`` naming the extra when ``peft`` is not installed."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError(
            f"{argument} is a LoRA / PEFT adapter, which needs peft: pip install conjure_metrics[lora]"
        ) from None


class LoadedAdapter:
    """One adapter injected into a base model: its ``name`` and the PEFT layers that hold it.

    :meth:`applied` switches it on (alone) or off for the duration of a block; :meth:`remove` deletes it
    from the layers (the weights it added are freed; the layers keep their empty PEFT wrappers).
    """

    def __init__(self, name: str, layers: Sequence[Any], source: str) -> None:
        self.name, self.layers, self.source = name, list(layers), source

    @contextmanager
    def applied(self, enabled: bool) -> Iterator[None]:
        """The adapter on (``True``, the only active one) or off (``False``) inside the block; the layers'
        previous state restored afterwards, whatever happens inside."""
        saved = [(list(layer.active_adapters), bool(layer.disable_adapters)) for layer in self.layers]
        try:
            for layer in self.layers:
                _set_layer(layer, [self.name] if enabled else list(layer.active_adapters), enabled)
            yield
        finally:
            for layer, (active, disabled) in zip(self.layers, saved):
                _set_layer(layer, active, not disabled)

    def set_scale(self, scale: float) -> None:
        """Scale the adapter's update (``lora_scale``: 0 is the base, 1 the adapter as trained)."""
        for layer in self.layers:
            if callable(getattr(layer, "set_scale", None)):
                layer.set_scale(self.name, scale)

    def remove(self) -> None:
        for layer in self.layers:
            layer.delete_adapter(self.name)
        self.layers = []


def _set_layer(layer: Any, active: list[str], enabled: bool) -> None:
    # enable_adapters(True) marks the active adapters trainable; set_adapter(..., inference_mode=True)
    # afterwards freezes them again, so the frozen base stays frozen.
    layer.enable_adapters(enabled)
    layer.set_adapter(active, inference_mode=True)


class AdapterView:
    """A base model seen with one adapter on (``enabled``) or off, switched around each of its calls.

    The base's modules are shared, not copied: two views of one base compare it with its fine-tune at
    the memory cost of one model. Everything else (``sample_shape``, ``reverse_chain``, ``decode``,
    the base's own attributes) is the base's.

    Example:
        >>> base_view, lora_view = adapter_pair(base, "output/pytorch_lora_weights.safetensors")  # doctest: +SKIP
        >>> conjure_similarity(prompts, prompts, base_view, model_b=lora_view)  # doctest: +SKIP
    """

    def __init__(self, base: Any, adapter: LoadedAdapter, enabled: bool) -> None:
        self._base, self.adapter, self.enabled = base, adapter, enabled

    @property
    def base(self) -> Any:
        return self._base

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._base.sample_shape

    @property
    def device(self) -> torch.device:
        return self._base.device

    def encode_prompts(self, prompts: Sequence[str]) -> Any:
        with self.adapter.applied(self.enabled):  # a LoRA of the text encoder counts too
            return self._base.encode_prompts(prompts)

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Any, **options: Any) -> Tensor:
        with self.adapter.applied(self.enabled):
            return self._base.predict_noise(x, timesteps, conditioning, **options)

    def reverse_chain(self, num_steps: int) -> Any:
        return self._base.reverse_chain(num_steps)

    def to(self, device: torch.device | str) -> AdapterView:
        self._base.to(device)
        return self

    def eval_mode(self) -> Any:
        return getattr(self._base, "eval_mode", nullcontext)()

    def with_sampler(self, sampler: str) -> AdapterView:
        """The same view drawing trajectories with ``sampler`` (the base's modules and adapter shared)."""
        view = copy.copy(self)
        view._base = self._base.with_sampler(sampler)
        return view

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_base":
            raise AttributeError(name)
        return getattr(self._base, name)

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"AdapterView({type(self._base).__name__}, adapter {self.adapter.source!r} {state})"


def adapter_pair(
    base: Any, source: str | os.PathLike, *, lora_scale: float = 1.0, argument: str = "model_b"
) -> tuple[AdapterView, AdapterView]:
    """``(base with the adapter off, base with it on)``: the adapter at ``source`` loaded into ``base`` once.

    ``source``: a diffusers LoRA file or a folder holding ``pytorch_lora_weights.safetensors``, or a PEFT
    adapter folder. ``lora_scale`` scales the adapter's update (0: the base itself).

    Example:
        >>> a, b = adapter_pair(load_denoiser("base"), "lora/pytorch_lora_weights.safetensors")  # doctest: +SKIP
        >>> conjure_similarity(["a dog"], ["a dog"], a, model_b=b).divergence  # doctest: +SKIP
    """
    adapter = load_adapter(base, source, lora_scale=lora_scale, argument=argument)
    return AdapterView(base, adapter, enabled=False), AdapterView(base, adapter, enabled=True)


def is_adapter_view(model: Any) -> bool:
    return isinstance(model, AdapterView)


def release(model: Any) -> None:
    """Delete the adapter a view loaded (drift frees each checkpoint before the next); nothing for other models."""
    if isinstance(model, AdapterView):
        model.adapter.remove()


# --- loading -----------------------------------------------------------------------------------


def load_adapter(
    base: Any, source: str | os.PathLike, *, lora_scale: float = 1.0, argument: str = "model_b"
) -> LoadedAdapter:
    """Inject the adapter at ``source`` into ``base``'s modules, switched off, scaled by ``lora_scale``."""
    require_peft(argument)
    if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float)):
        raise TypeError(f"lora_scale must be a number, got {type(lora_scale).__name__}")
    path = Path(source)
    components = base_components(base)
    name = f"conjure_{next(_names)}"
    with _diffusers_log_captured() as messages, warnings.catch_warnings():
        # Each adapter loaded here gets its own name and is removed after use: several on one model are meant.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        try:
            if path.is_dir() and _peft_folders(path):
                _load_peft(components, path, name, argument)
            else:
                _load_diffusers_lora(base, components, _lora_file(path), name, argument)
        except (RuntimeError, ValueError, KeyError) as error:
            _delete(components, name)
            raise ValueError(
                f"{argument}: the adapter {os.fspath(source)!r} does not fit this base model "
                f"({_first_reason(str(error))}); was it trained for another base?"
            ) from None
    layers = _layers_holding(components, name)
    unexpected = [m for m in messages if "unexpected keys" in m.lower() or "size mismatch" in m.lower()]
    if unexpected or not layers:
        _delete(components, name)
        reason = _first_reason(unexpected[0]) if unexpected else "none of its weights match a module of this base"
        raise ValueError(
            f"{argument}: the adapter {os.fspath(source)!r} does not fit this base model ({reason}); "
            "was it trained for another base?"
        )
    adapter = LoadedAdapter(name, layers, os.fspath(source))
    adapter.set_scale(float(lora_scale))
    for layer in layers:  # off until a view switches it on
        _set_layer(layer, [name], False)
    return adapter


def base_components(base: Any) -> dict[str, torch.nn.Module]:
    """The torch modules of a diffusers-backed denoiser, by component name (``unet``, ``text_encoder``, ...)."""
    pipeline = getattr(base, "pipeline", None)
    if pipeline is not None:
        from conjure_metrics.denoisers.pipeline import _named_modules_of

        return dict(_named_modules_of(pipeline))
    if hasattr(base, "unet") and hasattr(base, "text_encoder"):
        return {
            name: module
            for name in ("unet", "text_encoder", "vae")
            if isinstance(module := getattr(base, name, None), torch.nn.Module)
        }
    raise TypeError(
        f"model is a {type(base).__name__}: adapters load only into diffusers models "
        "(a folder, a pipeline, or a DiffusersDenoiser)"
    )


def _lora_file(path: Path) -> Path:
    if path.is_file():
        return path
    for weight_name in LORA_WEIGHT_NAMES:
        if (path / weight_name).is_file():
            return path / weight_name
    raise ValueError(f"{path} holds no LoRA weights ({' or '.join(LORA_WEIGHT_NAMES)}) and no {PEFT_CONFIG}")


def _load_diffusers_lora(
    base: Any, components: dict[str, torch.nn.Module], file: Path, name: str, argument: str
) -> None:
    host = getattr(base, "pipeline", None)
    if host is None:
        host = _stable_diffusion_host(components)
    if not callable(getattr(host, "load_lora_weights", None)):
        raise TypeError(
            f"{argument}: diffusers has no LoRA loader for {type(host).__name__}; "
            "give the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors)"
        )
    host.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=name)


def _stable_diffusion_host(components: dict[str, torch.nn.Module]) -> Any:
    """The smallest object diffusers' SD-1/2 LoRA loader works on: a DiffusersDenoiser holds no pipeline."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    class _Host(StableDiffusionLoraLoaderMixin):
        hf_device_map = None

        def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
            self.unet, self.text_encoder = unet, text_encoder

        @property
        def components(self) -> dict[str, torch.nn.Module]:
            return {"unet": self.unet, "text_encoder": self.text_encoder}

    return _Host(components["unet"], components["text_encoder"])


def _peft_folders(path: Path) -> dict[str, Path]:
    """Component name (``""``: the denoising network) -> folder holding its PEFT adapter."""
    if (path / PEFT_CONFIG).is_file():
        return {"": path}
    return {child.name: child for child in sorted(path.iterdir()) if (child / PEFT_CONFIG).is_file()}


def _load_peft(components: dict[str, torch.nn.Module], path: Path, name: str, argument: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    network = "unet" if "unet" in components else "transformer"
    for component, folder in _peft_folders(path).items():
        target = components.get(component or network)
        if target is None:
            raise ValueError(f"{argument}: {folder} is an adapter for {component!r}, which this base model lacks")
        config = LoraConfig.from_pretrained(str(folder))
        weights = load_peft_weights(str(folder), device="cpu")
        # PeftModel.save_pretrained writes keys under the wrapper's prefix; the adapter goes into the bare module.
        weights = {re.sub(r"^base_model\.model\.", "", key): value for key, value in weights.items()}
        inject_adapter_in_model(config, target, adapter_name=name)
        # load_state_dict's _IncompatibleKeys (peft annotates it as the namedtuple factory itself)
        result: Any = set_peft_model_state_dict(target, weights, adapter_name=name)
        if result.unexpected_keys:
            raise ValueError(f"unexpected keys: {result.unexpected_keys[0]!r} has no module in {component or network}")
        target.to(next(target.parameters()).device)


def _layers_holding(components: dict[str, torch.nn.Module], name: str) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [
        module
        for component in components.values()
        for module in component.modules()
        if isinstance(module, BaseTunerLayer)
        and any(name in getattr(module, attr, {}) for attr in module.adapter_layer_names)
    ]


def _delete(components: dict[str, torch.nn.Module], name: str) -> None:
    for layer in _layers_holding(components, name):
        layer.delete_adapter(name)


def _first_reason(message: str) -> str:
    """The first informative line of a loader's error (PyTorch lists every mismatched tensor)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line or "unexpected keys" in line.lower()), None)
    return (detail or (lines[0] if lines else message)).rstrip(".")[:300]


@contextmanager
def _diffusers_log_captured() -> Iterator[list[str]]:
    """diffusers logs incompatible adapter keys instead of raising: collect those messages (and keep them
    off the terminal) so that loading can refuse an adapter in one line."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("diffusers")
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [_Collect(logging.WARNING)], False
    try:
        yield messages
    finally:
        logger.handlers, logger.propagate = handlers, propagate
