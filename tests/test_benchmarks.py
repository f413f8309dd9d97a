"""The benchmark scripts run end to end at a tiny size on CPU and write their JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.slow


def _run(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_gpu_runs_on_cpu_at_a_tiny_size(tmp_path):
    out = tmp_path / "gpu.json"
    _run(
        "bench_gpu.py",
        "--tiny",
        "--device",
        "cpu",
        "--pairs",
        "2",
        "--steps",
        "2",
        "--samples",
        "1",
        "--repeats",
        "1",
        "--max-batch-size",
        "8",
        "--out",
        str(out),
    )
    result = json.loads(out.read_text())
    assert result["gflops_per_unet_eval"] > 0 and result["engine_evals_per_s"] > 0
    assert 0 < result["engine_share_of_ceiling"] and result["projected_stsb_test_minutes"] > 0
    assert set(result["seconds"]) == {"build", "ceiling_with_compile", "engine", "total"}  # to size device runs


def test_bench_gpu_compiled_and_tuned_path_runs_on_cpu(tmp_path):
    # The GPU session runs --compile --cuda-graphs --tuned; all but the CUDA graphs can run here. The graph
    # is traced but not lowered to kernels (aot_eager): inductor on a UNet is test_compiled_denoiser's
    # job, and tuned inductor settings take minutes of CPU to apply to the same graph again.
    out = tmp_path / "gpu_compiled.json"
    _run(
        "bench_gpu.py",
        "--tiny",
        "--device",
        "cpu",
        "--pairs",
        "2",
        "--steps",
        "2",
        "--samples",
        "1",
        "--repeats",
        "1",
        "--max-batch-size",
        "8",
        "--compile",
        "--compile-backend",
        "aot_eager",
        "--tuned",
        "--out",
        str(out),
    )
    result = json.loads(out.read_text())
    assert result["settings"]["compile"] and result["settings"]["tuned"]
    assert result["engine_evals_per_s"] > 0 and result["unet_ceiling_evals_per_s"] > 0


def test_bench_engine_quick_run_compares_with_the_naive_loop(tmp_path):
    out = tmp_path / "engine.json"
    stdout = _run("bench_engine.py", "--quick", "--steps", "2", "--samples", "2", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {r["engine"] for r in rows} == {"batched", "naive", "ceiling"}
    runs = [r for r in rows if r["engine"] != "ceiling"]
    assert all(r["speedup_vs_naive"] > 0 for r in runs) and "vs naive" in stdout
    # Same seed, same chain: the engine's divergences are the naive loop's.
    assert all(r["max_rel_diff_vs_naive"] < 1e-4 for r in runs)
    # Counted, not timed: on the same pairs the engine asks the model for fewer rows than the naive loop.
    for naive in (r for r in runs if r["engine"] == "naive"):
        same = [
            r
            for r in runs
            if r["engine"] == "batched"
            and (r["model"], r["workload"], r["pairs"]) == (naive["model"], naive["workload"], naive["pairs"])
        ]
        assert same and all(r["denoiser_rows"] < naive["denoiser_rows"] for r in same)
    assert all("attainable_speedup" in r and "share_of_attainable" in r for r in runs if r["engine"] == "batched")


def test_bench_families_records_every_requested_family_at_a_tiny_size(tmp_path):
    out = tmp_path / "families.json"
    args = ["--pairs", "2", "--steps", "2", "--samples", "1", "--repeats", "1", "--engine-repeats", "1"]
    stdout = _run("bench_families.py", "--families", "sd", "flux", *args, "--bare-batch", "8", "--out", str(out))
    result = json.loads(out.read_text())
    assert "not full-size" in result["note"] and "not full-size" in stdout
    assert result["settings"]["families"] == ["sd", "flux"] and result["torch"] and result["machine"]["cpu_count"]
    rows = {r["family"]: r for r in result["families"]}
    assert set(rows) == {"sd", "flux"} and not any("error" in r for r in rows.values())
    for r in rows.values():
        for key in ("network_params", "text_encoder_params", "bare_rows_per_s", "engine_rows_per_s", "pairs_per_s"):
            assert r[key] > 0, (r["family"], key)
        assert 0 < r["share_in_model"] <= 1 and r["peak_mib_scored"] >= r["peak_mib_loaded"] > 0
        assert r["divergence_finite"] and r["rows"] == r["rows_per_pair"] * 2
    # Counted, not timed: Flux dev embeds its guidance, so it runs no unconditional rows (fewer than SD's CFG).
    assert rows["flux"]["guidance_mode"] == "embedded" and rows["sd"]["guidance_mode"] == "cfg"
    assert rows["flux"]["rows_per_pair"] < rows["sd"]["rows_per_pair"]
