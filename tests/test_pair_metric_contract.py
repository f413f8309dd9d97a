"""The contract every pair metric (a ``PairSimilarityMetric``) keeps, checked for each of them.

One parametrised suite instead of a near-copy per metric: ``ConjureSimilarity`` on the analytic
Gaussian model, ``TrajectorySimilarity`` on a tiny random GPT-2. A :class:`MetricCase` says how to
build each metric, score pairs with its functional twin, compute an independent reference
divergence (the naive oracle loops), and break its model. What a test checks holds for every case.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from conjure_metrics import ConjureSimilarity, conjure_similarity
from conjure_metrics.accumulators import PairSimilarityMetric, _model_device
from conjure_metrics.trajectory import TrajectorySimilarity, trajectory_similarity
from conjure_metrics.trajectory.estimator import encode_prompt
from tests.distributed_worker import run
from tests.helpers import assert_same_state, free_port, gaussian_model, snapshot_state
from tests.naive_reference import naive_divergence
from tests.trajectory.helpers import naive_continuation, naive_log_likelihood, tiny_lm, tiny_tokenizer

CONJURE_SETTINGS = dict(num_steps=6, num_samples=4, guidance_scale=2.0, seed=1)
TRAJECTORY_SETTINGS = dict(num_continuations=4, max_new_tokens=6, seed=3)
_TOKENIZER = tiny_tokenizer()


def build_conjure(model: Any = None, **kwargs: Any) -> ConjureSimilarity:
    return ConjureSimilarity(gaussian_model() if model is None else model, **{**CONJURE_SETTINGS, **kwargs})


def build_trajectory(model: Any = None, **kwargs: Any) -> TrajectorySimilarity:
    return TrajectorySimilarity(tiny_lm() if model is None else model, _TOKENIZER, **{**TRAJECTORY_SETTINGS, **kwargs})


def conjure_reference(model, prompts_a: list[str], prompts_b: list[str]) -> torch.Tensor:
    """Per-pair divergences from the naive oracle loop (tests/naive_reference.py)."""
    return torch.stack([naive_divergence(a, b, model, **CONJURE_SETTINGS).mean() for a, b in zip(prompts_a, prompts_b)])


def trajectory_reference(model, prompts_a: list[str], prompts_b: list[str]) -> torch.Tensor:
    """Per-pair ``mean_abs`` distances from continuations drawn and scored one unbatched sequence at a time."""
    n, m, seed = (TRAJECTORY_SETTINGS[k] for k in ("num_continuations", "max_new_tokens", "seed"))
    distances = []
    for pair in zip(prompts_a, prompts_b):
        ids = [encode_prompt(_TOKENIZER, p) for p in pair]
        gaps = []
        for side in range(2):
            for j in range(n):
                continuation = naive_continuation(model, ids[side], seed, j, m, _TOKENIZER.eos_token_id)
                gaps.append(
                    abs(
                        naive_log_likelihood(model, ids[0], continuation)
                        - naive_log_likelihood(model, ids[1], continuation)
                    )
                )
        distances.append(sum(gaps) / len(gaps))
    return torch.tensor(distances, dtype=torch.float64)


def poison_conjure(metric: ConjureSimilarity, value: float) -> None:
    good = metric.denoiser.predict_noise
    metric.denoiser.predict_noise = lambda x, t, c: good(x, t, c) + value


def poison_trajectory(metric: TrajectorySimilarity, value: float) -> None:
    with torch.no_grad():
        metric.language_model.lm_head.weight[5] = value


def fail_conjure_model_after(metric: ConjureSimilarity, calls: int) -> None:
    good, count = metric.denoiser.predict_noise, [0]

    def predict_noise(x, t, c):
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("injected model failure")
        return good(x, t, c)

    metric.denoiser.predict_noise = predict_noise


def fail_trajectory_model_after(metric: TrajectorySimilarity, calls: int) -> None:
    model = metric.language_model
    good, count = model.forward, [0]

    def forward(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("injected model failure")
        return good(*args, **kwargs)

    model.forward = forward


@dataclass(frozen=True)
class MetricCase:
    """How the contract suite drives one pair metric."""

    name: str
    build: Callable[..., PairSimilarityMetric]  # build(model=None, **metric_kwargs), fresh model when None
    new_model: Callable[[], Any]
    model_of: Callable[[PairSimilarityMetric], Any]
    functional: Callable[..., Any]  # functional(a, b, model) -> result with similarity/divergence/stderr
    reference: Callable[[Any, list[str], list[str]], torch.Tensor]  # independent per-pair divergences
    poison: Callable[[PairSimilarityMetric, float], None]  # makes the model's output non-finite
    fail_model_after: Callable[[PairSimilarityMetric, int], None]  # the model raises after some calls
    prompts_a: list[str]
    prompts_b: list[str]  # the last pair is two identical prompts
    bad_updates: list = field(default_factory=list)  # (name, error, args) rejected by this metric only
    rtol: float = 1e-12


CASES = [
    MetricCase(
        name="conjure",
        build=build_conjure,
        new_model=gaussian_model,
        model_of=lambda m: m.denoiser,
        functional=lambda a, b, model: conjure_similarity(a, b, model, **CONJURE_SETTINGS),
        reference=conjure_reference,
        poison=poison_conjure,
        fail_model_after=fail_conjure_model_after,
        prompts_a=["tiger", "fox", "leopard", "cat"],
        prompts_b=["zebra", "cat", "tiger", "cat"],
        bad_updates=[("no distribution", ValueError, (["tiger"], ["an unknown prompt"]))],  # raised inside the model
    ),
    MetricCase(
        name="trajectory",
        build=build_trajectory,
        new_model=tiny_lm,
        model_of=lambda m: m.language_model,
        functional=lambda a, b, model: trajectory_similarity(a, b, model, tokenizer=_TOKENIZER, **TRAJECTORY_SETTINGS),
        reference=trajectory_reference,
        poison=poison_trajectory,
        fail_model_after=fail_trajectory_model_after,
        prompts_a=["a red fox", "a striped cat in the snow", "an animal", "a red fox"],
        prompts_b=["a crimson fox", "a blue bear", "a zebra at night", "a red fox"],
        bad_updates=[("max_new_tokens", ValueError, ([" ".join(["red"] * 30)], ["a fox"]))],
    ),
]
BY_NAME = {case.name: case for case in CASES}


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request) -> MetricCase:
    return request.param


def _split(case: MetricCase) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    a, b = case.prompts_a, case.prompts_b
    return (a[:2], b[:2]), (a[2:], b[2:])


def _float64_tensors(state: dict) -> Iterator[torch.Tensor]:
    for value in state.values():
        yield from value if isinstance(value, list) else [value]


# Accumulation and values.


def test_metric_matches_its_functional_twin_over_several_batches(case):
    model = case.new_model()
    metric = case.build(model)
    first, second = _split(case)
    metric.update(*first)
    metric.update(*second)
    expected = case.functional(case.prompts_a, case.prompts_b, model)
    pairs = metric.pair_results()
    for key in ("similarity", "divergence", "stderr"):
        torch.testing.assert_close(pairs[key], getattr(expected, key), rtol=case.rtol, atol=0)
    torch.testing.assert_close(metric.compute(), expected.similarity.mean(), rtol=case.rtol, atol=0)
    assert metric.compute().dtype == torch.float64


def test_divergences_match_the_naive_reference(case):
    model = case.new_model()
    metric = case.build(model)
    metric.update(case.prompts_a, case.prompts_b)
    expected = case.reference(model, case.prompts_a, case.prompts_b)
    torch.testing.assert_close(metric.pair_results()["divergence"], expected, rtol=1e-9, atol=1e-12)


def test_similarity_is_one_over_one_plus_divergence_and_compute_is_its_mean(case):
    metric = case.build()
    metric.update(case.prompts_a, case.prompts_b)
    pairs = metric.pair_results()
    torch.testing.assert_close(pairs["similarity"], 1 / (1 + pairs["divergence"]), rtol=1e-15, atol=0)
    torch.testing.assert_close(metric.compute(), pairs["similarity"].mean(), rtol=1e-15, atol=0)


def test_distinct_prompts_score_strictly_between_zero_and_one(case):
    metric = case.build()
    metric.update(case.prompts_a[:-1], case.prompts_b[:-1])
    similarity = metric.pair_results()["similarity"]
    assert ((similarity > 0) & (similarity < 1)).all()
    assert 0 < metric.compute() < 1
    assert (metric.pair_results()["stderr"] > 0).all()


def test_identical_prompts_score_exactly_one(case):
    metric = case.build()
    metric.update(case.prompts_a[-1:], case.prompts_b[-1:])
    pairs = metric.pair_results()
    assert pairs["divergence"].item() == 0 and pairs["similarity"].item() == 1 and metric.compute().item() == 1


def test_forward_returns_the_batch_value_and_accumulates_like_update(case):
    model = case.new_model()
    forwarded, updated = case.build(model), case.build(model)
    first, second = _split(case)
    values = [forwarded(*first), forwarded(*second)]
    for batch, value in zip((first, second), values):
        alone = case.build(model)
        alone.update(*batch)
        torch.testing.assert_close(value, alone.compute(), rtol=case.rtol, atol=0)
        updated.update(*batch)
    torch.testing.assert_close(forwarded.compute(), updated.compute(), rtol=case.rtol, atol=0)
    for key, value in updated.pair_results().items():
        torch.testing.assert_close(forwarded.pair_results()[key], value, rtol=case.rtol, atol=0)
    assert forwarded._update_count == updated._update_count == 2


def test_compute_before_any_update_is_nan_with_a_warning(case):
    metric = case.build()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert torch.isnan(metric.compute())


def test_reset_clears_the_accumulators(case):
    metric = case.build()
    metric.update(case.prompts_a, case.prompts_b)
    metric.reset()
    assert metric.num_pairs == 0 and metric.similarity_sum == 0 and metric.pair_divergence == []
    assert metric._update_count == 0
    first, _ = _split(case)
    metric.update(*first)
    assert metric.num_pairs == len(first[0])


# State: checkpoints, dtypes, devices, copies.


def test_state_dict_holds_no_model_weights_even_when_persistent(case):
    metric = case.build()
    metric.persistent(True)
    metric.update(case.prompts_a[:1], case.prompts_b[:1])
    state = metric.state_dict()
    assert set(state) == set(metric.metric_state)
    assert sum(t.numel() for t in _float64_tensors(dict(state))) < 100  # a few scalars, never weights
    assert list(metric.children()) == [] and list(metric.parameters()) == []


def test_accumulators_stay_out_of_state_dict_by_default(case):
    metric = case.build()
    metric.update(case.prompts_a[:2], case.prompts_b[:2])
    assert dict(metric.state_dict()) == {}


def test_state_dict_round_trip_restores_the_accumulated_state_when_persistent(case):
    model = case.new_model()
    metric = case.build(model)
    metric.persistent(True)
    first, second = _split(case)
    metric.update(*first)
    restored = case.build(model)
    restored.load_state_dict(metric.state_dict())
    assert_same_state(snapshot_state(metric), snapshot_state(restored))
    restored.update(*second)
    metric.update(*second)
    torch.testing.assert_close(restored.compute(), metric.compute(), rtol=0, atol=0)


CASTS = {
    "half": lambda m: m.half(),
    "to-bf16": lambda m: m.to(torch.bfloat16),
    "set_dtype-fp16": lambda m: m.set_dtype(torch.float16),
    "float": lambda m: m.float(),
}


@pytest.mark.parametrize("cast", CASTS.values(), ids=CASTS.keys())
def test_dtype_casts_leave_float64_accumulators_and_the_model_untouched(case, cast):
    metric = case.build()
    metric.update(case.prompts_a, case.prompts_b)
    model = case.model_of(metric)
    model_dtype, model_device = getattr(model, "dtype", None), _model_device(model)
    before = snapshot_state(metric)
    cast(metric)
    after = snapshot_state(metric)
    assert_same_state(before, after)
    assert all(t.dtype == torch.float64 for t in _float64_tensors(after))
    assert (getattr(model, "dtype", None), _model_device(model)) == (model_dtype, model_device)
    metric.reset()
    assert metric.similarity_sum.dtype == torch.float64


def test_dtype_casts_do_not_pull_the_model_to_the_metrics_device(case):
    metric = case.build()
    model = case.model_of(metric)
    model.to("meta")  # stands for a GPU the user put the model on, while the metric stays on the CPU
    for cast in CASTS.values():
        cast(metric)
        assert _model_device(model).type == "meta"


def test_to_moves_states_and_model_to_the_device(case):
    metric = case.build().to("meta")
    assert metric.device.type == "meta" and _model_device(case.model_of(metric)).type == "meta"
    assert metric.num_pairs.device.type == "meta" and metric.num_pairs.dtype == torch.float64


def test_to_the_same_device_keeps_the_metric_working(case):
    metric = case.build().to("cpu")
    metric.update(case.prompts_a[:1], case.prompts_b[:1])
    assert metric.compute().device.type == "cpu"


def test_accumulators_in_shared_memory_are_not_written_through(case):
    metric = case.build()
    shared = metric.num_pairs.share_memory_()  # what a ddp_spawn pickle leaves behind
    metric.update(case.prompts_a, case.prompts_b)
    assert shared.item() == 0 and metric.num_pairs.item() == len(case.prompts_a)


@pytest.mark.parametrize("duplicate", [lambda m: m.clone(), copy.deepcopy], ids=["clone", "deepcopy"])
def test_copies_share_the_model_and_own_their_state(case, duplicate):
    metric = case.build()
    first, second = _split(case)
    metric.update(*first)
    twin = duplicate(metric)
    assert case.model_of(twin) is case.model_of(metric)  # not a copy of the whole model
    before = snapshot_state(metric)
    twin.update(*second)
    assert_same_state(before, snapshot_state(metric))
    assert twin.num_pairs == len(case.prompts_a) and metric.num_pairs == len(first[0])


def test_pickled_metric_keeps_its_state_and_keeps_working(case):
    metric = case.build()
    first, second = _split(case)
    metric.update(*first)
    revived = pickle.loads(pickle.dumps(metric))
    assert_same_state(snapshot_state(metric), snapshot_state(revived))
    revived.update(*second)
    metric.update(*second)
    torch.testing.assert_close(revived.compute(), metric.compute(), rtol=case.rtol, atol=0)


def test_plot_accepts_a_value_and_a_sequence(case):
    import matplotlib

    matplotlib.use("Agg")
    metric = case.build()
    values = []
    for a, b in zip(case.prompts_a[:2], case.prompts_b[:2]):
        metric.update([a], [b])
        values.append(metric.compute())
    fig, ax = metric.plot()
    assert ax.figure is fig and len(ax.lines[0].get_ydata()) == 1  # the current value
    fig, ax = metric.plot(values)
    assert len(ax.lines[0].get_xdata()) == len(values)


# Rejected calls leave everything as it was.

COMMON_BAD_UPDATES = [
    ("prompts_a", TypeError, lambda a, b: (a[0], b[:1])),  # a bare string is not a list of prompts
    ("prompts_b", TypeError, lambda a, b: (a[:1], [3])),
    ("prompts_a and prompts_b", ValueError, lambda a, b: (a[:1], b[:2])),  # length mismatch
    ("empty", ValueError, lambda a, b: ([], [])),
]
BAD_UPDATE_IDS = [name for name, _, _ in COMMON_BAD_UPDATES] + ["metric-specific"]


def _bad_update(case: MetricCase, index: int) -> tuple[str, type, tuple]:
    if index < len(COMMON_BAD_UPDATES):
        name, error, args = COMMON_BAD_UPDATES[index]
        return name, error, args(case.prompts_a, case.prompts_b)
    return case.bad_updates[0]


def _observed(metric: PairSimilarityMetric) -> dict:
    """Everything a rejected call must leave alone: state, counters, sync flags, results."""
    observed = dict(compute=metric.compute().clone(), pairs={k: v.clone() for k, v in metric.pair_results().items()})
    return dict(
        observed,
        state=snapshot_state(metric),
        update_count=metric._update_count,
        flags=(metric._to_sync, metric._should_unsync, metric._enable_grad, metric._computed),
    )


def _assert_unchanged(before: dict, metric: PairSimilarityMetric) -> None:
    assert_same_state(before["state"], snapshot_state(metric))
    assert metric._update_count == before["update_count"]
    assert (metric._to_sync, metric._should_unsync, metric._enable_grad, metric._computed) == before["flags"]
    assert torch.equal(metric.compute(), before["compute"])
    after = metric.pair_results()
    assert all(torch.equal(after[k], v) for k, v in before["pairs"].items())


def _accumulated(case: MetricCase, model: Any = None) -> PairSimilarityMetric:
    metric = case.build(model)
    metric.update(*_split(case)[0])
    return metric


@pytest.mark.parametrize("through", ["update", "forward"])
@pytest.mark.parametrize("index", range(len(BAD_UPDATE_IDS)), ids=BAD_UPDATE_IDS)
def test_rejected_prompts_raise_naming_the_argument_and_change_nothing(case, index, through):
    name, error, args = _bad_update(case, index)
    metric = _accumulated(case)
    before = _observed(metric)
    with pytest.raises(error, match=name):
        metric.update(*args) if through == "update" else metric(*args)
    _assert_unchanged(before, metric)
    metric(case.prompts_a[-1:], case.prompts_b[-1:])  # and the metric keeps working
    assert metric._update_count == before["update_count"] + 1
    assert metric.num_pairs == len(_split(case)[0][0]) + 1


@pytest.mark.parametrize("through", ["update", "forward"])
def test_an_error_raised_inside_the_model_midway_changes_nothing(case, through):
    metric = _accumulated(case, case.new_model())
    before = _observed(metric)
    case.fail_model_after(metric, 2)  # the batch fails after the model has answered twice
    with pytest.raises(RuntimeError, match="injected model failure"):
        metric.update(*_split(case)[1]) if through == "update" else metric(*_split(case)[1])
    _assert_unchanged(before, metric)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_model_output_is_a_value_error_that_changes_nothing(case, bad_value):
    metric = _accumulated(case, case.new_model())
    before = _observed(metric)
    case.poison(metric, bad_value)
    with pytest.raises(ValueError, match="non-finite"):
        metric.update(case.prompts_a, case.prompts_b)
    _assert_unchanged(before, metric)


# Real torch.distributed: two gloo processes, one process group for every metric and scenario.

DDP_PROMPTS = {
    "conjure": (["tiger", "fox", "cat", "zebra", "leopard"], ["zebra", "cat", "cat", "fox", "tiger"]),
    "trajectory": (
        ["a red fox", "a striped cat", "a zebra", "a blue bear in the snow", "a red fox"],
        ["a crimson fox", "a zebra", "a zebra", "a fish", "a striped cat"],
    ),
}
DDP_SCENARIOS = {"uneven": [(0, 3), (3, 5)], "one-rank-empty": [(0, 5), (5, 5)]}


def build_for_rank(name: str, dist_sync_fn: Callable) -> PairSimilarityMetric:
    """What each rank builds: the case's metric with the user's own ``dist_sync_fn`` (seeded, so every
    rank holds the same model)."""
    return BY_NAME[name].build(dist_sync_fn=dist_sync_fn)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("ddp")
    jobs = [
        (name, scenario, slices, *DDP_PROMPTS[name])
        for name in DDP_PROMPTS
        for scenario, slices in DDP_SCENARIOS.items()
    ]
    mp.spawn(run, args=(2, free_port(), build_for_rank, jobs, str(out_dir)), nprocs=2, join=True)
    return {
        (name, scenario, rank): torch.load(out_dir / f"{name}-{scenario}-rank{rank}.pt")
        for name, scenario, *_ in jobs
        for rank in range(2)
    }


@pytest.mark.distributed
@pytest.mark.parametrize("scenario", DDP_SCENARIOS, ids=DDP_SCENARIOS)
def test_two_gloo_ranks_give_the_single_process_results(case, scenario, ddp_results):
    prompts_a, prompts_b = DDP_PROMPTS[case.name]
    single = case.build()
    single.update(prompts_a, prompts_b)
    for rank, (start, stop) in enumerate(DDP_SCENARIOS[scenario]):
        result = ddp_results[(case.name, scenario, rank)]
        torch.testing.assert_close(result["mean"], single.compute(), rtol=case.rtol, atol=0)
        for key, value in single.pair_results().items():
            torch.testing.assert_close(result["pairs"][key], value, rtol=case.rtol, atol=0)
        assert result["local_pairs"] == stop - start  # the local state is back after the synced compute
        assert result["compute_gathers"] > 0 and result["pair_results_gathers"] > 0  # through the user's sync fn
