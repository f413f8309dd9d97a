"""The variance study's cost model and variance formula, checked against the engine and simulation."""

import sys
from pathlib import Path

import torch

from conjure_metrics import jeffreys_terms
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from tests.helpers import gaussian_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from variance_study import integer_counts, midpoint_weight_relative_variance, nested_variance, rows_for  # noqa: E402


def test_cost_model_counts_the_rows_the_engine_spends_on_one_guided_pair():
    model = InstrumentedDenoiser(gaussian_model())
    steps, samples = 6, 4
    jeffreys_terms(["tiger"], ["zebra"], model, num_steps=steps, num_samples=samples, guidance_scale=3.0)
    assert rows_for(torch.full((steps,), float(samples))) == model.rows


def test_cost_model_runs_samples_only_as_deep_as_they_are_measured():
    # One sample measured at every step, a second only at step 0: the second costs nothing beyond
    # step 0 (its a/b predictions at x_T), and step 0 of the first also needs the empty prompt.
    measured = torch.tensor([2.0, 1.0, 1.0])
    assert rows_for(measured) == (2 * 2 + 1) + 2 * (1 + 1 + 1) + 2 * (1 + 0 + 1)


def test_nested_variance_matches_a_simulation():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    cov = mixing @ mixing.T
    measured = torch.tensor([6.0, 3.0, 2.0])
    draws = torch.randn(40000, 6, 3, generator=generator, dtype=torch.float64) @ mixing.T  # samples with covariance cov
    mask = torch.arange(6)[:, None] < measured
    estimates = ((draws * mask).sum(dim=1) / measured).sum(dim=1)
    assert abs(estimates.var() / nested_variance(cov, measured) - 1) < 0.03
    uniform = torch.full((3,), 4.0)
    torch.testing.assert_close(nested_variance(cov, uniform), cov.sum() / 4)


def test_integer_counts_measure_every_step_within_the_budget():
    budget = rows_for(torch.full((10,), 5.0))
    counts = integer_counts(torch.tensor([1.0, 0.5, 0.01, 0.2, 0, 0, 0, 0, 0.9, 0.1], dtype=torch.float64), budget)
    assert (counts >= 1).all() and rows_for(counts) <= budget
    assert counts[0] > counts[1] > counts[3]


def test_midpoint_chain_weight_variance_matches_a_simulated_gaussian_path():
    # Two chains on R^d with constant drifts +-delta/2 around the midpoint chain Q, 3 Gaussian steps:
    # the per-direction KL is sum |delta|^2 / (2 sigma^2) per step, J twice that.
    generator = torch.Generator().manual_seed(0)
    steps, dim, sigma = 3, 4, 0.7
    delta = torch.full((dim,), 0.35, dtype=torch.float64)
    jeffreys = 2 * steps * delta.square().sum() / (2 * sigma**2)
    noise = sigma * torch.randn(400000, steps, dim, generator=generator, dtype=torch.float64)  # increments under Q
    log_w1 = ((delta / 2) * noise).sum(dim=(1, 2)) / sigma**2 - steps * delta.square().sum() / (8 * sigma**2)
    log_w2 = -((delta / 2) * noise).sum(dim=(1, 2)) / sigma**2 - steps * delta.square().sum() / (8 * sigma**2)
    weights = (log_w1.exp() + log_w2.exp()) / 2
    assert abs(weights.mean() - 1) < 0.01
    simulated = (weights.square().mean()).log()
    assert abs(float(simulated / midpoint_weight_relative_variance(jeffreys)) - 1) < 0.03
