"""TrajectorySimilarity as a torchmetrics Metric: accumulation, state, dtype/device, errors, persistence."""

import pickle

import pytest
import torch

from conjure_metrics.trajectory import TrajectorySimilarity, trajectory_similarity
from helpers import assert_same_state as _assert_same_state
from helpers import snapshot_state as _state
from trajectory_helpers import A, B, SETTINGS, tiny_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(), tiny_tokenizer()


def _metric(lm, **overrides):
    return TrajectorySimilarity(lm[0], lm[1], **{**SETTINGS, **overrides})


def test_metric_matches_functional_and_accumulates_over_batches(lm):
    metric = _metric(lm)
    metric.update(A[:3], B[:3])
    metric.update(A[3:], B[3:])
    expected = trajectory_similarity(A, B, lm[0], tokenizer=lm[1], **SETTINGS)
    pairs = metric.pair_results()
    torch.testing.assert_close(pairs["divergence"], expected.divergence, rtol=1e-9, atol=0)
    torch.testing.assert_close(pairs["stderr"], expected.stderr, rtol=1e-9, atol=0)
    torch.testing.assert_close(metric.compute(), expected.similarity.mean(), rtol=1e-9, atol=0)
    assert metric.compute().dtype == torch.float64


def test_symmetric_kl_distance_is_passed_through(lm):
    metric = _metric(lm, distance="symmetric_kl")
    metric.update(A, B)
    expected = trajectory_similarity(A, B, lm[0], tokenizer=lm[1], distance="symmetric_kl", **SETTINGS)
    torch.testing.assert_close(metric.pair_results()["divergence"], expected.divergence, rtol=1e-9, atol=0)


def test_state_dict_holds_no_model_weights(lm):
    metric = _metric(lm)
    metric.persistent(True)  # even with its accumulators in it
    metric.update(A[:1], B[:1])
    tensors = [t for v in metric.state_dict().values() for t in (v if isinstance(v, list) else [v])]
    assert set(metric.state_dict()) == set(metric.metric_state) and sum(t.numel() for t in tensors) < 100
    assert not any("weight" in k or "bias" in k for k in metric.state_dict())
    assert list(metric.children()) == [] and list(metric.parameters()) == []


def test_state_dict_round_trip_restores_the_accumulated_state_when_persistent(lm):
    metric = _metric(lm)
    metric.persistent(True)
    metric.update(A[:2], B[:2])
    restored = _metric(lm)
    restored.load_state_dict(metric.state_dict())
    _assert_same_state(_state(metric), _state(restored))
    restored.update(A[2:], B[2:])
    metric.update(A[2:], B[2:])
    torch.testing.assert_close(restored.compute(), metric.compute(), rtol=0, atol=0)


def test_pickled_metric_keeps_its_state_and_keeps_working(lm):
    metric = _metric(lm)
    metric.update(A[:2], B[:2])
    clone = pickle.loads(pickle.dumps(metric))
    torch.testing.assert_close(clone.compute(), metric.compute())
    clone.update(A[2:], B[2:])
    metric.update(A[2:], B[2:])
    torch.testing.assert_close(clone.compute(), metric.compute(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("cast", [lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.set_dtype(torch.float16)],
                         ids=["half", "to-bf16", "set_dtype"])
def test_dtype_casts_leave_float64_accumulators_and_the_model_untouched(lm, cast):
    metric = _metric(lm)
    metric.update(A, B)
    before = _state(metric)
    cast(metric)
    _assert_same_state(before, _state(metric))
    assert metric.language_model.dtype == torch.float64


def test_to_moves_states_and_model_to_the_device():
    metric = TrajectorySimilarity(tiny_lm(), tiny_tokenizer(), **SETTINGS).to("meta")
    assert metric.language_model.device.type == "meta"
    assert metric.num_pairs.device.type == "meta" and metric.num_pairs.dtype == torch.float64


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


def test_reset_clears_the_accumulators(lm):
    metric = _metric(lm)
    metric.update(A, B)
    metric.reset()
    assert metric.num_pairs == 0 and metric.pair_divergence == []


BAD_UPDATES = [
    ("prompts_a", TypeError, ("a red fox", ["a zebra"])),
    ("prompts_b", TypeError, (["a red fox"], [3])),
    ("prompts_a and prompts_b", ValueError, (["a red fox"], ["a zebra", "a fox"])),
    ("empty", ValueError, ([], [])),
    ("max_new_tokens", ValueError, ([" ".join(["red"] * 30)], ["a fox"])),
]


@pytest.mark.parametrize("through", ["update", "forward"])
@pytest.mark.parametrize("name,error,args", BAD_UPDATES, ids=[b[0] for b in BAD_UPDATES])
def test_bad_prompts_raise_naming_the_argument_and_leave_state_unchanged(lm, name, error, args, through):
    metric = _metric(lm)
    metric.update(A[:2], B[:2])
    before = _state(metric)
    with pytest.raises(error, match=name):
        metric.update(*args) if through == "update" else metric(*args)
    _assert_same_state(before, _state(metric))
    assert metric._update_count == 1 and (metric._to_sync, metric._enable_grad) == (True, False)


def test_clone_shares_the_language_model(lm):
    metric = _metric(lm)
    metric.update(A[:2], B[:2])
    clone = metric.clone()
    assert clone._models[0] is metric._models[0]
    clone.update(A[2:], B[2:])
    assert metric.num_pairs == 2 and clone.num_pairs == len(A)


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


def test_non_finite_model_output_raises_and_leaves_state_unchanged(lm):
    metric = TrajectorySimilarity(tiny_lm(), lm[1], **SETTINGS)
    metric.update(A[:1], B[:1])
    before = _state(metric)
    with torch.no_grad():
        metric.language_model.lm_head.weight[5] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        metric.update(A[:1], B[:1])
    _assert_same_state(before, _state(metric))


def test_compute_before_update_is_nan_with_a_warning(lm):
    metric = _metric(lm)
    with pytest.warns(UserWarning):
        assert torch.isnan(metric.compute())
