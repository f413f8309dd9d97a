"""Two real gloo ranks (set up as torchrun does) give the table and results file of one process."""

import json

import pytest
import torch.multiprocessing as mp

from conjure_metrics.sts.cli import main
from tests.helpers import free_port
from tests.sts.distributed_worker import run


@pytest.fixture(scope="module")
def wordsim(tmp_path_factory):
    """The first 7 human-scored pairs of gensim's WordSim353 (an odd count: uneven shards)."""
    from gensim.test.utils import datapath

    lines = open(datapath("wordsim353.tsv"), encoding="utf-8").read().splitlines()
    path = tmp_path_factory.mktemp("data") / "wordsim353.tsv"
    path.write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")
    return path


def _argv(data, model, results, table):
    return [
        "--data",
        str(data),
        "--model",
        str(model),
        "--steps",
        "3",
        "--samples",
        "2",
        "--chunk-size",
        "2",
        "--results",
        str(results),
        "--json",
        str(table),
        "--quiet",
    ]


def _by_key(path):
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["key"])


def _approx(value):
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-9)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


def _table(path):
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("computed_pairs", "reused_pairs")}


@pytest.mark.distributed
def test_two_ranks_shard_the_pairs_and_match_one_process(wordsim, tiny_pixel_repo, tmp_path):
    assert main(_argv(wordsim, tiny_pixel_repo, tmp_path / "one.jsonl", tmp_path / "one.json")) == 0

    # A previous run got through the first three pairs: the two ranks share the four left.
    lines = (tmp_path / "one.jsonl").read_text().splitlines()
    (tmp_path / "two.jsonl").write_text("\n".join(lines[:3]) + "\n")
    argv = _argv(wordsim, tiny_pixel_repo, tmp_path / "two.jsonl", tmp_path / "two.json")
    mp.spawn(run, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["status"] for r in ranks] == [0, 0]
    assert [r["scored"] for r in ranks] == [
        [["book", "paper"], ["computer", "keyboard"]],
        [["computer", "internet"], ["plane", "car"]],
    ]
    # Equal up to float32 round-off: a pair shares its model batch with other pairs here than there.
    one, two = _by_key(tmp_path / "one.jsonl"), _by_key(tmp_path / "two.jsonl")
    assert len(two) == 7 and _approx(two) == one
    assert _approx(_table(tmp_path / "two.json")) == _table(tmp_path / "one.json")
    assert json.loads((tmp_path / "two.json").read_text())["reused_pairs"] == 3
