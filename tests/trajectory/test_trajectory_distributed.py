"""Real torch.distributed (gloo, 2 processes): uneven ranks give the single-process results."""


import pytest
import torch
import torch.multiprocessing as mp

from conjure_metrics.trajectory import TrajectorySimilarity
from helpers import free_port
from trajectory_helpers import SETTINGS, tiny_lm, tiny_tokenizer
from trajectory_worker import run

PROMPTS_A = ["a red fox", "a striped cat", "a zebra", "a blue bear in the snow", "a red fox"]
PROMPTS_B = ["a crimson fox", "a zebra", "a zebra", "a fish", "a striped cat"]


def _single_process():
    metric = TrajectorySimilarity(tiny_lm(), tiny_tokenizer(), **SETTINGS)
    metric.update(PROMPTS_A, PROMPTS_B)
    return metric.compute(), metric.pair_results()


SCENARIOS = {"uneven": [(0, 3), (3, 5)], "one-rank-empty": [(0, 5), (5, 5)]}


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process_with_uneven_and_empty_ranks(tmp_path):
    scenarios = list(SCENARIOS.values())
    mp.spawn(run, args=(2, free_port(), scenarios, PROMPTS_A, PROMPTS_B, str(tmp_path)), nprocs=2, join=True)
    mean, pairs = _single_process()
    for scenario, slices in enumerate(scenarios):
        for rank in range(2):
            result = torch.load(tmp_path / f"scenario{scenario}-rank{rank}.pt")
            torch.testing.assert_close(result["mean"], mean, rtol=1e-9, atol=0)
            for key in ("similarity", "divergence", "stderr"):
                torch.testing.assert_close(result["pairs"][key], pairs[key], rtol=1e-9, atol=0)
            start, stop = slices[rank]
            assert result["local_pairs"] == stop - start
