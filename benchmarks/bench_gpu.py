"""GPU throughput of the engine on a Stable-Diffusion-1.5-sized UNet (random weights, same FLOPs).

Builds the SD 1.5 UNet from its published config values (written below) and a CLIP-L-sized text
encoder, both randomly initialised (no weights can be downloaded), and measures:

* the UNet alone at the engine's micro-batch (the ceiling),
* the engine (``jeffreys_terms``) on prompt pairs at 64×64 latents, T steps, k samples, guidance,

as UNet evaluations per second and model FLOP utilisation (FLOPs per evaluation counted with
``torch.utils.flop_counter``; peak = dense bf16 tensor-core rate of the card), and projects the
time for the STS-B test split (1,379 pairs) at paper settings. Writes JSON to ``benchmarks/results/``.

    python benchmarks/bench_gpu.py                      # on a CUDA machine
    python benchmarks/bench_gpu.py --tiny --device cpu  # smoke test at a tiny size (CI)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from conjure_metrics.denoisers.compiled import CompiledDenoiser
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser

# Stable Diffusion 1.5 UNet (runwayml/stable-diffusion-v1-5, unet/config.json), published values.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
# CLIP ViT-L/14 text tower, as used by SD 1.x.
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)
TINY_UNET = dict(
    SD15_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64, 64),
    norm_num_groups=16,
    cross_attention_dim=64,
    attention_head_dim=4,
)
TINY_TEXT = dict(CLIP_L_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
STSB_TEST_PAIRS = 1379


def build_model(tiny: bool, device: str, dtype: torch.dtype, channels_last: bool):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from conjure_metrics import DiffusersDenoiser
    from conjure_metrics.tiny import byte_level_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET)).to(dtype).eval()
        tokenizer = byte_level_clip_tokenizer(77)
        text = dict(
            TINY_TEXT if tiny else CLIP_L_TEXT,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(**text)).to(dtype).eval()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    )
    return DiffusersDenoiser(unet, text_encoder, tokenizer, scheduler)


def flops_per_evaluation(denoiser, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, *denoiser.sample_shape, device=device)
    cond = denoiser.encode_prompts(["a photo", "a cat"])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        denoiser.predict_noise(x, torch.tensor([500, 500], device=device), cond)
    return counter.get_total_flops() / 2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def unet_ceiling(denoiser, device: str, batch: int, repeats: int, min_seconds: float = 0.0) -> float:
    """UNet evaluations per second on one micro-batch, the engine's upper bound: ``repeats`` timed
    calls, more if they took less than ``min_seconds``."""
    x = torch.randn(batch, *denoiser.sample_shape, device=device)
    cond = denoiser.encode_prompts(["a photo of a cat"] * batch)
    t = torch.full((batch,), 500, device=device)
    with torch.inference_mode():
        for _ in range(2):
            denoiser.predict_noise(x, t, cond)
        _sync(device)
        start, calls = time.perf_counter(), 0
        while calls < repeats or time.perf_counter() - start < min_seconds:
            denoiser.predict_noise(x, t, cond)
            calls += 1
            if calls >= repeats:
                _sync(device)
    return batch * calls / (time.perf_counter() - start)


def engine_throughput(denoiser, device: str, pairs: int, args) -> tuple[float, float]:
    """(UNet evaluations per second inside the engine, pairs per second)."""
    from conjure_metrics import jeffreys_terms

    prompts = [
        f"sentence number {i} about a {w}" for i, w in enumerate(["cat", "dog", "car", "tree"] * (pairs // 2 + 1))
    ]
    a, b = prompts[0 : 2 * pairs : 2], prompts[1 : 2 * pairs : 2]
    counting = InstrumentedDenoiser(denoiser)
    settings = dict(
        num_steps=args.steps, num_samples=args.samples, guidance_scale=args.guidance, max_batch_size=args.max_batch_size
    )
    jeffreys_terms(a[:2], b[:2], denoiser, **dict(settings, num_steps=2))  # warm-up
    _sync(device)
    start = time.perf_counter()
    jeffreys_terms(a, b, counting, **settings)
    _sync(device)
    wall = time.perf_counter() - start
    return counting.rows / wall, pairs / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for a CPU smoke test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model at a fixed micro-batch (CompiledDenoiser; slow to start)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="with --compile: mode='reduce-overhead' (CUDA graphs replay each micro-batch)",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (aot_eager: trace without generating kernels, for a CPU smoke test)",
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="with --compile: fused QKV projections and diffusers' suggested inductor settings "
        "(1x1 convolutions as matmuls, coordinate-descent tuning, no epilogue fusion)",
    )
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_gpu.json"))
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    denoiser = build_model(args.tiny, args.device, dtype, args.channels_last)
    flops = flops_per_evaluation(denoiser, args.device)
    if args.compile and args.tuned:
        denoiser.unet.fuse_qkv_projections()
        torch._inductor.config.conv_1x1_as_mm = True
        torch._inductor.config.coordinate_descent_tuning = True
        torch._inductor.config.epilogue_fusion = False
    if args.compile:
        # One fixed micro-batch shape: one graph (and with CUDA graphs one recording), no recompiles.
        denoiser = CompiledDenoiser(
            denoiser,
            batch_size=args.max_batch_size,
            mode="reduce-overhead" if args.cuda_graphs else None,
            backend=args.compile_backend,
        )
    built = time.perf_counter()
    ceiling = unet_ceiling(denoiser, args.device, args.max_batch_size, args.repeats)
    measured_ceiling = time.perf_counter()
    engine_evals, pairs_per_s = engine_throughput(denoiser, args.device, args.pairs, args)
    # Wall-clock per stage (compilation happens in the ceiling's warm-up), to size device runs.
    seconds = dict(
        build=built - started,
        ceiling_with_compile=measured_ceiling - built,
        engine=time.perf_counter() - measured_ceiling,
        total=time.perf_counter() - started,
    )

    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in card), None)
    evals_per_pair = engine_evals / pairs_per_s
    result = {
        "card": card,
        "torch": torch.__version__,
        "settings": vars(args),
        "unet_params_m": sum(p.numel() for p in denoiser.unet.parameters()) / 1e6,
        "gflops_per_unet_eval": flops / 1e9,
        "unet_ceiling_evals_per_s": ceiling,
        "engine_evals_per_s": engine_evals,
        "engine_pairs_per_s": pairs_per_s,
        "unet_evals_per_pair": evals_per_pair,
        "engine_share_of_ceiling": engine_evals / ceiling,
        "mfu_ceiling": None if peak is None else flops * ceiling / (peak * 1e12),
        "mfu_engine": None if peak is None else flops * engine_evals / (peak * 1e12),
        "projected_stsb_test_minutes": STSB_TEST_PAIRS / pairs_per_s / 60,
        "seconds": seconds,
    }
    print(
        f"{card}: UNet {result['unet_params_m']:.0f} M params, {result['gflops_per_unet_eval']:.1f} GFLOP/eval, {args.dtype}"
    )
    for key in (
        "unet_ceiling_evals_per_s",
        "engine_evals_per_s",
        "engine_pairs_per_s",
        "unet_evals_per_pair",
        "engine_share_of_ceiling",
        "mfu_ceiling",
        "mfu_engine",
        "projected_stsb_test_minutes",
    ):
        value = result[key]
        print(f"  {key:>30}: {'n/a' if value is None else f'{value:.4g}'}")
    print("  seconds: " + ", ".join(f"{stage} {value:.0f}" for stage, value in seconds.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
