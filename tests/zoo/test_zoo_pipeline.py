"""Training resumes exactly, and a run exports to a loadable diffusers folder."""

import json

import torch

from conjure_metrics.zoo.export import export
from conjure_metrics.zoo.train import parse_args, train


def _args(out, steps):
    return parse_args(
        [
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--log-every",
            "1",
            "--device",
            "cpu",
            "--bf16",
        ]
    )


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    straight = train(_args(tmp_path / "a", 4))
    train(_args(tmp_path / "b", 2))
    resumed_args = _args(tmp_path / "b", 4)
    resumed_args.resume = True
    resumed = train(resumed_args)
    assert [r["loss"] for r in resumed["records"]] == [r["loss"] for r in straight["records"]]
    assert json.loads((tmp_path / "b" / "log.json").read_text())["step"] == 4
    assert (tmp_path / "b" / "loss.png").is_file()


def test_exported_run_loads_with_from_pretrained(tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    train(_args(tmp_path / "run", 1))
    folder = export(tmp_path / "run", tmp_path / "model")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    ids = tokenizer(
        ["a red cat"], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        eps = unet(torch.zeros(1, 3, 32, 32), 10, text_encoder(ids)[0]).sample
    assert eps.shape == (1, 3, 32, 32) and torch.isfinite(eps).all()
    assert text_encoder.dtype == torch.float32
