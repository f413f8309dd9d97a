"""Property-based fuzzing of the public entry points on the analytic Gaussian model.

Whatever a caller passes — wrong types, NaN, inf, negative or huge numbers, empty or ragged prompt
lists, non-str prompts, unknown keywords — a public entry point either refuses it with a
``ValueError`` / ``TypeError`` (never another exception type, never a hang) or returns a valid
result: finite divergences, similarities in ``[0, 1]``. A metric's state is unchanged after a call
it refuses. Examples are derandomised (the same every run) and every call runs under a hard time
limit. Bugs this fuzzing found keep a plain regression test at the end.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conjure_metrics import ConjureSimilarity, conjure_similarity, explain
from conjure_metrics.settings import MAX_NUM_SAMPLES, MAX_NUM_STEPS, ConjureSettings
from tests.helpers import PROMPTS, assert_same_state, gaussian_model, snapshot_state

HARD_LIMIT_S = 20  # a call that takes this long counts as a hang (every valid example here takes < 1 s)
FUZZ = settings(
    max_examples=120,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODEL = gaussian_model(dim=4)


class Hang(BaseException):
    """Raised when a call runs past :data:`HARD_LIMIT_S` (a BaseException: no ``except Exception`` swallows it)."""


@contextmanager
def hard_limit(seconds: float = HARD_LIMIT_S) -> Iterator[None]:
    def interrupt(signum, frame):
        raise Hang(f"the call ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Strategies. "Valid" values are kept small so that an accepted call is fast; the malformed ones are
# what a caller could plausibly pass by mistake.


def _junk() -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        st.text(max_size=4),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=3),
    )


def _bad_ints() -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=0), st.integers(min_value=2**63, max_value=2**200).map(lambda n: -n))


def _huge_ints(bound: int = MAX_NUM_STEPS) -> st.SearchStrategy:
    return st.integers(min_value=bound + 1, max_value=2**200)


def _any_float() -> st.SearchStrategy:
    return st.floats(allow_nan=True, allow_infinity=True)


def _mostly(valid: st.SearchStrategy, *malformed: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` about two times in three, so that accepted calls are exercised as much as refused ones."""
    return st.one_of(valid, valid, st.one_of(*malformed))


SETTING_VALUES: dict[str, st.SearchStrategy] = {
    "num_steps": _mostly(st.integers(1, 4), _bad_ints(), _huge_ints(), _junk()),
    "num_samples": _mostly(st.integers(1, 3), _bad_ints(), _huge_ints(MAX_NUM_SAMPLES), _junk()),
    "guidance_scale": _mostly(st.floats(0, 10), _any_float(), st.integers(-3, 10), _junk()),
    "weighting": _mostly(
        st.sampled_from(["simple", "girsanov", "min_snr"]), st.sampled_from(["uniform", "SIMPLE"]), _junk()
    ),
    "min_noise": _mostly(st.floats(0, 0.5), _any_float(), _junk()),
    "min_timestep": _mostly(st.floats(0, 500), _any_float(), _junk()),
    "seed": _mostly(st.integers(0, 2**70), st.integers(max_value=-1), _junk()),
    "max_batch_size": _mostly(st.integers(1, 8), _bad_ints(), _huge_ints(), _junk()),
    "target_stderr": _mostly(st.one_of(st.none(), st.floats(1e-3, 10)), _any_float(), _junk()),
    # With an unreachable target_stderr the adaptive loop draws max_samples: keep the valid ones small.
    "max_samples": _mostly(st.one_of(st.none(), st.integers(4, 8)), _bad_ints(), _huge_ints(MAX_NUM_SAMPLES), _junk()),
    "sampler": _mostly(
        st.sampled_from([None, "ddpm", "ddim", "euler_ancestral"]), st.sampled_from(["sde", "bogus"]), _junk()
    ),
}
UNKNOWN_KEYWORDS = ("num_step", "temperature", "steps", "guidance", "eta")


@st.composite
def setting_kwargs(draw, keys: tuple[str, ...] = tuple(SETTING_VALUES)) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
    kwargs = {key: draw(SETTING_VALUES[key]) for key in chosen}
    kwargs.setdefault("num_steps", 3)  # the defaults (10 steps, 5 samples) are valid but slower than needed
    kwargs.setdefault("num_samples", 2)
    if draw(st.integers(0, 19)) == 7:  # now and then: an unknown keyword (0 would be drawn far too often)
        kwargs[draw(st.sampled_from(UNKNOWN_KEYWORDS))] = draw(st.integers(0, 3))
    return kwargs


KNOWN_PROMPTS = st.sampled_from(PROMPTS)
BAD_PROMPTS = st.one_of(
    st.text(max_size=6), st.integers(), st.none(), st.binary(max_size=3), st.floats(allow_nan=True), st.just("\ud800")
)  # a lone surrogate: a str that is not text
PROMPT_ITEMS = _mostly(st.one_of(KNOWN_PROMPTS, st.just("")), BAD_PROMPTS)
DEFECTS = ["none"] * 5 + ["ragged", "empty", "tuple", "bare string", "not a sequence", "bad prompt"]


@st.composite
def prompt_lists(draw) -> tuple[Any, Any]:
    """Two equal-length lists of known prompts, or the same with one defect: ragged, empty, tuples (valid),
    a bare string, something that is not a sequence, or one prompt that is not a known str."""
    defect = draw(st.sampled_from(DEFECTS))
    length = 0 if defect == "empty" else draw(st.integers(1, 3))
    a, b = (draw(st.lists(KNOWN_PROMPTS, min_size=length, max_size=length)) for _ in range(2))
    side = draw(st.integers(0, 1))
    lists = [a, b]
    if defect == "ragged":
        lists[side] = lists[side] + draw(st.lists(KNOWN_PROMPTS, min_size=1, max_size=2))
    elif defect == "tuple":
        lists = [tuple(a), tuple(b)]
    elif defect == "bare string":
        lists[side] = draw(KNOWN_PROMPTS)
    elif defect == "not a sequence":
        lists[side] = draw(st.one_of(st.none(), st.integers(), st.floats(), st.sets(KNOWN_PROMPTS, max_size=2)))
    elif defect == "bad prompt":
        lists[side][draw(st.integers(0, length - 1))] = draw(BAD_PROMPTS)
    return lists[0], lists[1]


def _assert_valid_result(
    similarity: torch.Tensor, divergence: torch.Tensor, stderr: torch.Tensor | None = None
) -> None:
    assert torch.isfinite(divergence).all() and (divergence >= 0).all(), divergence
    assert ((similarity >= 0) & (similarity <= 1)).all(), similarity
    torch.testing.assert_close(similarity, 1 / (1 + divergence), rtol=1e-12, atol=0)
    if stderr is not None:
        assert not torch.isinf(stderr).any() and (stderr[~stderr.isnan()] >= 0).all(), stderr


@FUZZ
@given(kwargs=setting_kwargs())
def test_settings_are_built_or_refused_with_a_value_or_type_error(kwargs):
    with hard_limit():
        try:
            built = ConjureSettings(**kwargs)
        except (ValueError, TypeError) as error:
            event(f"refused: {type(error).__name__}")
            return
    assert 1 <= built.num_steps <= MAX_NUM_STEPS and 1 <= built.num_samples <= MAX_NUM_SAMPLES
    assert built.max_batch_size >= 1
    assert math.isfinite(built.guidance_scale) and built.guidance_scale >= 0


@FUZZ
@given(prompts=prompt_lists(), kwargs=setting_kwargs())
def test_conjure_similarity_returns_a_valid_result_or_a_value_or_type_error(prompts, kwargs):
    with hard_limit():
        try:
            result = conjure_similarity(*prompts, MODEL, **kwargs)
        except (ValueError, TypeError) as error:
            event(f"refused: {type(error).__name__}")
            return
    _assert_valid_result(result.similarity, result.divergence, result.stderr)
    assert len(result.similarity) == len(prompts[0])


@FUZZ
@given(kwargs=setting_kwargs())
def test_metric_construction_gives_a_working_metric_or_a_value_or_type_error(kwargs):
    with hard_limit():
        try:
            metric = ConjureSimilarity(MODEL, **kwargs)
        except (ValueError, TypeError) as error:
            event(f"refused: {type(error).__name__}")
            return
        metric.update(["tiger", "fox"], ["zebra", "fox"])  # settings it accepted must work
    pairs = metric.pair_results()
    _assert_valid_result(pairs["similarity"], pairs["divergence"], pairs["stderr"])
    assert pairs["divergence"][1] == 0 and 0 <= metric.compute() <= 1


@FUZZ
@given(prompts=prompt_lists(), through=st.sampled_from(["update", "forward"]))
def test_metric_update_accumulates_a_valid_batch_or_refuses_it_changing_nothing(prompts, through):
    metric = ConjureSimilarity(MODEL, num_steps=3, num_samples=2, guidance_scale=2.0)
    metric.update(["tiger"], ["zebra"])
    before, count = snapshot_state(metric), metric._update_count
    with hard_limit():
        try:
            metric.update(*prompts) if through == "update" else metric(*prompts)
        except (ValueError, TypeError) as error:
            event(f"refused: {type(error).__name__}")
            assert_same_state(before, snapshot_state(metric))
            assert metric._update_count == count
            return
    assert metric._update_count == count + 1 and metric.num_pairs == 1 + len(prompts[0])
    pairs = metric.pair_results()
    _assert_valid_result(pairs["similarity"], pairs["divergence"], pairs["stderr"])
    assert 0 <= metric.compute() <= 1


@FUZZ
@given(
    prompt_a=PROMPT_ITEMS,
    prompt_b=PROMPT_ITEMS,
    kwargs=setting_kwargs(),
    sample_index=_mostly(st.integers(0, 1), st.integers(-2, 5), _junk()),
)
def test_explain_returns_finite_contributions_or_a_value_or_type_error(prompt_a, prompt_b, kwargs, sample_index):
    kwargs.pop("target_stderr", None), kwargs.pop("max_samples", None)  # not settings of explain
    with hard_limit():
        try:
            result = explain(prompt_a, prompt_b, MODEL, sample_index=sample_index, **kwargs)
        except (ValueError, TypeError) as error:
            event(f"refused: {type(error).__name__}")
            return
    for weighting, contributions in result.contributions.items():
        assert torch.isfinite(contributions).all()
        assert math.isclose(float(contributions.sum()), result.divergence[weighting], rel_tol=1e-9, abs_tol=1e-12)
        assert 0 <= result.similarity[weighting] <= 1


# Found by this fuzzing: a huge num_samples once looped over 10**30 sample seeds instead of failing.


def test_huge_num_samples_is_refused_not_run():
    with hard_limit(5):
        with pytest.raises(ValueError, match="num_samples"):
            conjure_similarity(["tiger"], ["zebra"], MODEL, num_steps=2, num_samples=10**30)
