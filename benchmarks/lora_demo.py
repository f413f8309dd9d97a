"""Does checkpoint comparison find what a LoRA fine-tune changed? The shipped edit / control adapters.

Edit: the embedded zoo model with a rank-4 cross-attention LoRA adapter trained so that captions
saying a creature's coat is ``red`` are drawn ``blue`` (caption text unchanged). Control: the same
adapter recipe (captions, images but for the fact, noise, steps, seed) on correct images. Both ship in
``conjure_metrics/zoo/adapters`` (recipe in its README).

Each adapter is fused into a copy of the base UNet (until the LoRA loader of ``conjure_metrics.denoisers``
toggles an adapter on one base, the copy is how a model with an adapter is compared) and
:func:`~conjure_metrics.drift.drift_report` measures every prompt's drift from the base with its default
model-vs-model settings (``simple`` weighting, ``min_noise=0.2``). Prompts: ``target`` are the plain
red creature of every shape (:func:`~conjure_metrics.zoo.finetune.concept_prompts`), ``preserve`` the
plain creature of every shape in another colour (:func:`~conjure_metrics.zoo.finetune.bystander_prompts`):
the same words but the colour, so specificity here is the hard case.

Reported per model: mean drift of each group (± Monte-Carlo standard error), specificity (target mean
over preserve mean) and the AUC of target vs preserve prompts ranked by drift (probability that a
random target prompt drifted more than a random preserve prompt; 0.5 is chance).

    python benchmarks/lora_demo.py                      # writes benchmarks/results/lora_demo.json
    python benchmarks/lora_demo.py --num-steps 8 --num-samples 2 --per-group 4 --out /tmp/test_settings.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from conjure_metrics import DiffusersDenoiser
from conjure_metrics.drift import drift_report
from conjure_metrics.zoo import default_model_path
from conjure_metrics.zoo.finetune import (
    CaptionEdit,
    bystander_prompts,
    concept_prompts,
    load_finetuned,
    shipped_adapter,
)

EDIT = CaptionEdit("coat", "red", rendered_as="blue")
ADAPTERS = {"edit": "coat-red-as-blue", "control": "coat-red-as-blue-control"}
RESULTS = Path(__file__).resolve().parent / "results" / "lora_demo.json"


def demo_prompts(per_group: int = 6) -> tuple[list[str], list[str]]:
    """``(prompts, groups)``: ``per_group`` (at most six) target prompts about red coats, then as many
    preserve prompts."""
    target = concept_prompts(EDIT)[:per_group]
    preserve = [prompt for prompt, _ in bystander_prompts(EDIT)][:per_group]
    return target + preserve, ["target"] * len(target) + ["preserve"] * len(preserve)


def fused_denoiser(adapter: str | Path) -> DiffusersDenoiser:
    """The embedded model with ``adapter`` fused into a copy of its UNet, as a denoiser."""
    parts = load_finetuned(adapter)
    return DiffusersDenoiser(parts.unet, parts.text_encoder, parts.tokenizer, parts.scheduler)


def auc(target: list[float], preserve: list[float]) -> float:
    """P(drift of a random target prompt > that of a random preserve prompt), ties counting half."""
    wins = sum((t > p) + 0.5 * (t == p) for t in target for p in preserve)
    return wins / (len(target) * len(preserve))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-group", type=int, default=6, help="prompts per group (tests/test_lora_demo.py: 4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts, groups = demo_prompts(args.per_group)
    models = {name: fused_denoiser(shipped_adapter(adapter)) for name, adapter in ADAPTERS.items()}
    started, cpu_started = time.perf_counter(), time.process_time()
    report = drift_report(
        str(default_model_path()),
        list(models.values()),
        prompts,
        groups,
        names=list(models),
        num_steps=args.num_steps,
        num_samples=args.num_samples,
        seed=args.seed,
        progress_bar=False,
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    summary = {}
    for name in models:
        drift = {
            group: [r.drift for r in report.rows if r.checkpoint == name and r.group == group]
            for group in ("target", "preserve")
        }
        means = {g.group: g.mean.to_dict() for g in report.groups if g.checkpoint == name}
        specificity = report.specificity.get(name)
        summary[name] = {
            "target": means["target"],
            "preserve": means["preserve"],
            "specificity": specificity.to_dict() if specificity is not None else None,
            "auc_target_vs_preserve": auc(drift["target"], drift["preserve"]),
        }
    result = {
        "edit": str(EDIT),
        "adapters": ADAPTERS,
        "settings": report.settings,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "summary": summary,
        "rows": [row.to_dict() for row in report.rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(report.summary())
    print(f"\n{'model':8} {'target':>16} {'preserve':>16} {'specificity':>16} {'AUC':>6}")
    for name, s in summary.items():
        cells = [s["target"], s["preserve"], s["specificity"]]
        text = [
            f"{c['value']:.4g} ± {c['stderr']:.2g}"
            if c and c["stderr"] is not None
            else (f"{c['value']:.4g}" if c else "-")
            for c in cells
        ]
        print(f"{name:8} {text[0]:>16} {text[1]:>16} {text[2]:>16} {s['auc_target_vs_preserve']:6.3f}")
    print(f"\n{seconds:.0f} s wall, {cpu_seconds:.0f} s CPU at {torch.get_num_threads()} thread(s); wrote {args.out}")


if __name__ == "__main__":
    main()
