"""The guidance mode a denoiser declares decides whether the estimator evaluates the empty prompt."""

import pytest
import torch

from conjure_metrics import CompiledDenoiser, jeffreys_terms
from conjure_metrics.denoisers.protocol import guidance_mode
from tests.helpers import flow_gaussian_model

SETTINGS = dict(num_steps=5, num_samples=3, seed=4)
PROMPTS_A, PROMPTS_B = ["tiger", "zebra"], ["fox", "cat"]


class GuidedAs:
    """The analytic model declaring a guidance mode; counts the rows it is asked for under the empty prompt.

    With ``"embedded"`` it guides itself with the scale it is given, as a guidance-distilled model
    approximates classifier-free guidance, so its outputs equal the estimator's own guidance.
    """

    def __init__(self, inner, mode):
        self.inner, self.guidance_mode = inner, mode
        self.unconditional_rows, self.scales = 0, set()
        self._empty = inner.encode_prompts([""])

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_noise(self, x, timesteps, conditioning, **options):
        self.unconditional_rows += int((conditioning == self._empty).all(dim=1).sum())
        if self.guidance_mode != "embedded":
            assert not options
            return self.inner.predict_noise(x, timesteps, conditioning)
        scale = options["guidance_scale"]
        self.scales.add(scale)
        unconditional = self.inner.predict_noise(x, timesteps, self._empty.expand(len(x), -1))
        return unconditional + scale * (self.inner.predict_noise(x, timesteps, conditioning) - unconditional)


def test_embedded_guidance_makes_no_unconditional_calls_and_passes_the_scale():
    model = flow_gaussian_model()
    cfg, embedded = GuidedAs(model, "cfg"), GuidedAs(model, "embedded")
    with_cfg = jeffreys_terms(PROMPTS_A, PROMPTS_B, cfg, guidance_scale=3.5, **SETTINGS)
    with_embedded = jeffreys_terms(PROMPTS_A, PROMPTS_B, embedded, guidance_scale=3.5, **SETTINGS)
    assert cfg.unconditional_rows > 0
    assert embedded.unconditional_rows == 0 and embedded.scales == {3.5}
    torch.testing.assert_close(with_embedded.squared, with_cfg.squared, rtol=1e-9, atol=1e-12)


def test_embedded_guidance_reaches_the_model_through_the_compiled_wrapper():
    embedded = GuidedAs(flow_gaussian_model(), "embedded")
    jeffreys_terms(
        PROMPTS_A, PROMPTS_B, CompiledDenoiser(embedded, batch_size=8, compile=False), guidance_scale=2.0, **SETTINGS
    )
    assert embedded.unconditional_rows == 0 and embedded.scales == {2.0}


def test_unguided_model_ignores_the_scale_and_makes_no_unconditional_calls():
    model = flow_gaussian_model()
    unguided = GuidedAs(model, "none")
    ignored = jeffreys_terms(PROMPTS_A, PROMPTS_B, unguided, guidance_scale=3.5, **SETTINGS)
    assert unguided.unconditional_rows == 0
    assert torch.equal(
        ignored.squared, jeffreys_terms(PROMPTS_A, PROMPTS_B, model, guidance_scale=1.0, **SETTINGS).squared
    )


def test_models_guided_differently_cannot_be_compared():
    model = flow_gaussian_model()
    with pytest.raises(ValueError, match="guidance mode"):
        jeffreys_terms(["tiger"], ["tiger"], GuidedAs(model, "cfg"), GuidedAs(model, "embedded"), **SETTINGS)


def test_guidance_mode_defaults_to_classifier_free_and_refuses_unknown_modes():
    model = flow_gaussian_model()
    assert guidance_mode(model) == "cfg"
    with pytest.raises(ValueError, match="guidance_mode"):
        guidance_mode(GuidedAs(model, "distilled"))
