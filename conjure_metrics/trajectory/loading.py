"""Turn what the user passed as ``model`` / ``tokenizer`` into a causal LM and its tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

LanguageModelLike = str | os.PathLike | torch.nn.Module | Callable[[], Any] | None
TokenizerLike = str | os.PathLike | Any | None

DEFAULT_LM_PATH = Path(__file__).resolve().parent / "zoo-lm"


def default_lm_path() -> Path:
    """Folder of the embedded zoo LM (``save_pretrained`` layout: model and tokenizer)."""
    return DEFAULT_LM_PATH


def load_language_model(
    model: LanguageModelLike, tokenizer: TokenizerLike = None, **load_kwargs: Any
) -> tuple[torch.nn.Module, Any]:
    """Resolve ``(model, tokenizer)``.

    ``model``: ``None`` (the embedded zoo LM, loaded offline), a transformers causal-LM folder or hub
    id, a causal-LM ``nn.Module`` (transformers calling convention), or a zero-argument callable
    returning one of these or a ``(model, tokenizer)`` tuple. ``tokenizer``: a tokenizer object, a
    folder or hub id, or ``None`` to take the one saved with the model. ``load_kwargs`` go to
    ``AutoModelForCausalLM.from_pretrained`` (e.g. ``dtype``, ``device_map``). Models loaded here
    from a folder are frozen; objects you pass keep their ``requires_grad`` flags.
    """
    source: str | os.PathLike | None = None
    if model is None:
        model, source = default_lm_path(), default_lm_path()
        if not (source / "config.json").exists():
            raise FileNotFoundError(f"the embedded zoo LM is missing at {source}; pass model= explicitly")
        load_kwargs = {"local_files_only": True, **load_kwargs}
    if callable(model) and not isinstance(model, torch.nn.Module):
        made = model()
        if isinstance(made, tuple) and len(made) == 2:
            made, tokenizer = made[0], tokenizer if tokenizer is not None else made[1]
        model = made
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        source = model
        model = AutoModelForCausalLM.from_pretrained(model, **load_kwargs).eval().requires_grad_(False)
    elif load_kwargs:  # nothing would read them: a typo or a misplaced setting must not pass silently
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(sorted(load_kwargs))}: loading options apply "
            "only when model is a folder, a hub id or None"
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "model must be a causal-LM folder or hub id, a torch.nn.Module, or a callable returning one; "
            f"got {type(model).__name__}"
        )
    if tokenizer is None:
        source = source if source is not None else getattr(getattr(model, "config", None), "_name_or_path", None)
        if not source:
            raise ValueError("tokenizer is required when model is an object that was not loaded from a folder")
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        local = {"local_files_only": True} if load_kwargs.get("local_files_only") else {}
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **local)
    if not (callable(tokenizer) and hasattr(tokenizer, "decode") and hasattr(tokenizer, "eos_token_id")):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer, a folder or a hub id; got {type(tokenizer).__name__}"
        )
    return model, tokenizer
