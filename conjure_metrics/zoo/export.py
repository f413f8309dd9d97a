"""Turn a training run into a diffusers-layout model folder.

    python -m conjure_metrics.zoo.export --run runs/zoo --out conjure_metrics/zoo/conjure-zoo

Writes ``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``
(no ``vae``: the model works in pixel space). Weights are stored as float16 safetensors to
stay small; :func:`load_components` (and plain ``from_pretrained``) give float32 modules.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import build_tokenizer
from .weights import load_sharded


def _recast(path: Path, dtype: torch.dtype) -> None:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def export(run: Path, out: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Build the diffusers folder ``out`` from the EMA weights and configs of the run folder ``run``."""
    log = json.loads((run / "log.json").read_text())
    # diffusers' top-level classes are its dummy placeholders to a type checker: Any, not those
    unet: Any = UNet2DConditionModel(**log["unet_config"])
    unet.load_state_dict(load_sharded(run / "weights" / "unet"))
    text_encoder = CLIPTextModel(CLIPTextConfig(**log["text_config"]))
    text_encoder.load_state_dict(load_sharded(run / "weights" / "text_encoder"))
    out.mkdir(parents=True, exist_ok=True)
    # Saved as float32 (so configs say float32 and loaders build float32 modules), then the
    # weight files are rewritten in ``dtype``; loading casts them back to float32.
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    for weights in [*(out / "unet").glob("*.safetensors"), *(out / "text_encoder").glob("*.safetensors")]:
        _recast(weights, dtype)
    build_tokenizer().save_pretrained(out / "tokenizer")
    scheduler: Any = DDPMScheduler(**log["scheduler_config"])
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": [None, None],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Export a conjure-zoo training run to a diffusers folder.")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    print(export(args.run, args.out))


if __name__ == "__main__":
    main()
