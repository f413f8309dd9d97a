"""Read attributes back from generated pixels, to check that samples follow their captions."""

from __future__ import annotations

import torch

from .world import COLOURS, PALETTE


def palette_distances(images: torch.Tensor) -> torch.Tensor:
    """Distance (0..255 RGB units) of every pixel to every palette colour; ``(B, K, H, W)``."""
    rgb = (images.clamp(-1, 1) + 1) * 127.5
    palette = torch.tensor([PALETTE[c] for c in COLOURS], dtype=rgb.dtype, device=rgb.device)
    return (rgb.unsqueeze(1) - palette.view(1, -1, 3, 1, 1)).norm(dim=2)


def colour_fraction(images: torch.Tensor, colour: str, tolerance: float = 40.0) -> torch.Tensor:
    """Share of each image's pixels within ``tolerance`` of the palette colour ``colour``; ``(B,)``."""
    return (palette_distances(images)[:, COLOURS.index(colour)] < tolerance).float().mean(dim=(1, 2))


def dominant_colour(images: torch.Tensor, tolerance: float = 40.0) -> list[str]:
    """The palette colour covering most pixels of each image: the coat, for plain creatures, except on
    near-white grounds (snow), where the background itself reads as "white"."""
    close = palette_distances(images) < tolerance
    return [COLOURS[i] for i in close.float().mean(dim=(2, 3)).argmax(dim=1).tolist()]
