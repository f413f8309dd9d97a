"""Every model family through every public entry point, from a folder loaded by path, offline.

Per family: ``ConjureSimilarity(model=folder)``, the functional API, ``conjure similarity``,
``conjure compare``, ``explain`` (pictures decoded through the VAE, Flux's latents unpacked) and the
evaluate module agree with each other; identical prompts give exactly 0; swapping the prompts gives
the same divergence; a pair's score does not depend on batch composition, pair order or
``max_batch_size``. Family-specific checks (inputs equal the pipeline's, chain steps equal the
scheduler's) live in each family's own test file.
"""

import json
import shutil

import pytest
import torch
import torch.multiprocessing as mp

from conjure_metrics import ConjureSimilarity, conjure_similarity, explain
from conjure_metrics.cli import main
from conjure_metrics.tiny import save_tiny_model
from tests.helpers import free_port

FAMILIES = ["sd", "sdxl", "sd3", "flux", "pixart"]
SETTINGS = dict(num_steps=3, num_samples=2, guidance_scale=2.0)
PAIRS = (["a red fox", "a striped cat", "a zebra"], ["a blue fox", "a striped cat", "a horse"])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    built = {family: save_tiny_model(root / family, family=family, latent=True) for family in FAMILIES}
    # A fine-tuned twin of each: the same folder with every weight of the denoiser moved a little.
    for family, folder in list(built.items()):
        twin = shutil.copytree(folder, root / f"{family}_finetuned")
        _perturb_denoiser(twin, family)
        built[f"{family}_finetuned"] = twin
    return built


def _perturb_denoiser(folder, family):
    from safetensors.torch import load_file, save_file

    subfolder = "unet" if family in ("sd", "sdxl") else "transformer"
    for path in (folder / subfolder).glob("*.safetensors"):
        weights = load_file(path)
        generator = torch.Generator().manual_seed(0)
        save_file(
            {k: v + 0.02 * torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in weights.items()}, path
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_metric_and_functional_agree_from_a_folder(folders, family):
    folder = str(folders[family])
    result = conjure_similarity(*PAIRS, folder, **SETTINGS)
    metric = ConjureSimilarity(folder, **SETTINGS)
    metric.update(PAIRS[0][:2], PAIRS[1][:2])
    metric.update(PAIRS[0][2:], PAIRS[1][2:])
    torch.testing.assert_close(metric.pair_results()["divergence"], result.divergence, rtol=1e-5, atol=0)
    assert float(metric.compute()) == pytest.approx(float(result.mean_similarity), rel=1e-6)
    assert result.divergence[1] == 0  # identical prompts
    assert bool((result.divergence[[0, 2]] > 0).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_swapping_prompts_and_reordering_pairs_leave_each_score(folders, family):
    folder = str(folders[family])
    forward = conjure_similarity(*PAIRS, folder, **SETTINGS).divergence
    swapped = conjure_similarity(PAIRS[1], PAIRS[0], folder, **SETTINGS).divergence
    reversed_order = conjure_similarity(PAIRS[0][::-1], PAIRS[1][::-1], folder, max_batch_size=3, **SETTINGS).divergence
    torch.testing.assert_close(swapped, forward, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(reversed_order.flip(0), forward, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_similarity_and_compare_equal_the_python_api(folders, family, tmp_path):
    folder, finetuned = str(folders[family]), str(folders[f"{family}_finetuned"])
    flags = ["--steps", "3", "--samples", "2", "--guidance", "2", "--quiet"]
    out = tmp_path / "out.json"
    assert main(["similarity", PAIRS[0][0], PAIRS[1][0], "--model", folder, "--json", str(out), *flags]) == 0
    expected = conjure_similarity(PAIRS[0][:1], PAIRS[1][:1], folder, **SETTINGS).divergence
    assert json.loads(out.read_text())["pairs"][0]["divergence"] == pytest.approx(float(expected[0]), rel=1e-6)
    # Six steps: with the models' default noise floor (0.2), three steps of SD3's shifted schedule
    # leave only the step from pure noise, where every flow model's ε is the input itself.
    compare_flags = ["--steps", "6", "--samples", "2", "--guidance", "2", "--quiet"]
    assert main(["compare", folder, finetuned, "--prompt", "a zebra", "--json", str(out), *compare_flags]) == 0
    moved = conjure_similarity(
        ["a zebra"], ["a zebra"], folder, model_b=finetuned, **dict(SETTINGS, num_steps=6)
    ).divergence
    assert json.loads(out.read_text())["prompts"][0]["divergence"] == pytest.approx(float(moved[0]), rel=1e-6)
    assert float(moved[0]) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_explain_pictures_are_decoded_images_and_sum_to_the_divergence(folders, family):
    folder = str(folders[family])
    pictured = explain("a red fox", "a blue fox", folder, **SETTINGS)
    functional = conjure_similarity(["a red fox"], ["a blue fox"], folder, **SETTINGS)
    assert pictured.contributions["simple"].sum().item() == pytest.approx(float(functional.divergence[0]), rel=1e-5)
    # Every tiny family's VAE decodes its 8 x 8 latents (Flux: 16 packed 2 x 2 patches) to 16 x 16 RGB.
    assert pictured.denoised.shape == (2, 2, SETTINGS["num_steps"], 3, 16, 16)
    assert 0 <= float(pictured.denoised.min()) and float(pictured.denoised.max()) <= 1
    assert float(pictured.denoised.std()) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_module_gives_the_functional_scores(folders, family):
    import evaluate

    from conjure_metrics.evaluate_support import module_path

    folder = str(folders[family])
    module = evaluate.load(module_path())
    result = module.compute(prompts_a=PAIRS[0], prompts_b=PAIRS[1], model=folder, **SETTINGS)
    expected = conjure_similarity(*PAIRS, folder, **SETTINGS)
    torch.testing.assert_close(
        torch.tensor(result["divergence"], dtype=torch.float64), expected.divergence, rtol=1e-5, atol=0
    )


def _ddp_worker(rank, world_size, port, folder, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metric = ConjureSimilarity(folder, **SETTINGS)
        mine = slice(0, 2) if rank == 0 else slice(2, 3)
        metric.update(PAIRS[0][mine], PAIRS[1][mine])
        torch.save({"mean": metric.compute(), "pairs": metric.pair_results()}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_process_for_a_flow_family(folders, tmp_path):
    folder = str(folders["flux"])
    mp.spawn(_ddp_worker, args=(2, free_port(), folder, str(tmp_path)), nprocs=2, join=True)
    single = ConjureSimilarity(folder, **SETTINGS)
    single.update(*PAIRS)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(
            result["pairs"]["divergence"], single.pair_results()["divergence"], rtol=1e-5, atol=0
        )
        assert float(result["mean"]) == pytest.approx(float(single.compute()), rel=1e-6)
