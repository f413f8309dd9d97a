"""Train the zoo LM: ``python -m conjure_metrics.trajectory.train --out runs/zoo-lm``.

A small GPT-2 learns ``<s> document </s>``, where a document is one to three captions of one zoo
scene in the training phrasings (:func:`conjure_metrics.trajectory.corpus.scene_document`), drawn
on the fly. Step ``s`` sees the same documents whatever happened before it and the model has no
dropout, so a resumed run continues exactly where the checkpoint left off. Checkpoints go to ``OUT/checkpoint.pt`` every
``--checkpoint-minutes`` and at the end, the loss log to ``OUT/log.json``, and the final model and
tokenizer (``save_pretrained`` layout) to ``OUT/zoo-lm/``; the shipped copy lives at
:func:`conjure_metrics.trajectory.default_lm_path`.

Example (CPU, a few seconds):
    python -m conjure_metrics.trajectory.train --out /tmp/lm-run --preset tiny --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from conjure_metrics.zoo.data import step_seed

from .corpus import scene_document
from .model import PRESETS, build_lm
from .tokenizer import build_lm_tokenizer

EVAL_SEED = 12345  # fixed evaluation documents, disjoint in seed from any training step
EVAL_DOCUMENTS = 256


def documents(batch_size: int, seed: int, step: int, split: str = "train") -> list[str]:
    """The documents of training step ``step`` (or of an evaluation set, with ``split="held_out"``)."""
    rng = random.Random(step_seed(seed, step))
    return [scene_document(rng, split) for _ in range(batch_size)]


def encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` of ``<s> text </s>`` rows, right-padded; labels are -100 on padding."""
    rows = [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    return ids, labels


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, log, model)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--max-seconds", type=float, default=None, help="also stop after this much training time")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then cosine decay to lr/10")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def learning_rate(args: argparse.Namespace, step: int) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluation_loss(model, tokenizer, split: str) -> float:
    """Mean next-token loss on fixed documents of ``split`` (``"train"`` or ``"held_out"`` phrasings)."""
    ids, labels = encode(tokenizer, documents(EVAL_DOCUMENTS, EVAL_SEED, 0, split))
    return float(model(input_ids=ids, labels=labels).loss)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) training; returns the log dict also written to ``OUT/log.json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_lm_tokenizer()
    torch.manual_seed(args.seed)  # initial weights
    model = build_lm(args.preset).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.98))
    log = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "records": [],
        "train_seconds": 0.0,
        "step": 0,
    }
    ckpt_path = out / "checkpoint.pt"
    start = 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        log["records"], log["train_seconds"], start = ckpt["records"], ckpt["train_seconds"], ckpt["step"]
        print(f"resumed from step {start}")

    def snapshot(step: int) -> None:
        log["step"] = step
        _save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "records": log["records"],
                "train_seconds": log["train_seconds"],
            },
        )
        (out / "log.json").write_text(json.dumps(log, indent=1))

    began = time.time() - log["train_seconds"]
    last_checkpoint = time.time()
    running, count, done = 0.0, 0, start
    bar = tqdm(total=args.steps, initial=start, desc="zoo-lm", dynamic_ncols=True)
    for step in range(start, args.steps):
        ids, labels = encode(tokenizer, documents(args.batch_size, args.seed, step))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += float(loss.detach())
        count += 1
        done = step + 1
        log["train_seconds"] = time.time() - began
        if done % args.log_every == 0 or done == args.steps:
            mean = running / count
            log["records"].append({"step": done, "loss": mean, "seconds": round(log["train_seconds"], 1)})
            bar.set_postfix(loss=f"{mean:.4f}")
            running, count = 0.0, 0
        bar.update(1)
        if time.time() - last_checkpoint > 60 * args.checkpoint_minutes:
            snapshot(done)
            last_checkpoint = time.time()
        if args.max_seconds is not None and log["train_seconds"] > args.max_seconds:
            print(f"stopping at step {done}: {log['train_seconds']:.0f} s of training")
            break
    bar.close()
    model.eval()
    log["eval_loss"] = {split: evaluation_loss(model, tokenizer, split) for split in ("train", "held_out")}
    snapshot(done)
    model.save_pretrained(out / "zoo-lm")
    tokenizer.save_pretrained(out / "zoo-lm")
    return log


def main(argv=None) -> None:
    log = train(parse_args(argv))
    print(
        json.dumps({"step": log["step"], "eval_loss": log["eval_loss"], "train_seconds": round(log["train_seconds"])})
    )


if __name__ == "__main__":
    main()
