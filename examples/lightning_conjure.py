"""Fine-tune a text-to-image model with Lightning and track ConjureSimilarity in the validation loop.

The model being trained scores held-out caption pairs each validation epoch (``val/conjure``), and,
with ``--track-drift``, how far fine-tuning has moved its meaning of each prompt from the frozen
starting point (``val/drift``: mean conjure similarity 1 / (1 + J) of base vs fine-tuned on the same
prompts, 1 = no drift; the text encoder is shared, not copied).

    python examples/lightning_conjure.py                       # embedded conjure-zoo model, 1 CPU process
    python examples/lightning_conjure.py --devices 2 --strategy ddp --max-steps 20
    python examples/lightning_conjure.py --precision bf16-true --out results.json

Validation pairs are split across ranks in contiguous shards (no padding by a distributed sampler),
so the logged value is exactly the single-process value on the same pairs.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser
from conjure_metrics.denoisers.loading import embedded_model_path

VALIDATION_PAIRS = [
    ("a snow leopard", "a bengal tiger"),
    ("a zebra", "a white horse with black stripes"),
    ("a red fox", "a crimson fox"),
    ("a dalmatian", "a white dog with black spots"),
    ("a panther", "a zebra"),
    ("a polar bear on snow", "a polar bear in the snow"),
]


class ZooTrainingBatches(Dataset):
    """Batch ``i`` is the zoo world's deterministic training batch for step ``i`` (captions, images)."""

    def __init__(self, tokenizer: Any, batch_size: int, length: int, image_size: int, seed: int = 0) -> None:
        self.tokenizer, self.batch_size, self.length, self.image_size, self.seed = (
            tokenizer,
            batch_size,
            length,
            image_size,
            seed,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from conjure_metrics.zoo.data import training_batch

        ids, images = training_batch(self.tokenizer, self.batch_size, self.seed, step)
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        return ids, images


class PromptPairs(Dataset):
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.pairs[index]


def collate_pairs(items: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [a for a, _ in items], [b for _, b in items]


class ConjureFineTuner(L.LightningModule):
    """Fine-tunes a pixel-space diffusers UNet; logs ConjureSimilarity of held-out pairs each validation."""

    def __init__(
        self,
        model_path: str | None = None,
        lr: float = 1e-4,
        num_steps: int = 10,
        num_samples: int = 2,
        guidance_scale: float = 3.0,
        seed: int = 0,
        track_drift: bool = False,
        with_metric: bool = True,
        validation_pairs: Sequence[tuple[str, str]] = VALIDATION_PAIRS,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        path = str(model_path or embedded_model_path())
        self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet").train()
        self.text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        self.noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        self.validation_pairs = list(validation_pairs)
        settings = dict(num_steps=num_steps, num_samples=num_samples, guidance_scale=guidance_scale, seed=seed)
        trained = DiffusersDenoiser(self.unet, self.text_encoder, self.tokenizer, self.noise_scheduler)
        self.val_similarity = ConjureSimilarity(trained, **settings) if with_metric else None
        self.val_drift = None
        if track_drift:
            frozen_unet = copy.deepcopy(self.unet).requires_grad_(False).eval()
            base = DiffusersDenoiser(frozen_unet, self.text_encoder, self.tokenizer, self.noise_scheduler)
            self.val_drift = ConjureSimilarity(base, model_b=trained, **settings)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        ids, images = batch
        noise = torch.randn_like(images)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (images.shape[0],), device=images.device)
        noisy = self.noise_scheduler.add_noise(images, noise, t)
        conditioning = self.text_encoder(ids)[0]
        prediction = self.unet(noisy.to(self.unet.dtype), t, encoder_hidden_states=conditioning).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[list[str], list[str]], batch_index: int) -> None:
        prompts_a, prompts_b = batch
        if self.val_similarity is not None:
            self.val_similarity.update(prompts_a, prompts_b)
            self.log("val/conjure", self.val_similarity, on_epoch=True, batch_size=len(prompts_a))
        if self.val_drift is not None:
            self.val_drift.update(prompts_a, prompts_a)
            self.log("val/drift", self.val_drift, on_epoch=True, batch_size=len(prompts_a))

    def on_validation_epoch_end(self) -> None:
        # A collective, like compute(): every rank takes part. The count exposes double counting
        # (e.g. accumulators shared between ranks), which a mean would hide.
        if self.val_similarity is not None:
            with self.val_similarity.sync_context():
                self.log("val/pairs_counted", float(self.val_similarity.num_pairs), rank_zero_only=True)

    def train_dataloader(self) -> DataLoader:
        size = self.unet.config.sample_size
        return DataLoader(ZooTrainingBatches(self.tokenizer, 4, 10_000, size), batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        n = len(self.validation_pairs)
        shard = self.validation_pairs[rank * n // world : (rank + 1) * n // world]
        return DataLoader(PromptPairs(shard), batch_size=2, collate_fn=collate_pairs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr)


class SaveResults(L.Callback):
    """After the final validation, rank 0 writes the logged metrics and the fine-tuned UNet."""

    def __init__(self, out: str | None) -> None:
        self.out = out

    def on_validation_end(self, trainer: L.Trainer, module: ConjureFineTuner) -> None:
        if not self.out or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        out = Path(self.out)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        out.write_text(
            json.dumps(
                {
                    "metrics": metrics,
                    "global_step": trainer.global_step,
                    "world_size": trainer.world_size,
                    "unet_dtype": str(module.unet.dtype),
                },
                indent=2,
            )
        )
        module.unet.save_pretrained(out.with_suffix(".unet"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="diffusers folder (default: embedded conjure-zoo)")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-true, bf16-mixed")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--conjure-steps", type=int, default=10)
    parser.add_argument("--conjure-samples", type=int, default=2)
    parser.add_argument("--track-drift", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file for the final validation metrics")
    args = parser.parse_args(argv)
    # The text encoder (and --track-drift's copy of the starting UNet) are frozen on purpose: eval mode is
    # what we want there, so Lightning's notice about modules in eval mode is not a problem to act on.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
    # val/pairs_counted is read inside the metric's sync_context, so it is already the count over all ranks.
    warnings.filterwarnings("ignore", message=r".*self\.log\('val/pairs_counted', \.\.\., sync_dist=True\)")

    torch.manual_seed(0)
    module = ConjureFineTuner(
        args.model, num_steps=args.conjure_steps, num_samples=args.conjure_samples, track_drift=args.track_drift
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision,
        max_steps=args.max_steps,
        limit_val_batches=1.0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveResults(args.out)],
    )
    trainer.fit(module)
    trainer.validate(module, verbose=False)
    if trainer.global_rank == 0:
        print({k: round(float(v), 6) for k, v in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
