"""The benchmark runner: correlations and intervals, the table, resuming, and what a result is keyed on."""

import json
import math

import numpy as np
import pytest

from conjure_metrics.functional import score_pairs
from conjure_metrics.sts import SimilarityDataset, run_benchmark
from conjure_metrics.sts import run as run_module
from conjure_metrics.sts.stats import bootstrap_replicates, correlations, interval
from tests.sts.helpers import FAST, line_dataset, line_model


class _Interrupt(Exception):
    pass


def _count_scored(monkeypatch, fail_after_calls=None):
    """Wrap the runner's ``score_pairs``: count the pairs it scores, optionally die after some calls."""
    calls = {"pairs": 0, "calls": 0}

    def counting(first, second, *args, **kwargs):
        if fail_after_calls is not None and calls["calls"] == fail_after_calls:
            raise _Interrupt("killed")
        calls["calls"] += 1
        calls["pairs"] += len(first)
        return score_pairs(first, second, *args, **kwargs)

    monkeypatch.setattr(run_module, "score_pairs", counting)
    return calls


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scores(report):
    return {k: v for k, v in report.to_dict().items() if k not in ("computed_pairs", "reused_pairs")}


def test_a_model_that_ranks_pairs_by_distance_gets_spearman_100():
    report = run_benchmark([line_dataset()], line_model(), **FAST)
    [column] = report.columns
    assert column.name == "line" and column.num_pairs == 12
    assert column.spearman.value == pytest.approx(1.0) and column.pearson.value > 0.9
    assert column.spearman.low == pytest.approx(1.0) and column.spearman.high == pytest.approx(1.0)


def test_table_has_one_column_per_dataset_and_the_average_times_100():
    report = run_benchmark([line_dataset("first"), line_dataset("second", 9, offset=3)], line_model(), **FAST)
    header, rule, pairs, spearman, pearson = report.table().splitlines()[1:6]
    assert header.split() == ["first", "second", "Avg."]
    assert pairs.split() == ["pairs", "12", "9", "21"]
    assert spearman.startswith("Spearman ρ×100") and spearman.split()[2:4] == ["100.0", "[100.0,"]
    average = np.mean([c.pearson.value for c in report.columns])
    assert report.average["pearson"].value == pytest.approx(average)
    assert f"{100 * average:.1f}" in pearson.split()[-3]


def test_senteval_subsets_of_one_year_pool_into_one_column():
    subsets = [line_dataset("STS12/MSRpar", 8, group="STS12"), line_dataset("STS12/OnWN", 5, group="STS12", offset=2)]
    report = run_benchmark([*subsets, line_dataset("SICK-R", 6)], line_model(), **FAST)
    assert [(c.name, c.num_pairs) for c in report.columns] == [("STS12", 13), ("SICK-R", 6)]
    assert report.columns[0].datasets == ("STS12/MSRpar", "STS12/OnWN")
    assert [d.name for d in report.datasets] == ["STS12/MSRpar", "STS12/OnWN", "SICK-R"]


def test_json_report_has_correlations_times_100_with_intervals():
    payload = run_benchmark([line_dataset()], line_model(), **FAST).to_dict()
    spearman = payload["columns"][0]["spearman_x100"]
    assert spearman["value"] == pytest.approx(100) and len(spearman["ci95"]) == 2
    assert payload["settings"]["num_steps"] == 4 and payload["computed_pairs"] == 12
    json.dumps(payload)


def test_constant_predictions_have_no_correlation_and_print_n_a():
    same = SimilarityDataset("same", ("cat",) * 4, ("cat",) * 4, (1.0, 2.0, 3.0, 4.0))
    report = run_benchmark([same], line_model(), **FAST)
    assert math.isnan(report.columns[0].spearman.value)
    assert report.to_dict()["columns"][0]["spearman_x100"] == {"value": None, "ci95": [None, None]}
    assert "n/a" in report.table()


def test_max_pairs_takes_evenly_spaced_pairs_and_keeps_their_indices(tmp_path):
    results = tmp_path / "results.jsonl"
    run_benchmark([line_dataset(pairs=12)], line_model(), max_pairs=4, results_path=results, **FAST)
    assert [r["index"] for r in _records(results)] == [0, 3, 6, 9]


def test_interrupted_run_resumes_and_scores_only_the_missing_pairs(tmp_path, monkeypatch):
    datasets = [line_dataset(pairs=10)]
    uninterrupted = run_benchmark(datasets, line_model(), chunk_size=3, **FAST)
    results = tmp_path / "results.jsonl"
    _count_scored(monkeypatch, fail_after_calls=2)
    with pytest.raises(_Interrupt):
        run_benchmark(datasets, line_model(), chunk_size=3, results_path=results, **FAST)
    assert [r["index"] for r in _records(results)] == list(range(6))

    calls = _count_scored(monkeypatch)
    resumed = run_benchmark(datasets, line_model(), chunk_size=3, results_path=results, **FAST)
    assert calls["pairs"] == 4 and (resumed.computed_pairs, resumed.reused_pairs) == (4, 6)
    assert _scores(resumed) == _scores(uninterrupted)
    again = run_benchmark(datasets, line_model(), chunk_size=3, results_path=results, **FAST)
    assert calls["pairs"] == 4 and again.reused_pairs == 10 and len(_records(results)) == 10


def test_a_line_cut_short_by_a_kill_is_rescored_and_the_file_stays_readable(tmp_path, monkeypatch):
    datasets = [line_dataset(pairs=4)]
    results = tmp_path / "results.jsonl"
    run_benchmark(datasets, line_model(), results_path=results, **FAST)
    text = results.read_text()
    results.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half of the last record, no newline
    calls = _count_scored(monkeypatch)
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        report = run_benchmark(datasets, line_model(), results_path=results, **FAST)
    assert calls["pairs"] == 1 and report.reused_pairs == 3
    lines = results.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["index"] == 3


def test_other_settings_or_model_name_are_scored_again_in_the_same_file(tmp_path, monkeypatch):
    datasets = [line_dataset(pairs=4)]
    results = tmp_path / "results.jsonl"
    run_benchmark(datasets, line_model(), results_path=results, **FAST)
    calls = _count_scored(monkeypatch)
    run_benchmark(datasets, line_model(), results_path=results, **dict(FAST, seed=1))
    run_benchmark(datasets, line_model(), results_path=results, model_name="another", **FAST)
    run_benchmark(datasets, line_model(), results_path=results, **dict(FAST, num_samples=3))
    assert calls["pairs"] == 12
    assert len({r["settings"] for r in _records(results)}) == 4


def test_other_loading_options_are_scored_again_but_the_device_is_not(tmp_path, monkeypatch, tiny_pixel_repo):
    datasets = [line_dataset(pairs=3)]
    results = tmp_path / "results.jsonl"
    run_benchmark(datasets, tiny_pixel_repo, results_path=results, **FAST)
    calls = _count_scored(monkeypatch)
    run_benchmark(
        datasets,
        tiny_pixel_repo,
        results_path=results,
        device="cpu",
        local_files_only=True,
        cache_dir=tmp_path / "cache",
        **FAST,
    )
    assert calls["pairs"] == 0  # the device and how files are fetched do not change scores
    run_benchmark(datasets, tiny_pixel_repo, results_path=results, sampler="euler_ancestral", **FAST)
    assert calls["pairs"] == 3  # another sampler runs another chain


def test_an_edited_pair_is_scored_again_not_reused(tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    original = line_dataset(pairs=4)
    run_benchmark([original], line_model(), results_path=results, **FAST)
    edited = SimilarityDataset(
        "line", ("ant", *original.sentences_a[1:]), ("gnu", *original.sentences_b[1:]), original.scores
    )
    calls = _count_scored(monkeypatch)
    run_benchmark([edited], line_model(), results_path=results, **FAST)
    assert calls["pairs"] == 1


def test_chunk_size_does_not_change_any_score():
    datasets = [line_dataset(pairs=9)]
    assert _scores(run_benchmark(datasets, line_model(), chunk_size=2, **FAST)) == _scores(
        run_benchmark(datasets, line_model(), chunk_size=9, **FAST)
    )


def test_two_datasets_with_one_name_are_refused():
    with pytest.raises(ValueError, match="two datasets are named 'line'"):
        run_benchmark([line_dataset(), line_dataset()], line_model(), **FAST)


def test_contiguous_shards_cover_every_pair_once_with_sizes_within_one():
    shards = [run_module._shard(list(range(11)), rank, 4) for rank in range(4)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert run_module._shard([0], 1, 2) == []


def test_bootstrap_is_reproducible_and_its_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    gold = rng.normal(size=200)
    predicted = gold + rng.normal(size=200)
    first = bootstrap_replicates(predicted, gold, 500, seed=7)
    second = bootstrap_replicates(predicted, gold, 500, seed=7)
    np.testing.assert_array_equal(first["spearman"], second["spearman"])
    value = correlations(predicted, gold)["spearman"]
    bounds = interval(value, first["spearman"])
    assert bounds.low < value < bounds.high and bounds.high - bounds.low < 0.25


def test_vectorised_bootstrap_matches_scipy_on_each_resample():
    from scipy import stats

    rng = np.random.default_rng(2)
    predicted, gold = rng.normal(size=30), np.round(rng.normal(size=30), 1)  # ties in gold
    replicates = bootstrap_replicates(predicted, gold, 5, seed=3)
    indices = np.random.default_rng(3).integers(0, 30, size=(5, 30))
    for k in range(5):
        x, y = predicted[indices[k]], gold[indices[k]]
        assert replicates["spearman"][k] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert replicates["pearson"][k] == pytest.approx(stats.pearsonr(x, y).statistic)
