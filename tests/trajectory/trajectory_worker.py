"""Worker for the real torch.distributed (gloo) test: each rank scores its own slice of pairs.

One process group runs every scenario (a list of per-rank slices) in turn: spawning and importing
transformers is most of the test's time.
"""

import os

import torch
import torch.distributed as dist

from conjure_metrics.trajectory import TrajectorySimilarity
from trajectory_helpers import SETTINGS, tiny_lm, tiny_tokenizer


def run(rank: int, world_size: int, port: int, scenarios: list, prompts_a: list, prompts_b: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model, tokenizer = tiny_lm(), tiny_tokenizer()
        for scenario, slices in enumerate(scenarios):
            metric = TrajectorySimilarity(model, tokenizer, **SETTINGS)
            start, stop = slices[rank]
            for i in range(start, stop, 2):  # batches of two pairs
                j = min(i + 2, stop)
                metric.update(prompts_a[i:j], prompts_b[i:j])
            mean = metric.compute()
            pairs = metric.pair_results()
            local_pairs = int(metric.num_pairs.item())  # local state is back after the synced compute
            torch.save({"mean": mean, "pairs": pairs, "local_pairs": local_pairs},
                       os.path.join(out_dir, f"scenario{scenario}-rank{rank}.pt"))
        dist.barrier()  # no teardown while the other rank is still in a collective
    finally:
        dist.destroy_process_group()
