"""TrajectorySimilarity's own behaviour: its settings, model and tokenizer arguments, plain-module models.
What every pair metric does (states, casts, copies, rejected calls, DDP) is in tests/test_pair_metric_contract.py."""

import pytest
import torch

from conjure_metrics.trajectory import TrajectorySimilarity, trajectory_similarity
from tests.trajectory.helpers import SETTINGS, A, B, tiny_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(), tiny_tokenizer()


def _metric(lm, **overrides):
    return TrajectorySimilarity(lm[0], lm[1], **{**SETTINGS, **overrides})


def test_symmetric_kl_distance_is_passed_through(lm):
    metric = _metric(lm, distance="symmetric_kl")
    metric.update(A, B)
    expected = trajectory_similarity(A, B, lm[0], tokenizer=lm[1], distance="symmetric_kl", **SETTINGS)
    torch.testing.assert_close(metric.pair_results()["divergence"], expected.divergence, rtol=1e-9, atol=0)


class _PlainModule(torch.nn.Module):
    """A causal LM behind a plain nn.Module (no ``device`` attribute), as the docs allow."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        return self.inner(**kwargs)


def test_to_moves_a_plain_module_language_model_too():
    wrapped = _PlainModule(tiny_lm())
    metric = TrajectorySimilarity(wrapped, tiny_tokenizer(), **SETTINGS)
    metric.update(A[:1], B[:1])
    metric.to("meta")
    assert next(wrapped.parameters()).device.type == "meta" and metric.num_pairs.device.type == "meta"


def test_words_the_tokenizer_does_not_know_are_warned_about(lm):
    with pytest.warns(UserWarning, match="does not know"):
        trajectory_similarity(["a qwzxv"], ["a fox"], lm[0], tokenizer=lm[1], **SETTINGS)


def test_loading_options_with_a_model_object_are_a_type_error_not_ignored(lm):
    with pytest.raises(TypeError, match="temperature"):
        trajectory_similarity(["a red fox"], ["a fox"], lm[0], tokenizer=lm[1], temperature=0.1, **SETTINGS)


BAD_SETTINGS = [
    ("num_continuations", ValueError, dict(num_continuations=0)),
    ("num_continuations", TypeError, dict(num_continuations=2.5)),
    ("max_new_tokens", ValueError, dict(max_new_tokens=0)),
    ("max_new_tokens", TypeError, dict(max_new_tokens=True)),
    ("distance", ValueError, dict(distance="cosine")),
    ("seed", TypeError, dict(seed="0")),
    ("max_batch_size", ValueError, dict(max_batch_size=0)),
]


@pytest.mark.parametrize("name,error,kwargs", BAD_SETTINGS, ids=[f"{b[0]}-{b[1].__name__}" for b in BAD_SETTINGS])
def test_bad_settings_raise_naming_the_argument(lm, name, error, kwargs):
    with pytest.raises(error, match=name):
        TrajectorySimilarity(lm[0], lm[1], **kwargs)
    with pytest.raises(error, match=name):
        trajectory_similarity(["a red fox"], ["a zebra"], lm[0], tokenizer=lm[1], **kwargs)


def test_what_is_not_a_model_or_tokenizer_is_a_type_error_naming_it(lm):
    with pytest.raises(TypeError, match="model"):
        TrajectorySimilarity(model=42, tokenizer=lm[1])
    with pytest.raises(TypeError, match="tokenizer"):
        TrajectorySimilarity(lm[0], tokenizer=42)


def test_a_model_object_without_tokenizer_asks_for_one():
    with pytest.raises(ValueError, match="tokenizer"):
        TrajectorySimilarity(tiny_lm())


def test_a_callable_may_return_model_and_tokenizer(lm):
    metric = TrajectorySimilarity(lambda: lm, **SETTINGS)
    metric.update(A[:1], B[:1])
    expected = trajectory_similarity(A[:1], B[:1], lm[0], tokenizer=lm[1], **SETTINGS)
    torch.testing.assert_close(metric.compute(), expected.similarity.mean(), rtol=1e-12, atol=0)
