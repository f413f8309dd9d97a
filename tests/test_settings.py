"""Settings: one validated object, mode-dependent defaults, a noise floor that means the same at any T."""

import argparse

import pytest
import torch

from conjure_metrics import ConjureSettings, ConjureSimilarity, conjure_similarity
from conjure_metrics.chains import cosine_betas, ddpm_chain, leading_timesteps, linear_betas
from conjure_metrics.cli.options import add_settings_arguments, settings_from_args
from conjure_metrics.settings import MODEL_DEFAULTS, PROMPT_DEFAULTS
from conjure_metrics.weighting import counted_steps, step_weights
from tests.helpers import flow_gaussian_model, gaussian_model

SETTINGS = dict(num_steps=6, num_samples=3, guidance_scale=2.0, seed=1)


def test_unset_weighting_and_floor_take_the_mode_defaults():
    base, other = gaussian_model(seed=0), gaussian_model(seed=1)
    prompts = conjure_similarity(["tiger"], ["zebra"], base, **SETTINGS)
    models = conjure_similarity(["tiger"], ["tiger"], base, model_b=other, **SETTINGS)
    assert (prompts.settings.weighting, prompts.settings.min_noise) == (
        PROMPT_DEFAULTS.weighting,
        PROMPT_DEFAULTS.min_noise,
    )
    assert (models.settings.weighting, models.settings.min_noise) == (
        MODEL_DEFAULTS.weighting,
        MODEL_DEFAULTS.min_noise,
    )
    explicit = conjure_similarity(
        ["tiger"],
        ["tiger"],
        base,
        model_b=other,
        weighting=MODEL_DEFAULTS.weighting,
        min_noise=MODEL_DEFAULTS.min_noise,
        **SETTINGS,
    )
    torch.testing.assert_close(models.divergence, explicit.divergence, rtol=0, atol=0)


def test_an_explicit_setting_overrides_the_mode_default():
    base, other = gaussian_model(seed=0), gaussian_model(seed=1)
    everything = conjure_similarity(["tiger"], ["tiger"], base, model_b=other, min_noise=0.0, **SETTINGS)
    floored = conjure_similarity(["tiger"], ["tiger"], base, model_b=other, **SETTINGS)
    assert everything.settings.min_noise == 0.0
    assert bool(everything.terms.counted_steps.all()) and not bool(floored.terms.counted_steps.all())
    assert float(everything.divergence) != float(floored.divergence)


def test_metric_repr_names_its_mode_and_the_settings_in_force():
    base, other = gaussian_model(seed=0), gaussian_model(seed=1)
    text = repr(ConjureSimilarity(base, model_b=other, **SETTINGS))
    assert "mode='models'" in text and f"min_noise={MODEL_DEFAULTS.min_noise!r}" in text
    assert "mode='prompts'" in repr(ConjureSimilarity(base, **SETTINGS))


@pytest.mark.parametrize("num_steps", [5, 8, 10, 25])
def test_noise_floor_leaves_out_the_steps_that_land_below_it(num_steps):
    chain = ddpm_chain(torch.cumprod(1 - cosine_betas(), 0), leading_timesteps(num_steps))
    counted = counted_steps(chain, min_noise=0.25)
    landing = (1 - torch.cat([chain.alpha_bar[1:], torch.ones(1, dtype=torch.float64)])).sqrt()
    assert counted.tolist() == (landing >= 0.25).tolist()
    # Whatever T, the explosive girsanov step (the last stochastic one, landing next to the data) is out.
    weights = step_weights(chain, "girsanov", 16, counted)
    last_stochastic = int(chain.stochastic.nonzero().max())
    assert weights[last_stochastic] == 0 and chain.girsanov_weight()[last_stochastic] > 10 * weights.max()


def test_noise_floor_matches_the_exact_expectation_on_a_gaussian_model():
    model = gaussian_model(dim=8)
    result = conjure_similarity(
        ["tiger"],
        ["zebra"],
        model,
        num_steps=8,
        num_samples=400,
        guidance_scale=1.0,
        weighting="girsanov",
        min_noise=0.3,
        seed=3,
    )
    exact = model.exact_divergence("tiger", "zebra", 8, 1.0, "girsanov", min_noise=0.3)
    assert exact < model.exact_divergence("tiger", "zebra", 8, 1.0, "girsanov")
    assert abs(float(result.divergence) - exact) < 3 * float(result.stderr)


def test_min_snr_weighting_scales_simple_by_min_snr_over_snr():
    chain = ddpm_chain(torch.cumprod(1 - linear_betas(), 0), leading_timesteps(10))
    counted = counted_steps(chain)
    snr = chain.alpha_bar / (1 - chain.alpha_bar)
    expected = step_weights(chain, "simple", 4, counted) * torch.minimum(snr, torch.tensor(5.0)) / snr
    torch.testing.assert_close(step_weights(chain, "min_snr", 4, counted), expected)
    assert bool(
        (
            step_weights(chain, "min_snr", 4, counted)[snr < 5] == step_weights(chain, "simple", 4, counted)[snr < 5]
        ).all()
    )


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (dict(min_noise=1.0), ValueError, "min_noise"),
        (dict(min_noise=-0.1), ValueError, "min_noise"),
        (dict(min_noise="0.2"), TypeError, "min_noise"),
        (dict(weighting="exact"), ValueError, "weighting"),
        (dict(num_steps=2.5), TypeError, "num_steps"),
    ],
)
def test_bad_settings_are_refused_by_name(bad, error, match):
    with pytest.raises(error, match=match):
        ConjureSettings(**bad)


def test_misspelt_setting_is_refused_by_name():
    with pytest.raises(TypeError, match="'num_step'"):
        ConjureSettings.from_kwargs(num_step=4)


def test_floor_above_every_step_is_refused_before_any_state_changes():
    with pytest.raises(ValueError, match="min_noise"):
        ConjureSimilarity(gaussian_model(), min_noise=0.999, **SETTINGS)


def test_cli_options_come_from_the_settings_object():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    defaults = settings_from_args(parser.parse_args([]))
    assert defaults == ConjureSettings()
    parsed = settings_from_args(parser.parse_args(["--min-noise", "0.3", "--weighting", "min_snr", "--steps", "8"]))
    assert (parsed.min_noise, parsed.weighting, parsed.num_steps) == (0.3, "min_snr", 8)
    with pytest.raises(ValueError, match="min_noise"):
        settings_from_args(parser.parse_args(["--min-noise", "2"]))


def test_misspelt_setting_with_a_model_object_is_not_taken_for_a_loading_option():
    with pytest.raises(TypeError, match="'num_step' \\(did you mean 'num_steps'\\?\\)"):
        conjure_similarity(["tiger"], ["zebra"], gaussian_model(), num_step=3)
    with pytest.raises(TypeError, match="'guidance'"):
        ConjureSimilarity(gaussian_model(), load_kwargs={"guidance": 2.0})


def test_a_floor_that_leaves_only_the_pure_noise_step_of_a_flow_model_is_refused():
    # At sigma = 1 a velocity difference is no noise-prediction difference: 'simple' weighs that step 0, and
    # with 3 steps (SD3's shifted schedule) the other two land below the floor, so every pair would score 0.
    model = flow_gaussian_model()
    chain = model.reverse_chain(3)
    assert counted_steps(chain, 0.2).any() and step_weights(chain, "simple", 1, counted_steps(chain, 0.2)).sum() == 0
    with pytest.raises(ValueError, match="weight 0.*more steps or a lower min_noise"):
        conjure_similarity(["tiger"], ["zebra"], model, num_steps=3, min_noise=0.2, num_samples=1)
    assert conjure_similarity(["tiger"], ["zebra"], model, num_steps=3, num_samples=1).divergence[0] > 0
