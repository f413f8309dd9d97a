"""`evaluate.load("conjure")` offline, in clean subprocesses (no cache of the developer's can help)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conjure_metrics import conjure_similarity

pytestmark = pytest.mark.slow

PROMPTS_A = ["a red fox", "a striped cat", "a zebra"]
PROMPTS_B = ["a blue fox", "a striped cat", "a horse"]
SETTINGS = dict(num_steps=3, num_samples=2, guidance_scale=2.0, seed=5, weighting="girsanov", min_timestep=100)


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(
        HF_HOME=str(tmp_path / "hf_home"),
        HF_EVALUATE_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def _run(code, env, cwd, check=True):
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{done.stdout}\n{done.stderr}")
    return done


def _compute_code(load_arg, model):
    return (
        f"import json, evaluate\nm = evaluate.load({load_arg!r})\n"
        f"r = m.compute(prompts_a={PROMPTS_A!r}, prompts_b={PROMPTS_B!r}, model={str(model)!r}, **{SETTINGS!r})\n"
        "print('RESULT' + json.dumps(r))"
    )


def _result(done):
    line = [text for text in done.stdout.splitlines() if text.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def _expected(model):
    # One thread, as in the subprocesses (OMP_NUM_THREADS=1): float32 round-off depends on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return conjure_similarity(PROMPTS_A, PROMPTS_B, str(model), **SETTINGS)
    finally:
        torch.set_num_threads(threads)


def _assert_matches(result, expected):
    # A float32 model in another process: equal up to float32 round-off.
    close = dict(rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(result["divergence"], dtype=torch.float64), expected.divergence, **close)
    torch.testing.assert_close(torch.tensor(result["similarity"], dtype=torch.float64), expected.similarity, **close)
    assert result["mean_similarity"] == pytest.approx(float(expected.mean_similarity), rel=1e-5)
    torch.testing.assert_close(
        torch.tensor(result["stderr"], dtype=torch.float64), expected.stderr, equal_nan=True, rtol=1e-3, atol=0
    )  # a spread of nearby values: relative round-off grows


def test_bare_name_loads_offline_from_any_directory_after_install(tmp_path, tiny_pixel_repo):
    env, elsewhere = _clean_env(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = _run(_compute_code("conjure", tiny_pixel_repo), env, elsewhere, check=False)
    assert before.returncode != 0  # nothing cached yet: the install step is what makes it work
    _run("from conjure_metrics.evaluate_support import main; main(['install'])", env, elsewhere)
    _assert_matches(
        _result(_run(_compute_code("conjure", tiny_pixel_repo), env, elsewhere)), _expected(tiny_pixel_repo)
    )


def test_module_path_inside_the_package_loads_without_install(tmp_path, tiny_pixel_repo):
    from conjure_metrics.evaluate_support import module_path

    done = _run(_compute_code(module_path(), tiny_pixel_repo), _clean_env(tmp_path), tmp_path)
    _assert_matches(_result(done), _expected(tiny_pixel_repo))


def test_evaluate_distributed_mode_with_two_processes_matches_one(tmp_path, tiny_pixel_repo):
    from conjure_metrics.evaluate_support import module_path

    env, cache = _clean_env(tmp_path), tmp_path / "shared_cache"
    shards = {0: (PROMPTS_A[:2], PROMPTS_B[:2]), 1: (PROMPTS_A[2:], PROMPTS_B[2:])}
    processes = []
    for rank, (a, b) in shards.items():
        code = (
            f"import json, evaluate\n"
            f"m = evaluate.load({module_path()!r}, num_process=2, process_id={rank}, experiment_id='conjure-test', cache_dir={str(cache)!r})\n"
            f"m.add_batch(prompts_a={a!r}, prompts_b={b!r})\n"
            f"r = m.compute(model={str(tiny_pixel_repo)!r}, **{SETTINGS!r})\n"
            "print('RESULT' + json.dumps(r))"
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    main = _result(subprocess.CompletedProcess([], 0, outputs[0][0], ""))
    assert "RESULT" + "null" in outputs[1][0]  # evaluate computes on process 0 only
    _assert_matches(main, _expected(tiny_pixel_repo))


def test_missing_evaluate_extra_is_named_in_the_error(monkeypatch):
    import builtins

    from conjure_metrics import evaluate_support

    real_import = builtins.__import__

    def no_evaluate(name, *args, **kwargs):
        if name.startswith("evaluate"):
            raise ImportError("No module named 'evaluate'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_evaluate)
    with pytest.raises(ImportError, match=r"conjure_metrics\[evaluate\]"):
        evaluate_support.install()
