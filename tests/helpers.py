"""Shared builders for the tests: analytic Gaussian models with known truth."""

from __future__ import annotations

import socket

import torch

from conjure_metrics.analytic import FlowGaussianConditionals, GaussianConditionals
from conjure_metrics.chains import cosine_betas, linear_betas
from conjure_metrics.chains_flow import DEFAULT_FLOW_NOISE_LEVEL

SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}
PROMPTS = ("tiger", "leopard", "zebra", "fox", "cat")


def _prompt_distributions(dim: int, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Five prompts with different means and data variances (so differences depend on the state)."""
    generator = torch.Generator().manual_seed(seed)
    means = {"": torch.zeros(dim, dtype=torch.float64)}
    variances = {"": 1.0}
    for index, prompt in enumerate(PROMPTS):
        means[prompt] = 0.5 * torch.randn(dim, generator=generator, dtype=torch.float64)
        variances[prompt] = 0.2 + 0.15 * index
    return means, variances


def gaussian_model(
    schedule: str = "linear",
    dim: int = 16,
    sampler: str = "ddpm",
    eta: float = 1.0,
    seed: int = 0,
    prediction_type: str = "epsilon",
) -> GaussianConditionals:
    """A variance-preserving model of the five prompts' Gaussian data."""
    means, variances = _prompt_distributions(dim, seed)
    return GaussianConditionals(
        means,
        variances,
        torch.cumprod(1 - SCHEDULES[schedule](), 0),
        sampler=sampler,
        eta=eta,
        prediction_type=prediction_type,
    )


def flow_gaussian_model(
    sampler: str = "sde",
    dim: int = 16,
    shift: float = 3.0,
    mu: float | None = None,
    noise_level: float = DEFAULT_FLOW_NOISE_LEVEL,
    seed: int = 0,
) -> FlowGaussianConditionals:
    """A flow-matching model of the five prompts' Gaussian data (SD3's static shift by default)."""
    means, variances = _prompt_distributions(dim, seed)
    return FlowGaussianConditionals(means, variances, sampler=sampler, noise_level=noise_level, shift=shift, mu=mu)


def snapshot_state(metric) -> dict:
    """A deep copy of a metric's accumulated state."""
    return {
        name: [t.clone() for t in v] if isinstance(v, list) else v.clone() for name, v in metric.metric_state.items()
    }


def assert_same_state(before: dict, after: dict) -> None:
    """Two snapshots are equal, tensor for tensor."""
    assert before.keys() == after.keys()
    for name in before:
        if isinstance(before[name], list):
            assert len(before[name]) == len(after[name]) and all(
                torch.equal(x, y) for x, y in zip(before[name], after[name])
            )
        else:
            assert torch.equal(before[name], after[name])


def free_port() -> int:
    """A free TCP port on the loopback interface, for a gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
