"""Size of a Lightning checkpoint of the example fine-tuner with and without ConjureSimilarity in it.

python benchmarks/checkpoint_size.py      # embedded conjure-zoo model
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import lightning as L
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_conjure.py"


def main() -> None:
    spec = importlib.util.spec_from_file_location("lightning_conjure", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, kwargs in {
            "without metric": dict(with_metric=False),
            "with ConjureSimilarity": dict(with_metric=True),
            "with ConjureSimilarity + drift vs frozen base": dict(with_metric=True, track_drift=True),
        }.items():
            torch.manual_seed(0)
            module = example.ConjureFineTuner(num_steps=2, num_samples=1, **kwargs)
            trainer = L.Trainer(
                accelerator="cpu",
                max_steps=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                limit_val_batches=0,
            )
            trainer.fit(module)
            path = Path(folder) / "model.ckpt"
            trainer.save_checkpoint(path)
            sizes[name] = path.stat().st_size
    for name, size in sizes.items():
        print(f"{name:>46}: {size / 2**20:8.2f} MiB ({size - sizes['without metric']:+d} bytes)")
    out = Path(__file__).resolve().parent / "results" / "checkpoint_size.json"
    out.write_text(json.dumps(sizes, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
