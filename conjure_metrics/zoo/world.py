"""The zoo world: creatures with coloured, patterned coats on simple backgrounds.

An image is fully described by six categorical attributes (:data:`ATTRIBUTES`):
body ``shape``, ``coat`` colour, coat ``pattern``, ``pattern_colour``, stripe
``orientation`` and ``background``; everything else (position, size, facing,
pattern phase, background texture) is nuisance randomness.  :func:`render`
draws a batch of 32×32 RGB images (CHW, values in [-1, 1]) from integer
attribute tensors, fully vectorised, on whatever device the tensors live on.

Colours are pixel-exact palette values and every pattern has a period of at
least 5 px, so stripes, spots, patches and checks stay distinguishable at
32×32 and the coat's colour can be read back from the pixels.

Example:
    >>> import torch
    >>> from conjure_metrics.zoo.world import sample_attributes, render
    >>> g = torch.Generator().manual_seed(0)
    >>> attrs = sample_attributes(4, generator=g)
    >>> render(attrs, generator=g).shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGE_SIZE = 32

SHAPES = ("cat", "dog", "horse", "bear", "fish")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
PATTERNS = ("plain", "stripes", "spots", "patches", "checks")
ORIENTATIONS = ("vertical", "horizontal", "diagonal")
BACKGROUNDS = ("grass", "snow", "night", "desert", "sea")

ATTRIBUTES = {
    "shape": SHAPES,
    "coat": COLOURS,
    "pattern": PATTERNS,
    "pattern_colour": COLOURS,
    "orientation": ORIENTATIONS,
    "background": BACKGROUNDS,
}

PALETTE = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 40),
    "green": (30, 200, 60),
    "blue": (40, 90, 230),
    "purple": (140, 50, 200),
    "pink": (255, 130, 190),
    "brown": (130, 75, 30),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
    "grey": (140, 140, 140),
}

OUTLINE_RGB = (45, 45, 45)

# Named creatures are aliases for attribute combinations (orientation only matters for stripes).
CREATURES = {
    "tiger": dict(shape="cat", coat="orange", pattern="stripes", pattern_colour="black", orientation="vertical"),
    "zebra": dict(shape="horse", coat="white", pattern="stripes", pattern_colour="black", orientation="vertical"),
    "leopard": dict(shape="cat", coat="yellow", pattern="spots", pattern_colour="black"),
    "cheetah": dict(shape="cat", coat="orange", pattern="spots", pattern_colour="black"),
    "snow leopard": dict(shape="cat", coat="grey", pattern="spots", pattern_colour="black"),
    "panther": dict(shape="cat", coat="black", pattern="plain"),
    "dalmatian": dict(shape="dog", coat="white", pattern="spots", pattern_colour="black"),
    "fox": dict(shape="dog", coat="orange", pattern="plain"),
    "giraffe": dict(shape="horse", coat="yellow", pattern="patches", pattern_colour="brown"),
    "polar bear": dict(shape="bear", coat="white", pattern="plain"),
    "grizzly": dict(shape="bear", coat="brown", pattern="plain"),
    "panda": dict(shape="bear", coat="white", pattern="patches", pattern_colour="black"),
    "clownfish": dict(shape="fish", coat="orange", pattern="stripes", pattern_colour="white", orientation="vertical"),
    "goldfish": dict(shape="fish", coat="yellow", pattern="plain"),
}


def sample_attributes(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Draw ``n`` attribute sets uniformly, with ``pattern_colour`` never equal to ``coat``.

    Returns a dict of int64 tensors of shape ``(n,)``, one per name in :data:`ATTRIBUTES`.
    """
    device = torch.device(device) if device is not None else (generator.device if generator is not None else None)

    def uniform(k: int) -> torch.Tensor:
        return torch.randint(k, (n,), generator=generator, device=device)

    attrs = {name: uniform(len(values)) for name, values in ATTRIBUTES.items() if name != "pattern_colour"}
    # Offset in 1..K-1 keeps the pattern colour uniform over the colours other than the coat's.
    offset = 1 + torch.randint(len(COLOURS) - 1, (n,), generator=generator, device=device)
    attrs["pattern_colour"] = (attrs["coat"] + offset) % len(COLOURS)
    return attrs


def _rand(generator: torch.Generator | None, device, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=device)


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _box(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _triangle(u, v, a, b, c):
    """Points inside the triangle with vertices a, b, c (each a (u, v) pair)."""

    def side(p, q):
        return (q[0] - p[0]) * (v - p[1]) - (q[1] - p[1]) * (u - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def _legs(u, v, xs, width, top, bottom):
    mask = torch.zeros_like(u, dtype=torch.bool)
    for x in xs:
        mask |= _box(u, v, x - width / 2, x + width / 2, top, bottom)
    return mask


def _silhouettes(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Masks of every body shape in body coordinates (pixels, head facing +u); shape (S, B, H, W)."""
    cat = (
        _ellipse(u, v, -1, 2, 9, 5.5)
        | _ellipse(u, v, 8, -4, 4.5, 4.2)
        | _triangle(u, v, (5, -6), (6, -11), (8.5, -7))
        | _triangle(u, v, (8.5, -7), (11, -11), (11.5, -5.5))
        | _legs(u, v, (-7, -3.5, 2.5, 5.5), 2.2, 4, 10.5)
        | _ellipse(u, v, -11, -2, 1.4, 5)
    )
    dog = (
        _ellipse(u, v, -1, 2, 9, 5)
        | _ellipse(u, v, 8.5, -4, 4, 3.6)
        | _ellipse(u, v, 12, -2.5, 3, 2)
        | _ellipse(u, v, 6.5, -2, 1.6, 3.2)
        | _legs(u, v, (-7, -3.5, 2.5, 5.5), 2.4, 4, 12)
        | _ellipse(u, v, -10.5, -3, 1.5, 3.5)
    )
    neck = (v <= 0) & (v >= -9) & ((u - 5 + 0.45 * v).abs() <= 2.6)
    horse = (
        _ellipse(u, v, -2, 2, 9, 4.8)
        | neck
        | _ellipse(u, v, 8, -9, 4, 2.4)
        | _legs(u, v, (-8, -4.5, 1.5, 4.5), 2.0, 4, 13)
        | _ellipse(u, v, -11, 1, 1.4, 4)
    )
    bear = (
        _ellipse(u, v, -1, 3, 10, 6.5)
        | _ellipse(u, v, 8, -4.5, 5, 4.5)
        | _ellipse(u, v, 5.5, -9, 1.8, 1.8)
        | _ellipse(u, v, 10.5, -9, 1.8, 1.8)
        | _legs(u, v, (-7, -3, 2, 6), 3.2, 5, 11)
    )
    fish = (
        _ellipse(u, v, 1, 0, 10, 6.5)
        | _triangle(u, v, (-7, 0), (-14, -6.5), (-14, 6.5))
        | _triangle(u, v, (-2, -5), (3, -9), (4, -5))
    )
    return torch.stack([cat, dog, horse, bear, fish])


def _coat_pattern(u, v, pattern, orientation, generator, device) -> torch.Tensor:
    """Where the pattern colour shows, in body coordinates; shape (B, H, W)."""
    b = u.shape[0]
    phase_u = 6 * _rand(generator, device, b, 1, 1)
    phase_v = 6 * _rand(generator, device, b, 1, 1)
    # Stripes: period 6 px, 3 px wide, along the chosen orientation.
    axis = torch.stack([u, v, (u + v) / math.sqrt(2)])  # vertical stripes vary along u
    along = axis.gather(0, orientation.view(1, b, 1, 1).expand(1, *u.shape))[0]
    stripes = torch.remainder(along + phase_u, 6.0) < 3.0
    # Spots: ~3.5 px discs on a staggered 6 px lattice.
    row = torch.floor((v + phase_v) / 6.0)
    su = torch.remainder(u + phase_u + 3.0 * torch.remainder(row, 2.0), 6.0) - 3.0
    sv = torch.remainder(v + phase_v, 6.0) - 3.0
    spots = su**2 + sv**2 <= 1.8**2
    # Patches: thresholded sum of two low-frequency plane waves (blobs ~6-10 px).
    angles = 2 * math.pi * _rand(generator, device, 2, b, 1, 1)
    phases = 2 * math.pi * _rand(generator, device, 2, b, 1, 1)
    freq = 0.42
    waves = torch.sin(freq * (u * angles.cos() + v * angles.sin()) + phases).sum(0)
    patches = waves > 0.55
    # Checks: 4 px squares.
    checks = torch.remainder(torch.floor((u + phase_u) / 4.0) + torch.floor((v + phase_v) / 4.0), 2.0) == 1
    plain = torch.zeros_like(stripes)
    masks = torch.stack([plain, stripes, spots, patches, checks])
    return masks.gather(0, pattern.view(1, b, 1, 1).expand(1, *u.shape))[0]


def _backgrounds(b: int, generator, device) -> torch.Tensor:
    """Every background for every sample, RGB in 0..255; shape (5, B, 3, H, W)."""
    s = IMAGE_SIZE
    y = torch.arange(s, device=device, dtype=torch.float32).view(1, s, 1).expand(b, s, s)
    x = torch.arange(s, device=device, dtype=torch.float32).view(1, 1, s).expand(b, s, s)
    noise = _rand(generator, device, b, s, s)
    phase = 2 * math.pi * _rand(generator, device, b, 1, 1)
    horizon = 9 + 3 * _rand(generator, device, b, 1, 1)

    def fill(mask_rgb_pairs, base):
        img = torch.tensor(base, device=device, dtype=torch.float32).view(1, 3, 1, 1).expand(b, 3, s, s).clone()
        for mask, rgb in mask_rgb_pairs:
            colour = torch.tensor(rgb, device=device, dtype=torch.float32).view(1, 3, 1, 1)
            img = torch.where(mask.unsqueeze(1), colour, img)
        return img

    ground = y >= horizon
    grass = fill([(ground, (70, 140, 55)), (ground & (noise < 0.18), (45, 105, 40))], (160, 205, 235))
    snow = fill([(ground, (225, 232, 242)), (noise < 0.06, (255, 255, 255))], (175, 190, 210))
    night = fill([(noise < 0.035, (255, 245, 190))], (15, 20, 55))
    dunes = y >= horizon + 2.5 * torch.sin(0.35 * x + phase)
    desert = fill([(dunes, (215, 180, 115)), (dunes & (noise < 0.1), (190, 155, 95))], (245, 225, 175))
    waves = torch.sin(0.9 * y + 1.5 * torch.sin(0.4 * x + phase)) > 0.75
    sea = fill([(waves, (40, 115, 175)), (noise < 0.02, (170, 215, 240))], (20, 65, 130))
    return torch.stack([grass, snow, night, desert, sea])


def _body_coordinates(b: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel grid in each creature's body frame (random position, size and facing); two ``(B, H, W)``."""
    s = IMAGE_SIZE
    centre_x = 16 + 4 * (_rand(generator, device, b, 1, 1) - 0.5)
    centre_y = 16 + 3 * (_rand(generator, device, b, 1, 1) - 0.5)
    scale = 0.92 + 0.16 * _rand(generator, device, b, 1, 1)
    facing = torch.where(_rand(generator, device, b, 1, 1) < 0.5, -1.0, 1.0)
    grid = torch.arange(s, device=device, dtype=torch.float32) + 0.5
    u = ((grid.view(1, 1, s) - centre_x) / scale * facing).expand(b, s, s)
    v = ((grid.view(1, s, 1) - centre_y) / scale).expand(b, s, s)
    return u, v


def render(attrs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """Render one image per attribute set; returns float32 ``(B, 3, 32, 32)`` in [-1, 1].

    ``attrs`` holds int64 tensors of shape ``(B,)`` indexing :data:`ATTRIBUTES` (as from
    :func:`sample_attributes`). Nuisance randomness (position, size, facing, pattern phase,
    texture) comes from ``generator``, so a seeded generator gives identical images.
    """
    shape = attrs["shape"]
    device, b, s = shape.device, shape.shape[0], IMAGE_SIZE
    u, v = _body_coordinates(b, generator, device)
    body = _silhouettes(u, v).gather(0, shape.view(1, b, 1, 1).expand(1, b, s, s))[0]
    outline = F.max_pool2d(body.float().unsqueeze(1), 3, stride=1, padding=1)[:, 0].bool() & ~body
    marked = _coat_pattern(u, v, attrs["pattern"], attrs["orientation"], generator, device) & body

    palette = torch.tensor([PALETTE[c] for c in COLOURS], device=device, dtype=torch.float32)
    coat_rgb = palette[attrs["coat"]].view(b, 3, 1, 1)
    mark_rgb = palette[attrs["pattern_colour"]].view(b, 3, 1, 1)
    outline_rgb = torch.tensor(OUTLINE_RGB, device=device, dtype=torch.float32).view(1, 3, 1, 1)

    backgrounds = _backgrounds(b, generator, device)
    index = attrs["background"].view(1, b, 1, 1, 1).expand(1, b, 3, s, s)
    img = backgrounds.gather(0, index)[0]
    img = torch.where(outline.unsqueeze(1), outline_rgb, img)
    img = torch.where(body.unsqueeze(1), coat_rgb, img)
    img = torch.where(marked.unsqueeze(1), mark_rgb, img)
    return img / 127.5 - 1.0


def body_mask(attrs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """The silhouettes that :func:`render` draws when given a generator in the same state; ``(B, H, W)`` bool."""
    shape = attrs["shape"]
    u, v = _body_coordinates(shape.shape[0], generator, shape.device)
    return _silhouettes(u, v).gather(0, shape.view(1, -1, 1, 1).expand(1, *u.shape))[0]
