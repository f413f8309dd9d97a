"""Training checkpoint folders (unet/, unet_ema/, transformer/) and single-file checkpoints as model_b:
the trained network loads, every other part is the base's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conjure_metrics import conjure_similarity
from conjure_metrics.denoisers.loading import load_against_base, load_denoiser, load_pair
from conjure_metrics.tiny import build_tiny_components

FAST = dict(num_steps=3, num_samples=2, guidance_scale=3.0, seed=1, progress_bar=False)
PROMPTS = ["a red fox", "a blue house"]


def trained_unet(seed: int) -> torch.nn.Module:
    """A UNet of the tiny SD model's architecture with other weights (stands for a fine-tuned one)."""
    return build_tiny_components(seed=seed)["unet"]


def checkpoint_folder(folder: Path, **networks: torch.nn.Module) -> Path:
    """What diffusers' train_text_to_image.py leaves in output/checkpoint-N: network folders and accelerate state."""
    for name, network in networks.items():
        network.save_pretrained(folder / name)
    (folder / "optimizer.bin").write_bytes(b"accelerate optimizer state")
    (folder / "random_states_0.pkl").write_bytes(b"accelerate rng state")
    return folder


def whole_copy(base: Path, folder: Path, name: str, network: torch.nn.Module) -> Path:
    """The base's diffusers folder with one network replaced: the reference a checkpoint must equal."""
    shutil.copytree(base, folder)
    shutil.rmtree(folder / name)
    network.save_pretrained(folder / name)
    return folder


def divergence(base, other, **options) -> torch.Tensor:
    return conjure_similarity(PROMPTS, PROMPTS, base, model_b=other, **FAST, **options).divergence


def test_a_unet_only_checkpoint_equals_a_whole_folder_with_the_same_weights(tiny_pixel_repo, tmp_path):
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5))
    whole = whole_copy(tiny_pixel_repo, tmp_path / "whole", "unet", trained_unet(5))
    expected = divergence(tiny_pixel_repo, whole)
    assert (expected > 0).all()
    torch.testing.assert_close(divergence(tiny_pixel_repo, checkpoint), expected, rtol=0, atol=0)


def test_the_ema_weights_are_used_when_the_checkpoint_has_them(tiny_pixel_repo, tmp_path):
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5), unet_ema=trained_unet(6))
    whole_ema = whole_copy(tiny_pixel_repo, tmp_path / "whole", "unet", trained_unet(6))
    torch.testing.assert_close(
        divergence(tiny_pixel_repo, checkpoint), divergence(tiny_pixel_repo, whole_ema), rtol=0, atol=0
    )


def test_use_ema_false_takes_the_unet_folder(tiny_pixel_repo, tmp_path):
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5), unet_ema=trained_unet(6))
    whole = whole_copy(tiny_pixel_repo, tmp_path / "whole", "unet", trained_unet(5))
    torch.testing.assert_close(
        divergence(tiny_pixel_repo, checkpoint, use_ema=False), divergence(tiny_pixel_repo, whole), rtol=0, atol=0
    )


def test_several_checkpoints_share_the_base_parts(tiny_latent_repo, tmp_path):
    base = load_denoiser(tiny_latent_repo)
    sides = [
        load_against_base(
            base,
            checkpoint_folder(
                tmp_path / f"checkpoint-{step}", unet=build_tiny_components(latent=True, seed=step)["unet"]
            ),
        )
        for step in (100, 200)
    ]
    (_, first), (_, second) = sides
    for part in ("text_encoder", "tokenizer", "scheduler", "vae"):
        assert getattr(first, part) is getattr(base, part) and getattr(second, part) is getattr(base, part)
    assert first.unet is not second.unet and first.unet is not base.unet


def test_a_transformer_checkpoint_of_a_flow_family_equals_a_whole_folder(tmp_path):
    from diffusers import SD3Transformer2DModel

    from conjure_metrics.tiny import save_tiny_model

    base = save_tiny_model(tmp_path / "sd3", family="sd3")
    other = SD3Transformer2DModel.from_pretrained(
        save_tiny_model(tmp_path / "sd3-other", family="sd3", seed=1), subfolder="transformer"
    )
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", transformer=other)
    whole = whole_copy(base, tmp_path / "whole", "transformer", other)
    expected = divergence(base, whole, min_noise=0.0)  # 3 flow steps: none lands above the default floor
    assert (expected > 0).all()
    torch.testing.assert_close(divergence(base, checkpoint, min_noise=0.0), expected, rtol=0, atol=0)


def test_a_single_safetensors_file_of_the_unet_equals_a_whole_folder(tiny_pixel_repo, tmp_path):
    from safetensors.torch import save_file

    single = tmp_path / "finetune.safetensors"
    save_file(trained_unet(5).state_dict(), str(single))
    whole = whole_copy(tiny_pixel_repo, tmp_path / "whole", "unet", trained_unet(5))
    torch.testing.assert_close(divergence(tiny_pixel_repo, single), divergence(tiny_pixel_repo, whole), rtol=0, atol=0)


def test_a_single_ckpt_file_loads_like_the_safetensors_one(tiny_pixel_repo, tmp_path):
    from safetensors.torch import save_file

    save_file(trained_unet(5).state_dict(), str(tmp_path / "finetune.safetensors"))
    torch.save({"state_dict": trained_unet(5).state_dict()}, tmp_path / "finetune.ckpt")
    torch.testing.assert_close(
        divergence(tiny_pixel_repo, tmp_path / "finetune.ckpt"),
        divergence(tiny_pixel_repo, tmp_path / "finetune.safetensors"),
        rtol=0,
        atol=0,
    )


def test_a_folder_with_nothing_loadable_is_one_line(tiny_pixel_repo, tmp_path):
    (tmp_path / "checkpoint-500").mkdir()
    (tmp_path / "checkpoint-500" / "optimizer.bin").write_bytes(b"state")
    with pytest.raises(ValueError, match="holds nothing loadable") as error:
        load_pair(tiny_pixel_repo, tmp_path / "checkpoint-500")
    assert "\n" not in str(error.value)


def test_a_transformer_checkpoint_against_a_unet_base_is_one_line(tiny_pixel_repo, tmp_path):
    folder = tmp_path / "checkpoint-500" / "transformer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "SD3Transformer2DModel"}))
    with pytest.raises(ValueError, match="must come from the base's family") as error:
        load_pair(tiny_pixel_repo, tmp_path / "checkpoint-500")
    assert "\n" not in str(error.value)


def test_a_whole_model_of_another_family_is_one_line(tiny_pixel_repo, tmp_path):
    from conjure_metrics.tiny import save_tiny_model

    pixart = save_tiny_model(tmp_path / "pixart", family="pixart")
    with pytest.raises(ValueError, match="compared with the base it was trained from") as error:
        load_pair(tiny_pixel_repo, pixart)
    assert "\n" not in str(error.value)


def test_a_checkpoint_saved_with_another_schedule_is_one_line(tiny_pixel_repo, tmp_path):
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5))
    shutil.copytree(Path(tiny_pixel_repo) / "scheduler", checkpoint / "scheduler")
    config_path = checkpoint / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["beta_schedule"] = "linear"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="must share the noise schedule") as error:
        load_pair(tiny_pixel_repo, checkpoint)
    assert "\n" not in str(error.value)


def test_a_unet_of_another_shape_is_one_line(tiny_pixel_repo, tmp_path):
    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=build_tiny_components(latent=True)["unet"])
    with pytest.raises(ValueError, match="in_channels=4, the base's 3") as error:
        load_pair(tiny_pixel_repo, checkpoint)
    assert "\n" not in str(error.value)


def test_results_identities_name_the_checkpoint_kind(tiny_pixel_repo, tmp_path):
    from conjure_metrics.drift.checkpoints import model_identity

    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5))
    assert model_identity(checkpoint, "c").startswith("network:")
    assert not model_identity(tiny_pixel_repo, "base").startswith(("network:", "adapter:", "single_file:"))


def test_drift_scores_checkpoint_folders_as_conjure_similarity_does(tiny_pixel_repo, tmp_path):
    from conjure_metrics.drift.run import drift_report

    checkpoints = [checkpoint_folder(tmp_path / f"checkpoint-{step}", unet=trained_unet(step)) for step in (200, 100)]
    settings = {k: v for k, v in FAST.items() if k != "progress_bar"}
    report = drift_report(tiny_pixel_repo, checkpoints, PROMPTS, progress_bar=False, **settings)
    for checkpoint in checkpoints:
        expected = divergence(tiny_pixel_repo, checkpoint)
        drifts = {row.prompt: row.drift for row in report.rows if row.checkpoint == checkpoint.name}
        assert [drifts[p] for p in PROMPTS] == pytest.approx(expected.tolist(), rel=1e-9)


def test_cli_drift_with_an_empty_checkpoint_folder_exits_2_with_one_line(tiny_pixel_repo, tmp_path, capsys):
    from conjure_metrics.cli import main

    (tmp_path / "checkpoint-500").mkdir()
    (tmp_path / "prompts.txt").write_text("a fox\n")
    assert (
        main(
            [
                "drift",
                str(tiny_pixel_repo),
                str(tmp_path / "checkpoint-500"),
                "--prompts",
                str(tmp_path / "prompts.txt"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "holds nothing loadable" in err and "\n" not in err


def test_the_evaluate_module_resolves_a_checkpoint_against_its_base(tiny_pixel_repo, tmp_path):
    pytest.importorskip("evaluate")
    from conjure_metrics.evaluate_space.conjure import Conjure

    checkpoint = checkpoint_folder(tmp_path / "checkpoint-500", unet=trained_unet(5))
    settings = {k: v for k, v in FAST.items() if k != "progress_bar"}
    module = Conjure()
    result = module.compute(
        prompts_a=PROMPTS, prompts_b=PROMPTS, model=str(tiny_pixel_repo), model_b=str(checkpoint), **settings
    )
    assert result["divergence"] == pytest.approx(divergence(tiny_pixel_repo, checkpoint).tolist(), rel=1e-9)
    ((_, side_b),) = module._pairs.values()
    assert side_b.text_encoder is module._denoisers[str(tiny_pixel_repo)].text_encoder
