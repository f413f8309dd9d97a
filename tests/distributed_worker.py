"""Worker for the real torch.distributed (gloo) tests: each rank scores its own slice of pairs.

One process group runs every job in turn (spawning and importing transformers is most of a
distributed test's time). A job is ``(name, scenario, slices, prompts_a, prompts_b)``: rank ``r``
scores pairs ``slices[r]`` in batches of two with the metric ``build(name, dist_sync_fn)`` returns,
then saves ``compute()``, ``pair_results()``, its local pair count and how many gathers each of
the two went through the ``dist_sync_fn`` it was given, to ``{name}-{scenario}-rank{r}.pt``.
"""

import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torchmetrics.utilities.distributed import gather_all_tensors


def run(rank: int, world_size: int, port: int, build: Callable, jobs: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        for name, scenario, slices, prompts_a, prompts_b in jobs:
            gathered = []

            def user_gather(tensor, group=None, gathered=gathered):  # a user's own dist_sync_fn
                gathered.append(tensor.shape)
                return gather_all_tensors(tensor, group)

            metric = build(name, user_gather)
            start, stop = slices[rank]
            for i in range(start, stop, 2):
                metric.update(prompts_a[i : min(i + 2, stop)], prompts_b[i : min(i + 2, stop)])
            mean = metric.compute()
            compute_gathers = len(gathered)
            pairs = metric.pair_results()
            torch.save(
                {
                    "mean": mean,
                    "pairs": pairs,
                    "local_pairs": int(metric.num_pairs.item()),
                    "compute_gathers": compute_gathers,
                    "pair_results_gathers": len(gathered) - compute_gathers,
                },
                os.path.join(out_dir, f"{name}-{scenario}-rank{rank}.pt"),
            )
        dist.barrier()  # no teardown while the other rank is still in a collective
    finally:
        dist.destroy_process_group()
