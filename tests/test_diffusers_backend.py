"""Tiny diffusers/transformers models built from configs, saved, and reloaded through from_pretrained."""

import warnings

import pytest
import torch

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser, conjure_similarity, load_denoiser
from conjure_metrics.denoisers.diffusers import SAMPLERS
from conjure_metrics.tiny import build_tiny_components, byte_level_clip_tokenizer

PAIRS = (["a red fox", "a striped cat"], ["a blue fox", "a striped cat"])


def test_byte_level_tokenizer_round_trips_offline():
    tokenizer = byte_level_clip_tokenizer()
    ids = tokenizer("a red fox").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(set(ids[1:-1])) > 3  # not the broken [0, 2, 2, ...] tokenizer
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red fox"


@pytest.mark.parametrize("repo", ["tiny_pixel_repo", "tiny_latent_repo"])
def test_from_pretrained_path_runs_end_to_end(repo, request):
    path = request.getfixturevalue(repo)
    denoiser = DiffusersDenoiser.from_pretrained(path, local_files_only=True)
    assert (denoiser.vae is not None) == (repo == "tiny_latent_repo")
    assert denoiser.sample_shape == ((4, 8, 8) if denoiser.vae is not None else (3, 8, 8))
    assert not any(p.requires_grad for p in denoiser.unet.parameters())
    result = conjure_similarity(*PAIRS, denoiser, num_steps=4, num_samples=2, seed=0)
    assert result.divergence[0] > 0
    assert result.divergence[1] == 0
    assert torch.isfinite(result.stderr).all()


def test_a_path_string_is_loaded_by_the_metric_like_a_hub_id(tiny_pixel_repo):
    metric = ConjureSimilarity(str(tiny_pixel_repo), num_steps=3, num_samples=2)
    metric.update(*PAIRS)
    loaded = DiffusersDenoiser.from_pretrained(tiny_pixel_repo, local_files_only=True)
    expected = conjure_similarity(*PAIRS, loaded, num_steps=3, num_samples=2)
    torch.testing.assert_close(metric.pair_results()["divergence"], expected.divergence, rtol=0, atol=0)
    assert expected.divergence[0] > 0 and expected.divergence[1] == 0  # a distinct pair, an identical one


def test_loading_options_reach_from_pretrained_through_the_metric_and_the_functional(tiny_pixel_repo):
    metric = ConjureSimilarity(
        str(tiny_pixel_repo),
        num_steps=2,
        num_samples=1,
        load_kwargs={"torch_dtype": torch.float64, "sampler": "euler_ancestral"},
    )
    assert metric.denoiser.dtype == torch.float64 and metric.denoiser.sampler == "euler_ancestral"
    as_float64 = conjure_similarity(*PAIRS, str(tiny_pixel_repo), num_steps=2, num_samples=1, torch_dtype=torch.float64)
    as_float32 = conjure_similarity(*PAIRS, str(tiny_pixel_repo), num_steps=2, num_samples=1)
    assert not torch.equal(as_float64.divergence, as_float32.divergence)  # the option was used ...
    torch.testing.assert_close(as_float64.divergence, as_float32.divergence, rtol=1e-4, atol=1e-7)  # ... same noise


def test_components_and_pipeline_objects_are_accepted():
    from diffusers import StableDiffusionPipeline

    components = build_tiny_components(latent=True)
    from_parts = DiffusersDenoiser(**components)
    pipeline = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    from_pipeline = load_denoiser(pipeline)
    a = conjure_similarity(*PAIRS, from_parts, num_steps=3, num_samples=2).divergence
    b = conjure_similarity(*PAIRS, from_pipeline, num_steps=3, num_samples=2).divergence
    torch.testing.assert_close(a, b)


def test_a_model_saved_in_half_precision_loads_every_component_in_one_dtype(tmp_path):
    from conjure_metrics.tiny import save_tiny_model

    path = save_tiny_model(tmp_path / "saved")
    for name in ("unet", "text_encoder"):  # re-save the weights in float16, as hub checkpoints often are
        module = getattr(DiffusersDenoiser.from_pretrained(path), name).half()
        module.save_pretrained(path / name)
    loaded = DiffusersDenoiser.from_pretrained(path)
    assert (
        {p.dtype for p in loaded.unet.parameters()}
        == {p.dtype for p in loaded.text_encoder.parameters()}
        == {torch.float32}
    )
    half = DiffusersDenoiser.from_pretrained(path, torch_dtype=torch.float16)
    assert {p.dtype for p in half.text_encoder.parameters()} == {torch.float16}


def test_hub_options_reach_the_loaders(tiny_pixel_repo, tmp_path, monkeypatch):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    seen = {}
    for cls in (UNet2DConditionModel, CLIPTextModel, AutoTokenizer, DDPMScheduler):
        original = cls.from_pretrained.__func__

        def recording(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            seen[_name] = kwargs
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    cache = tmp_path / "cache"
    denoiser = DiffusersDenoiser.from_pretrained(tiny_pixel_repo, cache_dir=cache, token=False, use_safetensors=True)
    assert denoiser.sample_shape == (3, 8, 8)
    assert set(seen) == {"UNet2DConditionModel", "CLIPTextModel", "AutoTokenizer", "DDPMScheduler"}
    for name, kwargs in seen.items():
        assert kwargs["cache_dir"] == cache and kwargs["token"] is False, name
    assert seen["UNet2DConditionModel"]["use_safetensors"] is True and seen["CLIPTextModel"]["use_safetensors"] is True


@pytest.mark.parametrize(
    "model,message",
    [
        (lambda: None, "returned NoneType"),
        (lambda: lambda: None, "returned function"),
    ],
)
def test_a_callable_that_returns_no_model_is_a_type_error(model, message):
    with pytest.raises(TypeError, match=f"model is a callable that {message}"):
        load_denoiser(model)


def test_a_bare_unet_is_a_type_error_naming_the_argument():
    unet = build_tiny_components()["unet"]
    with pytest.raises(TypeError, match="model_b is a bare UNet2DConditionModel"):
        load_denoiser(unet, "model_b")


def test_models_passed_in_keep_their_training_state_and_gradients():
    components = build_tiny_components()
    unet = components["unet"].train()
    conjure_similarity(*PAIRS, DiffusersDenoiser(**components), num_steps=2, num_samples=1)
    assert unet.training
    assert all(p.requires_grad for p in unet.parameters())


def test_long_prompts_are_truncated_with_a_warning(tiny_pixel_repo):
    denoiser = DiffusersDenoiser.from_pretrained(tiny_pixel_repo, local_files_only=True)
    with pytest.warns(UserWarning, match="truncated"):
        conjure_similarity(["x" * 100], ["y"], denoiser, num_steps=2, num_samples=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conjure_similarity(["short"], ["y"], denoiser, num_steps=2, num_samples=1)


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_other_ancestral_samplers_give_finite_girsanov_divergences(tiny_pixel_repo, sampler):
    denoiser = DiffusersDenoiser.from_pretrained(tiny_pixel_repo, local_files_only=True, sampler=sampler)
    result = conjure_similarity(*PAIRS, denoiser, num_steps=4, num_samples=2, weighting="girsanov")
    assert torch.isfinite(result.divergence).all() and result.divergence[0] > 0


def test_deterministic_sampler_refuses_girsanov_weighting(tiny_pixel_repo):
    denoiser = DiffusersDenoiser.from_pretrained(tiny_pixel_repo, local_files_only=True, sampler="ddim", eta=0.0)
    with pytest.raises(ValueError, match="girsanov"):
        conjure_similarity(*PAIRS, denoiser, num_steps=4, weighting="girsanov")
    assert conjure_similarity(*PAIRS, denoiser, num_steps=4, num_samples=1).divergence[0] > 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_v_prediction_unet_output_is_returned_raw_and_its_chain_denoises_as_diffusers_step(sampler):
    from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler

    components = build_tiny_components()
    components["scheduler"] = DDPMScheduler.from_config(components["scheduler"].config, prediction_type="v_prediction")
    denoiser = DiffusersDenoiser(**components, sampler=sampler)
    chain = denoiser.reverse_chain(4)
    assert chain.prediction_type == "v_prediction"
    scheduler_class = {
        "ddpm": DDPMScheduler,
        "ddim": DDIMScheduler,
        "euler_ancestral": EulerAncestralDiscreteScheduler,
    }[sampler]
    scheduler = scheduler_class.from_config(components["scheduler"].config)
    scheduler.set_timesteps(4)
    torch.manual_seed(0)
    x, cond = torch.randn(2, 3, 8, 8), denoiser.encode_prompts(["a", "b"])
    for i, t in enumerate(scheduler.timesteps):  # each call moves the scheduler's step index on
        model_input = x * chain.input_scale[i].float()
        output = denoiser.predict_noise(model_input, t.expand(2), cond)
        assert torch.equal(output, components["unet"](model_input, t.expand(2), encoder_hidden_states=cond).sample)
        expected = scheduler.step(output, t, x, generator=torch.Generator().manual_seed(i)).pred_original_sample
        torch.testing.assert_close(chain.denoised(x, output, i), expected, rtol=1e-4, atol=1e-4)


def test_float64_unet_score_is_independent_of_batch_size():
    components = build_tiny_components()
    for module in ("unet", "text_encoder"):
        components[module].double()
    denoiser = DiffusersDenoiser(**components)
    a, b = ["red fox", "cat", "zebra"], ["blue fox", "dog", "zebra stripes"]
    whole = conjure_similarity(a, b, denoiser, num_steps=3, num_samples=2, max_batch_size=64).divergence
    chunked = conjure_similarity(a, b, denoiser, num_steps=3, num_samples=2, max_batch_size=2).divergence
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=0)


# The README states this bound for float32 (measured up to a few 1e-4 on the embedded model by
# benchmarks/batch_invariance.py); float64 is held far tighter.
ROUND_OFF_BOUND = {torch.float32: 1e-3, torch.float64: 1e-9}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_batch_composition_moves_a_score_by_round_off_only(dtype):
    components = build_tiny_components()
    for module in ("unet", "text_encoder"):
        components[module].to(dtype)
    denoiser = DiffusersDenoiser(**components)
    a, b = ["a red fox", "a cat", "a zebra", "a blue dog"], ["a blue fox", "a dog", "a horse", "a red cat"]
    settings = dict(num_steps=4, num_samples=3, guidance_scale=3.0, seed=0, weighting="girsanov", min_noise=0.0)
    whole = conjure_similarity(a, b, denoiser, **settings).divergence
    alone = torch.cat([conjure_similarity([x], [y], denoiser, **settings).divergence for x, y in zip(a, b)])
    small_batches = conjure_similarity(a, b, denoiser, max_batch_size=3, **settings).divergence
    reversed_order = conjure_similarity(a[::-1], b[::-1], denoiser, **settings).divergence.flip(0)
    for other in (alone, small_batches, reversed_order):
        torch.testing.assert_close(other, whole, rtol=ROUND_OFF_BOUND[dtype], atol=0)
