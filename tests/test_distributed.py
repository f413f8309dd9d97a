"""Real torch.distributed (gloo, 2 processes): uneven ranks give the single-process results."""


import pytest
import torch
import torch.multiprocessing as mp

from conjure_metrics import ConjureSimilarity
from distributed_worker import SETTINGS, run
from helpers import free_port, gaussian_model

PROMPTS_A = ["tiger", "fox", "cat", "zebra", "leopard"]
PROMPTS_B = ["zebra", "cat", "cat", "fox", "tiger"]


def _single_process():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(PROMPTS_A, PROMPTS_B)
    return metric.compute(), metric.pair_results()


@pytest.mark.distributed
@pytest.mark.parametrize("slices", [[(0, 3), (3, 5)], [(0, 5), (5, 5)]], ids=["uneven", "one-rank-empty"])
def test_two_gloo_ranks_match_one_process(slices, tmp_path):
    mp.spawn(run, args=(2, free_port(), slices, PROMPTS_A, PROMPTS_B, str(tmp_path)), nprocs=2, join=True)
    mean, pairs = _single_process()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["mean"], mean, rtol=1e-12, atol=0)
        for key in ("similarity", "divergence", "stderr"):
            torch.testing.assert_close(result["pairs"][key], pairs[key], rtol=1e-12, atol=0)
        start, stop = slices[rank]
        assert result["local_pairs"] == stop - start
        assert result["compute_gathers"] > 0 and result["pair_results_gathers"] > 0  # the user's dist_sync_fn
