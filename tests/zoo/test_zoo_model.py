"""The shipped conjure-zoo model: loads offline, small, and follows colour captions."""

import os

import pytest
import torch

from conjure_metrics.zoo import default_model_path
from conjure_metrics.zoo.probe import colour_fraction


def test_the_package_ships_the_zoo_model():
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):  # a packaging regression must fail, not skip
        assert (default_model_path() / part).is_dir(), part


@pytest.fixture(scope="module")
def parts():
    from conjure_metrics.zoo.sample import load_components

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return load_components()


def test_shipped_folder_has_diffusers_layout_and_fits_the_size_cap():
    root = default_model_path()
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (root / sub).is_dir()
    assert (root / "model_index.json").is_file()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 25 * 1024 * 1024


def test_components_load_offline_as_float32(parts):
    assert parts.unet.dtype == torch.float32
    assert parts.text_encoder.dtype == torch.float32
    assert parts.unet.config.sample_size == 32 and parts.unet.config.in_channels == 3
    assert parts.tokenizer("a zebra")["input_ids"][1] != parts.tokenizer.unk_token_id
    assert parts.scheduler.config.num_train_timesteps == 1000
    assert parts.scheduler.config.prediction_type == "epsilon"


def test_generations_follow_the_coat_colour(parts):
    from conjure_metrics.zoo.sample import sample

    n = 4
    images = sample(["a plain red cat"] * n + ["a plain blue cat"] * n, parts, num_inference_steps=8, seed=0)
    red, blue = images[:n], images[n:]
    assert colour_fraction(red, "red").mean() > colour_fraction(blue, "red").mean() + 0.05
    assert colour_fraction(blue, "blue").mean() > colour_fraction(red, "blue").mean() + 0.05
