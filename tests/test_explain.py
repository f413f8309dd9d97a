"""explain: per-step contributions consistent with the metric, pictures under both prompts, figure and CLI."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser, conjure_similarity, explain  # noqa: E402
from conjure_metrics.cli import main  # noqa: E402
from conjure_metrics.tiny import build_tiny_components  # noqa: E402
from conjure_metrics.weighting import WEIGHTINGS  # noqa: E402

SETTINGS = dict(num_steps=4, num_samples=3, guidance_scale=3.0, seed=2)


@pytest.fixture(scope="module")
def latent_model():
    # float64: explain's callback batches model calls differently from the metric, and in float32
    # the round-off of that difference depends on the thread count.
    components = build_tiny_components(latent=True)
    for name in ("unet", "text_encoder", "vae"):
        components[name].double()
    return DiffusersDenoiser(**components)


@pytest.mark.parametrize("weighting", ["simple", "girsanov"])
def test_contributions_sum_to_the_divergence_the_metric_reports(latent_model, weighting):
    result = explain("a red fox", "a blue fox", latent_model, **SETTINGS)
    metric = ConjureSimilarity(latent_model, weighting=weighting, **SETTINGS)
    metric.update(["a red fox"], ["a blue fox"])
    reported = metric.pair_results()["divergence"][0]
    torch.testing.assert_close(result.contributions[weighting].sum(), reported, rtol=1e-9, atol=0)
    assert result.divergence[weighting] == pytest.approx(float(reported), rel=1e-9)


def test_pictures_are_decoded_through_the_vae_for_both_trajectories_and_prompts(latent_model):
    result = explain("a red fox", "a blue fox", latent_model, **SETTINGS)
    # 8x8 latents decode to 16x16 RGB pixels
    assert result.denoised.shape == (2, 2, 4, 3, 16, 16)
    assert 0 <= result.denoised.min() and result.denoised.max() <= 1
    assert result.difference.shape == (2, 4, 16, 16)
    assert result.difference.sum() > 0
    assert not torch.equal(result.denoised[0, 0], result.denoised[0, 1])


def test_identical_prompts_have_no_contribution_and_no_difference(latent_model):
    result = explain("a zebra", "a zebra", latent_model, **SETTINGS)
    assert torch.all(result.contributions["simple"] == 0) and torch.all(result.difference == 0)


def test_metric_explain_uses_its_settings_and_leaves_state_untouched(latent_model):
    metric = ConjureSimilarity(latent_model, **SETTINGS)
    metric.update(["a cat"], ["a dog"])
    before = metric.num_pairs.clone()
    result = metric.explain("a red fox", "a blue fox")
    expected = conjure_similarity(["a red fox"], ["a blue fox"], latent_model, **SETTINGS).divergence[0]
    assert result.divergence["simple"] == pytest.approx(float(expected), rel=1e-9)
    assert torch.equal(metric.num_pairs, before)


def test_figure_is_written_and_is_not_a_constant_image(latent_model, tmp_path):
    result = explain("a red fox", "a blue fox", latent_model, **SETTINGS)
    path = tmp_path / "explain.png"
    result.figure(path=path)
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 10
    assert result._repr_png_().startswith(b"\x89PNG")


def test_bad_sample_index_is_a_value_error(latent_model):
    with pytest.raises(ValueError, match="sample_index"):
        explain("a", "b", latent_model, sample_index=3, **SETTINGS)


def test_cli_explain_writes_a_png(tmp_path, capsys):
    from conjure_metrics.tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "explain",
                "a red fox",
                "a blue fox",
                "--model",
                str(model),
                "--out",
                str(out),
                "--steps",
                "3",
                "--samples",
                "2",
                "--quiet",
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000 and "divergence" in capsys.readouterr().out


def test_cli_explain_adds_the_png_suffix_it_writes_and_checks_paths_before_computing(tmp_path, capsys, monkeypatch):
    import importlib

    from conjure_metrics.tiny import save_tiny_model

    explain_module = importlib.import_module("conjure_metrics.explain")

    model = save_tiny_model(tmp_path / "model")
    argv = ["explain", "a red fox", "a blue fox", "--model", str(model), "--steps", "2", "--samples", "1", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext.png").stat().st_size > 1000
    assert f"wrote {tmp_path / 'noext.png'}" in capsys.readouterr().out

    def must_not_run(*args, **kwargs):
        raise AssertionError("computed before checking the output path")

    monkeypatch.setattr(explain_module, "explain", must_not_run)
    assert main(argv + ["--out", str(tmp_path / "missing" / "fig.png")]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it
        main(argv + ["--highlight", "-1"])
    assert refused.value.code == 2 and "--highlight" in capsys.readouterr().err


def test_deterministic_sampler_has_no_girsanov_view(tmp_path):
    components = build_tiny_components()
    model = DiffusersDenoiser(**components, sampler="ddim", eta=0.0)
    result = explain("a red fox", "a blue fox", model, num_steps=3, num_samples=1, guidance_scale=2.0)
    views = set(WEIGHTINGS) - {"girsanov"}
    assert set(result.divergence) == views and set(result.contributions) == views
    with pytest.raises(ValueError, match="stochastic steps"):
        result.figure(weighting="girsanov")
    with pytest.raises(ValueError, match="highlight"):
        result.figure(highlight=-2)


def test_min_timestep_above_every_step_is_refused(latent_model):
    with pytest.raises(ValueError, match="min_timestep"):
        explain("a", "b", latent_model, min_timestep=5000, **SETTINGS)


def test_pictures_show_each_prompts_own_image_in_the_right_rows():
    # Analytic model with uniform images: prompt a is light grey (+0.6 -> pixel 0.8), b dark (-0.6 -> 0.2).
    from conjure_metrics.analytic import GaussianConditionals
    from conjure_metrics.chains import linear_betas

    shape = (3, 4, 4)
    model = GaussianConditionals(
        {"": torch.zeros(shape), "a": torch.full(shape, 0.6), "b": torch.full(shape, -0.6)},
        {"": 1.0, "a": 0.01, "b": 0.01},
        torch.cumprod(1 - linear_betas(), 0),
    )
    result = explain("a", "b", model, num_steps=8, num_samples=2, guidance_scale=1.0)
    grey = result.denoised.mean(dim=(-1, -2, -3))  # (trajectory, prompt, step)
    # At high noise x̂0 is the conditioning prompt's image, on either trajectory ...
    torch.testing.assert_close(grey[:, :, 0], torch.tensor([[0.8, 0.2], [0.8, 0.2]]), atol=0.03, rtol=0)
    # ... at the last step the state has decided: x̂0 is the trajectory's own image, under either prompt.
    torch.testing.assert_close(grey[:, :, -1], torch.tensor([[0.8, 0.8], [0.2, 0.2]]), atol=0.03, rtol=0)
    other = explain("a", "b", model, num_steps=8, num_samples=2, guidance_scale=1.0, sample_index=1)
    assert not torch.equal(other.denoised, result.denoised)  # another Monte-Carlo sample, another picture
