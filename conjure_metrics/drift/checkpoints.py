"""Which checkpoint is which: names, training steps, order, and an identity for the results file."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A trailing number after a separator: checkpoint-500, step_1000, lora-000500.safetensors (not sd-v2).
_STEP = re.compile(r"(?:^|[-_])(\d+)$")
# What a hub id looks like (organisation/name); anything else that does not exist locally is a typo.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as the report shows it: ``name`` (the path as given, or the name passed for an
    object), the training ``step`` parsed from that name (``None`` when the names carry no distinct
    steps) and ``position``, its place on the report's x axis (the step, or 1, 2, ... in order)."""

    name: str
    step: int | None
    position: int


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint's name, from its last path component (``None`` if none).

    Examples:
        >>> parse_step("output/checkpoint-500"), parse_step("lora_step_1200.safetensors"), parse_step("sd-v2")
        (500, 1200, None)
    """
    last = Path(str(name).rstrip("/\\")).name
    match = _STEP.search(Path(last).stem if Path(last).suffix in (".safetensors", ".ckpt", ".bin", ".pt") else last)
    return int(match.group(1)) if match else None


def order_checkpoints(names: Sequence[str]) -> list[tuple[int, CheckpointInfo]]:
    """``(index in names, info)`` in training order: by step when every name carries a distinct step,
    else in the order given."""
    steps = [parse_step(name) for name in names]
    known = [step for step in steps if step is not None]
    if len(known) == len(steps) and len(set(known)) == len(known):
        order = sorted(range(len(names)), key=lambda i: known[i])
        return [(i, CheckpointInfo(names[i], known[i], known[i])) for i in order]
    return [(i, CheckpointInfo(name, None, i + 1)) for i, name in enumerate(names)]


def model_name(model: Any, default: str) -> str:
    """How the report names a model: the path or hub id as given, else ``default``."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else default


def short_names(models: Sequence[Any]) -> list[str]:
    """How the report names checkpoints: the last components of each local path that tell them apart
    (``run/checkpoint-500``, ``run/checkpoint-1000`` -> ``checkpoint-500``, ``checkpoint-1000``), a hub id
    as given, ``"checkpoint N"`` for an object.

    Example:
        >>> import os, tempfile
        >>> run = tempfile.mkdtemp()
        >>> for name in ("a", "b"):
        ...     os.makedirs(os.path.join(run, name, "checkpoint-500"))
        >>> short_names([os.path.join(run, "a", "checkpoint-500"), os.path.join(run, "b", "checkpoint-500"),
        ...              "org/model", object()])
        ['a/checkpoint-500', 'b/checkpoint-500', 'org/model', 'checkpoint 4']
    """
    names = [model_name(model, f"checkpoint {i}") for i, model in enumerate(models, start=1)]
    local = [i for i, model in enumerate(models) if isinstance(model, (str, os.PathLike)) and os.path.exists(model)]
    parts = {i: Path(os.path.abspath(models[i])).parts for i in local}
    for depth in range(1, max((len(p) for p in parts.values()), default=0) + 1):
        shortened = {i: "/".join(parts[i][-depth:]) for i in local}
        candidates = [shortened.get(i, name) for i, name in enumerate(names)]
        if len(set(candidates)) == len(candidates):
            return candidates
    return names


def check_model_path(model: Any, role: str) -> None:
    """Refuse a local path that does not exist, before anything loads.

    ``org/name`` passes as a hub id, unless a local folder ``org`` exists (``output/checkpoint-50`` with a
    typo is a missing path, not a model to download)."""
    if not isinstance(model, (str, os.PathLike)) or os.path.exists(model):
        return
    text = os.fspath(model)
    if _HUB_ID.fullmatch(text) and not os.path.isdir(text.split("/")[0]):
        return
    raise FileNotFoundError(f"{role} {os.fspath(model)}: no such file or directory")


def model_identity(model: Any, name: str) -> str:
    """What the results file keys a model's scores by: a local path with the size and modification
    time of every file under it (a checkpoint saved again is scored again), prefixed by its kind when it
    loads against the base (``adapter:``, ``network:``, ``single_file:``), a hub id as written, or the
    name given for an object."""
    if isinstance(model, (str, os.PathLike)) and os.path.exists(model):
        root = Path(model).resolve()
        # A LoRA or a network-only checkpoint is scored against the base: say which kind it was read as.
        kind = _relative_kind(model)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        stamps = "\n".join(
            f"{p.relative_to(root) if p != root else p.name}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files
        )
        return f"{kind + ':' if kind else ''}{root}#{hashlib.sha256(stamps.encode()).hexdigest()[:16]}"
    if isinstance(model, (str, os.PathLike)):
        return f"hub:{os.fspath(model)}"
    return f"object:{name}"


def _relative_kind(model: str | os.PathLike) -> str | None:
    from conjure_metrics.denoisers.checkpoints import inspect_checkpoint

    try:
        source = inspect_checkpoint(model, "checkpoint")
    except ValueError:  # not loadable: refused where it loads, with the reason
        return None
    return source.kind if source is not None and source.relative else None
