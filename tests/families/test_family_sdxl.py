"""SDXL adapter on a tiny pipeline: UNet inputs as the diffusers pipeline builds them, chain steps as diffusers."""

import copy
import shutil

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from conjure_metrics import conjure_similarity
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.denoisers.sdxl import SDXLDenoiser
from conjure_metrics.tiny import sdxl as tiny_sdxl

PROMPTS = ["a red fox", "a striped cat"]
PIXELS = tiny_sdxl.SAMPLE_SIZE * 2  # the tiny VAE downsamples twice
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "euler_ancestral": EulerAncestralDiscreteScheduler}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_sdxl.save(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def denoiser(folder):
    return load_denoiser(str(folder))


def _recorded_unet_call(pipeline, prompt, **call_options):
    """Inputs and output of the first UNet call that ``pipeline.__call__`` makes."""
    calls = []

    def record(module, args, kwargs, output):
        if not calls:
            calls.append((args, kwargs, output[0] if isinstance(output, tuple) else output.sample))

    handle = pipeline.unet.register_forward_hook(record, with_kwargs=True)
    try:
        pipeline(prompt, num_inference_steps=2, output_type="latent", **call_options)
    finally:
        handle.remove()
    return calls[0]


def test_a_folder_and_a_pipeline_load_as_the_sdxl_adapter(folder, denoiser):
    assert type(denoiser) is SDXLDenoiser and denoiser.sample_shape == (4, 8, 8)
    assert not any(p.requires_grad for p in denoiser.model.parameters())
    pipeline = tiny_sdxl.build_pipeline()
    from_pipeline = load_denoiser(pipeline)
    assert type(from_pipeline) is SDXLDenoiser and from_pipeline.pipeline is pipeline


def test_conditioning_is_what_the_pipelines_own_helpers_build(denoiser):
    pipeline = denoiser.pipeline
    hidden, _, pooled, _ = pipeline.encode_prompt(
        PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=False
    )
    time_ids = pipeline._get_add_time_ids(
        (PIXELS, PIXELS),
        (0, 0),
        (PIXELS, PIXELS),
        dtype=hidden.dtype,
        text_encoder_projection_dim=tiny_sdxl.PROJECTION_DIM,
    )
    conditioning = denoiser.encode_prompts(PROMPTS)
    assert set(conditioning) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    assert torch.equal(conditioning["encoder_hidden_states"], hidden)
    assert torch.equal(conditioning["text_embeds"], pooled)
    assert torch.equal(conditioning["time_ids"], time_ids.repeat(2, 1))
    assert conditioning["time_ids"][0].tolist() == [PIXELS, PIXELS, 0, 0, PIXELS, PIXELS]


def test_predict_noise_is_the_unet_call_the_pipeline_makes_with_guidance(denoiser):
    # The pipeline's batch is [unconditional, conditional]: the empty prompt must be its unconditional branch.
    args, kwargs, expected = _recorded_unet_call(denoiser.pipeline, PROMPTS[0], guidance_scale=2.0)
    latents, timestep = args[0], args[1]
    conditioning = denoiser.encode_prompts(["", PROMPTS[0]])
    # The pipeline encodes the prompt alone, we encode two rows at once: equal up to matmul round-off.
    torch.testing.assert_close(conditioning["encoder_hidden_states"], kwargs["encoder_hidden_states"])
    torch.testing.assert_close(conditioning["text_embeds"], kwargs["added_cond_kwargs"]["text_embeds"])
    assert torch.equal(conditioning["time_ids"], kwargs["added_cond_kwargs"]["time_ids"])
    output = denoiser.predict_noise(latents, timestep.expand(2), conditioning)
    torch.testing.assert_close(output, expected)
    exact = dict(
        conditioning,
        text_embeds=kwargs["added_cond_kwargs"]["text_embeds"],
        encoder_hidden_states=kwargs["encoder_hidden_states"],
    )
    assert torch.equal(denoiser.predict_noise(latents, timestep.expand(2), exact), expected)


@pytest.mark.parametrize("force_zeros", [True, False])
def test_empty_prompt_follows_force_zeros_for_empty_prompt(force_zeros, tmp_path):
    denoiser = load_denoiser(str(tiny_sdxl.save(tmp_path / "m", force_zeros_for_empty_prompt=force_zeros)))
    assert denoiser.pipeline.config.force_zeros_for_empty_prompt is force_zeros
    _, negative, _, negative_pooled = denoiser.pipeline.encode_prompt(
        PROMPTS[:1], device=torch.device("cpu"), do_classifier_free_guidance=True
    )
    conditioning = denoiser.encode_prompts(["", PROMPTS[0]])
    torch.testing.assert_close(conditioning["encoder_hidden_states"][:1], negative)  # up to batch round-off
    torch.testing.assert_close(conditioning["text_embeds"][:1], negative_pooled)
    assert bool(conditioning["text_embeds"][0].abs().sum() == 0) is force_zeros
    assert bool(conditioning["encoder_hidden_states"][0].abs().sum() == 0) is force_zeros
    assert conditioning["text_embeds"][1].abs().sum() > 0


@pytest.mark.parametrize("sampler", SCHEDULERS)
def test_one_chain_step_is_the_diffusers_scheduler_step(denoiser, sampler):
    eta = 0.7 if sampler == "ddim" else 1.0
    model = SDXLDenoiser.from_pipeline(denoiser.pipeline, sampler=sampler, eta=eta)
    chain = model.reverse_chain(4)
    pipeline_scheduler = copy.deepcopy(denoiser.pipeline.scheduler)  # what the pipeline walks (Euler, "leading")
    pipeline_scheduler.set_timesteps(4)
    torch.testing.assert_close(chain.timesteps.float(), pipeline_scheduler.timesteps.float(), rtol=0, atol=0)
    scheduler = SCHEDULERS[sampler].from_config(denoiser.pipeline.scheduler.config)
    scheduler.set_timesteps(4)
    assert chain.init_std == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-6)
    conditioning = model.encode_prompts(PROMPTS)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * chain.init_std
    extra = {"eta": eta} if sampler == "ddim" else {}
    for i, t in enumerate(scheduler.timesteps):  # each call moves the scheduler's step index on
        model_input = scheduler.scale_model_input(x, t)
        torch.testing.assert_close(model_input, x * chain.input_scale[i].float(), rtol=1e-6, atol=1e-6)
        output = model.predict_noise(model_input, t.expand(2), conditioning)
        expected = scheduler.step(output, t, x, generator=torch.Generator().manual_seed(i), **extra).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        ours = chain.x_coef[i] * x.double() + chain.output_coef[i] * output.double() + chain.noise_std[i] * z.double()
        torch.testing.assert_close(ours.float(), expected, rtol=1e-4, atol=1e-5)
        x = expected


def test_end_to_end_divergences_are_symmetric_zero_on_identical_prompts_and_batch_independent(folder, denoiser):
    a, b = ["a red fox", "a cat", "a zebra"], ["a blue fox", "a cat", "a horse"]
    settings = dict(num_steps=3, num_samples=2, guidance_scale=2.0)
    result = conjure_similarity(a, b, str(folder), **settings)
    assert result.divergence.shape == result.similarity.shape == result.stderr.shape == (3,)
    assert result.divergence[1] == 0 and result.divergence[0] > 0 and result.divergence[2] > 0
    torch.testing.assert_close(result.similarity, 1 / (1 + result.divergence))
    assert torch.isfinite(result.stderr).all()
    assert result.settings.num_steps == 3 and result.settings.guidance_scale == 2.0
    swapped = conjure_similarity(b, a, denoiser, **settings).divergence
    torch.testing.assert_close(swapped, result.divergence, rtol=1e-6, atol=0)
    one_at_a_time = conjure_similarity(a, b, denoiser, max_batch_size=1, **settings).divergence
    torch.testing.assert_close(one_at_a_time, result.divergence, rtol=1e-4, atol=0)


def test_decode_gives_pictures_in_the_unit_range(denoiser):
    images = denoiser.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, PIXELS, PIXELS)
    assert images.min() >= 0 and images.max() <= 1


def test_a_folder_without_the_first_text_encoder_works(tmp_path):
    denoiser = load_denoiser(str(tiny_sdxl.save(tmp_path / "m", text_encoder=False)))
    assert denoiser.pipeline.text_encoder is None
    hidden, _, pooled, _ = denoiser.pipeline.encode_prompt(
        PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=False
    )
    conditioning = denoiser.encode_prompts(PROMPTS)
    assert torch.equal(conditioning["encoder_hidden_states"], hidden)
    assert torch.equal(conditioning["text_embeds"], pooled)
    assert conjure_similarity(PROMPTS[:1], PROMPTS[1:], denoiser, num_steps=2, num_samples=1).divergence[0] > 0


def _with_unet(pipeline, **config):
    unet = UNet2DConditionModel.from_config(pipeline.unet.config, **config).eval()
    return StableDiffusionXLPipeline(**dict(pipeline.components, unet=unet), add_watermarker=False)


def test_learned_variance_channels_are_dropped():
    pipeline = _with_unet(tiny_sdxl.build_pipeline(), out_channels=8)
    denoiser = SDXLDenoiser.from_pipeline(pipeline)
    conditioning = denoiser.encode_prompts(PROMPTS)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    full = pipeline.unet(
        x,
        t,
        encoder_hidden_states=conditioning["encoder_hidden_states"],
        added_cond_kwargs={k: conditioning[k] for k in ("text_embeds", "time_ids")},
    ).sample
    assert torch.equal(denoiser.predict_noise(x, t, conditioning), full[:, :4])


def test_the_chain_is_written_for_the_schedulers_prediction_type():
    pipeline = tiny_sdxl.build_pipeline()
    pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, prediction_type="v_prediction")
    for sampler in SCHEDULERS:
        assert SDXLDenoiser.from_pipeline(pipeline, sampler=sampler).reverse_chain(3).prediction_type == "v_prediction"


def test_an_img2img_pipeline_of_base_weights_is_served_like_the_base_pipeline(denoiser):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    img2img = StableDiffusionXLImg2ImgPipeline(**denoiser.pipeline.components, add_watermarker=False)
    other = load_denoiser(img2img)
    assert type(other) is SDXLDenoiser
    assert torch.equal(other.encode_prompts(PROMPTS)["time_ids"], denoiser.encode_prompts(PROMPTS)["time_ids"])


def test_a_refiner_unet_that_also_takes_an_aesthetic_score_is_refused_in_one_line():
    from diffusers import StableDiffusionXLImg2ImgPipeline

    aesthetic = 5 * tiny_sdxl.TIME_EMBED_DIM + tiny_sdxl.PROJECTION_DIM
    without_flag = _with_unet(
        tiny_sdxl.build_pipeline(text_encoder=False), projection_class_embeddings_input_dim=aesthetic
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        **without_flag.components, requires_aesthetics_score=True, add_watermarker=False
    )
    for pipeline in (refiner, without_flag):
        with pytest.raises(TypeError, match="aesthetic score") as error:
            load_denoiser(pipeline)
        assert "\n" not in str(error.value)


def test_a_folder_missing_text_encoder_2_is_refused_in_one_line_naming_it(folder, tmp_path):
    broken = shutil.copytree(folder, tmp_path / "broken")
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(ValueError, match="text_encoder_2/") as error:
        load_denoiser(str(broken))
    assert "\n" not in str(error.value)
    without = StableDiffusionXLPipeline(
        **dict(tiny_sdxl.build_pipeline().components, text_encoder_2=None), add_watermarker=False
    )
    with pytest.raises(TypeError, match="no text_encoder_2"):
        load_denoiser(without)


def test_an_unknown_sampler_is_a_value_error_naming_the_argument(denoiser):
    with pytest.raises(ValueError, match="sampler must be one of"):
        SDXLDenoiser.from_pipeline(denoiser.pipeline, sampler="nope")
