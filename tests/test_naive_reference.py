"""The engine and the naive one-call-per-prompt loop of benchmarks/ agree for the same seed."""

import importlib.util
from pathlib import Path

import pytest
import torch

from conjure_metrics import DiffusersDenoiser, jeffreys_terms
from conjure_metrics.tiny import build_tiny_components
from helpers import gaussian_model

_spec = importlib.util.spec_from_file_location(
    "naive_reference", Path(__file__).resolve().parents[1] / "benchmarks" / "naive_reference.py")
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_naive_loop_matches_engine_on_gaussian_model(weighting):
    model = gaussian_model()
    terms = jeffreys_terms(["tiger", "fox"], ["zebra", "fox"], model, num_steps=5, num_samples=3, guidance_scale=2.0, seed=9)
    for p, (a, b) in enumerate([("tiger", "zebra"), ("fox", "fox")]):
        expected = naive.naive_divergence(a, b, model, num_steps=5, num_samples=3, guidance_scale=2.0, seed=9, weighting=weighting)
        torch.testing.assert_close(terms.samples(weighting)[p], expected, rtol=1e-10, atol=1e-12)


def test_naive_loop_matches_engine_on_tiny_unet():
    denoiser = DiffusersDenoiser(**build_tiny_components())
    terms = jeffreys_terms(["a red fox"], ["a blue fox"], denoiser, num_steps=4, num_samples=2, guidance_scale=3.0, seed=1)
    expected = naive.naive_divergence("a red fox", "a blue fox", denoiser, num_steps=4, num_samples=2, guidance_scale=3.0, seed=1)
    torch.testing.assert_close(terms.samples("simple")[0], expected, rtol=1e-4, atol=1e-7)
