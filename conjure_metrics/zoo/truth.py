"""Ground-truth similarity of two zoo captions, from the world's attributes.

A caption means a distribution over rendered attributes: what it specifies is fixed, what
it leaves out is uniform (the pattern colour uniform among colours other than the coat's),
exactly as the world renders training images for it. Two captions are compared through
the Bhattacharyya coefficient ``BC(p, q) = sum_v sqrt(p(v) q(v))`` (1 for identical
distributions, 0 for disjoint ones, symmetric) of four visible factors:

* ``shape`` — the body silhouette;
* ``coat`` — the coat colour;
* ``markings`` — the pattern with what it shows: ``plain``, or ``(pattern, pattern colour)``,
  plus the orientation for stripes (attributes the image cannot show are merged away);
* ``background``.

``mode="mean"`` (default) averages the four coefficients: a graded score in [0, 1] where
each factor that surely differs costs about 0.25. ``mode="joint"`` is the coefficient of the
full joint distributions (the product over independent factors; coat and markings are
taken jointly because the pattern colour avoids the coat colour), which is 0 as soon as
one attribute surely differs.

Example:
    >>> from conjure_metrics.zoo.truth import ground_truth_similarity
    >>> ground_truth_similarity("a zebra", "a white horse with black vertical stripes")
    1.0
    >>> ground_truth_similarity("a red cat", "a blue cat")  # coat differs; markings barely
    0.73
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

from .captions import Caption, Spec, parse
from .world import BACKGROUNDS, COLOURS, ORIENTATIONS, PATTERNS, SHAPES

FACTORS = ("shape", "coat", "markings", "background")


def _uniform_or_fixed(value, values) -> dict:
    return {value: 1.0} if value is not None else {v: 1.0 / len(values) for v in values}


@functools.lru_cache(maxsize=4096)
def attribute_distributions(spec: Spec) -> dict[str, dict]:
    """The distribution of each visible factor, plus ``"appearance"`` = joint (coat, markings)."""
    appearance: dict = defaultdict(float)
    # A fixed pattern colour makes an unspecified coat uniform over the other colours.
    coats = [c for c in COLOURS if c != spec.pattern_colour]
    for coat, p_coat in _uniform_or_fixed(spec.coat, coats).items():
        for pattern, p_pattern in _uniform_or_fixed(spec.pattern, PATTERNS).items():
            if pattern == "plain":
                appearance[(coat, ("plain",))] += p_coat * p_pattern
                continue
            others = [c for c in COLOURS if c != coat]
            for mark, p_mark in _uniform_or_fixed(spec.pattern_colour, others).items():
                if pattern != "stripes":
                    appearance[(coat, (pattern, mark))] += p_coat * p_pattern * p_mark
                    continue
                for orient, p_orient in _uniform_or_fixed(spec.orientation, ORIENTATIONS).items():
                    appearance[(coat, (pattern, mark, orient))] += p_coat * p_pattern * p_mark * p_orient
    coat_marginal: dict = defaultdict(float)
    markings: dict = defaultdict(float)
    for (coat, marking), p in appearance.items():
        coat_marginal[coat] += p
        markings[marking] += p
    return {
        "shape": _uniform_or_fixed(spec.shape, SHAPES),
        "coat": dict(coat_marginal),
        "markings": dict(markings),
        "background": _uniform_or_fixed(spec.background, BACKGROUNDS),
        "appearance": dict(appearance),
    }


def bhattacharyya(p: dict, q: dict) -> float:
    """``sum_v sqrt(p(v) q(v))`` for two distributions given as ``{value: probability}``."""
    return sum(math.sqrt(pv * q[v]) for v, pv in p.items() if v in q)


def _as_spec(caption: str | Caption | Spec) -> Spec:
    if isinstance(caption, Spec):
        return caption
    if isinstance(caption, Caption):
        return caption.spec
    return parse(caption)


def factor_similarities(a: str | Caption | Spec, b: str | Caption | Spec) -> dict[str, float]:
    """Bhattacharyya coefficient of each factor in :data:`FACTORS` (and ``"appearance"``)."""
    pa, pb = attribute_distributions(_as_spec(a)), attribute_distributions(_as_spec(b))
    return {name: bhattacharyya(pa[name], pb[name]) for name in pa}


def ground_truth_similarity(a: str | Caption | Spec, b: str | Caption | Spec, mode: str = "mean") -> float:
    """Similarity in [0, 1] of two captions (text of this grammar, :class:`Caption` or :class:`Spec`).

    ``mode="mean"``: average Bhattacharyya coefficient of shape, coat, markings and
    background. ``mode="joint"``: coefficient of the full attribute distributions.
    Rounded to 12 decimals so that identical meanings give exactly 1.0.
    """
    sims = factor_similarities(a, b)
    if mode == "mean":
        value = sum(sims[name] for name in FACTORS) / len(FACTORS)
    elif mode == "joint":
        value = sims["shape"] * sims["appearance"] * sims["background"]
    else:
        raise ValueError(f"mode must be 'mean' or 'joint', not {mode!r}")
    return round(value, 12)
