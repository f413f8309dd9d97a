"""CompiledDenoiser: fixed-size model calls (for torch.compile / CUDA graphs) with unchanged results."""

import copy
import pickle

import pytest
import torch

from conjure_metrics import CompiledDenoiser, ConjureSimilarity, conjure_similarity, jeffreys_terms
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from tests.helpers import gaussian_model


class ShapeRecorder:
    """Forwards to a denoiser and records the batch size of every model call."""

    def __init__(self, inner):
        self.inner, self.batch_sizes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_noise(self, x, timesteps, conditioning):
        self.batch_sizes.append(x.shape[0])
        return self.inner.predict_noise(x, timesteps, conditioning)


@pytest.mark.parametrize("batch_size", [1, 4, 7, 64])
def test_every_model_call_has_the_fixed_batch_size_and_results_do_not_change(batch_size):
    model = gaussian_model()
    recorder = ShapeRecorder(model)
    fixed = CompiledDenoiser(recorder, batch_size=batch_size, compile=False)
    settings = dict(num_steps=5, num_samples=3, guidance_scale=3.0, seed=2, max_batch_size=10)
    prompts_a, prompts_b = ["tiger", "zebra", "tiger"], ["zebra", "fox", "fox"]
    padded = jeffreys_terms(prompts_a, prompts_b, fixed, **settings)
    plain = jeffreys_terms(prompts_a, prompts_b, model, **settings)
    assert set(recorder.batch_sizes) == {batch_size}
    torch.testing.assert_close(padded.simple, plain.simple, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(padded.girsanov, plain.girsanov, rtol=1e-6, atol=1e-12)


def test_the_wrapper_forwards_the_rest_of_the_denoiser():
    model = gaussian_model()
    fixed = CompiledDenoiser(model, batch_size=4, compile=False)
    assert fixed.sample_shape == model.sample_shape and fixed.device == model.device
    assert fixed.reverse_chain(3).num_steps == 3
    assert fixed.to("cpu") is fixed


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_batch_size_is_refused_by_name(bad, error):
    with pytest.raises(error, match="batch_size"):
        CompiledDenoiser(gaussian_model(), batch_size=bad)


@pytest.mark.slow
def test_compiled_tiny_unet_matches_eager_and_compiles_a_single_graph(tmp_path, monkeypatch):
    # A compile cache of its own: a shared /tmp one left truncated by a killed process fails the load.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from conjure_metrics import DiffusersDenoiser
    from conjure_metrics.tiny import build_tiny_components

    torch.manual_seed(0)
    eager = DiffusersDenoiser(**build_tiny_components(sample_size=16))
    compiled = CompiledDenoiser(eager, batch_size=8)
    settings = dict(num_steps=3, num_samples=2, guidance_scale=3.0, seed=0, max_batch_size=8)
    prompts_a, prompts_b = ["a red fox", "a cat"], ["a blue bird", "a dog"]
    torch._dynamo.reset()
    # Micro-batches of 8, 6 and 2 rows all reach the model as 8: a second graph would be a recompile.
    with torch._dynamo.config.patch(error_on_recompile=True):
        fast = conjure_similarity(prompts_a, prompts_b, compiled, **settings)
    slow = conjure_similarity(prompts_a, prompts_b, eager, **settings)
    torch.testing.assert_close(fast.divergence, slow.divergence, rtol=1e-3, atol=1e-6)
    assert (slow.divergence > 0).all()


@pytest.mark.parametrize(
    "wrap",
    [lambda m: CompiledDenoiser(m, batch_size=8, compile=False), InstrumentedDenoiser],
    ids=["compiled", "instrumented"],
)
def test_wrapped_models_can_be_copied_and_pickled_inside_a_metric(wrap):
    # copy and pickle rebuild the wrapper before its ``inner`` exists: attribute forwarding must not recurse.
    settings = dict(num_steps=3, num_samples=2, guidance_scale=2.0)
    metric = ConjureSimilarity(wrap(gaussian_model()), **settings)
    metric.update(["tiger"], ["zebra"])
    assert metric.clone().denoiser is metric.denoiser  # the clone shares the wrapped model
    assert copy.copy(metric.denoiser).inner is metric.denoiser.inner
    restored = pickle.loads(pickle.dumps(metric))
    restored.update(["tiger"], ["fox"])
    metric.update(["tiger"], ["fox"])
    torch.testing.assert_close(restored.compute(), metric.compute())
    with pytest.raises(AttributeError):
        metric.denoiser.no_such_attribute  # noqa: B018  (the lookup is what is tested)
