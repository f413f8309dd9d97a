"""The caption grammar: synonyms, paraphrases, a disjoint held-out split, an exact parser."""

import random

import pytest

from conjure_metrics.zoo.captions import (
    HELD_OUT_TEMPLATES,
    Spec,
    creature_spec,
    held_out_shape_for,
    is_held_out,
    paraphrase_pair,
    parse,
    realise,
    sample_caption,
)
from conjure_metrics.zoo.truth import ground_truth_similarity


def _captions(split, n, seed=0):
    rng = random.Random(seed)
    return [sample_caption(rng, split) for _ in range(n)]


def test_one_meaning_has_many_phrasings():
    rng = random.Random(0)
    spec = Spec(shape="cat", coat="red", pattern="stripes", pattern_colour="black")
    texts = {realise(spec, rng).text for _ in range(300)}
    assert any("crimson" in t for t in texts) and any("red" in t.split() for t in texts)
    assert any("striped" in t for t in texts) and any("with black stripes" in t for t in texts)
    assert any("banded" in t or "bands" in t for t in texts)
    assert len(texts) > 20


def test_every_caption_parses_back_to_its_spec():
    for split in ("train", "held_out"):
        for caption in _captions(split, 3000):
            assert parse(caption.text) == caption.spec, caption.text


def test_held_out_phrasings_never_appear_in_training():
    train = {c.text for c in _captions("train", 8000)}
    held_out = {c.text for c in _captions("held_out", 4000, seed=1)}
    assert not train & held_out
    assert all(not is_held_out(t) for t in train)
    assert all(is_held_out(t) for t in held_out)


def test_held_out_captions_use_only_words_seen_in_training():
    train_words = {w for c in _captions("train", 20000) for w in c.text.replace(",", " ").split()}
    held_out_words = {w for c in _captions("held_out", 3000, seed=1) for w in c.text.replace(",", " ").split()}
    assert held_out_words <= train_words


def test_held_out_side_has_new_templates_and_new_synonym_pairings():
    held_out = _captions("held_out", 2000, seed=2)
    assert {c.template for c in held_out} & set(HELD_OUT_TEMPLATES)
    pairings = [c for c in held_out if "," not in c.text]
    assert pairings, "some held-out captions differ only by a synonym-shape pairing"
    crimson_shape = held_out_shape_for("crimson")
    assert is_held_out(f"a crimson {crimson_shape}")
    assert not is_held_out(f"a red {crimson_shape}")


def test_named_creatures_are_attribute_aliases():
    assert parse("a zebra") == Spec(
        shape="horse", coat="white", pattern="stripes", pattern_colour="black", orientation="vertical"
    )
    assert parse("a bengal tiger in the snow") == creature_spec("tiger", "snow")
    assert parse("a snow leopard") == creature_spec("snow leopard")  # not the snow background


def test_paraphrase_pairs_mean_the_same_and_read_differently():
    rng = random.Random(0)
    for _ in range(200):
        a, b = paraphrase_pair(rng)
        assert a.text != b.text
        assert a.spec == b.spec
        assert ground_truth_similarity(a, b) == 1.0


def test_realise_rejects_unknown_split():
    with pytest.raises(ValueError):
        realise(Spec(coat="red"), random.Random(0), split="test")


def test_spec_rejects_inconsistent_attributes():
    with pytest.raises(ValueError):
        Spec(coat="red", pattern_colour="red", pattern="spots")
    with pytest.raises(ValueError):
        Spec(pattern="spots", orientation="vertical")


@pytest.mark.parametrize(
    "text,spec",
    [
        ("a red striped cat", dict(shape="cat", coat="red", pattern="stripes")),  # colour before an adjective: the coat
        ("a red vertically striped cat", dict(shape="cat", coat="red", pattern="stripes", orientation="vertical")),
        ("a cat with black stripes", dict(shape="cat", pattern="stripes", pattern_colour="black")),
        ("a black and white cat", dict(shape="cat", coat="black")),  # no pattern to hold the second colour
        ("a red cat with red stripes", dict(shape="cat", coat="red", pattern="stripes")),
        ("a vertical cat", dict(shape="cat")),  # an orientation without stripes
    ],
)
def test_free_text_outside_the_grammar_parses_to_what_a_spec_can_hold(text, spec):
    assert parse(text) == Spec(**spec)
