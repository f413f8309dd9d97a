"""ConjureSimilarity's own behaviour: settings and model_b reach the computation, models stay out of checkpoints,
bad settings are refused. What every pair metric does (states, casts, copies, rejected calls, DDP) is in
tests/test_pair_metric_contract.py."""

import pytest
import torch

from conjure_metrics import CallableDenoiser, ConjureSimilarity, DiffusersDenoiser, conjure_similarity
from conjure_metrics.tiny import build_tiny_components
from tests.helpers import gaussian_model

A, B = ["tiger", "fox", "cat"], ["zebra", "cat", "cat"]
SETTINGS = dict(num_steps=6, num_samples=4, guidance_scale=2.0, seed=1)


NON_DEFAULT_SETTINGS = [
    dict(min_timestep=300),
    dict(min_noise=0.3),
    dict(weighting="girsanov"),
    dict(weighting="min_snr"),
    dict(target_stderr=1e-3, max_samples=12),
    dict(guidance_scale=4.0),
    dict(seed=7),
    dict(num_steps=4),
    dict(max_batch_size=3),  # changes nothing but the batching
]


@pytest.mark.parametrize("changed", NON_DEFAULT_SETTINGS, ids=lambda c: ",".join(c))
def test_every_setting_reaches_the_computation(changed):
    model = gaussian_model()
    settings = {**SETTINGS, **changed}
    metric = ConjureSimilarity(model, **settings)
    metric.update(A, B)
    expected = conjure_similarity(A, B, model, **settings)
    torch.testing.assert_close(metric.pair_results()["divergence"], expected.divergence, rtol=1e-12, atol=0)
    torch.testing.assert_close(metric.pair_results()["stderr"], expected.stderr, rtol=1e-12, atol=0)
    default = conjure_similarity(A, B, model, **SETTINGS)
    differs = not torch.allclose(expected.divergence, default.divergence, rtol=1e-9, atol=0)
    assert differs == ("max_batch_size" not in changed)  # each real setting changes the result


def test_model_b_reaches_the_computation():
    base, other = gaussian_model(seed=0), gaussian_model(seed=1)
    metric = ConjureSimilarity(base, model_b=other, **SETTINGS)
    metric.update(A, A)
    expected = conjure_similarity(A, A, base, model_b=other, **SETTINGS).divergence
    torch.testing.assert_close(metric.pair_results()["divergence"], expected, rtol=1e-12, atol=0)
    assert (expected > 0).all()  # the same prompts under two models differ; under one they would be 0


def test_state_dict_holds_no_model_weights():
    metric = ConjureSimilarity(CallableDenoiserWithModule(), num_steps=2, num_samples=1, guidance_scale=1.0)
    metric.persistent(True)  # even with its accumulators in it
    metric.update(["a"], ["b"])
    keys = set(metric.state_dict())
    assert keys == set(metric.metric_state) and not any("weight" in k or "bias" in k for k in keys)
    assert list(metric.parameters()) == []


def test_diffusers_model_stays_out_of_state_dict_and_children():
    metric = ConjureSimilarity(lambda: DiffusersDenoiser(**build_tiny_components()), num_steps=2, num_samples=1)
    metric.persistent(True)
    metric.update(["a red fox"], ["a blue fox"])
    assert set(metric.state_dict()) == set(metric.metric_state)
    values = metric.state_dict().values()
    tensors = [t for v in values for t in (v if isinstance(v, list) else [v])]
    assert sum(t.numel() for t in tensors) < 100  # a few scalars at most, never UNet weights
    assert list(metric.children()) == [] and list(metric.parameters()) == []


def test_an_explicit_device_moves_the_model_even_when_the_metric_is_already_there():
    # That dtype casts leave such a model where it is: tests/test_pair_metric_contract.py.
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS)
    model.to("meta")  # stands for a GPU the user put the model on, while the metric stays on the CPU
    metric.to("cpu")
    assert model.device.type == "cpu"


BAD_SETTINGS = [
    ("num_steps", ValueError, dict(num_steps=0)),
    ("num_samples", ValueError, dict(num_samples=0)),
    ("num_samples", TypeError, dict(num_samples=2.5)),
    ("guidance_scale", ValueError, dict(guidance_scale=-1.0)),
    ("guidance_scale", ValueError, dict(guidance_scale=float("nan"))),
    ("weighting", ValueError, dict(weighting="uniform")),
    ("seed", TypeError, dict(seed="0")),
    ("max_batch_size", ValueError, dict(max_batch_size=0)),
    ("target_stderr", ValueError, dict(target_stderr=0.0)),
    ("max_samples", ValueError, dict(num_samples=4, target_stderr=0.1, max_samples=2)),
    ("max_samples", ValueError, dict(num_samples=4, target_stderr=0.1, max_samples=5)),  # no room for 2 fresh samples
    ("num_samples", ValueError, dict(num_samples=1, target_stderr=0.1)),  # a pilot of one has no spread
    ("min_timestep", ValueError, dict(min_timestep=5000)),  # above every step: the divergence would be 0
]


@pytest.mark.parametrize("name,error,kwargs", BAD_SETTINGS, ids=[f"{b[0]}-{b[1].__name__}" for b in BAD_SETTINGS])
def test_bad_settings_raise_naming_the_argument(name, error, kwargs):
    with pytest.raises(error, match=name):
        ConjureSimilarity(gaussian_model(), **kwargs)
    with pytest.raises(error, match=name):
        conjure_similarity(["tiger"], ["zebra"], gaussian_model(), **kwargs)


def test_model_that_is_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="model"):
        ConjureSimilarity(model=42)


class CallableDenoiserWithModule(torch.nn.Module):
    """A denoiser that is itself an nn.Module with weights: they must not leak into state_dict."""

    sample_shape = (4,)

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
        self._chain = CallableDenoiser(
            lambda x, t, c: x, lambda p: torch.zeros(len(p), 4), (4,), lambda n: gaussian_model().reverse_chain(n)
        )

    @property
    def device(self):
        return self.layer.weight.device

    def encode_prompts(self, prompts):
        return torch.stack([torch.full((4,), float(len(p))) for p in prompts])

    def predict_noise(self, x, t, c):
        return self.layer(x) * 0.01 + c * 0.01

    def reverse_chain(self, n):
        return self._chain.reverse_chain(n)
