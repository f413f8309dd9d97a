"""Captions of the zoo world: a small grammar with synonyms, paraphrases and a held-out split.

A :class:`Spec` says which attributes a caption pins down; attributes it leaves out are
drawn uniformly when the world renders an image for it (``pattern_colour`` uniformly among
the colours other than the coat's).  :func:`realise` turns a spec into words, choosing a
template and a synonym for every word at random.

Train / held-out split of *phrasings* (the meaning of every word is seen in training;
what is held out is how the words are combined):

* templates :data:`HELD_OUT_TEMPLATES` ("a cat, red, with black stripes", and
  background-first word orders such as "in the snow, a red cat") are never used in training;
* each non-canonical synonym of a colour or pattern (for example "crimson", "banded") is
  never paired with one body shape in training, :func:`held_out_shape_for` names it
  (for example "crimson" is seen with cats, dogs and fish but never with one shape).

:func:`is_held_out` tells which side a realised caption belongs to, and
``sample_caption(rng, split="train" | "held_out")`` draws from either side.

Example:
    >>> import random
    >>> from conjure_metrics.zoo.captions import Spec, realise, parse
    >>> spec = Spec(shape="cat", coat="red", pattern="stripes", pattern_colour="black")
    >>> caption = realise(spec, random.Random(0))
    >>> parse(caption.text) == spec
    True
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from dataclasses import dataclass

from .world import ATTRIBUTES, COLOURS, CREATURES, ORIENTATIONS, SHAPES

# The first synonym of every list is the canonical one.
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "blue": ("blue", "azure"),
    "purple": ("purple", "violet"),
    "pink": ("pink", "rosy"),
    "brown": ("brown", "chocolate"),
    "black": ("black", "ebony"),
    "white": ("white", "ivory"),
    "grey": ("grey", "gray", "silver"),
}
SHAPE_WORDS = {
    "cat": ("cat", "kitty"),
    "dog": ("dog", "hound"),
    "horse": ("horse", "pony"),
    "bear": ("bear",),
    "fish": ("fish",),
}
ANIMAL_WORDS = ("animal", "creature")
# Adjectives ("a striped cat") and noun phrases ("a cat with stripes") for every pattern.
PATTERN_ADJECTIVES = {
    "plain": ("plain", "solid"),
    "stripes": ("striped", "banded"),
    "spots": ("spotted", "dotted"),
    "patches": ("patched", "blotchy"),
    "checks": ("checked", "checkered"),
}
PATTERN_NOUNS = {
    "stripes": ("stripes", "bands"),
    "spots": ("spots", "dots"),
    "patches": ("patches", "blotches"),
    "checks": ("checks", "squares"),
}
ORIENTATION_WORDS = {
    "vertical": ("vertical", "upright"),
    "horizontal": ("horizontal", "level"),
    "diagonal": ("diagonal", "slanted"),
}
ORIENTATION_ADVERBS = {  # "a vertically striped cat"
    "vertical": ("vertically",),
    "horizontal": ("horizontally",),
    "diagonal": ("diagonally", "slantwise"),
}
BACKGROUND_PHRASES = {
    "grass": ("on the grass", "in a meadow", "on a lawn"),
    "snow": ("in the snow", "on snow", "in a snowfield"),
    "night": ("at night", "under the stars", "in the dark"),
    "desert": ("in the desert", "on the sand", "among dunes"),
    "sea": ("in the sea", "in the ocean", "underwater"),
}
CREATURE_WORDS = {
    "tiger": ("tiger", "bengal tiger"),
    "zebra": ("zebra",),
    "leopard": ("leopard",),
    "cheetah": ("cheetah",),
    "snow leopard": ("snow leopard", "ounce"),
    "panther": ("panther", "black panther"),
    "dalmatian": ("dalmatian",),
    "fox": ("fox", "red fox"),
    "giraffe": ("giraffe",),
    "polar bear": ("polar bear", "ice bear"),
    "grizzly": ("grizzly", "grizzly bear"),
    "panda": ("panda", "giant panda"),
    "clownfish": ("clownfish", "anemonefish"),
    "goldfish": ("goldfish",),
}

# Templates for the creature's description; {noun} is a body-shape word or "animal".
TRAIN_TEMPLATES = ("adjectives", "with", "and_adjective")
HELD_OUT_TEMPLATES = ("comma", "background_first")
TEMPLATES = TRAIN_TEMPLATES + HELD_OUT_TEMPLATES


@dataclass(frozen=True)
class Spec:
    """The attributes a caption pins down; ``None`` means the world draws it at random.

    ``pattern_colour`` needs a pattern other than "plain", ``orientation`` needs "stripes".
    """

    shape: str | None = None
    coat: str | None = None
    pattern: str | None = None
    pattern_colour: str | None = None
    orientation: str | None = None
    background: str | None = None

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            value = getattr(self, name)
            if value is not None and value not in values:
                raise ValueError(f"{name}={value!r} is not one of {values}")
        if self.pattern_colour is not None and self.pattern in (None, "plain"):
            raise ValueError("pattern_colour needs a pattern other than 'plain'")
        if self.orientation is not None and self.pattern != "stripes":
            raise ValueError("orientation needs pattern='stripes'")
        if self.pattern_colour is not None and self.pattern_colour == self.coat:
            raise ValueError("pattern_colour must differ from coat")

    def as_dict(self) -> dict[str, str]:
        """The specified attributes only."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Caption:
    """A realised caption: its text, the spec it means, and how it was phrased."""

    text: str
    spec: Spec
    template: str
    creature: str | None = None
    held_out: bool = False


def creature_spec(name: str, background: str | None = None) -> Spec:
    """The spec a named creature stands for, e.g. ``creature_spec("zebra")``."""
    return Spec(**CREATURES[name], background=background)


def held_out_shape_for(word: str) -> str:
    """The body shape a non-canonical colour or pattern synonym is never seen with in training."""
    return SHAPES[zlib.crc32(word.encode()) % len(SHAPES)]


_PATTERN_NOUN_PHRASES = {phrase for phrases in PATTERN_NOUNS.values() for phrase in phrases}
_ORIENTATION_WORD_PHRASES = {phrase for phrases in ORIENTATION_WORDS.values() for phrase in phrases}
_CANONICAL = {words[0] for group in (COLOUR_WORDS, PATTERN_ADJECTIVES, PATTERN_NOUNS) for words in group.values()}


def is_held_out(text: str) -> bool:
    """Whether a caption's phrasing belongs to the held-out side of the split.

    Only held-out templates put a comma in a caption; otherwise the caption is held out when
    it pairs a non-canonical colour or pattern synonym with its :func:`held_out_shape_for`.
    """
    if "," in text:
        return True
    tokens = _tokens(text)
    shapes = {value for kind, value, _ in tokens if kind == "shape"}
    synonyms = [word for kind, _, word in tokens if kind in ("colour", "pattern") and word not in _CANONICAL]
    return any(held_out_shape_for(word) in shapes for word in synonyms)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _describe(spec: Spec, template: str, rng: random.Random) -> str:
    """The noun phrase for a creature spec in the given template (or the closest that applies)."""
    noun = rng.choice(SHAPE_WORDS[spec.shape] if spec.shape else ANIMAL_WORDS)
    coat = rng.choice(COLOUR_WORDS[spec.coat]) if spec.coat else None
    mark = rng.choice(COLOUR_WORDS[spec.pattern_colour]) if spec.pattern_colour else None
    adjective = rng.choice(PATTERN_ADJECTIVES[spec.pattern]) if spec.pattern else None
    pattern_noun = rng.choice(PATTERN_NOUNS[spec.pattern]) if spec.pattern not in (None, "plain") else None
    if spec.orientation:
        adjective = f"{rng.choice(ORIENTATION_ADVERBS[spec.orientation])} {adjective}"
        pattern_noun = f"{rng.choice(ORIENTATION_WORDS[spec.orientation])} {pattern_noun}"
    with_clause = "with " + " ".join(w for w in (mark, pattern_noun) if w) if pattern_noun else None

    if template == "and_adjective" and coat and mark:
        return _article(f"{coat} and {mark} {adjective} {noun}")
    if template == "comma" and (coat or with_clause):
        plain = adjective if spec.pattern == "plain" else None
        return ", ".join([_article(noun)] + [p for p in (coat, with_clause, plain) if p])
    if (template == "with" and with_clause) or mark:  # a pattern colour only sits before a pattern noun
        assert with_clause is not None  # a mark needs a pattern noun (Spec checks it)
        return _article(" ".join(w for w in (coat, noun) if w)) + " " + with_clause
    return _article(" ".join(w for w in (adjective, coat, noun) if w))


def realise(spec: Spec, rng: random.Random, split: str | None = None, creature: str | None = None) -> Caption:
    """Put ``spec`` into words with a random template and random synonyms.

    ``split`` = "train" or "held_out" keeps drawing templates and synonyms until the phrasing
    falls on that side (:func:`is_held_out`); ``None`` allows both. ``creature`` (a key of
    :data:`~conjure_metrics.zoo.world.CREATURES`) phrases the spec by that creature's name;
    the spec must then be that creature's, plus a background.
    """
    if split not in (None, "train", "held_out"):
        raise ValueError(f"split must be 'train', 'held_out' or None, not {split!r}")
    if creature is not None and creature_spec(creature, spec.background) != spec:
        raise ValueError(f"spec {spec} is not {creature!r}")
    templates = TRAIN_TEMPLATES if split == "train" else TEMPLATES
    for _ in range(200):
        template = rng.choice(templates)
        if creature is not None:
            text = _article(rng.choice(CREATURE_WORDS[creature]))
        else:
            text = _describe(spec, template, rng)
        if spec.background:
            place = rng.choice(BACKGROUND_PHRASES[spec.background])
            text = f"{place}, {text}" if template == "background_first" else f"{text} {place}"
        held_out = is_held_out(text)
        if split is None or held_out == (split == "held_out"):
            return Caption(text, spec, template, creature, held_out)
    raise ValueError(f"cannot phrase {spec} on the {split!r} side")


def random_spec(rng: random.Random, p_creature: float = 0.2) -> tuple[Spec, str | None]:
    """A random spec (and the creature's name when it is a named creature).

    Each attribute is specified with a fixed probability; unspecified ones are random in the world.
    """
    background = rng.choice(ATTRIBUTES["background"]) if rng.random() < 0.6 else None
    if rng.random() < p_creature:
        name = rng.choice(list(CREATURES))
        return creature_spec(name, background), name
    shape = rng.choice(SHAPES) if rng.random() < 0.8 else None
    coat = rng.choice(COLOURS) if rng.random() < 0.8 else None
    pattern = rng.choice(ATTRIBUTES["pattern"]) if rng.random() < 0.75 else None
    pattern_colour = orientation = None
    if pattern not in (None, "plain") and rng.random() < 0.6:
        pattern_colour = rng.choice([c for c in COLOURS if c != coat])
    if pattern == "stripes" and rng.random() < 0.5:
        orientation = rng.choice(ORIENTATIONS)
    return Spec(shape, coat, pattern, pattern_colour, orientation, background), None


def sample_caption(rng: random.Random, split: str = "train", p_creature: float = 0.2) -> Caption:
    """A random caption from the ``"train"`` or ``"held_out"`` phrasings."""
    while True:
        spec, creature = random_spec(rng, p_creature)
        try:
            return realise(spec, rng, split, creature)
        except ValueError:
            continue  # e.g. a bare "a cat" has no held-out phrasing


def paraphrase_pair(rng: random.Random, split: str | None = None, p_creature: float = 0.2) -> tuple[Caption, Caption]:
    """Two different phrasings of one random spec (same meaning in the world).

    A named creature is paired with its literal description half of the time
    ("a zebra" / "a white horse with black vertical stripes").
    """
    while True:
        spec, creature = random_spec(rng, p_creature)
        try:
            first = realise(spec, rng, split, creature)
            other_name = creature if creature is None or rng.random() < 0.5 else None
            for _ in range(20):
                second = realise(spec, rng, split, other_name)
                if second.text != first.text:
                    return first, second
        except ValueError:
            continue


# ---------------------------------------------------------------------------------------------
# Parsing: the grammar is unambiguous, so any realised caption maps back to its spec.


def _lexicon() -> list[tuple[list[str], str, str]]:
    entries = []
    for group, kind in (
        (COLOUR_WORDS, "colour"),
        (SHAPE_WORDS, "shape"),
        (PATTERN_ADJECTIVES, "pattern"),
        (PATTERN_NOUNS, "pattern"),
        (ORIENTATION_WORDS, "orientation"),
        (ORIENTATION_ADVERBS, "orientation"),
        (BACKGROUND_PHRASES, "background"),
        (CREATURE_WORDS, "creature"),
    ):
        for value, phrases in group.items():
            entries += [(phrase.split(), kind, value) for phrase in phrases]
    return sorted(entries, key=lambda e: -len(e[0]))  # longest match first: "snow leopard" before "snow"


_LEXICON = _lexicon()
_LEXICON_BY_FIRST_WORD: dict[str, list] = {}
for _entry in _LEXICON:
    _LEXICON_BY_FIRST_WORD.setdefault(_entry[0][0], []).append(_entry)


def _tokens(text: str) -> list[tuple[str, str, str]]:
    """(kind, attribute value, surface words) for each lexicon phrase or other word of ``text``."""
    words = text.lower().replace(",", " ").split()
    tokens = []
    i = 0
    while i < len(words):
        for phrase, kind, value in _LEXICON_BY_FIRST_WORD.get(words[i], ()):
            if words[i : i + len(phrase)] == phrase:
                tokens.append((kind, value, " ".join(phrase)))
                i += len(phrase)
                break
        else:
            tokens.append(("word", words[i], words[i]))
            i += 1
    return tokens


def parse(text: str) -> Spec:
    """The spec a caption of this grammar means (unknown words are ignored).

    A colour word directly before a pattern noun ("with black stripes") or an orientation word,
    or right after "and", is the pattern colour; any other colour word ("a red striped cat") is
    the coat's. What a spec cannot hold is dropped rather than refused: a pattern colour without
    a pattern ("a black and white cat") or equal to the coat, an orientation without stripes.

    Example:
        >>> parse("a red striped cat") == Spec(shape="cat", coat="red", pattern="stripes")
        True
    """
    tokens = _tokens(text)
    found: dict[str, str] = {}
    for j, (kind, value, _) in enumerate(tokens):
        if kind == "creature":
            found.update(CREATURES[value])
        elif kind == "colour":
            after = tokens[j + 1] if j + 1 < len(tokens) else (None, None, None)
            before = tokens[j - 1][:2] if j > 0 else (None, None)
            before_noun = after[0] == "pattern" and after[1] != "plain" and after[2] in _PATTERN_NOUN_PHRASES
            before_orientation = after[0] == "orientation" and after[2] in _ORIENTATION_WORD_PHRASES  # not an adverb
            marks = before_noun or before_orientation or before == ("word", "and")
            found["pattern_colour" if marks else "coat"] = value
        elif kind != "word":
            found[kind] = value
    if found.get("pattern") in (None, "plain") or found.get("pattern_colour") == found.get("coat"):
        found.pop("pattern_colour", None)
    if found.get("pattern") != "stripes":
        found.pop("orientation", None)
    return Spec(**found)
