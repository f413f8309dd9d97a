"""Peak memory of comparing a base with its LoRA: one base with the adapter toggled vs two loaded models.

    python benchmarks/lora_memory.py            # conjure-zoo and a random SD-layout model, 4 prompts
    python benchmarks/lora_memory.py --prompts 4 --no-big

For each model, three runs score the same prompts (each in a fresh subprocess, so that one run's
allocations cannot hide another's): the base alone (prompt comparison, the floor), base vs base+LoRA
(``model_b`` a ``pytorch_lora_weights.safetensors``: the base loads once, the adapter is switched on and
off), and base vs a whole copy with that LoRA fused into the weights (two models in memory, what
comparing checkpoints cost before). Memory is the process's peak resident set size (VmHWM, reset
through ``/proc/self/clear_refs`` after importing torch, diffusers and peft) above its resident set
size at that point; ``tracemalloc`` would not see torch's allocations. Results go to ``benchmarks/results/lora_memory.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "lora_memory.json"
SETTINGS = dict(num_steps=3, num_samples=1, guidance_scale=3.0, seed=0)
PROMPT_POOL = [
    "a red fox",
    "a blue house",
    "a green tree",
    "a yellow car",
    "a white cat",
    "a black dog",
    "a tall tower",
    "a small boat",
    "an old bridge",
    "a busy street",
    "a quiet lake",
    "a snowy hill",
]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Start the peak resident set size (VmHWM) afresh, so that the imports' transient peak cannot hide the
    scoring's; ``False`` where the kernel does not allow it (then ``ru_maxrss`` since start is used)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(base: str, model_b: str | None, num_prompts: int) -> dict:
    """Run in the child: score ``num_prompts`` prompts and report the peak memory the scoring added."""
    import diffusers  # noqa: F401  (imported before the baseline: the comparison is about models, not libraries)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from conjure_metrics import conjure_similarity

    reset = _reset_peak()
    before = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    prompts = (PROMPT_POOL * (num_prompts // len(PROMPT_POOL) + 1))[:num_prompts]
    second = prompts[1:] + prompts[:1] if model_b is None else prompts
    conjure_similarity(prompts, second, base, model_b=model_b, progress_bar=False, **SETTINGS)
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_added_mib": (peak - before) / 1024, "seconds": time.perf_counter() - started}


def _random_lora(module, targets: list[str], rank: int, seed: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    wrapped = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), copy.deepcopy(module)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_" in name:  # PEFT starts B at zero: random B so that the adapter changes something
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return get_peft_model_state_dict(wrapped)


def _fused(module, lora: dict):
    import torch

    fused = copy.deepcopy(module)
    modules = dict(fused.named_modules())
    with torch.no_grad():
        for key, down in lora.items():
            if key.endswith("lora_A.weight"):
                modules[key[: -len(".lora_A.weight")]].weight += lora[key.replace("lora_A", "lora_B")] @ down
    return fused


def prepare(base: Path, folder: Path) -> tuple[Path, Path]:
    """A LoRA of ``base``'s UNet and text encoder (rank 4), and a whole copy of ``base`` with it fused."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    unet_lora = _random_lora(unet, ["to_q", "to_k", "to_v", "to_out.0"], 4, seed=1)
    text_lora = _random_lora(text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"], 4, seed=2)
    StableDiffusionPipeline.save_lora_weights(
        str(folder / "lora"),
        unet_lora_layers=convert_state_dict_to_diffusers(unet_lora),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(text_lora),
    )
    shutil.copytree(base, folder / "fused")
    for name, module, lora in (("unet", unet, unet_lora), ("text_encoder", text_encoder, text_lora)):
        shutil.rmtree(folder / "fused" / name)
        _fused(module, lora).save_pretrained(folder / "fused" / name)
    return folder / "lora" / "pytorch_lora_weights.safetensors", folder / "fused"


def big_model(folder: Path) -> Path:
    """A random SD-layout model (UNet ~38 M, CLIP text encoder ~8 M parameters), small latents so scoring is cheap."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from conjure_metrics.tiny import byte_level_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = byte_level_clip_tokenizer(32)
    parts = {
        "unet": UNet2DConditionModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(128, 256, 384),
            cross_attention_dim=384,
            attention_head_dim=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        ),
        "text_encoder": CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=384,
                intermediate_size=1536,
                num_hidden_layers=4,
                num_attention_heads=6,
                max_position_embeddings=32,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        ),
        "tokenizer": tokenizer,
        "scheduler": DDPMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
        ),
    }
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        **{
            name: ["diffusers" if name in ("unet", "scheduler") else "transformers", type(part).__name__]
            for name, part in parts.items()
        },
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _parameters_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20


def _run_child(base: Path, model_b: Path | None, num_prompts: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, __file__, "--measure", str(base), str(model_b or ""), str(num_prompts)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4, help="prompts scored per run")
    parser.add_argument("--no-big", action="store_true", help="only the embedded conjure-zoo model")
    parser.add_argument("--measure", nargs=3, metavar=("BASE", "MODEL_B", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        base, model_b, count = args.measure
        print(json.dumps(measure(base, model_b or None, int(count))))
        return

    from conjure_metrics.zoo import default_model_path

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = {"conjure-zoo": Path(default_model_path())}
        if not args.no_big:
            models["random SD-layout"] = big_model(scratch / "big")
        for model, base in models.items():
            work = scratch / f"{model.replace(' ', '_')}-variants"
            work.mkdir()
            lora, fused = prepare(base, work)
            for variant, model_b in (
                ("base alone", None),
                ("base vs LoRA (toggled)", lora),
                ("base vs fused copy", fused),
            ):
                measured = _run_child(base, model_b, args.prompts)
                rows.append(
                    {
                        "model": model,
                        "weights_mib": round(_parameters_mib(base), 1),
                        "variant": variant,
                        "prompts": args.prompts,
                        **{k: round(v, 1) for k, v in measured.items()},
                    }
                )
                print(
                    f"{model:>17} | {variant:<24} | {rows[-1]['peak_added_mib']:8.1f} MiB | "
                    f"{rows[-1]['seconds']:6.1f} s",
                    flush=True,
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": SETTINGS, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
