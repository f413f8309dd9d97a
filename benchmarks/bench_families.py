"""Every supported model family on CPU at a tiny size: parameters, bare and engine throughput, memory.

No GPU and no pretrained weights are needed: each family's tiny random-weight diffusers folder
(``conjure_metrics.tiny.save_tiny_model``: Stable Diffusion in latent space, SDXL, SD3, Flux.1-dev
layout, PixArt) is written to a temporary folder, loaded with ``load_denoiser`` and measured, each
family in its own process (``--one``), so that peak memory is the family's own. For each family, with its default sampler:

* parameters of the denoising network and of each text encoder, and the sample shape;
* bare model throughput: rows/s of ``predict_noise`` on a fixed batch after a warm-up (median call);
* the engine: ``conjure_similarity`` on distinct prompt pairs, as pairs/s, model rows per pair
  (counted with ``InstrumentedDenoiser``), rows/s inside the engine against the bare rate, and the
  share of the engine's wall time spent inside the model;
* peak resident memory of the process after loading and after scoring (at this size nearly all of it
  is the libraries: torch, diffusers and transformers; the tiny weights are kilobytes).

These are tiny random-weight models on CPU: the figures show the engine's overhead per family and
how many model rows each family's guidance costs, not full-size speed or memory.
Prints a table and writes ``benchmarks/results/bench_families.json``.

    python benchmarks/bench_families.py [--families sd flux] [--pairs 8] [--steps 6] [--samples 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
# torch is imported in the per-family processes only: the parent stays light (the smoke test runs it).

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("sd", "sdxl", "sd3", "flux", "pixart")
COLOURS = ["red", "blue", "white", "black", "orange", "grey", "green", "yellow"]
CREATURES = ["cat", "fox", "horse", "dog", "bear", "tiger", "zebra", "leopard"]
NOTE = (
    "Tiny random-weight models (conjure_metrics.tiny) on CPU, not full-size checkpoints: the figures show "
    "the engine's overhead and model rows per pair for each family, not full-size speed or memory. "
    "No GPU was used."
)


def _peak_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        return None


def _pairs(n: int) -> tuple[list[str], list[str]]:
    """``2 n`` different prompts, so that no trajectory can be shared between pairs."""
    prompts = [f"a {colour} {creature}" for colour in COLOURS for creature in CREATURES]
    if 2 * n > len(prompts):
        prompts += [f"{p} in a field" for p in prompts]
    return prompts[0 : 2 * n : 2], prompts[1 : 2 * n : 2]


def _modules(denoiser) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """(denoising network, {"text_encoder (CLIPTextModel)": module, ...}) of any family's adapter."""
    if hasattr(denoiser, "pipeline"):  # a PipelineDenoiser (SDXL, SD3, Flux, PixArt)
        names = sorted(n for n in denoiser.pipeline.components if n.startswith("text_encoder"))
        modules = [(n, getattr(denoiser.pipeline, n)) for n in names]
        network = denoiser.model
    else:  # Stable Diffusion 1/2 (DiffusersDenoiser)
        modules, network = [("text_encoder", denoiser.text_encoder)], denoiser.unet
    return network, {f"{n} ({type(m).__name__})": m for n, m in modules if m is not None}


def _text_tokens(denoiser) -> int:
    """Length of the token sequence a prompt is encoded to (what the network's attention sees)."""
    conditioning = denoiser.encode_prompts(["a cat"])
    states = conditioning["encoder_hidden_states"] if isinstance(conditioning, dict) else conditioning
    return int(states.shape[1])


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bare_rows_per_s(denoiser, batch: int, repeats: int) -> tuple[float, float]:
    """(rows/s of one ``predict_noise`` call on ``batch`` rows, median of ``repeats`` after 2 warm-ups;
    the median call's seconds). Timestep: the middle of the family's default chain."""
    import torch

    chain = denoiser.reverse_chain(10)
    t = chain.timesteps[len(chain.timesteps) // 2]
    timesteps = torch.full((batch,), float(t)).to(chain.timesteps.dtype)
    prompts = [f"a {c} {k}" for c in COLOURS for k in CREATURES]
    conditioning = denoiser.encode_prompts([prompts[i % len(prompts)] for i in range(batch)])
    x = torch.randn(batch, *denoiser.sample_shape, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for i in range(2 + repeats):
            start = time.perf_counter()
            denoiser.predict_noise(x, timesteps, conditioning)
            if i >= 2:
                times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return batch / median, median


def measure_one(family: str, args: argparse.Namespace) -> dict:
    """One family, meant to run in its own process (``--one``): build its tiny folder, load it, measure."""
    from conjure_metrics.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as root:
        try:
            # Stable Diffusion is a latent model; the tiny default is pixel space, so ask for the latent layout.
            extra = {"latent": True} if family == "sd" else {}
            path = save_tiny_model(Path(root) / family, family=family, **extra)
        except Exception as error:  # noqa: BLE001  (a broken tiny model is a finding to record)
            return dict(family=family, error=f"building the tiny model: {type(error).__name__}: {error}")
        return _measure(family, path, args)


def _measure(family: str, path: Path, args: argparse.Namespace) -> dict:
    import torch

    from conjure_metrics import conjure_similarity
    from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
    from conjure_metrics.denoisers.loading import load_denoiser

    torch.manual_seed(0)
    start = time.perf_counter()
    denoiser = load_denoiser(path)
    load_s = time.perf_counter() - start
    peak_loaded = _peak_mib()
    network, encoders = _modules(denoiser)
    row = dict(
        family=family,
        adapter=type(denoiser).__name__,
        network=type(network).__name__,
        network_params=_count(network),
        text_encoders={name: _count(m) for name, m in encoders.items()},
        text_encoder_params=sum(_count(m) for m in encoders.values()),
        sample_shape=list(denoiser.sample_shape),
        sampler=getattr(denoiser, "sampler", None),
        guidance_mode=getattr(denoiser, "guidance_mode", "cfg"),
        # T5 tokens per prompt (the real pipelines' defaults, kept at tiny size) and the text tokens the network
        # attends to in all: the attention length, not the tiny network, sets the per-row cost of SD3 and Flux.
        max_sequence_length=getattr(denoiser, "max_sequence_length", None),
        text_tokens=_text_tokens(denoiser),
        torch_threads=torch.get_num_threads(),
        load_s=load_s,
    )
    row["bare_rows_per_s"], row["bare_call_s"] = bare_rows_per_s(denoiser, args.bare_batch, args.repeats)

    a, b = _pairs(args.pairs)
    settings = dict(
        num_steps=args.steps,
        num_samples=args.samples,
        guidance_scale=args.guidance,
        max_batch_size=args.max_batch_size,
        seed=0,
    )
    warm_a, warm_b = _pairs(args.pairs + 1)
    conjure_similarity(warm_a[-1:], warm_b[-1:], denoiser, **dict(settings, num_steps=2, num_samples=1))  # warm-up
    walls, in_model = [], []
    for _ in range(args.engine_repeats):  # the same work each time: same counts, median wall time
        counting = InstrumentedDenoiser(denoiser)
        start = time.perf_counter()
        result = conjure_similarity(a, b, counting, **settings)
        walls.append(time.perf_counter() - start)
        in_model.append(counting.seconds)
    middle = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    wall, model_s = walls[middle], in_model[middle]
    row.update(
        engine_s=wall,
        pairs_per_s=args.pairs / wall,
        calls=counting.calls,
        rows=counting.rows,
        rows_per_pair=counting.rows / args.pairs,
        rows_per_call=counting.rows / counting.calls,
        engine_rows_per_s=counting.rows / wall,
        outside_model_s=wall - model_s,
        share_in_model=model_s / wall,
        in_model_rows_per_s=counting.rows / model_s,
        divergence_finite=bool(torch.isfinite(result.divergence).all()),
        peak_mib_loaded=peak_loaded,
        peak_mib_scored=_peak_mib(),
    )
    row["engine_vs_bare"] = row["engine_rows_per_s"] / row["bare_rows_per_s"]
    return row


def _child_args(args: argparse.Namespace, family: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        family,
        "--pairs",
        str(args.pairs),
        "--steps",
        str(args.steps),
        "--samples",
        str(args.samples),
        "--guidance",
        str(args.guidance),
        "--max-batch-size",
        str(args.max_batch_size),
        "--bare-batch",
        str(args.bare_batch),
        "--repeats",
        str(args.repeats),
        "--engine-repeats",
        str(args.engine_repeats),
    ]


def run_family(family: str, args: argparse.Namespace) -> dict:
    """One family measured in a fresh process; an error there is recorded, not raised."""
    done = subprocess.run(_child_args(args, family), capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return dict(family=family, error=f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def _print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"tiny random-weight models on CPU; P={args.pairs} pairs, T={args.steps}, k={args.samples}, "
        f"guidance {args.guidance}, bare batch {args.bare_batch}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    header = (
        f"{'family':>7} {'network params':>14} {'text-enc params':>15} {'bare rows/s':>11} {'engine rows/s':>13} "
        f"{'in model':>8} {'pairs/s':>8} {'rows/pair':>9} {'peak MiB':>8}"
    )
    print(header)
    for r in rows:
        if "error" in r:
            print(f"{r['family']:>7} ERROR {r['error'].splitlines()[-1] if r['error'] else ''}")
            continue
        print(
            f"{r['family']:>7} {r['network_params']:>14,} {r['text_encoder_params']:>15,} {r['bare_rows_per_s']:>11.0f} "
            f"{r['engine_rows_per_s']:>13.0f} {r['share_in_model']:>8.0%} {r['pairs_per_s']:>8.2f} "
            f"{r['rows_per_pair']:>9.1f} {r['peak_mib_scored']:>8.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--pairs", type=int, default=8, help="distinct prompt pairs scored by the engine")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument(
        "--guidance",
        type=float,
        default=3.0,
        help="classifier-free guidance; for Flux dev (embedded guidance) the transformer's guidance input",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--bare-batch",
        type=int,
        default=None,
        help="rows per bare predict_noise call (default: --max-batch-size, the engine's full micro-batch, "
        "so that bare and engine rows/s compare at the same batch)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed bare calls (median)")
    parser.add_argument("--engine-repeats", type=int, default=3, help="timed engine runs (median)")
    parser.add_argument("--out", default=str(RESULTS / "bench_families.json"))
    parser.add_argument("--one", choices=FAMILIES, help=argparse.SUPPRESS)  # child process: one family
    args = parser.parse_args()
    if args.bare_batch is None:
        args.bare_batch = args.max_batch_size

    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return

    started = time.perf_counter()
    rows = [run_family(family, args) for family in args.families]
    settings = {k: v for k, v in vars(args).items() if k != "one"}
    result = dict(
        note=NOTE,
        settings=settings,
        machine=dict(
            processor=platform.processor(),
            machine=platform.machine(),
            cpu_model=_cpu_model(),
            cpu_count=os.cpu_count(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
            python=platform.python_version(),
        ),
        torch=version("torch"),
        diffusers=version("diffusers"),
        transformers=version("transformers"),
        total_s=time.perf_counter() - started,
        families=rows,
    )
    _print_table(rows, args)
    print(NOTE)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
