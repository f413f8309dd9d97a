"""Flux.1 adapter: tiny dev and schnell pipelines, checked against what FluxPipeline itself builds and steps."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from conjure_metrics import conjure_similarity
from conjure_metrics.denoisers.flux import FluxDenoiser
from conjure_metrics.denoisers.instrumented import InstrumentedDenoiser
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.tiny import flux as tiny_flux

PAIRS = (["a red fox", "a cat"], ["a blue fox", "a cat"])
SHAPE = (16, 64)  # 8x8 latents of 16 channels in 2x2 patches
SETTINGS = {"num_steps": 3, "num_samples": 2, "guidance_scale": 2.0, "progress_bar": False}


@pytest.fixture(scope="module")
def dev_path(tmp_path_factory):
    return tiny_flux.save(tmp_path_factory.mktemp("flux_dev"))


@pytest.fixture(scope="module")
def schnell_path(tmp_path_factory):
    return tiny_flux.save(tmp_path_factory.mktemp("flux_schnell"), guidance_embeds=False)


@pytest.fixture(scope="module")
def dev(dev_path):
    return load_denoiser(str(dev_path))


@pytest.fixture(scope="module")
def schnell(schnell_path):
    return load_denoiser(str(schnell_path))


@pytest.fixture(params=["dev", "schnell"])
def flux(request):
    return request.getfixturevalue(request.param)


def _packed_noise(pipeline, batch=1, seed=0):
    """Initial latents exactly as FluxPipeline.prepare_latents draws and packs them."""
    latents, _ = pipeline.prepare_latents(batch, 16, 16, 16, torch.float32, "cpu", torch.Generator().manual_seed(seed))
    return latents


# --- loading ---------------------------------------------------------------------------------------


def test_a_folder_and_a_pipeline_load_as_flux_denoisers(dev, schnell):
    for denoiser in (dev, schnell):
        assert type(denoiser) is FluxDenoiser and denoiser.sampler == "sde"
        assert denoiser.sample_shape == SHAPE and (denoiser.height, denoiser.width) == (16, 16)
        assert not any(p.requires_grad for p in denoiser.model.parameters())
    assert (dev.guidance_mode, schnell.guidance_mode) == ("embedded", "none")
    from_pipeline = load_denoiser(dev.pipeline)
    assert type(from_pipeline) is FluxDenoiser and from_pipeline.pipeline is dev.pipeline
    assert from_pipeline.guidance_mode == "embedded"


def test_loading_options_reach_the_adapter(dev_path):
    small = load_denoiser(str(dev_path), sampler="ode", height=8, width=8, max_sequence_length=16)
    assert small.sampler == "ode" and small.sample_shape == (4, 64) and small.max_sequence_length == 16
    assert small.encode_prompts(["a cat"])["encoder_hidden_states"].shape == (1, 16, 16)


def test_packed_samples_are_what_the_pipeline_draws(flux):
    assert tuple(_packed_noise(flux.pipeline, batch=3).shape) == (3, *flux.sample_shape)


# --- model inputs ----------------------------------------------------------------------------------


def test_conditioning_is_what_encode_prompt_builds(flux):
    prompts = ["a red fox", ""]
    conditioning = flux.encode_prompts(prompts)
    prompt_embeds, pooled, text_ids = flux.pipeline.encode_prompt(prompts, device="cpu", max_sequence_length=512)
    assert set(conditioning) == {"encoder_hidden_states", "pooled_projections"}
    assert torch.equal(conditioning["encoder_hidden_states"], prompt_embeds)
    assert torch.equal(conditioning["pooled_projections"], pooled)
    assert text_ids.shape == (512, 3) and not text_ids.any()  # the ids predict_noise rebuilds
    alone = flux.encode_prompts(["a red fox"])  # rows do not depend on the batch
    torch.testing.assert_close(alone["encoder_hidden_states"][0], prompt_embeds[0])


@pytest.mark.parametrize("scale", [1.0, 4.5])
def test_predict_noise_is_one_transformer_call_built_as_the_pipeline_builds_it(flux, scale):
    pipeline = flux.pipeline
    latents = pipeline._pack_latents(torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1)), 2, 16, 8, 8)
    prompt_embeds, pooled, text_ids = pipeline.encode_prompt(["a red fox", "a cat"], device="cpu")
    image_ids = pipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float32)
    t = flux.reverse_chain(3).timesteps[1]
    guidance = None
    if pipeline.transformer.config.guidance_embeds:
        guidance = torch.full([1], scale, dtype=torch.float32).expand(2)
    expected = pipeline.transformer(
        hidden_states=latents,
        timestep=t.expand(2).to(latents.dtype) / 1000,
        guidance=guidance,
        pooled_projections=pooled,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
    got = flux.predict_noise(latents, t.expand(2), flux.encode_prompts(["a red fox", "a cat"]), guidance_scale=scale)
    assert got.shape == (2, *SHAPE) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_embedded_guidance_is_a_model_input_for_dev_only(dev, schnell):
    x = _packed_noise(dev.pipeline)
    t = torch.tensor([500.0])
    for model, changes in ((dev, True), (schnell, False)):
        c = model.encode_prompts(["a red fox"])
        low, high = (model.predict_noise(x, t, c, guidance_scale=w) for w in (1.0, 5.0))
        assert torch.equal(low, high) is not changes


# --- the reverse chain -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_grid_is_the_pipelines_with_its_dynamic_shift(flux, num_steps):
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(flux.pipeline.scheduler.config)
    config = scheduler.config
    mu = calculate_shift(16, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    assert flux.mu == mu
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)  # as FluxPipeline.__call__ passes them
    timesteps, _ = retrieve_timesteps(scheduler, num_steps, "cpu", sigmas=sigmas, mu=mu)
    for sampler in FluxDenoiser.samplers:
        chain = FluxDenoiser.from_pipeline(flux.pipeline, sampler=sampler).reverse_chain(num_steps)
        assert chain.prediction_type == "flow_prediction"
        torch.testing.assert_close(chain.timesteps.float(), timesteps, rtol=0, atol=0)
    if num_steps > 1:  # dev's tiny image (16 tokens) shifts the grid towards less noise; schnell's is plain
        unshifted = 1000 * torch.linspace(1, 1 / num_steps, num_steps)
        assert torch.allclose(timesteps, unshifted) is (not config.use_dynamic_shifting)


@pytest.mark.parametrize("sampler", ["ode", "ancestral"])
def test_a_chain_step_is_the_diffusers_scheduler_step(flux, sampler):
    denoiser = FluxDenoiser.from_pipeline(flux.pipeline, sampler=sampler)
    chain = denoiser.reverse_chain(3)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        flux.pipeline.scheduler.config, stochastic_sampling=sampler == "ancestral"
    )
    timesteps, _ = retrieve_timesteps(scheduler, 3, "cpu", sigmas=np.linspace(1.0, 1 / 3, 3), mu=denoiser.mu)
    conditioning = denoiser.encode_prompts(["a red fox"])
    x = _packed_noise(flux.pipeline)
    for i, t in enumerate(timesteps):
        output = denoiser.predict_noise(x, t.expand(1), conditioning, guidance_scale=2.0)
        stepped = scheduler.step(output, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        ours = chain.x_coef[i] * x.double() + chain.output_coef[i] * output.double() + chain.noise_std[i] * z.double()
        torch.testing.assert_close(ours.float(), stepped)
        x = stepped


def _pipeline_latents(pipeline, x, **call_options):
    """Timestep and latents after every step of FluxPipeline.__call__ started from ``x``."""
    seen = []

    def record(pipeline, i, t, tensors):
        seen.append((t.clone(), tensors["latents"].clone()))
        return tensors

    pipeline(
        "a red fox",
        height=16,
        width=16,
        num_inference_steps=3,
        latents=x.clone(),
        output_type="latent",
        callback_on_step_end=record,
        **call_options,
    )
    assert len(seen) == 3
    return seen


def test_ode_trajectory_is_the_pipelines_own_denoising_loop(flux):
    denoiser = FluxDenoiser.from_pipeline(flux.pipeline, sampler="ode")
    x = _packed_noise(flux.pipeline, seed=3)
    seen = _pipeline_latents(flux.pipeline, x, guidance_scale=2.0)
    chain, conditioning = denoiser.reverse_chain(3), denoiser.encode_prompts(["a red fox"])
    for i, (t, latents) in enumerate(seen):
        assert t == chain.timesteps[i]
        output = denoiser.predict_noise(x, chain.timesteps[i].expand(1), conditioning, guidance_scale=2.0)
        x = chain.x_coef[i].float() * x + chain.output_coef[i].float() * output
        torch.testing.assert_close(x, latents)


def test_true_cfg_trajectory_is_the_pipelines_true_cfg_loop(flux):
    # What the estimator does in "cfg" mode (out(∅) + w (out(y) - out(∅))) is the pipeline's true_cfg_scale,
    # with ∅ encoded as the negative prompt and a dev transformer's guidance input at its default 3.5.
    denoiser = FluxDenoiser.from_pipeline(flux.pipeline, sampler="ode", true_cfg_negative_prompt="blurry")
    x = _packed_noise(flux.pipeline, seed=4)
    seen = _pipeline_latents(flux.pipeline, x, negative_prompt="blurry", true_cfg_scale=2.0)
    chain, conditioning = denoiser.reverse_chain(3), denoiser.encode_prompts(["a red fox", ""])
    for i, (t, latents) in enumerate(seen):
        conditional, unconditional = denoiser.predict_noise(x.expand(2, *SHAPE), t.expand(2), conditioning)
        output = unconditional + 2.0 * (conditional - unconditional)
        x = chain.x_coef[i].float() * x + chain.output_coef[i].float() * output
        torch.testing.assert_close(x[0], latents[0])


def test_noise_level_reaches_the_sde_chain(dev):
    gentle = FluxDenoiser.from_pipeline(dev.pipeline, noise_level=0.3).reverse_chain(4)
    default = dev.reverse_chain(4)
    assert torch.equal(gentle.timesteps, default.timesteps)
    assert (gentle.noise_std[1:-1] < default.noise_std[1:-1]).all()


# --- end to end ------------------------------------------------------------------------------------


def test_similarity_end_to_end(dev_path, dev):
    result = conjure_similarity(*PAIRS, str(dev_path), **SETTINGS)
    assert result.divergence[0] > 0 and result.divergence[1] == 0
    torch.testing.assert_close(result.similarity, 1 / (1 + result.divergence))
    assert torch.isfinite(result.stderr).all() and result.settings.guidance_scale == 2.0
    assert result.terms.squared.shape[:2] == (2, 2)
    loaded = conjure_similarity(*PAIRS, dev, **SETTINGS).divergence
    torch.testing.assert_close(loaded, result.divergence, rtol=0, atol=0)
    swapped = conjure_similarity(*reversed(PAIRS), dev, **SETTINGS).divergence
    torch.testing.assert_close(swapped, result.divergence, rtol=1e-6, atol=0)
    one_row = conjure_similarity(*PAIRS, dev, max_batch_size=1, **SETTINGS).divergence
    torch.testing.assert_close(one_row, result.divergence, rtol=1e-4, atol=0)


def test_guidance_scale_changes_dev_but_not_schnell(dev, schnell):
    settings = dict(SETTINGS, guidance_scale=5.0)
    low, high = (conjure_similarity(*PAIRS, dev, **options).divergence for options in (SETTINGS, settings))
    assert low[0] != high[0] and low[1] == high[1] == 0
    torch.testing.assert_close(
        conjure_similarity(*PAIRS, schnell, **SETTINGS).divergence,
        conjure_similarity(*PAIRS, schnell, **settings).divergence,
        rtol=0,
        atol=0,
    )


class _Spy(InstrumentedDenoiser):
    """Counts rows and remembers the keyword arguments the estimator passes."""

    def predict_noise(self, x, timesteps, conditioning, **options):
        self.__dict__.setdefault("options", set()).update(options.items())
        return super().predict_noise(x, timesteps, conditioning, **options)


def test_only_true_cfg_evaluates_an_unconditional_branch(dev, schnell):
    # One pair, 2 samples, 3 steps: 2 prompts x 2 samples at step 0, then 2 trajectories x 2 prompts x 2 samples.
    rows = {}
    true_cfg = FluxDenoiser.from_pipeline(dev.pipeline, true_cfg_negative_prompt="blurry")
    for name, model in (("dev", dev), ("schnell", schnell), ("true_cfg", true_cfg)):
        spy = _Spy(model)
        conjure_similarity(["a red fox"], ["a blue fox"], spy, **SETTINGS)
        rows[name] = spy.rows
        expected = {("guidance_scale", 2.0)} if name == "dev" else set()
        assert spy.options == expected, name
    assert rows["dev"] == rows["schnell"] == 4 + 2 * 8
    assert rows["true_cfg"] > rows["dev"]
    assert true_cfg.guidance_mode == "cfg"


def test_true_cfg_encodes_the_empty_prompt_as_the_negative_prompt(dev):
    true_cfg = FluxDenoiser.from_pipeline(dev.pipeline, true_cfg_negative_prompt="blurry")
    unconditional = true_cfg.encode_prompts(["", "a cat"])
    negative = dev.encode_prompts(["blurry", "a cat"])
    for key in negative:
        assert torch.equal(unconditional[key], negative[key])


# --- pictures --------------------------------------------------------------------------------------


def test_decode_unpacks_and_matches_the_pipelines_decoding(dev):
    pipeline = dev.pipeline
    unpacked = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    packed = pipeline._pack_latents(unpacked, 2, 16, 8, 8)
    assert torch.equal(dev.unpack_latents(packed), unpacked)
    images = dev.decode(packed)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    config = pipeline.vae.config
    # FluxPipeline.__call__'s output_type="pt" path
    latents = pipeline._unpack_latents(packed, 16, 16, pipeline.vae_scale_factor)
    latents = latents / config.scaling_factor + config.shift_factor
    decoded = pipeline.vae.decode(latents, return_dict=False)[0]
    expected = pipeline.image_processor.postprocess(decoded, output_type="pt")
    torch.testing.assert_close(images, expected)


def test_non_square_images_pack_and_unpack_as_the_pipeline_does(dev):
    wide = FluxDenoiser.from_pipeline(dev.pipeline, height=8, width=16)
    assert wide.sample_shape == (8, 64)  # 4x8 latents in 2x4 patches
    unpacked = torch.randn(1, 16, 4, 8, generator=torch.Generator().manual_seed(5))
    packed = dev.pipeline._pack_latents(unpacked, 1, 16, 4, 8)
    assert torch.equal(wide.unpack_latents(packed), unpacked)
    assert wide.decode(packed).shape == (1, 3, 8, 16)
    assert wide.predict_noise(packed, torch.tensor([500.0]), wide.encode_prompts(["a cat"])).shape == packed.shape


def test_without_a_vae_pictures_show_latent_channels(dev_path):
    latents_only = load_denoiser(str(dev_path), load_vae=False, height=32, width=32)  # no VAE: 8x downsampling assumed
    assert latents_only.pipeline.vae is None and latents_only.sample_shape == (4, 64)
    pictures = latents_only.decode(torch.zeros(1, 4, 64))
    assert pictures.shape == (1, 3, 4, 4) and torch.all(pictures == 0.5)


def test_half_precision_runs_the_transformer_in_its_dtype_and_returns_float32(dev_path, dev):
    half = load_denoiser(str(dev_path), torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    x, t = _packed_noise(dev.pipeline), torch.tensor([700.0])
    got = half.predict_noise(x, t, half.encode_prompts(["a red fox"]), guidance_scale=2.0)
    reference = dev.predict_noise(x, t, dev.encode_prompts(["a red fox"]), guidance_scale=2.0)
    assert got.dtype == torch.float32
    assert (got - reference).norm() < 0.05 * reference.norm()


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"guidance": "cfg"}, "true_cfg_negative_prompt"),
        ({"guidance": "embedded", "true_cfg_negative_prompt": ""}, "true_cfg_negative_prompt"),
        ({"guidance": "classifier-free"}, "guidance"),
        ({"height": 18}, "height"),
        ({"width": 0}, "width"),
        ({"max_sequence_length": 513}, "max_sequence_length"),
        ({"sampler": "ddpm"}, "sampler"),
        ({"noise_level": -1.0}, "noise_level"),
    ],
)
def test_bad_options_are_one_line_value_errors(dev, kwargs, argument):
    with pytest.raises(ValueError, match=argument) as error:
        FluxDenoiser.from_pipeline(dev.pipeline, **kwargs)
    assert "\n" not in str(error.value)


def test_embedded_guidance_needs_a_guidance_embedding(schnell):
    with pytest.raises(ValueError, match="guidance_embeds") as error:
        FluxDenoiser.from_pipeline(schnell.pipeline, guidance="embedded")
    assert "\n" not in str(error.value)


def test_unpacked_latents_and_a_bare_prompt_are_refused(dev):
    conditioning = dev.encode_prompts(["a cat"])
    with pytest.raises(ValueError, match="packed latents") as error:
        dev.predict_noise(torch.zeros(1, 16, 8, 8), torch.tensor([500.0]), conditioning)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="prompts"):
        dev.encode_prompts("a cat")
    with pytest.raises(TypeError, match="conditioning"):
        dev.predict_noise(torch.zeros(1, *SHAPE), torch.tensor([500.0]), conditioning["encoder_hidden_states"])
