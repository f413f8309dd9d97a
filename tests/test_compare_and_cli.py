"""Checkpoint comparison (Python and `conjure compare`) and the `conjure` command line."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser, conjure_similarity
from conjure_metrics.cli import main
from conjure_metrics.tiny import build_tiny_components

PROMPTS = ["a red fox", "a striped cat", "a zebra"]
FAST = ["--steps", "3", "--samples", "2", "--quiet"]


def _perturbed(components, scale, seed=0):
    unet = copy.deepcopy(components["unet"])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return DiffusersDenoiser(**dict(components, unet=unet))


def test_divergence_from_a_perturbed_copy_grows_with_the_perturbation():
    components = build_tiny_components()
    base = DiffusersDenoiser(**components)
    divergences = [
        conjure_similarity(
            PROMPTS, PROMPTS, base, model_b=_perturbed(components, scale), num_steps=4, num_samples=3
        ).divergence
        for scale in (0.0, 0.01, 0.03, 0.1)
    ]
    assert torch.all(divergences[0] == 0)
    for smaller, larger in zip(divergences[1:], divergences[2:]):
        assert torch.all(larger > smaller)


def test_metric_compares_two_models_on_the_same_prompts():
    components = build_tiny_components()
    metric = ConjureSimilarity(
        DiffusersDenoiser(**components), model_b=_perturbed(components, 0.05), num_steps=3, num_samples=2
    )
    metric.update(PROMPTS, PROMPTS)
    assert torch.all(metric.pair_results()["divergence"] > 0)


def test_models_with_different_schedules_are_refused():
    from diffusers import DDPMScheduler

    components = build_tiny_components()
    other = dict(components, scheduler=DDPMScheduler(beta_schedule="linear"))
    with pytest.raises(ValueError, match="model_b"):
        conjure_similarity(PROMPTS, PROMPTS, DiffusersDenoiser(**components), model_b=DiffusersDenoiser(**other))


@pytest.fixture(scope="module")
def base_and_finetuned(tmp_path_factory):
    from conjure_metrics.tiny import save_tiny_model

    folder = tmp_path_factory.mktemp("checkpoints")
    base = save_tiny_model(folder / "base")
    finetuned = folder / "finetuned"
    components = build_tiny_components()
    moved = _perturbed(components, 0.05)
    for name, component in dict(components, unet=moved.unet).items():
        component.save_pretrained(finetuned / name)
    return base, finetuned


def test_cli_compare_prints_a_table_and_writes_json(base_and_finetuned, tmp_path, capsys):
    base, finetuned = base_and_finetuned
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n# a comment\n\n")
    out = tmp_path / "compare.json"
    assert main(["compare", str(base), str(finetuned), "--prompts", str(prompts_file), "--json", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert all(p in printed for p in PROMPTS) and "± stderr" in printed
    rows = json.loads(out.read_text())["prompts"]
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(r["divergence"] > 0 and r["stderr"] is not None for r in rows)


def test_cli_compare_of_a_model_with_itself_is_zero(base_and_finetuned, tmp_path):
    base, _ = base_and_finetuned
    out = tmp_path / "self.json"
    assert main(["compare", str(base), str(base), "--prompt", "a red fox", "--json", str(out), *FAST]) == 0
    assert json.loads(out.read_text())["prompts"][0]["divergence"] == 0


def test_cli_similarity_of_two_prompts_and_of_a_pairs_file(base_and_finetuned, tmp_path, capsys):
    base, _ = base_and_finetuned
    assert main(["similarity", "a red fox", "a blue fox", "--model", str(base), *FAST]) == 0
    assert "a blue fox" in capsys.readouterr().out
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a red fox\ta blue fox\na cat\ta cat\n")
    out = tmp_path / "pairs.json"
    assert main(["similarity", "--pairs", str(pairs), "--model", str(base), "--json", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"][1]["similarity"] == 1.0 and result["pairs"][0]["similarity"] < 1.0


def test_cli_estimator_options_reach_the_computation(base_and_finetuned, tmp_path):
    base, finetuned = base_and_finetuned
    options = dict(num_steps=3, num_samples=2, guidance_scale=4.0, weighting="girsanov", seed=3, min_timestep=300)
    flags = [
        "--steps",
        "3",
        "--samples",
        "2",
        "--guidance",
        "4",
        "--weighting",
        "girsanov",
        "--seed",
        "3",
        "--min-timestep",
        "300",
        "--quiet",
    ]
    out = tmp_path / "similarity.json"
    assert main(["similarity", "a red fox", "a blue fox", "--model", str(base), "--json", str(out), *flags]) == 0
    expected = conjure_similarity(["a red fox"], ["a blue fox"], str(base), **options).divergence
    default = conjure_similarity(["a red fox"], ["a blue fox"], str(base), num_steps=3, num_samples=2).divergence
    assert json.loads(out.read_text())["pairs"][0]["divergence"] == pytest.approx(float(expected[0]), rel=1e-6)
    assert float(expected[0]) != pytest.approx(float(default[0]), rel=1e-3)  # the options do change it
    assert main(["compare", str(base), str(finetuned), "--prompt", "a zebra", "--json", str(out), *flags]) == 0
    expected = conjure_similarity(["a zebra"], ["a zebra"], str(base), model_b=str(finetuned), **options).divergence
    assert json.loads(out.read_text())["prompts"][0]["divergence"] == pytest.approx(float(expected[0]), rel=1e-6)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["similarity", "only one prompt"], "two prompts"),
        (["similarity", "a", "b", "--steps", "0"], "num_steps"),
        (["compare", "base", "other"], "--prompts"),
        (["similarity", "a", "b", "--device", "nonsense"], "--device 'nonsense'"),
        (
            ["similarity", "a", "b", "--device", "cuda:7"]
            if not torch.cuda.is_available()
            else ["similarity", "a", "b", "--device", "cuda:99"],
            "--device cuda",
        ),
        (["similarity", "a", "b", "--json", "/no/such/directory/out.json"], "--json /no/such/directory/out.json"),
        (["compare", "base", "other", "--prompt", "x", "--device", "nonsense"], "--device"),
    ],
)
def test_cli_user_errors_print_one_line_and_exit_2(argv, message, base_and_finetuned, capsys):
    base, _ = base_and_finetuned
    argv = [str(base) if a in ("base", "other") else a for a in argv]
    if argv[0] == "similarity":
        argv += ["--model", str(base)]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_malformed_pairs_file_names_file_and_line(base_and_finetuned, tmp_path, capsys):
    base, _ = base_and_finetuned
    pairs = tmp_path / "bad.tsv"
    pairs.write_text("a\tb\nno tab here\n")
    assert main(["similarity", "--pairs", str(pairs), "--model", str(base), "--quiet"]) == 2
    assert f"{pairs}:2" in capsys.readouterr().err


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "conjure_metrics.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "compare" in done.stdout


def test_prompt_and_pair_files_may_start_with_a_byte_order_mark(base_and_finetuned, tmp_path):
    base, _ = base_and_finetuned
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeff# my prompts\r\na red fox\r\n", encoding="utf-8")
    out = tmp_path / "c.json"
    assert main(["compare", str(base), str(base), "--prompts", str(prompts), "--json", str(out), *FAST]) == 0
    assert [r["prompt"] for r in json.loads(out.read_text())["prompts"]] == ["a red fox"]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\ufeffa zebra\ta horse\n", encoding="utf-8")
    assert main(["similarity", "--pairs", str(pairs), "--model", str(base), "--json", str(out), *FAST]) == 0
    assert json.loads(out.read_text())["pairs"][0]["prompt_a"] == "a zebra"


def test_a_file_that_is_not_utf8_is_named_in_one_line(base_and_finetuned, tmp_path, capsys):
    base, _ = base_and_finetuned
    pairs = tmp_path / "cp1252.tsv"
    pairs.write_bytes("caf\u00e9\tcoffee\n".encode("cp1252"))
    assert main(["similarity", "--pairs", str(pairs), "--model", str(base), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{pairs}: not UTF-8" in err
