"""Train conjure-zoo: ``python -m conjure_metrics.zoo.train --out runs/zoo``.

UNet and text encoder learn together from scratch on images the world renders on the
training device. Step ``s`` sees the same batch, timesteps and noise whatever happened
before it, so a resumed run continues exactly where the checkpoint left off. Checkpoints
go to ``OUT/checkpoint.pt`` every ``--checkpoint-minutes`` and at the end; the final EMA
weights go to ``OUT/weights/`` as safetensors shards, the loss curve to ``OUT/log.json``
and ``OUT/loss.png``.

Example (CPU, a few seconds):
    python -m conjure_metrics.zoo.train --out /tmp/zoo-run --preset tiny --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import caption_batch, fill_attributes, step_seed
from .model import PRESETS, build_models, parameter_count, scheduler_config, text_config, unet_config
from .tokenizer import build_tokenizer
from .weights import save_sharded
from .world import render


class CaptionSteps(torch.utils.data.Dataset):
    """Item ``step`` = (token ids, specified attributes) of that training step's captions."""

    def __init__(self, batch_size: int, seed: int, drop_rate: float):
        self.batch_size, self.seed, self.drop_rate = batch_size, seed, drop_rate
        self.tokenizer = build_tokenizer()

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int):
        texts, specified = caption_batch(self.batch_size, self.seed, step, self.drop_rate)
        ids = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return step, ids, specified


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, weights, logs)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--steps", type=int, default=30_000, help="stop after this many steps")
    p.add_argument("--max-seconds", type=float, default=None, help="also stop after this much training time")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=500, help="linear learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1, help="share of captions replaced by ''")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for forward and backward")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=None, help="caption worker processes (default: 0 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_log(out: Path, log: dict) -> None:
    (out / "log.json").write_text(json.dumps(log, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [r["step"] for r in log["records"]]
    losses = [r["loss"] for r in log["records"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE on noise)")
    ax.set_title(f"conjure-zoo ({log['args']['preset']}, batch {log['args']['batch_size']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) training; returns the log dict also written to ``OUT/log.json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # initial weights
    # diffusers' top-level classes are its dummy placeholders to a type checker (no nn.Module members).
    unet: Any
    scheduler: Any
    unet, text_encoder, scheduler = build_models(args.preset)
    unet.to(device).train()
    cast(torch.nn.Module, text_encoder).to(device).train()  # transformers types a model's .to() oddly
    modules = {"unet": unet, "text_encoder": text_encoder}
    params = [p for module in modules.values() for p in module.parameters()]
    # Exponential moving average of the weights, per module and parameter name; the shipped weights.
    ema = {name: {n: p.detach().clone() for n, p in m.named_parameters()} for name, m in modules.items()}
    ema_tensors = [t for averages in ema.values() for t in averages.values()]  # same order as params
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    alphas_cumprod = scheduler.alphas_cumprod.to(device)

    log: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "unet_config": unet_config(args.preset),
        "text_config": text_config(args.preset),
        "scheduler_config": scheduler_config(),
        "parameters": {"unet": parameter_count(unet), "text_encoder": parameter_count(text_encoder)},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "records": [],
        "train_seconds": 0.0,
        "step": 0,
    }
    ckpt_path = out / "checkpoint.pt"
    start = 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        unet.load_state_dict(ckpt["unet"])
        text_encoder.load_state_dict(ckpt["text_encoder"])
        for e, saved in zip(ema_tensors, [t for a in ckpt["ema"].values() for t in a.values()]):
            e.copy_(saved)
        optimizer.load_state_dict(ckpt["optimizer"])
        log["records"], log["train_seconds"] = ckpt["records"], ckpt["train_seconds"]
        start = ckpt["step"]
        print(f"resumed from step {start}")

    def snapshot(step: int) -> None:
        """Checkpoint, log and the current EMA weights (so an interrupted run still leaves a model)."""
        log["step"] = step
        _save_checkpoint(
            ckpt_path,
            {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema": ema,
                "optimizer": optimizer.state_dict(),
                "step": step,
                "records": log["records"],
                "train_seconds": log["train_seconds"],
            },
        )
        for name, module in modules.items():
            save_sharded({**module.state_dict(), **ema[name]}, out / "weights" / name)
        _write_log(out, log)

    workers = args.workers if args.workers is not None else (6 if device.type == "cuda" else 0)
    loader = torch.utils.data.DataLoader(
        CaptionSteps(args.batch_size, args.seed, args.caption_dropout),
        batch_size=None,
        sampler=range(start, args.steps),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    began = time.time() - log["train_seconds"]
    last_checkpoint = time.time()
    running: float | torch.Tensor  # the summed loss tensor once a step ran
    running, count, done = 0.0, 0, start
    bar = tqdm(total=args.steps, initial=start, desc="conjure-zoo", dynamic_ncols=True)
    for step, ids, specified in loader:
        generator = torch.Generator(device=device).manual_seed(step_seed(args.seed, step))
        ids = ids.to(device, non_blocking=True)
        images = render(fill_attributes(specified.to(device), generator), generator)
        timesteps = torch.randint(len(alphas_cumprod), (len(images),), generator=generator, device=device)
        noise = torch.randn(images.shape, generator=generator, device=device)
        abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * images + (1 - abar).sqrt() * noise

        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        with autocast:
            context = text_encoder(ids).last_hidden_state
            prediction = unet(noisy, timesteps, context).sample
        loss = F.mse_loss(prediction.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_tensors, [p.detach() for p in params], 1 - decay)

        running += loss.detach()
        count += 1
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            mean = float(running / count)
            log["train_seconds"] = time.time() - began
            log["records"].append({"step": done, "loss": mean, "seconds": round(log["train_seconds"], 1)})
            bar.set_postfix(loss=f"{mean:.4f}")
            running, count = 0.0, 0
        bar.update(1)
        log["train_seconds"] = time.time() - began
        if time.time() - last_checkpoint > 60 * args.checkpoint_minutes:
            snapshot(done)
            last_checkpoint = time.time()
        if args.max_seconds is not None and log["train_seconds"] > args.max_seconds:
            print(f"stopping at step {done}: {log['train_seconds']:.0f} s of training")
            break
    bar.close()
    snapshot(done)
    return log


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
