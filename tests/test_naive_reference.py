"""The engine matches the naive oracle (tests/naive_reference.py) for the same seed, on every kind of chain."""

import pytest
import torch

from conjure_metrics import DiffusersDenoiser, jeffreys_terms
from conjure_metrics.tiny import build_tiny_components
from tests.helpers import flow_gaussian_model, gaussian_model
from tests.naive_reference import naive_divergence

PAIRS = [("tiger", "zebra"), ("fox", "fox")]
SETTINGS = dict(num_steps=5, num_samples=3, guidance_scale=2.0, seed=9)


def _engine_and_oracle(model, weighting: str, **floor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = [p for p, _ in PAIRS], [q for _, q in PAIRS]
    terms = jeffreys_terms(a, b, model, **SETTINGS, **floor)
    oracle = torch.stack([naive_divergence(p, q, model, **SETTINGS, weighting=weighting, **floor) for p, q in PAIRS])
    return terms.samples(weighting), oracle


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_engine_matches_the_oracle_on_an_epsilon_chain(weighting):
    engine, oracle = _engine_and_oracle(gaussian_model(), weighting)
    torch.testing.assert_close(engine, oracle, rtol=1e-10, atol=1e-12)
    assert (oracle[0] > 0).all() and (oracle[1] == 0).all()  # distinct prompts differ, identical ones do not


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_engine_matches_the_oracle_on_a_v_prediction_chain(weighting):
    model = gaussian_model(prediction_type="v_prediction")
    assert not torch.allclose(model.reverse_chain(SETTINGS["num_steps"]).eps_factor, torch.ones(()).double())
    engine, oracle = _engine_and_oracle(model, weighting)
    torch.testing.assert_close(engine, oracle, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_engine_matches_the_oracle_on_a_flow_matching_chain(weighting):
    model = flow_gaussian_model()
    assert model.reverse_chain(SETTINGS["num_steps"]).prediction_type == "flow_prediction"
    engine, oracle = _engine_and_oracle(model, weighting)
    torch.testing.assert_close(engine, oracle, rtol=1e-10, atol=1e-12)


def test_v_prediction_oracle_gives_its_noise_predicting_twin_divergence():
    # The same data and sampler written in v instead of ε: the paper's ||Δε||² must not change.
    eps = naive_divergence("tiger", "zebra", gaussian_model(), **SETTINGS)
    v = naive_divergence("tiger", "zebra", gaussian_model(prediction_type="v_prediction"), **SETTINGS)
    torch.testing.assert_close(v, eps, rtol=1e-9, atol=0)


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_engine_matches_the_oracle_under_a_noise_floor(weighting):
    engine, oracle = _engine_and_oracle(gaussian_model(), weighting, min_noise=0.3)
    unfloored = torch.stack(
        [naive_divergence(p, q, gaussian_model(), **SETTINGS, weighting=weighting) for p, q in PAIRS]
    )
    torch.testing.assert_close(engine, oracle, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(oracle[0], unfloored[0])  # the floor left steps out


def test_engine_matches_the_oracle_on_a_tiny_unet():
    denoiser = DiffusersDenoiser(**build_tiny_components())
    terms = jeffreys_terms(
        ["a red fox"], ["a blue fox"], denoiser, num_steps=4, num_samples=2, guidance_scale=3.0, seed=1
    )
    expected = naive_divergence(
        "a red fox", "a blue fox", denoiser, num_steps=4, num_samples=2, guidance_scale=3.0, seed=1
    )
    torch.testing.assert_close(terms.samples("simple")[0], expected, rtol=1e-4, atol=1e-7)
