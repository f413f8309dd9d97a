"""The embedded default model: a procedural world, its captions and the small model trained on them.

``conjure-zoo`` is a pixel-space text-to-image diffusion model (32×32 RGB) trained from
scratch on :mod:`conjure_metrics.zoo.world`, shipped inside the package so that
``ConjureSimilarity()`` works offline. See ``docs/zoo_model_card.md``.

Modules: :mod:`.world` (attributes and renderer), :mod:`.captions` (grammar, synonyms,
train / held-out phrasings, parser), :mod:`.truth` (ground-truth caption similarity),
:mod:`.tokenizer`, :mod:`.model`, :mod:`.data`, :mod:`.train`, :mod:`.export`, :mod:`.sample`.

Example:
    >>> from conjure_metrics.zoo import default_model_path
    >>> sorted(p.name for p in default_model_path().iterdir() if p.is_dir())
    ['scheduler', 'text_encoder', 'tokenizer', 'unet']
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "conjure-zoo"


def default_model_path() -> Path:
    """Folder of the embedded conjure-zoo model (diffusers layout: unet, text_encoder, tokenizer, scheduler)."""
    return DEFAULT_MODEL_PATH
