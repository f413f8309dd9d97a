"""A short zoo-sts run: the embedded model's similarities correlate with the world's ground truth."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from conjure_metrics import conjure_similarity

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location(
    "zoo_sts", Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_sts.py"
)
zoo_sts = importlib.util.module_from_spec(_spec)
sys.modules["zoo_sts"] = zoo_sts  # dataclasses look their module up there
_spec.loader.exec_module(zoo_sts)


def test_held_out_pairs_are_held_out_and_carry_graded_truth():
    from conjure_metrics.zoo.captions import is_held_out

    pairs = zoo_sts.zoo_sts_pairs(60, seed=1)
    assert all(is_held_out(p.a) and is_held_out(p.b) for p in pairs)
    assert len({round(p.truth, 3) for p in pairs}) > 3
    assert any(p.synonym_or_paraphrase for p in pairs) and not all(p.synonym_or_paraphrase for p in pairs)
    assert zoo_sts.zoo_sts_pairs(60, seed=1) == pairs  # deterministic


def test_conjure_similarity_on_thirty_zoo_pairs_correlates_positively_with_truth():
    pairs = zoo_sts.zoo_sts_pairs(30, seed=0)
    result = conjure_similarity(
        [p.a for p in pairs],
        [p.b for p in pairs],
        None,
        num_steps=5,
        num_samples=1,
        guidance_scale=3.0,
        seed=0,
        progress_bar=False,
    )
    rho = spearmanr(result.similarity.numpy(), np.array([p.truth for p in pairs])).statistic
    assert rho > 0.3
