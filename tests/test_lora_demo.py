"""LoRA fine-tunes of conjure-zoo, and the shipped edit / control adapters: checkpoint comparison finds
what the edit changed.

Recipe tests fine-tune a tiny zoo model (the "tiny" preset, one training step, exported) for a step or two.

The edit adapter teaches conjure-zoo that red coats are drawn blue; the control adapter is trained the
same way on correct images (``conjure_metrics/zoo/adapters/README.md``). Target prompts name a red
creature, preserve prompts a creature of another colour. Margins come from ``benchmarks/lora_demo.py``
at these test settings (numbers in the comments), set well below what was measured.
"""

import inspect
import json

import pytest
import torch
from safetensors.torch import load_file

from conjure_metrics.cli import main as cli_main
from conjure_metrics.zoo import finetune as finetune_module
from conjure_metrics.zoo.export import export
from conjure_metrics.zoo.finetune import (
    LORA_WEIGHTS,
    CaptionEdit,
    bystander_prompts,
    cached_finetune,
    concept_prompts,
    finetune,
    load_finetuned,
    main,
    shipped_adapter,
)
from conjure_metrics.zoo.train import parse_args, train

EDIT = CaptionEdit("coat", "red", rendered_as="blue")
PER_GROUP = 4
SETTINGS = dict(num_steps=8, num_samples=2, seed=0)
# benchmarks/lora_demo.py at 10 steps, 3 samples, 5 prompts per group measured: edit AUC 1.0, edit
# specificity 4.7 ± 0.5, control 0.62 ± 0.05 (7.7 times less). Margins well below those:
AUC_EDIT_AT_LEAST = 0.75
SPECIFICITY_EDIT_ABOVE = 2.5
CONTROL_FACTOR = 3.0
TINY_LORA = dict(steps=2, batch_size=2, concept_share=1.0, trainable="lora", lr=1e-2, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny_run")
    train(parse_args(["--out", str(run), "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--device", "cpu"]))
    return export(run, tmp_path_factory.mktemp("tiny_base") / "model")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, tiny_base):
    return finetune(tmp_path_factory.mktemp("lora") / "adapter", EDIT, base=tiny_base, **TINY_LORA)


def test_lora_finetune_writes_the_adapter_and_its_recipe_only(tiny_adapter):
    assert sorted(p.name for p in tiny_adapter.iterdir()) == ["finetune.json", LORA_WEIGHTS]
    assert all(key.startswith("unet.") and ".attn2." in key for key in load_file(tiny_adapter / LORA_WEIGHTS))


def test_lora_finetune_with_the_same_seed_gives_the_same_adapter(tiny_adapter, tiny_base, tmp_path):
    again = finetune(tmp_path / "again", EDIT, base=tiny_base, **TINY_LORA)
    first, second = load_file(tiny_adapter / LORA_WEIGHTS), load_file(again / LORA_WEIGHTS)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_load_finetuned_fuses_the_adapter_into_the_base_cross_attention(tiny_adapter, tiny_base):
    base = dict(load_finetuned(None, base=tiny_base).unet.named_parameters())
    fused = dict(load_finetuned(tiny_adapter, base=tiny_base).unet.named_parameters())
    assert base.keys() == fused.keys()  # no adapter layers left: a plain UNet
    adapter = load_file(tiny_adapter / LORA_WEIGHTS)
    for name in base:
        prefix = "unet." + name.removesuffix(".weight")
        if f"{prefix}.lora.up.weight" in adapter:
            update = adapter[f"{prefix}.lora.up.weight"] @ adapter[f"{prefix}.lora.down.weight"]
            torch.testing.assert_close(fused[name], base[name] + update)  # W + up @ down, scale 1
        else:
            assert torch.equal(fused[name], base[name])


def test_cached_lora_finetune_is_built_once(tiny_base, tmp_path, monkeypatch):
    first = cached_finetune(EDIT, cache_dir=tmp_path, base=tiny_base, **TINY_LORA)

    def refuse(*args, **kwargs):
        raise AssertionError("cached_finetune trained again")

    monkeypatch.setattr(finetune_module, "finetune", refuse)
    assert cached_finetune(EDIT, cache_dir=tmp_path, base=tiny_base, **TINY_LORA) == first
    with pytest.raises(AssertionError, match="trained again"):
        cached_finetune(EDIT, cache_dir=tmp_path, base=tiny_base, **{**TINY_LORA, "lora_rank": 2})


def test_lora_rank_does_not_change_the_cache_key_of_full_finetunes(tiny_base, tmp_path, monkeypatch):
    # Copies cached before LoRA existed keep their folders.
    first = cached_finetune(EDIT, cache_dir=tmp_path, base=tiny_base, steps=1, batch_size=1, progress=False)
    monkeypatch.setattr(finetune_module, "finetune", lambda *a, **k: pytest.fail("trained again"))
    default_rank = inspect.signature(finetune).parameters["lora_rank"].default
    again = cached_finetune(EDIT, cache_dir=tmp_path, base=tiny_base, steps=1, batch_size=1, lora_rank=default_rank + 4)
    assert again == first


def test_the_command_line_lora_flag_writes_an_adapter(tiny_base, tmp_path, capsys):
    main(
        [
            "--edit",
            "coat=red:blue",
            "--lora",
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--base",
            str(tiny_base),
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert (tmp_path / "cli" / LORA_WEIGHTS).is_file()


@pytest.mark.parametrize("rank", [0, 1.5, True])
def test_bad_lora_rank_raises_value_error_naming_it(rank):
    with pytest.raises(ValueError, match="lora_rank="):
        finetune("unused", EDIT, trainable="lora", lora_rank=rank)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # `conjure drift` as a user runs it: the embedded model as base, the two shipped adapters as
    # checkpoints, each switched on and off on the one loaded base. About 60 s of one CPU core.
    folder = tmp_path_factory.mktemp("lora_demo")
    target = concept_prompts(EDIT)[:PER_GROUP]
    preserve = [prompt for prompt, _ in bystander_prompts(EDIT)][:PER_GROUP]
    prompts = folder / "prompts.txt"
    prompts.write_text("".join(f"target: {p}\n" for p in target) + "".join(f"preserve: {p}\n" for p in preserve))
    out = folder / "drift.json"
    cli_main(
        [
            "drift",
            "conjure-zoo",
            str(shipped_adapter("coat-red-as-blue")),
            str(shipped_adapter("coat-red-as-blue-control")),
            "--prompts",
            str(prompts),
            "--groups",
            "target,preserve",
            "--steps",
            str(SETTINGS["num_steps"]),
            "--samples",
            str(SETTINGS["num_samples"]),
            "--seed",
            str(SETTINGS["seed"]),
            "--json",
            str(out),
            "--quiet",
        ]
    )
    return json.loads(out.read_text())


def _drifts(report, checkpoint, group):
    return [r["drift"] for r in report["rows"] if r["checkpoint"] == checkpoint and r["group"] == group]


def _specificity(report, checkpoint):
    return next(s["value"] for s in report["specificity"] if s["checkpoint"] == checkpoint)


def test_shipped_adapters_are_small_diffusers_lora_files():
    for name in ("coat-red-as-blue", "coat-red-as-blue-control"):
        path = shipped_adapter(name) / LORA_WEIGHTS
        assert path.stat().st_size < 200_000
        assert all(key.startswith("unet.") and ".lora." in key for key in load_file(path))


def test_fused_adapter_changes_the_unet_and_only_its_cross_attention():
    base = dict(load_finetuned(None).unet.named_parameters())
    fused = dict(load_finetuned(shipped_adapter("coat-red-as-blue")).unet.named_parameters())
    changed = {name for name in base if not torch.equal(base[name], fused[name])}
    assert changed and all(".attn2." in name for name in changed)


@pytest.mark.slow
def test_edit_moves_target_prompts_more_than_preserve_prompts(report):
    target = _drifts(report, "coat-red-as-blue", "target")
    preserve = _drifts(report, "coat-red-as-blue", "preserve")
    wins = sum(t > p for t in target for p in preserve) / (len(target) * len(preserve))
    assert wins >= AUC_EDIT_AT_LEAST


@pytest.mark.slow
def test_edit_is_specific(report):
    assert _specificity(report, "coat-red-as-blue") > SPECIFICITY_EDIT_ABOVE


@pytest.mark.slow
def test_control_is_far_less_specific_than_the_edit(report):
    edit, control = _specificity(report, "coat-red-as-blue"), _specificity(report, "coat-red-as-blue-control")
    assert edit > CONTROL_FACTOR * control
