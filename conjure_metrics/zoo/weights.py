"""State dicts to and from size-capped safetensors shards (the device returns files ≤ 16 MiB)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SHARD_BYTES = 15 * 2**20


def save_sharded(
    state_dict: dict[str, torch.Tensor], prefix: Path, dtype=torch.float16, max_bytes: int = SHARD_BYTES
) -> list[Path]:
    """Write ``prefix-00001.safetensors``, … each under ``max_bytes``; returns the paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    paths = []
    for i, shard in enumerate(shards, 1):
        path = prefix.parent / f"{prefix.name}-{i:05d}.safetensors"
        save_file(shard, str(path))
        paths.append(path)
    return paths


def load_sharded(prefix: Path, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Merge the shards written by :func:`save_sharded`, floating tensors cast to ``dtype``."""
    prefix = Path(prefix)
    paths = sorted(prefix.parent.glob(f"{prefix.name}-*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"no shards {prefix}-*.safetensors")
    merged = {}
    for path in paths:
        merged.update(load_file(str(path)))
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in merged.items()}
