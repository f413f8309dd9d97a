"""Training text for the zoo LM: scenes of the zoo world, each described by several captions.

A document is one fully specified scene (every attribute drawn, or a named creature and a
background) described by one to three captions joined by ``" ; "``, each caption pinning down a
random subset of the scene's attributes, like the several captions per image of COCO. A caption
is therefore continued by more words and more captions *of the same scene*: what follows a prompt
depends on what it means, which is the signal meaning-as-trajectories reads. (Captions alone would
not do: in the grammar, what follows "a red cat" hardly depends on "red" or "cat".)

Example:
    >>> import random
    >>> from conjure_metrics.trajectory.corpus import scene_document
    >>> text = scene_document(random.Random(3))
    >>> 1 <= len(text.split(" ; ")) <= 3
    True
"""

from __future__ import annotations

import random

from conjure_metrics.zoo.captions import Spec, creature_spec, realise
from conjure_metrics.zoo.world import ATTRIBUTES, COLOURS, CREATURES, ORIENTATIONS, SHAPES

SEPARATOR = ";"


def random_scene(rng: random.Random, p_creature: float = 0.2) -> tuple[Spec, str | None]:
    """A scene with every attribute fixed (and the creature's name when it is a named creature)."""
    background = rng.choice(ATTRIBUTES["background"])
    if rng.random() < p_creature:
        name = rng.choice(list(CREATURES))
        return creature_spec(name, background), name
    coat, pattern = rng.choice(COLOURS), rng.choice(ATTRIBUTES["pattern"])
    mark = rng.choice([c for c in COLOURS if c != coat]) if pattern != "plain" else None
    orientation = rng.choice(ORIENTATIONS) if pattern == "stripes" else None
    return Spec(rng.choice(SHAPES), coat, pattern, mark, orientation, background), None


def partial_spec(scene: Spec, rng: random.Random, keep: float = 0.6) -> Spec:
    """A random subset of the scene's attributes (what one caption of it mentions)."""
    kept = {name: value for name, value in scene.as_dict().items() if rng.random() < keep}
    if kept.get("pattern") in (None, "plain"):
        kept.pop("pattern_colour", None)
    if kept.get("pattern") != "stripes":
        kept.pop("orientation", None)
    return Spec(**kept)


def scene_caption(scene: Spec, creature: str | None, rng: random.Random, split: str = "train") -> str:
    """One caption of the scene, phrased on the ``split`` side (a named creature by name half of the time)."""
    if creature is not None and rng.random() < 0.5:
        background = scene.background if rng.random() < 0.5 else None
        try:
            return realise(creature_spec(creature, background), rng, split, creature).text
        except ValueError:  # a bare name has no held-out phrasing: describe the creature instead
            pass
    for _ in range(100):
        try:
            return realise(partial_spec(scene, rng), rng, split).text
        except ValueError:  # e.g. "a cat" has no held-out phrasing: mention other attributes
            continue
    raise ValueError(f"cannot caption {scene} on the {split!r} side")


def scene_document(rng: random.Random, split: str = "train", max_captions: int = 3) -> str:
    """One to ``max_captions`` captions of one random scene, joined by ``" ; "``."""
    scene, creature = random_scene(rng)
    captions = [scene_caption(scene, creature, rng, split) for _ in range(rng.randint(1, max_captions))]
    return f" {SEPARATOR} ".join(captions)
