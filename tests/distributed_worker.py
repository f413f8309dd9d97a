"""Worker for the real torch.distributed (gloo) tests: each rank scores its own slice of pairs."""

import os

import torch
import torch.distributed as dist
from torchmetrics.utilities.distributed import gather_all_tensors

from conjure_metrics import ConjureSimilarity
from helpers import gaussian_model

SETTINGS = dict(num_steps=6, num_samples=3, guidance_scale=2.0, seed=4)


def run(rank: int, world_size: int, port: int, slices: list, prompts_a: list, prompts_b: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        gathered = []

        def user_gather(tensor, group=None):  # a user's own dist_sync_fn: every sync must go through it
            gathered.append(tensor.shape)
            return gather_all_tensors(tensor, group)

        metric = ConjureSimilarity(gaussian_model(), dist_sync_fn=user_gather, **SETTINGS)
        start, stop = slices[rank]
        for i in range(start, stop, 2):  # batches of two pairs
            j = min(i + 2, stop)
            metric.update(prompts_a[i:j], prompts_b[i:j])
        mean = metric.compute()
        after_compute = len(gathered)
        pairs = metric.pair_results()
        pair_results_gathers = len(gathered) - after_compute
        # Accumulated (local) state must be back after the synced compute.
        local_pairs = int(metric.num_pairs.item())
        torch.save({"mean": mean, "pairs": pairs, "local_pairs": local_pairs, "compute_gathers": after_compute,
                    "pair_results_gathers": pair_results_gathers}, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no teardown while the other rank is still in a collective
    finally:
        dist.destroy_process_group()
