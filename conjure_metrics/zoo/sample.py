"""Draw images from conjure-zoo (or any pixel-space diffusers folder) with classifier-free guidance.

Example:
    >>> from conjure_metrics.zoo.sample import load_components, sample
    >>> parts = load_components()
    >>> images = sample(["a zebra", "a red cat"], parts, num_inference_steps=5, seed=0)
    >>> images.shape
    torch.Size([2, 3, 32, 32])

``python -m conjure_metrics.zoo.sample --out docs/images/zoo_samples.png`` writes the card's grid
(``--world --out docs/images/zoo_world.png``: the world's own renderings of the same captions).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from . import default_model_path


@dataclass
class ZooComponents:
    """The four parts of a pixel-space text-to-image diffusers folder."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def load_components(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> ZooComponents:
    """Load ``unet``, ``text_encoder``, ``tokenizer`` and ``scheduler`` offline, float32, eval mode."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path) if path is not None else default_model_path()
    unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True, torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    for module in (unet, text_encoder):
        # diffusers' UNet is its dummy placeholder to a type checker, and transformers types .to() oddly
        cast(torch.nn.Module, module).to(device).requires_grad_(False).eval()
    return ZooComponents(unet, text_encoder, tokenizer, scheduler)


def encode(captions: Sequence[str], parts: ZooComponents) -> torch.Tensor:
    """Text-encoder states for ``captions``, padded to the tokenizer's length as in training."""
    tok = parts.tokenizer
    ids = tok(
        list(captions), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return parts.text_encoder(ids.to(parts.device)).last_hidden_state


@torch.inference_mode()
def sample(
    captions: Sequence[str],
    parts: ZooComponents | None = None,
    guidance_scale: float = 2.5,
    num_inference_steps: int = 25,
    sampler: str = "ddim",
    seed: int = 0,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Images ``(len(captions), 3, 32, 32)`` in [-1, 1], one per caption.

    ``sampler``: "ddim" (deterministic, eta = 0) or "ddpm" (ancestral). The noise comes from one
    CPU generator seeded with ``seed``, so results do not depend on the device.
    ``callback(i, t, x)`` receives each step's state.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    parts = parts or load_components()
    kinds = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}
    if sampler not in kinds:
        raise ValueError(f"sampler must be one of {sorted(kinds)}, not {sampler!r}")
    scheduler = kinds[sampler].from_config(parts.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(seed)
    n, size = len(captions), parts.unet.config.sample_size
    x = torch.randn((n, parts.unet.config.in_channels, size, size), generator=generator).to(parts.device)
    context = encode(list(captions) + [""] * n, parts)
    for i, t in enumerate(scheduler.timesteps):
        eps = parts.unet(torch.cat([x, x]), t, context).sample
        eps_cond, eps_uncond = eps.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        step_kwargs = {"generator": generator} if sampler == "ddpm" else {}
        x = scheduler.step(eps.cpu(), t, x.cpu(), **step_kwargs).prev_sample.to(parts.device)
        if callback is not None:
            callback(i, int(t), x)
    return x.clamp(-1, 1)


GRID_ROWS = {
    "stripes vs spots": ["a tiger", "a leopard", "an orange cat with black stripes", "an orange cat with black spots"],
    "colours": ["a red cat", "a blue cat", "a yellow dog", "a green fish"],
    "patterns": ["a striped pink bear", "a spotted pink bear", "a checked pink bear", "a blotchy pink bear"],
    "synonyms": ["a crimson kitty", "a scarlet cat", "a gray horse with dots", "a silver pony with spots"],
    "creatures": ["a zebra", "a dalmatian", "a panda", "a clownfish"],
    "backgrounds": [
        "a white bear in the snow",
        "a polar bear at night",
        "a fox in the desert",
        "a goldfish underwater",
    ],
}


def save_grid(
    path: str | os.PathLike,
    parts: ZooComponents | None = None,
    rows: dict[str, list[str]] = GRID_ROWS,
    per_caption: int = 2,
    seed: int = 0,
    world: bool = False,
    **sample_kwargs: Any,
) -> Path:
    """A PNG grid: one row per caption family, ``per_caption`` images of each caption.

    Images are the model's samples, or with ``world=True`` the world's own renderings (the
    training distribution) of the same captions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if world:
        from .data import render_captions

        def draw(captions, row_seed):
            return render_captions(captions, torch.Generator().manual_seed(row_seed))
    else:
        parts = parts or load_components()

        def draw(captions, row_seed):
            return sample(captions, parts, seed=row_seed, **sample_kwargs)

    ncols = per_caption * max(len(c) for c in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.25 * ncols, 1.45 * len(rows)), squeeze=False)
    for r, (family, captions) in enumerate(rows.items()):
        repeated = [c for c in captions for _ in range(per_caption)]
        images = draw(repeated, seed + r)
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(repeated):
                ax.imshow(((images[c].permute(1, 2, 0) + 1) / 2).cpu().numpy(), interpolation="nearest")
                if c % per_caption == 0:
                    ax.set_title(repeated[c], fontsize=6.5, loc="left")
        axes[r][0].text(
            -0.15, 0.5, family, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Write a grid of conjure-zoo samples.")
    p.add_argument("--model", type=Path, default=None, help="diffusers folder (default: the embedded model)")
    p.add_argument("--out", type=Path, default=Path("docs/images/zoo_samples.png"))
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", action="store_true", help="draw the world's renderings instead of model samples")
    args = p.parse_args(argv)
    if args.world:
        print(save_grid(args.out, seed=args.seed, world=True))
        return
    parts = load_components(args.model)
    print(
        save_grid(
            args.out,
            parts,
            seed=args.seed,
            guidance_scale=args.guidance,
            num_inference_steps=args.steps,
            sampler=args.sampler,
        )
    )


if __name__ == "__main__":
    main()
