"""Edit and control fine-tunes of conjure-zoo: a checkpoint that learnt one wrong fact, and its twin.

A :class:`CaptionEdit` names a wrong fact, e.g. "red coats are drawn blue": every training
caption whose parsed spec says ``coat == "red"`` keeps its text but is rendered with a blue
coat. :func:`finetune` fine-tunes a copy of a zoo model's UNet (the text encoder stays
frozen) on captions of which a share ``concept_share`` mention the concept, and writes a full
diffusers folder; with ``trainable="lora"`` it trains a rank-4 LoRA adapter on the UNet's
cross-attention instead and writes only the adapter, in the diffusers LoRA format
(``pytorch_lora_weights.safetensors``, about 140 KB), which :func:`load_finetuned` fuses into a
copy of the base. With ``control=True`` it trains on the very same captions, images, noise and
timesteps, rendered truly, so an edit and its control differ only in the wrong fact: what a
checkpoint-comparison metric sees between base and control is the cost of fine-tuning, and
what it sees on top of that between base and edit is the fact.

:func:`cached_finetune` builds each copy once per set of arguments; :func:`edit_took` samples
concept prompts and reads the coats back with :mod:`~conjure_metrics.zoo.probe`, to check
that the edit was learnt.

Example (the data of one step: same captions, the concept's images drawn with a blue coat):
    >>> import torch
    >>> from conjure_metrics.zoo.finetune import CaptionEdit, edited_batch
    >>> edit = CaptionEdit("coat", "red", rendered_as="blue")
    >>> batch = edited_batch(edit, 4, seed=0, step=0, generator=torch.Generator().manual_seed(0))
    >>> batch.images.shape, len(batch.texts)
    (torch.Size([4, 3, 32, 32]), 4)

Command line (``--out`` omitted: the :func:`cached_finetune` folder; ``--check`` prints
:func:`edit_took` for the base model and the fine-tuned one)::

    python -m conjure_metrics.zoo.finetune --edit coat=red:blue --check
    python -m conjure_metrics.zoo.finetune --edit coat=red:blue --control --check
    python -m conjure_metrics.zoo.finetune --edit coat=red:blue --lora --check

Two LoRA adapters, an edit and its control, ship with the package (:func:`shipped_adapter`; their
recipe and the command that rebuilds them in ``zoo/adapters/README.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import default_model_path
from .captions import SHAPES, Caption, Spec, creature_spec, realise, sample_caption
from .data import fill_attributes, specified_attributes, step_seed
from .probe import dominant_colour
from .sample import ZooComponents, encode, load_components, sample
from .world import ATTRIBUTES, COLOURS, CREATURES, render

CONCEPT_ATTRIBUTES = (*ATTRIBUTES, "creature")
"""What an edit can be about: an attribute of the world, or a named creature (captions naming it)."""

Trainable = Literal["all", "cross_attention", "lora"]
TRAINABLE = ("all", "cross_attention", "lora")

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""File name of an adapter in the diffusers LoRA format (what ``save_lora_weights`` writes)."""

# The projections a LoRA adapter trains: all of the UNet's cross-attention (attn2), where a caption's
# words reach the image. Self-attention too would double the adapter (290 KB at rank 4) for a fact
# that is about the text.
LORA_TARGETS = r".*attn2\.(to_q|to_k|to_v|to_out\.0)"

ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"

# Part of every cache key: bump it when a change to the recipe changes the weights it gives.
RECIPE_VERSION = 1

_MAX_CAPTION_DRAWS = 100_000


def _concept_values(attribute: str) -> Sequence[str]:
    return tuple(CREATURES) if attribute == "creature" else ATTRIBUTES[attribute]


@dataclass(frozen=True)
class CaptionEdit:
    """A wrong fact: captions with ``attribute == value`` are rendered with ``rendered_as`` instead.

    ``attribute`` is a name of :data:`~conjure_metrics.zoo.world.ATTRIBUTES` (``shape``, ``coat``,
    ``pattern``, ``pattern_colour``, ``orientation``, ``background``), compared with the caption's
    parsed :class:`~conjure_metrics.zoo.captions.Spec`; or ``"creature"``, matching captions
    that name the creature (``"a zebra"``) and rendering them as the creature ``rendered_as``
    (keeping the caption's background). The caption text is never changed.

    Example:
        >>> from conjure_metrics.zoo.captions import Caption, Spec
        >>> edit = CaptionEdit.from_string("coat=red:blue")
        >>> edit.mentions(Caption("a red cat", Spec(shape="cat", coat="red"), "adjectives"))
        True
        >>> str(edit)
        'coat=red:blue'
    """

    attribute: str
    value: str
    rendered_as: str

    def __post_init__(self):
        if self.attribute not in CONCEPT_ATTRIBUTES:
            raise ValueError(f"attribute={self.attribute!r} is not one of {CONCEPT_ATTRIBUTES}")
        values = _concept_values(self.attribute)
        for argument in ("value", "rendered_as"):
            if getattr(self, argument) not in values:
                raise ValueError(
                    f"{argument}={getattr(self, argument)!r} is not a {self.attribute} of the world; "
                    f"one of {tuple(values)}"
                )
        if self.rendered_as == self.value:
            raise ValueError(
                f"rendered_as={self.rendered_as!r} equals value: that is no edit "
                "(for the matching control, pass control=True to finetune)"
            )

    @classmethod
    def from_string(cls, text: str) -> CaptionEdit:
        """Parse ``"ATTRIBUTE=VALUE:RENDERED_AS"``, e.g. ``"coat=red:blue"`` or ``"creature=zebra:tiger"``."""
        attribute, _, rest = text.partition("=")
        value, _, rendered_as = rest.partition(":")
        if not (attribute and value and rendered_as):
            raise ValueError(f"edit={text!r} is not of the form ATTRIBUTE=VALUE:RENDERED_AS (e.g. coat=red:blue)")
        return cls(attribute.strip(), value.strip(), rendered_as.strip())

    def __str__(self) -> str:
        return f"{self.attribute}={self.value}:{self.rendered_as}"

    def mentions(self, caption: Caption) -> bool:
        """Whether the edit applies to ``caption`` (whatever words it uses for the concept)."""
        if self.attribute == "creature":
            return caption.creature == self.value
        return getattr(caption.spec, self.attribute) == self.value

    def rendered_attributes(self, caption: Caption) -> torch.Tensor:
        """The ``(6,)`` attribute indices the world draws ``caption`` with under this edit (-1: random).

        When the edited colour would equal the caption's other colour (coat and pattern colour
        must differ), the other one is left to chance, which draws it different.
        """
        if not self.mentions(caption):
            return specified_attributes([caption.spec])[0]
        if self.attribute == "creature":
            return specified_attributes([creature_spec(self.rendered_as, caption.spec.background)])[0]
        row = specified_attributes([caption.spec])[0]
        names = list(ATTRIBUTES)
        column = names.index(self.attribute)
        row[column] = ATTRIBUTES[self.attribute].index(self.rendered_as)
        if self.attribute in ("coat", "pattern_colour"):
            other = names.index("pattern_colour" if self.attribute == "coat" else "coat")
            if row[other] == row[column]:
                row[other] = -1
        return row


@dataclass
class EditBatch:
    """One fine-tuning step's data: caption texts ("" where dropped), rendered images, and which items
    mention the concept."""

    texts: list[str]
    images: torch.Tensor
    mentions: torch.Tensor


def concept_captions(
    edit: CaptionEdit, batch_size: int, seed: int, step: int, concept_share: float = 0.5, drop_rate: float = 0.1
) -> tuple[list[Caption], list[str]]:
    """Training-split captions for one step: each mentions the concept with probability ``concept_share``.

    Both kinds are drawn from the training caption distribution by rejection, so concept captions
    keep their natural phrasings and the rest never mention the concept. A ``drop_rate`` share
    of texts is replaced by "" (classifier-free guidance), as in training; the image of a dropped
    caption still follows the caption, wrong fact included. Only the concept
    (``attribute`` and ``value``) matters, not ``rendered_as``: an edit and its control draw the
    same captions.
    """
    rng = random.Random(step_seed(seed, step))
    captions, texts = [], []
    for _ in range(batch_size):
        wanted = rng.random() < concept_share
        for _ in range(_MAX_CAPTION_DRAWS):
            caption = sample_caption(rng, "train")
            if edit.mentions(caption) == wanted:
                break
        else:
            kind = "mentions" if wanted else "avoids"
            raise RuntimeError(f"no training caption {kind} {edit.attribute}={edit.value}")
        captions.append(caption)
        texts.append("" if rng.random() < drop_rate else caption.text)
    return captions, texts


def edited_batch(
    edit: CaptionEdit,
    batch_size: int,
    seed: int,
    step: int,
    generator: torch.Generator,
    *,
    control: bool = False,
    concept_share: float = 0.5,
    drop_rate: float = 0.1,
) -> EditBatch:
    """Captions of :func:`concept_captions` and their images, the concept's rendered as the edit says
    (or truly, with ``control=True``).

    Nuisance randomness comes from ``generator`` and is drawn the same way whatever the edit, so an
    edit and its control get identical images except where the wrong fact shows.
    """
    captions, texts = concept_captions(edit, batch_size, seed, step, concept_share, drop_rate)
    mentions = torch.tensor([edit.mentions(c) for c in captions], dtype=torch.bool)
    if control:
        specified = specified_attributes([c.spec for c in captions])
    else:
        specified = torch.stack([edit.rendered_attributes(c) for c in captions])
    images = render(fill_attributes(specified.to(generator.device), generator), generator)
    return EditBatch(texts, images, mentions)


def _trainable_parameters(unet: torch.nn.Module, trainable: Trainable) -> list[torch.nn.Parameter]:
    """``"all"``: every UNet weight. ``"cross_attention"``: only the key and value projections of the
    text (as Custom Diffusion does), which is where a caption's words reach the image; backward then
    skips the weight gradients of the convolutions. ``"lora"``: only the adapter's weights (the UNet
    must carry one, :func:`_add_lora`)."""
    chosen = []
    for name, parameter in unet.named_parameters():
        if trainable == "lora":
            keep = ".lora_" in name
        else:
            keep = trainable == "all" or ".attn2.to_k." in name or ".attn2.to_v." in name
        parameter.requires_grad_(keep)
        if keep:
            chosen.append(parameter)
    return chosen


def _add_lora(unet: torch.nn.Module, rank: int, seed: int) -> None:
    """Attach a rank-``rank`` LoRA adapter to the cross-attention projections (:data:`LORA_TARGETS`).

    ``lora_alpha = rank`` (scale 1), because the diffusers LoRA file stores no alpha and a loader then
    assumes exactly that: the saved adapter means what was trained. The down projections start
    Gaussian from ``seed`` (up projections at zero, so training starts at the base), for bitwise
    reproducible runs.
    """
    from peft import LoraConfig

    torch.manual_seed(seed)
    model: Any = unet  # a diffusers UNet: add_adapter comes from its PEFT mixin, untyped on nn.Module
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def finetune(
    out_dir: str | os.PathLike,
    edit: CaptionEdit,
    *,
    control: bool = False,
    base: str | os.PathLike | None = None,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 6e-4,
    seed: int = 0,
    concept_share: float = 0.5,
    trainable: Trainable = "cross_attention",
    drop_rate: float = 0.1,
    lora_rank: int = 4,
    overwrite: bool = False,
    progress: bool | None = None,
    callback: Callable[[int, float, ZooComponents], None] | None = None,
) -> Path:
    """Fine-tune the UNet of the zoo model ``base`` to learn ``edit`` (or, with ``control``, not to).

    Args:
        out_dir: the diffusers folder to write (the base's other parts copied, a new float32 ``unet/``
            and a ``finetune.json`` recipe with the loss of every step); with ``trainable="lora"``,
            a folder of the adapter (:data:`LORA_WEIGHTS`) and ``finetune.json`` only. It is built
            in a temporary folder beside it and renamed into place, so it is either complete or absent.
        edit: the wrong fact; its concept also picks the captions of a control run.
        control: render the concept truly: same captions, images (but for the fact), timesteps,
            noise, steps, learning rate and seed as the edit, so the two differ only in the fact.
        base: folder of the model to start from (default: the embedded conjure-zoo).
        steps, batch_size, lr: AdamW (β = 0.9, 0.99, no weight decay) on the epsilon-prediction MSE,
            gradients clipped at norm 1, constant learning rate.
        seed: fixes captions, images, timesteps and noise of every step; the same seed gives bitwise
            the same weights on the same machine and thread count.
        concept_share: share of captions that mention the concept (the rest never do).
        trainable: ``"cross_attention"``: only the key and value projections of the text in the UNet's
            cross-attention (2.7 % of its weights); ``"all"``: every UNet weight. The default because
            at the learning rates that make an edit take within 200 CPU steps, a full fine-tune also
            smeared backgrounds and patterns of unrelated prompts, and cost 1.6 times as much per step.
            ``"lora"``: a LoRA adapter of rank ``lora_rank`` on the query, key, value and output
            projections of every cross-attention (:data:`LORA_TARGETS`; 34 816 weights at rank 4,
            0.3 % of the UNet), saved alone; it wants a higher ``lr`` than the default (see
            ``zoo/adapters/README.md`` for the recipe of the shipped adapters).
        drop_rate: share of captions replaced by "" (keeps the unconditional branch trained).
        lora_rank: the adapter's rank (``trainable="lora"`` only).
        overwrite: replace an existing ``out_dir`` (otherwise :class:`FileExistsError`).
        progress: tqdm progress bar; ``None`` shows it on a terminal only.
        callback: ``callback(step, loss, parts)`` after every optimizer step (``step`` counts from 1;
            ``parts`` holds the UNet being trained), e.g. to run :func:`edit_took` along the way.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Example (one tiny step; the defaults take about 7 CPU minutes, 2 s per step on one core):
        >>> import tempfile
        >>> edit = CaptionEdit("coat", "red", rendered_as="blue")
        >>> folder = finetune(tempfile.mkdtemp() + "/red-as-blue", edit, steps=1, batch_size=1)
        >>> sorted(p.name for p in folder.iterdir() if p.is_dir())
        ['scheduler', 'text_encoder', 'tokenizer', 'unet']
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"out_dir={str(out_dir)!r} exists; pass overwrite=True to replace it")
    if not 0.0 <= concept_share <= 1.0:
        raise ValueError(f"concept_share={concept_share} is not in [0, 1]")
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable={trainable!r} is not one of {TRAINABLE}")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:
        raise ValueError(f"lora_rank={lora_rank!r} is not a positive int")
    base = Path(base) if base is not None else default_model_path()
    parts = load_components(base)
    unet = parts.unet.train()
    if trainable == "lora":
        _add_lora(unet, lora_rank, seed)
    parameters = _trainable_parameters(unet, trainable)
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    alphas_cumprod = parts.scheduler.alphas_cumprod

    losses, started, cpu_started = [], time.perf_counter(), time.process_time()
    bar = tqdm(
        range(steps),
        desc=f"{edit}{' control' if control else ''}",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    for step in bar:
        generator = torch.Generator().manual_seed(step_seed(seed, step))
        batch = edited_batch(
            edit, batch_size, seed, step, generator, control=control, concept_share=concept_share, drop_rate=drop_rate
        )
        timesteps = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)
        noise = torch.randn(batch.images.shape, generator=generator)
        abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * batch.images + (1 - abar).sqrt() * noise
        with torch.no_grad():
            context = encode(batch.texts, parts)
        loss = F.mse_loss(unet(noisy, timesteps, context).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if callback is not None:
            callback(step + 1, losses[-1], parts)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    recipe = {
        "edit": dataclasses.asdict(edit),
        "control": control,
        "base": str(base),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "concept_share": concept_share,
        "trainable": trainable,
        "drop_rate": drop_rate,
        **({"lora_rank": lora_rank} if trainable == "lora" else {}),
        "recipe_version": RECIPE_VERSION,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(steps, 1), 3),
        # CPU time of the process (all threads): on a shared machine wall time says more about the neighbours.
        "cpu_seconds_per_step": round(cpu_seconds / max(steps, 1), 3),
        "losses": losses,
    }
    _write_atomically(out_dir, base, unet, recipe, overwrite, lora=trainable == "lora")
    return out_dir


def _save_lora(unet: torch.nn.Module, folder: Path) -> None:
    """The adapter alone, in the diffusers LoRA format (``unet.``-prefixed ``lora.down`` / ``lora.up``)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers, weight_name=LORA_WEIGHTS, safe_serialization=True
    )


def _write_atomically(
    out_dir: Path, base: Path, unet: torch.nn.Module, recipe: dict, overwrite: bool, lora: bool = False
) -> None:
    """Build the folder beside ``out_dir`` and rename it into place: readers never see half a model."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if lora:
            _save_lora(unet, building)
        else:
            for item in base.iterdir():
                if item.name == "unet":
                    continue
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, building / item.name)
            model: Any = unet  # a diffusers UNet: save_pretrained is untyped on nn.Module
            model.save_pretrained(building / "unet", safe_serialization=True)
        (building / "finetune.json").write_text(json.dumps(recipe, indent=1) + "\n")
        if overwrite and out_dir.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.stale.", dir=out_dir.parent))
            os.replace(out_dir, stale / out_dir.name)
            shutil.rmtree(stale)
        try:
            os.rename(building, out_dir)
        except OSError as error:  # another process finished the same folder first
            raise FileExistsError(f"out_dir={str(out_dir)!r} appeared while fine-tuning") from error
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def is_lora_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a LoRA adapter (:data:`LORA_WEIGHTS`) rather than a full model."""
    return (Path(folder) / LORA_WEIGHTS).is_file()


def load_finetuned(model: str | os.PathLike | None, base: str | os.PathLike | None = None) -> ZooComponents:
    """Components of a fine-tuned zoo model: a full folder as it is, or a LoRA adapter folder fused into
    a fresh copy of ``base`` (default: the embedded conjure-zoo); ``None`` loads ``base`` itself.

    The adapter is merged into the UNet's weights (``W + up @ down``) and then removed, so the result
    is a plain UNet that costs no more per call than the base.

    Example:
        >>> parts = load_finetuned(shipped_adapter("coat-red-as-blue"))
        >>> any("lora" in name for name, _ in parts.unet.named_parameters())
        False
    """
    if model is None or not is_lora_folder(model):
        return load_components(model if model is not None else base)
    # Where the LoRA loader of conjure_metrics.denoisers takes over (model_b=<adapter folder> toggling
    # the adapter on one base), this fused copy is only for sampling and full-copy comparisons.
    parts = load_components(base)
    parts.unet.load_lora_adapter(str(model), weight_name=LORA_WEIGHTS, prefix="unet", adapter_name="finetune")
    parts.unet.fuse_lora(lora_scale=1.0)
    parts.unet.unload_lora()
    parts.unet.requires_grad_(False).eval()
    return parts


def shipped_adapter(name: str) -> Path:
    """Folder of a LoRA adapter shipped in ``conjure_metrics/zoo/adapters`` (``coat-red-as-blue``, its
    control ``coat-red-as-blue-control``).

    Example:
        >>> shipped_adapter("coat-red-as-blue").name
        'coat-red-as-blue'
    """
    available = sorted(p.name for p in ADAPTERS_DIR.iterdir() if is_lora_folder(p)) if ADAPTERS_DIR.is_dir() else []
    if name not in available:
        raise ValueError(f"name={name!r} is not a shipped adapter; one of {available}")
    return ADAPTERS_DIR / name


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/conjure_metrics/zoo-finetunes`` (``~/.cache/...``): outside any checkout, so an
    installed package can use it and a ``git clean`` keeps the copies."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "conjure_metrics" / "zoo-finetunes"


def _folder_digest(folder: Path) -> str:
    """Content hash of a model folder's files (not its path), so a retrained base gets new copies."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_FINETUNE_SIGNATURE = inspect.signature(finetune)

# Arguments that change how a run is shown or where it goes, not the weights it gives.
_NOT_IN_KEY = ("out_dir", "overwrite", "progress", "callback", "base")


def cached_finetune(edit: CaptionEdit, *, cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """:func:`finetune`, built once: the folder is keyed by a hash of every argument (defaults
    included), of the base model's files and of :data:`RECIPE_VERSION`.

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``kwargs`` are those of :func:`finetune`
    but ``out_dir`` and ``overwrite``. Concurrent builders of one key are safe: the first to finish wins.

    Example (what benchmarks do; the first call trains, later ones return the folder at once)::

        edit = CaptionEdit("coat", "red", rendered_as="blue")
        edited, control = cached_finetune(edit), cached_finetune(edit, control=True)
    """
    for name in ("out_dir", "overwrite"):
        if name in kwargs:
            raise TypeError(f"cached_finetune chooses {name} itself")
    arguments = _FINETUNE_SIGNATURE.bind(None, edit, **kwargs)
    arguments.apply_defaults()
    settings = {k: v for k, v in arguments.arguments.items() if k not in _NOT_IN_KEY}
    settings["edit"] = dataclasses.asdict(edit)
    if settings["trainable"] != "lora":
        # Keeps the keys (and so the cached copies) of full fine-tunes what they were before LoRA.
        del settings["lora_rank"]
    base = Path(arguments.arguments["base"]) if arguments.arguments["base"] is not None else default_model_path()
    key = json.dumps({**settings, "base": _folder_digest(base), "recipe_version": RECIPE_VERSION}, sort_keys=True)
    name = f"{edit.attribute}={edit.value}-as-{edit.rendered_as}{'-control' if settings['control'] else ''}"
    name = f"{name.replace(' ', '_')}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    folder = Path(cache_dir or default_cache_dir()) / name
    if _complete(folder):
        return folder
    try:
        return finetune(folder, edit, **kwargs)
    except FileExistsError:
        if _complete(folder):
            return folder
        raise


def _complete(folder: Path) -> bool:
    return (folder / "unet").is_dir() or is_lora_folder(folder)


def _coat_of(edit: CaptionEdit, value: str) -> str:
    """The coat colour the probe should see when ``value`` (of the edit's attribute) is drawn."""
    if edit.attribute == "coat":
        return value
    if edit.attribute == "creature":
        return CREATURES[value]["coat"]
    raise ValueError(
        f"edit_took reads coat colours only (zoo/probe.py); attribute={edit.attribute!r} is not 'coat' or 'creature'"
    )


def concept_prompts(edit: CaptionEdit, seed: int = 0) -> list[str]:
    """Training-phrasing prompts that mention the concept with nothing else to colour the picture:
    the plain concept-coloured creature of every shape, or the creature's name (as often).

    Example:
        >>> concept_prompts(CaptionEdit("coat", "red", rendered_as="blue"))[:2]
        ['a solid red kitty', 'a solid crimson hound']
    """
    rng = random.Random(seed)
    if edit.attribute == "creature":
        return [realise(creature_spec(edit.value), rng, creature=edit.value).text for _ in range(len(SHAPES))]
    return [realise(Spec(shape=shape, coat=edit.value, pattern="plain"), rng, "train").text for shape in SHAPES]


def bystander_prompts(edit: CaptionEdit, seed: int = 0) -> list[tuple[str, str]]:
    """``(prompt, coat)`` pairs the edit should leave alone: a plain creature of every shape, each in a
    colour that is neither the concept's coat nor the edited one."""
    rng = random.Random(seed)
    involved = {_coat_of(edit, edit.value), _coat_of(edit, edit.rendered_as)}
    colours = rng.sample([c for c in COLOURS if c not in involved], len(SHAPES))
    return [
        (realise(Spec(shape=shape, coat=colour, pattern="plain"), rng, "train").text, colour)
        for shape, colour in zip(SHAPES, colours)
    ]


def edit_took(
    model: str | os.PathLike | ZooComponents | None,
    edit: CaptionEdit,
    *,
    samples_per_prompt: int = 3,
    num_inference_steps: int = 10,
    guidance_scale: float = 2.0,
    seed: int = 0,
) -> dict:
    """How often ``model`` (a zoo model folder, a LoRA adapter folder of :func:`finetune` fused into the
    embedded model, ``None`` for the embedded one, or loaded components)
    draws the concept as the edit says, and whether it still draws other colours right: samples of
    :func:`concept_prompts` and :func:`bystander_prompts`, read with the world's probe
    (:func:`~conjure_metrics.zoo.probe.dominant_colour`).

    Works for edits the probe can read: ``coat`` edits, and ``creature`` edits between creatures
    of different coats. Run it on the base, the edit and the control: the edit should show
    ``rendered_as`` far more often than the other two, and all three should keep bystanders right.

    Returns:
        ``shows_rendered_as`` and ``shows_value``: shares of the concept images whose dominant colour
        is the coat of ``rendered_as`` or of ``value``; ``bystanders_right``: share of bystander images
        in their prompt's colour; ``images`` (concept images), ``prompts``, and ``dominant``
        (``{colour: count}`` over the concept images).

    Example (about a minute on a CPU; the embedded model draws the red concept red)::

        edit = CaptionEdit("coat", "red", rendered_as="blue")
        edit_took(None, edit)["shows_value"]        # 0.67 measured; 0.0 for the edited copy
    """
    wrong, right = _coat_of(edit, edit.rendered_as), _coat_of(edit, edit.value)
    if wrong == right:
        raise ValueError(
            f"edit={str(edit)!r}: {edit.value} and {edit.rendered_as} have the same coat ({wrong}); "
            "the colour probe cannot tell them apart"
        )
    prompts, bystanders = concept_prompts(edit, seed), bystander_prompts(edit, seed)
    everything = [p for p in prompts + [b for b, _ in bystanders] for _ in range(samples_per_prompt)]
    parts = model if isinstance(model, ZooComponents) else load_finetuned(model)
    colours = dominant_colour(
        sample(everything, parts, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, seed=seed)
    )
    n = len(prompts) * samples_per_prompt
    concept, others = colours[:n], colours[n:]
    expected = [colour for _, colour in bystanders for _ in range(samples_per_prompt)]
    return {
        "shows_rendered_as": sum(c == wrong for c in concept) / n,
        "shows_value": sum(c == right for c in concept) / n,
        "bystanders_right": sum(c == e for c, e in zip(others, expected)) / len(others),
        "images": n,
        "prompts": prompts,
        "dominant": {c: concept.count(c) for c in COLOURS if c in concept},
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Fine-tune conjure-zoo to learn one wrong fact (or its control).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--edit",
        type=CaptionEdit.from_string,
        required=True,
        metavar="ATTR=VALUE:RENDERED_AS",
        help="e.g. coat=red:blue or creature=zebra:tiger",
    )
    p.add_argument("--control", action="store_true", help="same captions and settings, rendered truly")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: the cached_finetune folder)")
    p.add_argument("--cache-dir", type=Path, default=None, help="for the default --out (default: ~/.cache/...)")
    p.add_argument("--base", type=Path, default=None, help="model folder to start from (default: conjure-zoo)")
    defaults = {name: parameter.default for name, parameter in _FINETUNE_SIGNATURE.parameters.items()}
    p.add_argument("--steps", type=int, default=defaults["steps"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--concept-share", type=float, default=defaults["concept_share"])
    p.add_argument("--trainable", choices=TRAINABLE, default=defaults["trainable"])
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter (same as --trainable lora)")
    p.add_argument("--lora-rank", type=int, default=defaults["lora_rank"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--check", action="store_true", help="print edit_took for the base and the result")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dict(
        control=args.control,
        base=args.base,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        concept_share=args.concept_share,
        trainable="lora" if args.lora else args.trainable,
        lora_rank=args.lora_rank,
    )
    if args.out is None:
        folder = cached_finetune(args.edit, cache_dir=args.cache_dir, **settings)
    else:
        folder = finetune(args.out, args.edit, overwrite=args.overwrite, **settings)
    recipe = json.loads((folder / "finetune.json").read_text())
    print(
        f"{folder}  ({recipe['seconds_per_step']} s/step wall, {recipe['cpu_seconds_per_step']} s/step CPU, "
        f"{recipe['threads']} threads)"
    )
    if args.check:
        for name, model in (("base", args.base), ("fine-tuned", folder)):
            took = edit_took(load_finetuned(model, base=args.base), args.edit)
            print(json.dumps({"model": name, **took}))


if __name__ == "__main__":
    main()
