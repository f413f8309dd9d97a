"""Which adapter serves a model (the registry), and the sampler as a setting of every public entry point."""

import json
import shutil

import pytest
import torch

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser, conjure_similarity, explain
from conjure_metrics.cli import main
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.denoisers.registry import FAMILIES, UnsupportedModelError, adapter_for
from conjure_metrics.tiny import build_tiny_components, save_tiny_model
from tests.helpers import gaussian_model

# girsanov: its step weights come from the chain, so samplers give clearly different numbers even on a
# random tiny model (whose simple ||Δε||² hardly depends on the state).
FAST = dict(num_steps=3, num_samples=2, guidance_scale=2.0, weighting="girsanov")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("registry_sd"))


def _folder_of_class(tmp_path, class_name):
    folder = tmp_path / class_name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.42.1"}))
    return folder


def test_every_registered_adapter_imports_and_serves_its_pipeline_names():
    for name in FAMILIES:
        adapter = adapter_for(name)
        assert name in getattr(adapter, "pipeline_classes", ("StableDiffusionPipeline",))


def test_an_unsupported_pipeline_folder_is_refused_by_name_before_any_weights_load(tmp_path):
    folder = _folder_of_class(tmp_path, "KandinskyV22Pipeline")
    with pytest.raises(UnsupportedModelError, match="KandinskyV22Pipeline.*supported pipelines: .*FluxPipeline"):
        ConjureSimilarity(str(folder))
    assert issubclass(UnsupportedModelError, ValueError)


def test_cli_names_an_unsupported_pipeline_in_one_line(tmp_path, capsys):
    folder = _folder_of_class(tmp_path, "WanPipeline")
    assert main(["similarity", "a cat", "a dog", "--model", str(folder), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "WanPipeline" in error and "does not support" in error


def test_a_folder_that_is_no_pipeline_is_named(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(FileNotFoundError, match="without model_index.json"):
        load_denoiser(str(tmp_path / "weights"))


def test_a_stable_diffusion_folder_without_model_index_still_loads(sd_folder, tmp_path):
    copy = shutil.copytree(sd_folder, tmp_path / "hand_assembled")
    (copy / "model_index.json").unlink()
    assert isinstance(load_denoiser(str(copy)), DiffusersDenoiser)


def test_a_diffusers_pipeline_object_goes_to_its_family_adapter():
    from diffusers import StableDiffusionPipeline

    components = build_tiny_components(latent=True)
    pipeline = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    denoiser = load_denoiser(pipeline)
    assert isinstance(denoiser, DiffusersDenoiser) and denoiser.unet is components["unet"]


# --- the sampler setting ------------------------------------------------------------------------


def test_sampler_setting_gives_the_score_of_a_model_built_with_that_sampler(sd_folder):
    # On an ε model, DDIM with eta = 1 and Euler ancestral on the same timesteps are DDPM's ancestral
    # step: the same process. DDIM with eta < 1 (a loading option of the model) is another.
    chosen = conjure_similarity(["a red fox"], ["a blue fox"], str(sd_folder), sampler="ddim", eta=0.3, **FAST)
    built = DiffusersDenoiser.from_pretrained(sd_folder, sampler="ddim", eta=0.3)
    direct = conjure_similarity(["a red fox"], ["a blue fox"], built, **FAST)
    default = conjure_similarity(["a red fox"], ["a blue fox"], str(sd_folder), eta=0.3, **FAST)
    torch.testing.assert_close(chosen.divergence, direct.divergence, rtol=1e-6, atol=0)
    assert float(chosen.divergence[0]) != pytest.approx(float(default.divergence[0]), rel=1e-2)
    assert chosen.settings.sampler == "ddim" and default.settings.sampler is None


def test_choosing_a_sampler_shares_the_model_instead_of_copying_it():
    denoiser = DiffusersDenoiser(**build_tiny_components())
    metric = ConjureSimilarity(denoiser, sampler="euler_ancestral", **FAST)
    assert metric.denoiser.unet is denoiser.unet and metric.denoiser.sampler == "euler_ancestral"
    assert denoiser.sampler == "ddpm"  # the caller's object is left as it was
    assert "sampler='euler_ancestral'" in repr(metric)


def test_one_model_as_both_sides_stays_a_prompt_comparison_with_a_sampler():
    denoiser = DiffusersDenoiser(**build_tiny_components())
    assert ConjureSimilarity(denoiser, model_b=denoiser, sampler="ddim", **FAST).mode == "prompts"


def test_a_sampler_the_model_does_not_offer_is_refused_by_name():
    denoiser = DiffusersDenoiser(**build_tiny_components())
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddpm', 'ddim', 'euler_ancestral'\)"):
        ConjureSimilarity(denoiser, sampler="sde")
    with pytest.raises(TypeError, match="sampler"):
        ConjureSimilarity(denoiser, sampler=3)


def test_a_model_without_a_choice_of_sampler_refuses_one():
    with pytest.raises(ValueError, match="offers no choice of sampler"):
        conjure_similarity(["a"], ["b"], gaussian_model(), sampler="ddim", guidance_scale=1.0)


def test_explain_and_metric_use_the_sampler_setting(sd_folder):
    denoiser = DiffusersDenoiser.from_pretrained(sd_folder)
    metric = ConjureSimilarity(denoiser, sampler="ddim", **FAST)
    metric.update(["a red fox"], ["a blue fox"])
    pictured = explain("a red fox", "a blue fox", denoiser, sampler="ddim", **FAST)
    functional = conjure_similarity(["a red fox"], ["a blue fox"], denoiser, sampler="ddim", **FAST)
    torch.testing.assert_close(metric.pair_results()["divergence"].float(), functional.divergence.float())
    torch.testing.assert_close(
        pictured.contributions["girsanov"].sum(),
        functional.divergence[0].to(pictured.contributions["girsanov"].dtype),
        rtol=1e-5,
        atol=0,
    )


def test_cli_sampler_option_reaches_the_model(sd_folder, tmp_path, capsys):
    out = tmp_path / "similarity.json"
    argv = [
        "similarity",
        "a red fox",
        "a blue fox",
        "--model",
        str(sd_folder),
        "--steps",
        "3",
        "--samples",
        "2",
        "--guidance",
        "2",
        "--weighting",
        "girsanov",
        "--quiet",
        "--json",
        str(out),
    ]
    assert main(argv + ["--sampler", "euler_ancestral"]) == 0
    expected = conjure_similarity(["a red fox"], ["a blue fox"], str(sd_folder), sampler="euler_ancestral", **FAST)
    from_cli = json.loads(out.read_text())
    assert from_cli["pairs"][0]["divergence"] == pytest.approx(float(expected.divergence[0]), rel=1e-6)
    assert from_cli["settings"]["sampler"] == "euler_ancestral"
    capsys.readouterr()
    assert main(argv + ["--sampler", "sde"]) == 2  # a flow sampler on an SD model: refused by name
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("conjure:")]
    assert len(error) == 1 and "sampler must be one of" in error[0]
