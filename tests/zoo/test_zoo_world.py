"""The world renders what its attributes say, deterministically."""

import torch

from conjure_metrics.zoo.world import (
    BACKGROUNDS,
    COLOURS,
    PALETTE,
    PATTERNS,
    SHAPES,
    body_mask,
    render,
    sample_attributes,
)


def _attrs(n, seed=0, **fixed):
    attrs = sample_attributes(n, generator=torch.Generator().manual_seed(seed))
    tables = {
        "shape": SHAPES,
        "coat": COLOURS,
        "pattern": PATTERNS,
        "pattern_colour": COLOURS,
        "background": BACKGROUNDS,
    }
    for name, value in fixed.items():
        attrs[name] = torch.full((n,), tables[name].index(value) if isinstance(value, str) else value)
    return attrs


def _render_with_mask(attrs, seed=1):
    images = render(attrs, torch.Generator().manual_seed(seed))
    return images, body_mask(attrs, torch.Generator().manual_seed(seed))


def _is_colour(images, colour):
    rgb = torch.tensor(PALETTE[colour], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    return (images - rgb).abs().amax(dim=1) < 1e-5


def test_render_is_deterministic_given_the_seed():
    attrs = _attrs(16)
    first = render(attrs, torch.Generator().manual_seed(3))
    again = render(attrs, torch.Generator().manual_seed(3))
    other = render(attrs, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_images_are_32px_rgb_in_unit_range():
    images = render(_attrs(8), torch.Generator().manual_seed(0))
    assert images.shape == (8, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1


def test_pattern_colour_never_equals_coat():
    attrs = sample_attributes(5000, generator=torch.Generator().manual_seed(0))
    assert (attrs["pattern_colour"] != attrs["coat"]).all()


def test_plain_coat_is_exactly_the_named_colour():
    for colour in ("red", "blue", "white"):
        images, body = _render_with_mask(_attrs(8, coat=colour, pattern="plain"))
        assert _is_colour(images, colour)[body].all()


def test_coat_region_mean_colour_matches_the_coat():
    images, body = _render_with_mask(_attrs(16, coat="orange", pattern="spots", pattern_colour="black"))
    coat_share = _is_colour(images, "orange")[body].float().mean()
    assert coat_share > 0.6  # spots cover about 28 % of the body


def test_vertical_stripes_fill_whole_columns_and_spots_do_not():
    def column_purity(pattern):
        attrs = _attrs(24, coat="orange", pattern=pattern, pattern_colour="black", orientation=0)
        images, body = _render_with_mask(attrs)
        marked = _is_colour(images, "black") & body
        purities = []
        for i in range(len(images)):
            columns = body[i].any(dim=0)
            share = marked[i].sum(0)[columns].float() / body[i].sum(0)[columns]
            purities.append(torch.maximum(share, 1 - share).mean())
        return torch.stack(purities).mean()

    assert column_purity("stripes") > 0.99
    assert column_purity("spots") < 0.85


def test_stripes_cover_half_the_body_spots_under_a_third():
    def marked_share(pattern):
        images, body = _render_with_mask(_attrs(24, coat="orange", pattern=pattern, pattern_colour="black"))
        return (_is_colour(images, "black") & body).sum() / body.sum()

    assert 0.4 < marked_share("stripes") < 0.6
    assert 0.2 < marked_share("spots") < 0.35
    assert marked_share("plain") == 0


def test_backgrounds_look_different():
    def background_mean(name):
        images, body = _render_with_mask(_attrs(8, background=name, coat="red", pattern="plain"))
        return images.permute(0, 2, 3, 1)[~body].mean(dim=0)

    night, snow, sea = background_mean("night"), background_mean("snow"), background_mean("sea")
    assert night.mean() < -0.6 and snow.mean() > 0.5
    assert sea[2] > sea[0] + 0.3  # blue


def test_shapes_have_distinct_silhouettes():
    masks = []
    for shape in SHAPES:
        masks.append(body_mask(_attrs(1, shape=shape), torch.Generator().manual_seed(0))[0])
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] ^ masks[j]).sum() > 40
