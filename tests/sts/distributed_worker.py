"""One rank of ``conjure sts`` under the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""

import json
import os

import torch

from conjure_metrics.functional import score_pairs
from conjure_metrics.sts import cli
from conjure_metrics.sts import run as run_module


def run(rank: int, world_size: int, port: int, argv: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    scored = []

    def counting(first, second, *args, **kwargs):
        scored.extend(zip(first, second))
        return score_pairs(first, second, *args, **kwargs)

    run_module.score_pairs = counting
    status = cli.main(argv)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"status": status, "scored": scored}, handle)
