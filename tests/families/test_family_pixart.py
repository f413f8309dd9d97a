"""PixArt-Σ / PixArt-α adapter: the pipeline's own inputs, outputs and grids, on tiny offline models."""

import shutil

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import retrieve_timesteps

from conjure_metrics import conjure_similarity
from conjure_metrics.conditioning import concat_rows
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.denoisers.pixart import PixArtDenoiser
from conjure_metrics.tiny import pixart as tiny_pixart

PAIRS = (["a red fox", "a striped cat"], ["a blue fox", "a striped cat"])
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "euler_ancestral": EulerAncestralDiscreteScheduler}
ETA = 0.7


@pytest.fixture(scope="module")
def sigma_path(tmp_path_factory):
    return tiny_pixart.save(tmp_path_factory.mktemp("pixart_sigma"))


@pytest.fixture(scope="module")
def sigma(sigma_path):
    return load_denoiser(str(sigma_path))


def _capture_transformer_calls(pipeline):
    """Run the pipeline's own ``__call__`` (2 steps, guided) and record each transformer call's inputs and output."""
    calls = []

    def record(module, args, kwargs, output):
        calls.append({"x": args[0] if args else kwargs["hidden_states"], **kwargs, "output": output[0]})

    handle = pipeline.transformer.register_forward_hook(record, with_kwargs=True)
    try:
        pipeline(
            "A Red Fox ",
            num_inference_steps=2,
            guidance_scale=2.0,
            output_type="latent",
            clean_caption=False,
            use_resolution_binning=False,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        handle.remove()
    return calls


# --- loading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, pipeline_class, max_length", [("sigma", PixArtSigmaPipeline, 300), ("alpha", PixArtAlphaPipeline, 120)]
)
def test_a_folder_and_a_pipeline_load_as_the_pixart_adapter_with_the_right_pipeline_class(
    kind, pipeline_class, max_length, tmp_path
):
    path = tiny_pixart.save(tmp_path / kind, kind=kind)
    denoiser = load_denoiser(str(path))
    assert type(denoiser) is PixArtDenoiser and type(denoiser.pipeline) is pipeline_class
    assert denoiser.is_alpha == (kind == "alpha")
    assert denoiser.max_sequence_length == max_length  # the pipeline's own default
    assert denoiser.sample_shape == (4, 8, 8) and denoiser.sampler == "ddpm"
    assert not any(p.requires_grad for p in denoiser.model.parameters())
    from_pipeline = load_denoiser(denoiser.pipeline)
    assert type(from_pipeline) is PixArtDenoiser and from_pipeline.model is denoiser.model


def test_loading_options_reach_the_constructor(sigma_path):
    denoiser = load_denoiser(
        str(sigma_path), sampler="ddim", eta=0.3, max_sequence_length=16, torch_dtype=torch.float64
    )
    assert (denoiser.sampler, denoiser.eta, denoiser.max_sequence_length) == ("ddim", 0.3, 16)
    assert denoiser.dtype == torch.float64 and denoiser.pipeline.text_encoder.dtype == torch.float64
    assert denoiser.encode_prompts(["a cat"])["encoder_hidden_states"].shape == (1, 16, 32)


# --- model inputs and outputs are the pipeline's -----------------------------------------------------


def test_conditioning_is_the_pipelines_encode_prompt_and_the_empty_prompt_its_negative(sigma):
    prompts = ["A Red Fox ", "a striped cat"]
    embeds, mask, negative, negative_mask = sigma.pipeline.encode_prompt(
        prompts, do_classifier_free_guidance=True, negative_prompt=""
    )
    conditioning = sigma.encode_prompts(prompts + [""])
    assert set(conditioning) == {"encoder_hidden_states", "encoder_attention_mask"}
    assert conditioning["encoder_hidden_states"].shape == (3, 300, 32)
    torch.testing.assert_close(conditioning["encoder_hidden_states"], torch.cat([embeds, negative[:1]]), rtol=0, atol=0)
    assert torch.equal(conditioning["encoder_attention_mask"], torch.cat([mask, negative_mask[:1]]))
    alone = sigma.encode_prompts(["a striped cat"])  # a row does not depend on what it is batched with
    torch.testing.assert_close(alone["encoder_hidden_states"][0], conditioning["encoder_hidden_states"][1])


@pytest.mark.parametrize("kind", ["sigma", "alpha"])
def test_predict_noise_is_the_transformer_call_of_the_pipelines_own_loop(kind, sigma):
    # PixArt-α passes resolution and aspect ratio only at sample_size 128 (its 1024-pixel model): test it there.
    pipeline = (
        sigma.pipeline if kind == "sigma" else tiny_pixart.build_pipeline(kind="alpha", sample_size=128, patch_size=16)
    )
    denoiser = load_denoiser(pipeline)
    calls = _capture_transformer_calls(pipeline)
    assert len(calls) == 2
    with torch.no_grad():  # as the pipeline's __call__ (and the estimator) run: same kernels, same bits
        conditioning = concat_rows([denoiser.encode_prompts([""]), denoiser.encode_prompts(["A Red Fox "])])
    for call in calls:
        assert torch.equal(call["encoder_hidden_states"], conditioning["encoder_hidden_states"])
        assert torch.equal(call["encoder_attention_mask"], conditioning["encoder_attention_mask"])
        assert call["added_cond_kwargs"].keys() == denoiser.added_cond_kwargs(2).keys()
        for name, value in denoiser.added_cond_kwargs(2).items():
            expected = call["added_cond_kwargs"][name]
            assert (value is None and expected is None) or torch.equal(value, expected), name
        with torch.no_grad():
            output = denoiser.predict_noise(call["x"], call["timestep"], conditioning)
        # Learned variance: only the first in_channels output channels (the noise) come back.
        assert output.shape[1] == pipeline.transformer.config.in_channels == call["output"].shape[1] // 2
        torch.testing.assert_close(output, call["output"][:, :4], rtol=0, atol=0)
    if kind == "alpha":
        resolution = denoiser.added_cond_kwargs(2)["resolution"]
        assert resolution.tolist() == [[256.0, 256.0]] * 2  # 128 latents × the tiny VAE's factor 2


def test_predict_noise_casts_float32_inputs_to_the_model_dtype_and_back(sigma_path):
    denoiser = load_denoiser(str(sigma_path), torch_dtype=torch.float64)
    x = torch.randn(2, 4, 8, 8)
    conditioning = denoiser.encode_prompts(["a cat", ""])
    output = denoiser.predict_noise(x, torch.tensor([500, 500]), conditioning)
    assert output.dtype == torch.float32 and output.shape == x.shape


# --- chains ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_one_chain_step_is_the_diffusers_scheduler_step_on_the_pipelines_grid(sigma_path, sampler):
    denoiser = load_denoiser(str(sigma_path), sampler=sampler, eta=ETA)
    num_steps = 4
    chain = denoiser.reverse_chain(num_steps)
    # The chain never clips predicted latents (nor does PixArt's DPM-Solver); DDPM/DDIM's default would.
    overrides = {} if sampler == "euler_ancestral" else {"clip_sample": False}
    scheduler = SCHEDULERS[sampler].from_config(denoiser.pipeline.scheduler.config, **overrides)
    grid, _ = retrieve_timesteps(scheduler, num_steps, "cpu")  # what the pipeline walks with this scheduler
    assert torch.equal(chain.timesteps, grid)
    if sampler == "euler_ancestral":
        torch.testing.assert_close(chain.alpha_bar.double(), 1 / (1 + scheduler.sigmas[:-1].double() ** 2))
    else:
        torch.testing.assert_close(chain.alpha_bar.double(), scheduler.alphas_cumprod[grid].double())
    if sampler == "ddim":
        # diffusers' DDIM step strides by num_train_timesteps // num_inference_steps whatever the spacing, so
        # on PixArt's "linspace" grid it lands off the grid (huggingface/diffusers#12633); the chain steps to
        # the next grid point, which is DDIM. Give diffusers the grid's own (here uniform) stride.
        gaps = set((grid[:-1] - grid[1:]).tolist())
        assert len(gaps) == 1
        gap = gaps.pop()
        scheduler.num_inference_steps = scheduler.config.num_train_timesteps // gap
        assert scheduler.config.num_train_timesteps // scheduler.num_inference_steps == gap
    conditioning = denoiser.encode_prompts(["a red fox", "a cat"])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * chain.init_std
    step_options = {"eta": ETA} if sampler == "ddim" else {}
    for i, t in enumerate(grid):  # each call moves the scheduler's step index on
        output = denoiser.predict_noise(x * chain.input_scale[i].float(), t.expand(2), conditioning)
        stepped = scheduler.step(output, t, x, generator=torch.Generator().manual_seed(i), **step_options).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        ours = chain.x_coef[i] * x.double() + chain.output_coef[i] * output.double() + chain.noise_std[i] * z.double()
        torch.testing.assert_close(ours.float(), stepped, rtol=1e-4, atol=1e-5)
        x = stepped


def test_an_unknown_sampler_is_a_one_line_error_naming_it(sigma):
    with pytest.raises(ValueError, match="sampler must be one of") as error:
        PixArtDenoiser.from_pipeline(sigma.pipeline, sampler="sde")
    assert "\n" not in str(error.value)


# --- end to end ------------------------------------------------------------------------------------

SETTINGS = dict(num_steps=3, num_samples=2, guidance_scale=2.0)


def test_similarity_is_zero_divergence_for_identical_prompts_and_symmetric(sigma_path, sigma):
    result = conjure_similarity(*PAIRS, str(sigma_path), **SETTINGS)
    assert result.divergence.shape == result.similarity.shape == result.stderr.shape == (2,)
    assert result.divergence[0] > 0 and result.divergence[1] == 0
    torch.testing.assert_close(result.similarity, 1 / (1 + result.divergence))
    assert torch.isfinite(result.stderr).all() and result.stderr[1] == 0
    assert (result.settings.num_steps, result.settings.num_samples, result.settings.guidance_scale) == (3, 2, 2.0)
    swapped = conjure_similarity(PAIRS[1], PAIRS[0], sigma, **SETTINGS)
    torch.testing.assert_close(swapped.divergence, result.divergence, rtol=1e-6, atol=0)


def test_a_score_does_not_depend_on_the_batch_size(sigma):
    one = conjure_similarity(*PAIRS, sigma, max_batch_size=1, **SETTINGS).divergence
    many = conjure_similarity(*PAIRS, sigma, max_batch_size=64, **SETTINGS).divergence
    torch.testing.assert_close(one, many, rtol=1e-4, atol=0)


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_other_samplers_give_finite_positive_divergences(sigma, sampler):
    denoiser = PixArtDenoiser.from_pipeline(sigma.pipeline, sampler=sampler)
    result = conjure_similarity(*PAIRS, denoiser, **SETTINGS)
    assert torch.isfinite(result.divergence).all() and result.divergence[0] > 0 and result.divergence[1] == 0


# --- pictures ---------------------------------------------------------------------------------------


def test_decode_gives_the_pipelines_images_in_the_unit_interval(sigma):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    images = sigma.decode(latents)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    vae = sigma.pipeline.vae
    expected = sigma.pipeline.image_processor.postprocess(
        vae.decode(latents / vae.config.scaling_factor).sample, output_type="pt"
    )
    torch.testing.assert_close(images, expected)


# --- bad input ---------------------------------------------------------------------------------------


def test_a_folder_without_text_encoder_is_a_one_line_error_naming_it(sigma_path, tmp_path):
    broken = tmp_path / "no_text_encoder"
    shutil.copytree(sigma_path, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(ValueError, match="has no text_encoder/") as error:
        load_denoiser(str(broken))
    assert "\n" not in str(error.value)


def test_a_pipeline_without_text_encoder_is_a_type_error_naming_it(sigma):
    pipeline = PixArtSigmaPipeline(**dict(sigma.pipeline.components, text_encoder=None))
    with pytest.raises(TypeError, match="PixArtSigmaPipeline has no text_encoder"):
        load_denoiser(pipeline)


def test_another_familys_folder_is_refused_by_the_pixart_loader(tiny_pixel_repo):
    with pytest.raises(ValueError, match="holds a StableDiffusionPipeline"):
        PixArtDenoiser.from_pretrained(tiny_pixel_repo)


@pytest.mark.parametrize("option, value", [("max_sequence_length", 0), ("max_sequence_length", 1.5), ("eta", -0.5)])
def test_bad_constructor_options_are_refused_by_name(sigma, option, value):
    with pytest.raises(ValueError, match=f"^{option} must be"):
        PixArtDenoiser.from_pipeline(sigma.pipeline, **{option: value})
