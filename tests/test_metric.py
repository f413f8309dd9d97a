"""ConjureSimilarity as a torchmetrics Metric: states, device/dtype handling, errors, persistence."""

import pickle

import pytest
import torch

from conjure_metrics import CallableDenoiser, ConjureSimilarity, DiffusersDenoiser, conjure_similarity
from conjure_metrics.tiny import build_tiny_components
from helpers import assert_same_state as _assert_same_state
from helpers import gaussian_model
from helpers import snapshot_state as _state

A, B = ["tiger", "fox", "cat"], ["zebra", "cat", "cat"]
SETTINGS = dict(num_steps=6, num_samples=4, guidance_scale=2.0, seed=1)


def test_metric_matches_functional_and_accumulates_over_batches():
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS)
    metric.update(A[:2], B[:2])
    metric.update(A[2:], B[2:])
    expected = conjure_similarity(A, B, model, **SETTINGS)
    pairs = metric.pair_results()
    torch.testing.assert_close(pairs["divergence"], expected.divergence)
    torch.testing.assert_close(pairs["stderr"], expected.stderr)
    torch.testing.assert_close(metric.compute(), expected.similarity.mean())
    assert metric.compute().dtype == torch.float64


def test_forward_returns_the_batch_value_and_keeps_the_running_mean():
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS)
    first = metric(A[:1], B[:1])
    second = metric(A[1:], B[1:])
    torch.testing.assert_close(first, conjure_similarity(A[:1], B[:1], model, **SETTINGS).similarity.mean())
    torch.testing.assert_close(second, conjure_similarity(A[1:], B[1:], model, **SETTINGS).similarity.mean())
    torch.testing.assert_close(metric.compute(), conjure_similarity(A, B, model, **SETTINGS).similarity.mean())


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


def test_accumulators_stay_out_of_state_dict_by_default():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A[:2], B[:2])
    assert dict(metric.state_dict()) == {}


def test_state_dict_round_trip_restores_the_accumulated_state_when_persistent():
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS)
    metric.persistent(True)
    metric.update(A[:2], B[:2])
    assert set(metric.state_dict()) == set(metric.metric_state)
    restored = ConjureSimilarity(model, **SETTINGS)
    restored.load_state_dict(metric.state_dict())
    _assert_same_state(_state(metric), _state(restored))
    restored.update(A[2:], B[2:])
    metric.update(A[2:], B[2:])
    torch.testing.assert_close(restored.compute(), metric.compute(), rtol=0, atol=0)


def test_accumulators_in_shared_memory_are_not_written_through():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    shared = metric.num_pairs.share_memory_()  # what a ddp_spawn pickle leaves behind
    metric.update(A, B)
    assert shared.item() == 0 and metric.num_pairs.item() == len(A)


def test_reset_clears_the_accumulators():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A, B)
    metric.reset()
    assert metric.num_pairs == 0 and metric.pair_divergence == []
    metric.update(A[:1], B[:1])
    assert metric.num_pairs == 1


def test_pickled_metric_keeps_its_state_and_keeps_working():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A[:2], B[:2])
    clone = pickle.loads(pickle.dumps(metric))
    torch.testing.assert_close(clone.compute(), metric.compute())
    clone.update(A[2:], B[2:])
    metric.update(A[2:], B[2:])
    torch.testing.assert_close(clone.compute(), metric.compute())


@pytest.mark.parametrize("cast", [
    lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.set_dtype(torch.float16), lambda m: m.float(),
])
def test_dtype_casts_leave_float64_accumulators_untouched(cast):
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A, B)
    before = _state(metric)
    cast(metric)
    after = _state(metric)
    _assert_same_state(before, after)
    assert all(t.dtype == torch.float64 for v in after.values() for t in (v if isinstance(v, list) else [v]))
    metric.reset()
    assert metric.similarity_sum.dtype == torch.float64


def test_to_moves_states_and_model_to_the_device():
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS).to("meta")
    assert metric.device.type == "meta" and model.device.type == "meta"
    assert metric.num_pairs.device.type == "meta" and metric.num_pairs.dtype == torch.float64


def test_to_the_same_device_keeps_the_metric_working():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS).to("cpu")
    metric.update(A, B)
    assert metric.compute().device.type == "cpu"


BAD_UPDATES = [
    ("prompts_a", TypeError, ("tiger", ["zebra"])),
    ("prompts_b", TypeError, (["tiger"], [3])),
    ("prompts_a and prompts_b", ValueError, (["tiger"], ["zebra", "fox"])),
    ("empty", ValueError, ([], [])),
    ("no distribution", ValueError, (["tiger"], ["an unknown prompt"])),  # raised inside the model
]


@pytest.mark.parametrize("through", ["update", "forward"])
@pytest.mark.parametrize("name,error,args", BAD_UPDATES, ids=[b[0] for b in BAD_UPDATES])
def test_bad_prompts_raise_and_leave_state_unchanged(name, error, args, through):
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A, B)
    before = _state(metric)
    with pytest.raises(error, match=name):
        metric.update(*args) if through == "update" else metric(*args)
    _assert_same_state(before, _state(metric))
    # torchmetrics' forward() resets the state and changes the sync flags before update() runs.
    assert metric._update_count == 1
    assert (metric._to_sync, metric._should_unsync, metric._enable_grad) == (True, True, False)
    metric(A[:1], B[:1])
    assert metric._update_count == 2 and metric.num_pairs == len(A) + 1


def test_clone_shares_the_model_and_copies_the_state():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    metric.update(A[:2], B[:2])
    clone = metric.clone()
    assert clone.denoiser is metric.denoiser  # not a copy of the whole model
    before = _state(metric)
    clone.update(A[2:], B[2:])
    _assert_same_state(before, _state(metric))
    assert clone.num_pairs == len(A) and metric.num_pairs == 2


def test_dtype_casts_do_not_move_the_model():
    model = gaussian_model()
    metric = ConjureSimilarity(model, **SETTINGS)
    model.to("meta")  # stands for a GPU the user put the model on, while the metric stays on the CPU
    for cast in (metric.half, metric.float, lambda: metric.to(torch.bfloat16), lambda: metric.set_dtype(torch.float16)):
        cast()
        assert model.device.type == "meta"
    metric.to("cpu")  # an explicit device moves the model, even though the metric already is there
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


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_model_output_raises_and_leaves_state_unchanged(bad_value):
    model = gaussian_model()
    good = model.predict_noise
    metric = ConjureSimilarity(model, **SETTINGS)
    metric.update(A, B)
    before = _state(metric)
    model.predict_noise = lambda x, t, c: good(x, t, c) + bad_value
    with pytest.raises(ValueError, match="non-finite"):
        metric.update(A, B)
    _assert_same_state(before, _state(metric))


def test_model_that_is_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="model"):
        ConjureSimilarity(model=42)


def test_compute_before_update_is_nan_with_a_warning():
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert torch.isnan(metric.compute())


def test_plot_accepts_a_value_and_a_sequence():
    import matplotlib

    matplotlib.use("Agg")
    metric = ConjureSimilarity(gaussian_model(), **SETTINGS)
    values = []
    for a, b in zip(A, B):
        metric.update([a], [b])
        values.append(metric.compute())
    fig, ax = metric.plot()
    assert ax.figure is fig and len(ax.lines[0].get_ydata()) == 1  # the current value
    fig, ax = metric.plot(values)
    assert len(ax.lines[0].get_xdata()) == len(values)


class CallableDenoiserWithModule(torch.nn.Module):
    """A denoiser that is itself an nn.Module with weights: they must not leak into state_dict."""

    sample_shape = (4,)

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
        self._chain = CallableDenoiser(lambda x, t, c: x, lambda p: torch.zeros(len(p), 4), (4,),
                                       lambda n: gaussian_model().reverse_chain(n))

    @property
    def device(self):
        return self.layer.weight.device

    def encode_prompts(self, prompts):
        return torch.stack([torch.full((4,), float(len(p))) for p in prompts])

    def predict_noise(self, x, t, c):
        return self.layer(x) * 0.01 + c * 0.01

    def reverse_chain(self, n):
        return self._chain.reverse_chain(n)
