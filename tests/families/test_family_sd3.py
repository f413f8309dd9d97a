"""SD3 / SD3.5 adapter on a tiny random StableDiffusion3Pipeline: the pipeline's own inputs, grid and steps."""

import warnings

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

from conjure_metrics import conjure_similarity
from conjure_metrics.chains_flow import _vp_signal_level
from conjure_metrics.conditioning import Conditioning
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.denoisers.sd3 import SD3Denoiser
from conjure_metrics.tiny import sd3 as tiny_sd3

PAIRS = (["a red fox", "a striped cat"], ["a blue fox", "a striped cat"])
LATENTS = (2, 16, 8, 8)
GUIDANCE = 2.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_sd3.save(tmp_path_factory.mktemp("tiny_sd3"))


@pytest.fixture(scope="module")
def denoiser(folder):
    return load_denoiser(str(folder))


@pytest.fixture(scope="module")
def pipeline(denoiser):
    """The loaded pipeline: diffusers' helpers and ``__call__`` run on the very modules the adapter uses."""
    return denoiser.pipeline


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rows(conditioning: Conditioning, *prompts_conditioning: Conditioning) -> Conditioning:
    return {key: torch.cat([c[key] for c in (conditioning, *prompts_conditioning)]) for key in conditioning}


def _one_line_error(error_info) -> str:
    message = str(error_info.value)
    assert "\n" not in message
    return message


# --- loading ------------------------------------------------------------------------------------


def test_folder_and_pipeline_object_resolve_to_the_sd3_adapter(folder, denoiser, pipeline):
    assert type(denoiser) is SD3Denoiser and type(pipeline) is StableDiffusion3Pipeline
    assert denoiser.sampler == "sde" and denoiser.max_sequence_length == 256
    assert denoiser.sample_shape == (16, 8, 8)  # the transformer's sample_size: the pipeline's default picture
    assert not any(p.requires_grad for p in denoiser.model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the full model (with T5) warns about nothing
        from_object = load_denoiser(pipeline)
    assert type(from_object) is SD3Denoiser and from_object.model is pipeline.transformer


def test_save_tiny_model_builds_the_sd3_folder(tmp_path):
    from conjure_metrics.tiny import save_tiny_model

    path = save_tiny_model(tmp_path / "sd3", family="sd3")
    assert '"StableDiffusion3Pipeline"' in (path / "model_index.json").read_text()
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == sorted(
        [
            "scheduler",
            "text_encoder",
            "text_encoder_2",
            "text_encoder_3",
            "tokenizer",
            "tokenizer_2",
            "tokenizer_3",
            "transformer",
            "vae",
        ]
    )


# --- model inputs -------------------------------------------------------------------------------


def test_conditioning_is_the_pipelines_encode_prompt_and_empty_prompt_its_negative(denoiser, pipeline):
    prompts = PAIRS[0]
    conditioning = denoiser.encode_prompts(["", *prompts])
    embeds, negative, pooled, negative_pooled = pipeline.encode_prompt(
        prompts, None, None, device=torch.device("cpu"), do_classifier_free_guidance=True
    )
    assert conditioning["encoder_hidden_states"].shape == (3, 16 + 256, 32)  # CLIP tokens, then 256 T5 tokens
    assert conditioning["pooled_projections"].shape == (3, 32)
    # the same batch as one encode_prompt call: bit for bit; the negative from another batch: to round-off
    same_batch = pipeline.encode_prompt(
        ["", *prompts], None, None, device=torch.device("cpu"), do_classifier_free_guidance=False
    )
    torch.testing.assert_close(conditioning["encoder_hidden_states"], same_batch[0], rtol=0, atol=0)
    torch.testing.assert_close(conditioning["pooled_projections"], same_batch[2], rtol=0, atol=0)
    torch.testing.assert_close(conditioning["encoder_hidden_states"][1:], embeds)
    torch.testing.assert_close(conditioning["pooled_projections"][1:], pooled)
    torch.testing.assert_close(conditioning["encoder_hidden_states"][:1], negative[:1])
    torch.testing.assert_close(conditioning["pooled_projections"][:1], negative_pooled[:1])


def test_max_sequence_length_is_the_pipelines(pipeline):
    short = SD3Denoiser.from_pipeline(pipeline, max_sequence_length=tiny_sd3.T5_LENGTH)
    embeds, _, _, _ = pipeline.encode_prompt(
        "a red fox", None, None, do_classifier_free_guidance=False, max_sequence_length=tiny_sd3.T5_LENGTH
    )
    hidden_states = short.encode_prompts(["a red fox"])["encoder_hidden_states"]
    assert hidden_states.shape == (1, 16 + tiny_sd3.T5_LENGTH, 32)
    torch.testing.assert_close(hidden_states, embeds, rtol=0, atol=0)


def test_predict_noise_is_one_transformer_call_as_the_pipeline_makes_it(denoiser, pipeline):
    # As __call__ builds it under guidance: latents twice, [negative; prompt] embeddings, t expanded to the batch.
    embeds, negative, pooled, negative_pooled = pipeline.encode_prompt(
        "a red fox", None, None, do_classifier_free_guidance=True
    )
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(4)
    latents, t = _random((1, *LATENTS[1:]), 0), scheduler.timesteps[1]
    expected = pipeline.transformer(
        hidden_states=torch.cat([latents] * 2),
        timestep=t.expand(2),
        encoder_hidden_states=torch.cat([negative, embeds]),
        pooled_projections=torch.cat([negative_pooled, pooled]),
        return_dict=False,
    )[0]
    conditioning = {
        "encoder_hidden_states": torch.cat([negative, embeds]),
        "pooled_projections": torch.cat([negative_pooled, pooled]),
    }
    output = denoiser.predict_noise(torch.cat([latents] * 2), t.expand(2), conditioning)
    assert output.dtype == torch.float32 and output.shape == (2, *LATENTS[1:])
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    # Encoded in one batch, the pooled projection differs from the pipeline's two batches by round-off only.
    batched = denoiser.predict_noise(torch.cat([latents] * 2), t.expand(2), denoiser.encode_prompts(["", "a red fox"]))
    torch.testing.assert_close(batched, expected)


def test_the_ode_chain_with_guidance_is_the_pipelines_whole_denoising_loop(denoiser, pipeline):
    # Every transformer input (timestep dtype and values included) and every latent of __call__, step by step.
    num_steps, prompt, x = 3, "a red fox", _random((1, *LATENTS[1:]), 1)
    seen = {"pipeline": [], "adapter": []}
    calls = seen["pipeline"]
    hook = pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append({k: v.clone() for k, v in kwargs.items() if torch.is_tensor(v)}),
        with_kwargs=True,
    )
    try:
        expected = pipeline(
            prompt, num_inference_steps=num_steps, guidance_scale=GUIDANCE, latents=x.clone(), output_type="latent"
        ).images
        calls = seen["adapter"]
        ode = SD3Denoiser.from_pipeline(pipeline, sampler="ode")
        # one prompt per call, as the pipeline encodes its negative and its prompt (same round-off)
        chain, conditioning = (
            ode.reverse_chain(num_steps),
            _rows(ode.encode_prompts([""]), ode.encode_prompts([prompt])),
        )
        for i in range(num_steps):
            unconditional, conditional = ode.predict_noise(
                torch.cat([x, x]), chain.timesteps[i].expand(2), conditioning
            ).chunk(2)
            guided = unconditional + GUIDANCE * (conditional - unconditional)
            x = (chain.x_coef[i] * x.double() + chain.output_coef[i] * guided.double()).float()
    finally:
        hook.remove()
    assert len(seen["pipeline"]) == len(seen["adapter"]) == num_steps
    for ours, theirs in zip(seen["adapter"], seen["pipeline"]):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype, key
            # the latents differ by the chain's float64 step vs the scheduler's float32 one; the rest bit for bit
            exact = {} if key == "hidden_states" else {"rtol": 0, "atol": 0}
            torch.testing.assert_close(ours[key], theirs[key], **exact)
    torch.testing.assert_close(x, expected)


# --- grid and steps -----------------------------------------------------------------------------


def _pipeline_timesteps(pipeline, num_steps):
    """The timesteps ``__call__`` gives the transformer (scheduler, shift and mu as the pipeline sets them)."""
    seen = []
    pipeline(
        PAIRS[0][0],
        num_inference_steps=num_steps,
        guidance_scale=1.0,
        output_type="latent",
        callback_on_step_end=lambda pipe, i, t, kwargs: seen.append(t) or {},
    )
    return torch.stack(seen)


@pytest.mark.parametrize("sampler", ["sde", "ancestral", "ode"])
def test_grid_is_the_pipelines(pipeline, sampler):
    chain = SD3Denoiser.from_pipeline(pipeline, sampler=sampler).reverse_chain(5)
    torch.testing.assert_close(chain.timesteps, _pipeline_timesteps(pipeline, 5), rtol=0, atol=0)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(5)
    assert scheduler.config.shift == 3.0 and not scheduler.config.use_dynamic_shifting
    torch.testing.assert_close(chain.alpha_bar, _vp_signal_level(scheduler.sigmas[:-1].double()))
    assert chain.prediction_type == "flow_prediction"


def test_a_dynamic_shift_scheduler_gets_the_pipelines_mu(folder):
    config = dict(
        FlowMatchEulerDiscreteScheduler.load_config(folder / "scheduler"),
        use_dynamic_shifting=True,
        base_image_seq_len=4,
        max_image_seq_len=64,
    )
    shifted = StableDiffusion3Pipeline.from_pretrained(
        folder, scheduler=FlowMatchEulerDiscreteScheduler.from_config(config)
    )
    adapter = SD3Denoiser.from_pipeline(shifted)
    assert adapter.shift_mu() is not None
    torch.testing.assert_close(adapter.reverse_chain(4).timesteps, _pipeline_timesteps(shifted, 4), rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["ancestral", "ode"])
def test_each_chain_step_is_the_diffusers_scheduler_step(pipeline, sampler):
    # "ancestral" is diffusers' stochastic_sampling step; "sde" has no diffusers step (see test_flow_chains).
    chain = SD3Denoiser.from_pipeline(pipeline, sampler=sampler).reverse_chain(4)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        pipeline.scheduler.config, stochastic_sampling=sampler == "ancestral"
    )
    scheduler.set_timesteps(4)
    x, velocity = _random(LATENTS, 2), _random(LATENTS, 3)
    for i, t in enumerate(scheduler.timesteps):  # each call moves the scheduler's step index on
        stepped = scheduler.step(velocity, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        z = _random(LATENTS, i)
        ours = chain.x_coef[i] * x.double() + chain.output_coef[i] * velocity.double() + chain.noise_std[i] * z.double()
        torch.testing.assert_close(stepped, ours.float())
    assert chain.stochastic.tolist() == ([True] * 3 + [False] if sampler == "ancestral" else [False] * 4)


def test_sde_chain_noise_level_option(pipeline):
    default = SD3Denoiser.from_pipeline(pipeline).reverse_chain(4)
    noisier = SD3Denoiser.from_pipeline(pipeline, noise_level=1.0).reverse_chain(4)
    ancestral = SD3Denoiser.from_pipeline(pipeline, sampler="ancestral").reverse_chain(4)
    assert default.stochastic.all() and bool((noisier.noise_std[1:] > default.noise_std[1:]).all())
    # from sigma = 1 the SDE takes the ancestral step; the grid is the same
    assert default.x_coef[0] == ancestral.x_coef[0] and torch.equal(default.timesteps, ancestral.timesteps)


# --- end to end ---------------------------------------------------------------------------------


def test_end_to_end_on_the_folder(folder, denoiser):
    result = conjure_similarity(*PAIRS, str(folder), num_steps=3, num_samples=2, guidance_scale=GUIDANCE)
    assert result.divergence[0] > 0 and result.divergence[1] == 0  # identical prompts: exactly 0
    torch.testing.assert_close(result.similarity, 1 / (1 + result.divergence))
    assert torch.isfinite(result.stderr).all() and result.stderr[1] == 0
    assert result.settings.weighting == "simple" and result.settings.num_steps == 3
    assert result.divergence.dtype == torch.float64 and result.terms is not None
    swapped = conjure_similarity(*PAIRS[::-1], denoiser, num_steps=3, num_samples=2, guidance_scale=GUIDANCE)
    torch.testing.assert_close(swapped.divergence, result.divergence, rtol=1e-6, atol=0)
    one_row = conjure_similarity(
        *PAIRS, denoiser, num_steps=3, num_samples=2, guidance_scale=GUIDANCE, max_batch_size=1
    )
    torch.testing.assert_close(one_row.divergence, result.divergence, rtol=1e-4, atol=0)


def test_the_sampler_setting_gives_a_view_with_the_same_options(folder, pipeline):
    adapter = SD3Denoiser.from_pipeline(pipeline, noise_level=1.2, max_sequence_length=tiny_sd3.T5_LENGTH)
    view = adapter.with_sampler("ancestral")
    assert (view.sampler, view.noise_level, view.max_sequence_length) == ("ancestral", 1.2, tiny_sd3.T5_LENGTH)
    assert view.model is adapter.model and adapter.sampler == "sde"
    result = conjure_similarity(
        *PAIRS,
        str(folder),
        num_steps=3,
        num_samples=2,
        guidance_scale=GUIDANCE,
        sampler="ancestral",
        max_sequence_length=tiny_sd3.T5_LENGTH,
    )
    assert result.divergence[0] > 0 and result.divergence[1] == 0


@pytest.mark.parametrize("sampler", ["sde", "ancestral"])
@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_stochastic_samplers_give_finite_positive_divergences(pipeline, sampler, weighting):
    adapter = SD3Denoiser.from_pipeline(pipeline, sampler=sampler, max_sequence_length=tiny_sd3.T5_LENGTH)
    result = conjure_similarity(
        ["a red fox"], ["a blue car"], adapter, num_steps=3, num_samples=2, guidance_scale=GUIDANCE, weighting=weighting
    )
    assert torch.isfinite(result.divergence).all() and bool((result.divergence > 0).all())


def test_girsanov_on_the_ode_sampler_is_refused_in_one_line(pipeline):
    ode = SD3Denoiser.from_pipeline(pipeline, sampler="ode")
    with pytest.raises(ValueError, match="girsanov") as error:
        conjure_similarity(*PAIRS, ode, num_steps=3, num_samples=2, weighting="girsanov")
    assert "deterministic" in _one_line_error(error)
    assert torch.isfinite(conjure_similarity(*PAIRS, ode, num_steps=3, num_samples=2).divergence).all()


# --- without T5 ---------------------------------------------------------------------------------


def test_without_t5_the_pipeline_pads_with_zeros_and_one_warning_says_so(folder):
    with pytest.warns(UserWarning, match="T5") as record:
        no_t5 = load_denoiser(str(folder), components={"text_encoder_3": None, "tokenizer_3": None})
    assert sum("T5" in str(w.message) for w in record) == 1
    assert type(no_t5) is SD3Denoiser and no_t5.pipeline.text_encoder_3 is None
    hidden_states = no_t5.encode_prompts(["", "a red fox"])["encoder_hidden_states"]
    assert hidden_states.shape == (2, 16 + 256, 32) and not hidden_states[:, 16:].any()
    embeds, _, _, _ = no_t5.pipeline.encode_prompt("a red fox", None, None, do_classifier_free_guidance=False)
    torch.testing.assert_close(hidden_states[1:], embeds, rtol=0, atol=0)
    result = conjure_similarity(*PAIRS, no_t5, num_steps=3, num_samples=2, guidance_scale=GUIDANCE)
    assert result.divergence[0] > 0 and result.divergence[1] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # once: not again for each sampler view of the model
        assert no_t5.with_sampler("ode").pipeline is no_t5.pipeline


def test_a_folder_saved_without_t5_loads_and_warns(pipeline, tmp_path):
    StableDiffusion3Pipeline(**dict(pipeline.components, text_encoder_3=None, tokenizer_3=None)).save_pretrained(
        tmp_path
    )
    with pytest.warns(UserWarning, match="T5"):
        no_t5 = load_denoiser(str(tmp_path))
    assert no_t5.pipeline.text_encoder_3 is None
    assert not no_t5.encode_prompts(["a red fox"])["encoder_hidden_states"][:, 16:].any()


# --- pictures -----------------------------------------------------------------------------------


def test_decode_is_the_pipelines_vae_path(denoiser, pipeline):
    latents = _random(LATENTS, 4)
    images = denoiser.decode(latents)
    assert images.shape == (2, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1
    vae = pipeline.vae
    decoded = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
    torch.testing.assert_close(images, pipeline.image_processor.postprocess(decoded, output_type="pt"))


# --- bad input ----------------------------------------------------------------------------------


def test_a_variance_preserving_sampler_is_refused_with_the_flow_samplers(folder, pipeline):
    with pytest.raises(ValueError, match="sampler") as error:
        load_denoiser(str(folder), sampler="ddpm")
    message = _one_line_error(error)
    assert "'ddpm'" in message and all(name in message for name in ("sde", "ancestral", "ode"))
    with pytest.raises(ValueError, match="sampler"):
        SD3Denoiser.from_pipeline(pipeline, sampler="euler_ancestral")


@pytest.mark.parametrize(
    ("option", "value"),
    [("noise_level", 0.0), ("max_sequence_length", 513), ("max_sequence_length", 0), ("sample_size", 5)],
)
def test_bad_options_are_one_line_errors_naming_the_option(pipeline, option, value):
    with pytest.raises(ValueError, match=option) as error:
        SD3Denoiser.from_pipeline(pipeline, **{option: value})
    _one_line_error(error)


def test_a_smaller_sample_size_is_used(pipeline):
    small = SD3Denoiser.from_pipeline(pipeline, sample_size=4)
    assert small.sample_shape == (16, 4, 4)
    x = _random((1, 16, 4, 4), 5)
    output = small.predict_noise(x, small.reverse_chain(2).timesteps[:1], small.encode_prompts(["a red fox"]))
    assert output.shape == x.shape and torch.isfinite(output).all()
