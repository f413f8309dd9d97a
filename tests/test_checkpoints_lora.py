"""LoRA / PEFT adapters as model_b: one base model, the adapter switched off for side A and on for side B."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from conjure_metrics import conjure_similarity
from conjure_metrics.denoisers.loading import load_pair
from conjure_metrics.tiny import build_tiny_components

pytest.importorskip("peft")

FAST = dict(num_steps=3, num_samples=2, guidance_scale=3.0, seed=1, progress_bar=False)
PROMPTS = ["a red fox", "a blue house"]
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def random_lora(module: torch.nn.Module, targets: list[str], rank: int, alpha: float, seed: int) -> dict:
    """PEFT LoRA weights for ``module`` (its ``get_peft_model_state_dict`` keys) with random A and B
    (PEFT starts B at zero, which would change nothing)."""
    import copy

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    wrapped = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), copy.deepcopy(module)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return get_peft_model_state_dict(wrapped)


def fuse(module: torch.nn.Module, lora: dict, scale: float) -> None:
    """``W += scale · B A`` for every adapted layer: the fused model, computed without PEFT."""
    modules = dict(module.named_modules())
    with torch.no_grad():
        for key, down in lora.items():
            if key.endswith("lora_A.weight"):
                up = lora[key.replace("lora_A", "lora_B")]
                modules[key[: -len(".lora_A.weight")]].weight += scale * up @ down


def save_diffusers_lora(
    folder: Path, unet_lora: dict, text_lora: dict | None = None, pipeline: str = "StableDiffusionPipeline"
) -> Path:
    """The file diffusers' training scripts write (``save_lora_weights`` of converted PEFT weights)."""
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(unet_lora)}
    if text_lora is not None:
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(text_lora)
    getattr(diffusers, pipeline).save_lora_weights(str(folder), **layers)
    return folder / "pytorch_lora_weights.safetensors"


def fused_copy(base: Path, folder: Path, parts: dict[str, tuple[torch.nn.Module, dict]], scale: float) -> Path:
    """A whole diffusers folder: ``base`` with each adapted part's LoRA fused into its weights."""
    shutil.copytree(base, folder)
    for name, (module, lora) in parts.items():
        fuse(module, lora, scale)
        shutil.rmtree(folder / name)
        module.save_pretrained(folder / name)
    return folder


@pytest.fixture(scope="module")
def sd_lora(tiny_pixel_repo, tmp_path_factory):
    """The tiny SD model (the conftest's, seed 0), a LoRA of its UNet and text encoder (rank = alpha, as
    diffusers saves no alpha), and a whole copy with that LoRA fused into the weights."""
    root = tmp_path_factory.mktemp("sd_lora")
    components = build_tiny_components(seed=0)
    unet_lora = random_lora(components["unet"], UNET_TARGETS, rank=2, alpha=2, seed=1)
    text_lora = random_lora(components["text_encoder"], TEXT_TARGETS, rank=2, alpha=2, seed=2)
    (root / "lora").mkdir()
    lora_file = save_diffusers_lora(root / "lora", unet_lora, text_lora)
    fused = fused_copy(
        tiny_pixel_repo,
        root / "fused",
        {"unet": (components["unet"], unet_lora), "text_encoder": (components["text_encoder"], text_lora)},
        1.0,
    )
    return tiny_pixel_repo, lora_file, fused


def test_base_vs_lora_equals_base_vs_a_copy_with_the_lora_fused(sd_lora):
    base, lora, fused = sd_lora
    toggled = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, **FAST)
    reference = conjure_similarity(PROMPTS, PROMPTS, base, model_b=fused, **FAST)
    assert (reference.divergence > 0).all()
    torch.testing.assert_close(toggled.divergence, reference.divergence, rtol=1e-4, atol=0)


def test_a_lora_folder_loads_like_its_weights_file(sd_lora):
    base, lora, _ = sd_lora
    from_file = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, **FAST)
    from_folder = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora.parent, **FAST)
    torch.testing.assert_close(from_folder.divergence, from_file.divergence, rtol=0, atol=0)


def test_lora_scale_scales_the_fused_update(sd_lora, tmp_path):
    base, lora, _ = sd_lora
    components = build_tiny_components(seed=0)
    unet_lora = random_lora(components["unet"], UNET_TARGETS, rank=2, alpha=2, seed=1)
    text_lora = random_lora(components["text_encoder"], TEXT_TARGETS, rank=2, alpha=2, seed=2)
    half = fused_copy(
        base,
        tmp_path / "half",
        {"unet": (components["unet"], unet_lora), "text_encoder": (components["text_encoder"], text_lora)},
        0.5,
    )
    toggled = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, lora_scale=0.5, **FAST)
    reference = conjure_similarity(PROMPTS, PROMPTS, base, model_b=half, **FAST)
    torch.testing.assert_close(toggled.divergence, reference.divergence, rtol=1e-4, atol=0)


def test_lora_scale_zero_gives_divergence_zero(sd_lora):
    base, lora, _ = sd_lora
    result = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, lora_scale=0.0, **FAST)
    assert (result.divergence == 0).all()


def test_the_base_is_loaded_once_and_both_sides_share_its_modules(sd_lora, monkeypatch):
    import diffusers

    base, lora, _ = sd_lora
    loads = []
    original = diffusers.UNet2DConditionModel.from_pretrained.__func__
    monkeypatch.setattr(
        diffusers.UNet2DConditionModel,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: loads.append(a) or original(cls, *a, **k)),
    )
    side_a, side_b = load_pair(base, lora)
    assert len(loads) == 1
    assert side_a.unet is side_b.unet and side_a.text_encoder is side_b.text_encoder


def test_the_lora_of_the_text_encoder_is_switched_too(sd_lora):
    base, lora, _ = sd_lora
    side_a, side_b = load_pair(base, lora)
    plain, _ = load_pair(base, None)
    with torch.inference_mode():
        assert torch.equal(side_a.encode_prompts(PROMPTS), plain.encode_prompts(PROMPTS))
        assert not torch.allclose(side_b.encode_prompts(PROMPTS), plain.encode_prompts(PROMPTS))


def test_between_calls_the_adapter_is_off(sd_lora):
    base, lora, _ = sd_lora
    side_a, side_b = load_pair(base, lora)
    x, t = torch.randn(1, *side_b.sample_shape), torch.tensor([500])
    with torch.inference_mode():
        conditioning = side_b.encode_prompts(["a red fox"])
        side_b.predict_noise(x, t, conditioning)
        assert torch.equal(side_b.base.predict_noise(x, t, conditioning), side_a.predict_noise(x, t, conditioning))


def test_an_exception_inside_a_call_restores_the_adapter_state(sd_lora):
    base, lora, _ = sd_lora
    _, side_b = load_pair(base, lora)
    layers = side_b.adapter.layers
    before = [(list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    seen = []

    def fail(module, args):
        seen.append(layers[0].disable_adapters)
        raise RuntimeError("out of memory, say")

    handle = side_b.unet.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            side_b.predict_noise(
                torch.randn(1, *side_b.sample_shape), torch.tensor([500]), side_b.encode_prompts(["a red fox"])
            )
    finally:
        handle.remove()
    assert seen == [False]  # the adapter was on inside the call
    assert [(list(layer.active_adapters), layer.disable_adapters) for layer in layers] == before


def test_a_peft_adapter_folder_equals_the_fused_copy(tiny_pixel_repo, tmp_path):
    from peft import LoraConfig
    from safetensors.torch import save_file

    components = build_tiny_components(seed=0)
    unet_lora = random_lora(components["unet"], UNET_TARGETS, rank=2, alpha=4, seed=3)
    folder = tmp_path / "peft"
    LoraConfig(r=2, lora_alpha=4, target_modules=UNET_TARGETS).save_pretrained(str(folder))
    save_file(
        {f"base_model.model.{key}": value for key, value in unet_lora.items()},
        str(folder / "adapter_model.safetensors"),
    )
    fused = fused_copy(tiny_pixel_repo, tmp_path / "fused", {"unet": (components["unet"], unet_lora)}, 4 / 2)
    toggled = conjure_similarity(PROMPTS, PROMPTS, tiny_pixel_repo, model_b=folder, **FAST)
    reference = conjure_similarity(PROMPTS, PROMPTS, tiny_pixel_repo, model_b=fused, **FAST)
    assert (reference.divergence > 0).all()
    torch.testing.assert_close(toggled.divergence, reference.divergence, rtol=1e-4, atol=0)


def test_a_lora_of_the_embedded_zoo_model_through_the_metric(tmp_path):
    from diffusers import UNet2DConditionModel

    from conjure_metrics import ConjureSimilarity
    from conjure_metrics.zoo import default_model_path

    zoo = Path(default_model_path())
    unet = UNet2DConditionModel.from_pretrained(zoo, subfolder="unet")
    unet_lora = random_lora(unet, UNET_TARGETS, rank=2, alpha=2, seed=4)
    lora = save_diffusers_lora(tmp_path, unet_lora)
    settings = {k: v for k, v in FAST.items() if k != "progress_bar"}
    metric = ConjureSimilarity(model_b=lora, **settings)
    metric.update(PROMPTS, PROMPTS)
    expected = conjure_similarity(PROMPTS, PROMPTS, None, model_b=lora, **FAST)
    torch.testing.assert_close(metric.compute(), expected.mean_similarity.to(metric.compute().dtype))


def test_a_lora_on_sdxl_equals_the_fused_copy(tmp_path):
    from diffusers import UNet2DConditionModel

    from conjure_metrics.tiny import save_tiny_model

    base = save_tiny_model(tmp_path / "sdxl", family="sdxl")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    unet_lora = random_lora(unet, UNET_TARGETS, rank=2, alpha=2, seed=5)
    (tmp_path / "lora").mkdir()
    lora = save_diffusers_lora(tmp_path / "lora", unet_lora, pipeline="StableDiffusionXLPipeline")
    fused = fused_copy(base, tmp_path / "fused", {"unet": (unet, unet_lora)}, 1.0)
    toggled = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, **FAST)
    reference = conjure_similarity(PROMPTS, PROMPTS, base, model_b=fused, **FAST)
    assert (reference.divergence > 0).all()
    torch.testing.assert_close(toggled.divergence, reference.divergence, rtol=1e-4, atol=0)


def test_an_adapter_for_another_base_is_one_line(tiny_pixel_repo, tmp_path):
    from diffusers import UNet2DConditionModel

    wider = UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    lora = save_diffusers_lora(tmp_path, random_lora(wider, UNET_TARGETS, rank=2, alpha=2, seed=6))
    with pytest.raises(ValueError, match="does not fit this base model") as error:
        load_pair(tiny_pixel_repo, lora)
    assert "\n" not in str(error.value)


def test_a_corrupted_safetensors_file_is_one_line(tiny_pixel_repo, tmp_path):
    broken = tmp_path / "pytorch_lora_weights.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable safetensors file") as error:
        load_pair(tiny_pixel_repo, broken)
    assert "\n" not in str(error.value)


def test_a_lora_without_peft_names_the_extra(sd_lora, monkeypatch):
    base, lora, _ = sd_lora
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"pip install conjure_metrics\[lora\]"):
        load_pair(base, lora)


def test_a_lora_alone_as_model_names_the_base_it_needs(sd_lora):
    _, lora, _ = sd_lora
    with pytest.raises(ValueError, match="pass the base as model and this as model_b"):
        load_pair(lora, None)


def test_lora_scale_with_a_whole_model_b_is_refused(sd_lora):
    base, _, fused = sd_lora
    with pytest.raises(ValueError, match="lora_scale apply to a model_b that is a LoRA"):
        load_pair(base, fused, load_kwargs={"lora_scale": 0.5})


def test_cli_compare_with_a_corrupted_lora_exits_2_with_one_line(tiny_pixel_repo, tmp_path, capsys):
    from conjure_metrics.cli import main

    broken = tmp_path / "pytorch_lora_weights.safetensors"
    broken.write_bytes(b"garbage")
    assert main(["compare", str(tiny_pixel_repo), str(broken), "--prompt", "a fox", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable safetensors file" in err and "\n" not in err


def test_cli_compare_scores_a_lora_against_its_base(sd_lora, tmp_path):
    import json

    from conjure_metrics.cli import main

    base, lora, _ = sd_lora
    out = tmp_path / "out.json"
    assert (
        main(
            [
                "compare",
                str(base),
                str(lora),
                "--prompt",
                "a red fox",
                "--json",
                str(out),
                "--steps",
                "3",
                "--samples",
                "2",
                "--guidance",
                "3",
                "--seed",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    expected = conjure_similarity(["a red fox"], ["a red fox"], base, model_b=lora, **FAST)
    assert json.loads(out.read_text())["prompts"][0]["divergence"] == pytest.approx(
        float(expected.divergence[0]), rel=1e-6
    )


def test_drift_scores_a_lora_as_conjure_similarity_does(sd_lora):
    from conjure_metrics.drift.run import drift_report

    base, lora, _ = sd_lora
    settings = {k: v for k, v in FAST.items() if k != "progress_bar"}
    report = drift_report(base, [lora], PROMPTS, progress_bar=False, **settings)
    expected = conjure_similarity(PROMPTS, PROMPTS, base, model_b=lora, **FAST)
    drifts = {row.prompt: row.drift for row in report.rows}
    assert [drifts[p] for p in PROMPTS] == pytest.approx(expected.divergence.tolist(), rel=1e-9)
