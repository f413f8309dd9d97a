"""Ground-truth similarity from the world's attributes."""

import itertools
import random

import pytest

from conjure_metrics.zoo.captions import sample_caption
from conjure_metrics.zoo.truth import ground_truth_similarity


@pytest.mark.parametrize("mode", ["mean", "joint"])
def test_identical_and_synonymous_captions_score_one(mode):
    assert ground_truth_similarity("a red cat", "a red cat", mode) == 1.0
    assert ground_truth_similarity("a red cat", "a crimson kitty", mode) == 1.0
    assert ground_truth_similarity("a zebra", "a white horse with black vertical stripes", mode) == 1.0
    assert ground_truth_similarity("an animal", "a creature", mode) == 1.0


def test_similarity_is_symmetric_and_in_unit_range():
    rng = random.Random(0)
    captions = [sample_caption(rng, "train").text for _ in range(30)]
    for a, b in itertools.combinations(captions, 2):
        for mode in ("mean", "joint"):
            s = ground_truth_similarity(a, b, mode)
            assert s == ground_truth_similarity(b, a, mode)
            assert 0.0 <= s <= 1.0


def test_more_shared_attributes_score_higher():
    base = "a red cat with black stripes in the snow"
    assert ground_truth_similarity(base, "a red cat with black stripes at night") < 1.0
    assert ground_truth_similarity(base, "a red cat with black stripes at night") > ground_truth_similarity(
        base, "a blue dog with white spots at night"
    )
    assert ground_truth_similarity("a tiger", "a leopard") > ground_truth_similarity("a tiger", "a goldfish")


def test_unspecified_attributes_are_partial_matches():
    full = ground_truth_similarity("a red cat", "a red cat")
    vague = ground_truth_similarity("a cat", "a red cat")
    different = ground_truth_similarity("a blue cat", "a red cat")
    assert different < vague < full


def test_joint_mode_is_zero_when_an_attribute_surely_differs():
    assert ground_truth_similarity("a red cat", "a blue cat", "joint") == 0.0
    assert ground_truth_similarity("a red cat", "a blue cat", "mean") > 0.5
