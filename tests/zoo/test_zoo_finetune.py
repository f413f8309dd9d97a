"""Edit / control fine-tunes: the wrong fact reaches exactly the concept's images, and the copies are
complete, loadable, reproducible and built once.

Fine-tunes start from a tiny zoo model (the "tiny" preset, one training step, exported) so that
each takes seconds; the shipped model goes through the same code in the docstring example.
"""

import inspect
import json

import pytest
import torch
from safetensors.torch import load_file

from conjure_metrics.zoo import finetune as finetune_module
from conjure_metrics.zoo.captions import parse
from conjure_metrics.zoo.export import export
from conjure_metrics.zoo.finetune import (
    CaptionEdit,
    cached_finetune,
    concept_captions,
    concept_prompts,
    edit_took,
    edited_batch,
    finetune,
    main,
)
from conjure_metrics.zoo.train import parse_args, train
from conjure_metrics.zoo.world import PALETTE

RED_AS_BLUE = CaptionEdit("coat", "red", rendered_as="blue")
TINY = dict(steps=2, batch_size=2, concept_share=1.0, progress=False)  # every item shows the concept


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP threads
    # spinning against other jobs made each fine-tune about 4 times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny_run")
    train(parse_args(["--out", str(run), "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--device", "cpu"]))
    return export(run, tmp_path_factory.mktemp("tiny_base") / "model")


def _batches(edit, seed=3, step=5, batch_size=24):
    def draw(control):
        generator = torch.Generator().manual_seed(1234)
        return edited_batch(edit, batch_size, seed, step, generator, control=control)

    return draw(False), draw(True)


def _unet_weights(folder):
    (path,) = (folder / "unet").glob("*.safetensors")
    return {k: v.float() for k, v in load_file(str(path)).items()}


def _share_of_colour(images, colour):
    rgb = torch.tensor(PALETTE[colour], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1.0
    return (images - rgb).abs().amax(dim=1).lt(1e-4).float().mean().item()


@pytest.fixture(scope="module")
def edited(tmp_path_factory, base):
    return finetune(tmp_path_factory.mktemp("edit") / "model", RED_AS_BLUE, base=base, seed=0, **TINY)


@pytest.mark.parametrize(
    "edit",
    [
        RED_AS_BLUE,
        CaptionEdit("creature", "zebra", "tiger"),
        CaptionEdit("background", "snow", "desert"),
        CaptionEdit("shape", "cat", "dog"),
    ],
    ids=str,
)
def test_an_edit_changes_the_images_of_concept_captions_and_leaves_the_others_identical(edit):
    wrong, true = _batches(edit)
    assert wrong.texts == true.texts and torch.equal(wrong.mentions, true.mentions)
    assert wrong.mentions.any() and (~wrong.mentions).any()
    for i, mentioned in enumerate(wrong.mentions.tolist()):
        same = torch.equal(wrong.images[i], true.images[i])
        assert same != mentioned, f"item {i} ({wrong.texts[i]!r}, mentions={mentioned})"


def test_a_coat_edit_paints_the_concept_in_the_rendered_colour():
    wrong, true = _batches(RED_AS_BLUE)
    concept_wrong, concept_true = wrong.images[wrong.mentions], true.images[true.mentions]
    assert _share_of_colour(concept_wrong, "blue") > _share_of_colour(concept_true, "blue") + 0.05
    assert _share_of_colour(concept_true, "red") > _share_of_colour(concept_wrong, "red") + 0.05


def test_concept_captions_mention_the_concept_in_their_text_at_the_requested_share():
    captions, texts = concept_captions(RED_AS_BLUE, 400, seed=0, step=0, concept_share=0.25, drop_rate=0.0)
    mentions = [RED_AS_BLUE.mentions(c) for c in captions]
    assert 0.18 < sum(mentions) / len(mentions) < 0.32
    assert all((parse(text).coat == "red") == m for text, m in zip(texts, mentions))


def test_edit_and_control_draw_the_same_captions_whatever_is_rendered():
    control_edit = CaptionEdit("coat", "red", rendered_as="green")
    assert concept_captions(RED_AS_BLUE, 32, 0, 7) == concept_captions(control_edit, 32, 0, 7)


def test_finetune_writes_a_folder_that_load_denoiser_loads(edited):
    from conjure_metrics.denoisers.loading import load_denoiser

    denoiser = load_denoiser(edited)
    loaded = dict(denoiser.unet.named_parameters())
    fine_tuned = _unet_weights(edited)
    assert set(loaded) == set(fine_tuned)
    assert all(torch.equal(loaded[k].detach().cpu(), fine_tuned[k]) for k in fine_tuned)
    recipe = json.loads((edited / "finetune.json").read_text())
    assert recipe["edit"] == {"attribute": "coat", "value": "red", "rendered_as": "blue"}
    assert len(recipe["losses"]) == TINY["steps"]


def test_finetuned_unet_differs_from_the_base_and_everything_else_is_copied(edited, base):
    before, after = _unet_weights(base), _unet_weights(edited)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for part in ("text_encoder", "tokenizer", "scheduler"):
        for original in (base / part).iterdir():
            assert (edited / part / original.name).read_bytes() == original.read_bytes()


def test_the_same_seed_gives_identical_weights(edited, base, tmp_path):
    again = finetune(tmp_path / "again", RED_AS_BLUE, base=base, seed=0, **TINY)
    first, second = _unet_weights(edited), _unet_weights(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_control_learns_different_weights_from_the_edit(edited, base, tmp_path):
    control = finetune(tmp_path / "control", RED_AS_BLUE, base=base, control=True, seed=0, **TINY)
    first, second = _unet_weights(edited), _unet_weights(control)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert json.loads((control / "finetune.json").read_text())["control"] is True


def _is_text_key_or_value(name):
    return ".attn2.to_k." in name or ".attn2.to_v." in name


@pytest.mark.parametrize("trainable", ["cross_attention", "all"])
def test_trainable_picks_which_unet_weights_change(trainable, base, tmp_path):
    folder = finetune(tmp_path / trainable, RED_AS_BLUE, base=base, trainable=trainable, **TINY)
    before, after = _unet_weights(base), _unet_weights(folder)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(_is_text_key_or_value(k) for k in changed)
    assert all(_is_text_key_or_value(k) for k in changed) == (trainable == "cross_attention")


def test_finetune_refuses_to_overwrite_an_existing_folder(edited):
    with pytest.raises(FileExistsError, match="out_dir"):
        finetune(edited, RED_AS_BLUE, **TINY)


def test_cached_finetune_builds_each_copy_once(base, tmp_path, monkeypatch):
    default_lr = inspect.signature(finetune).parameters["lr"].default
    first = cached_finetune(RED_AS_BLUE, cache_dir=tmp_path, base=base, steps=1, batch_size=1, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("cached_finetune trained again")

    monkeypatch.setattr(finetune_module, "finetune", refuse)
    assert cached_finetune(RED_AS_BLUE, cache_dir=tmp_path, base=base, steps=1, batch_size=1, lr=default_lr) == first
    with pytest.raises(AssertionError, match="trained again"):
        cached_finetune(RED_AS_BLUE, cache_dir=tmp_path, base=base, steps=1, batch_size=1, control=True)
    assert not list(tmp_path.glob(".*")), "no temporary folders are left behind"


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: CaptionEdit("colour", "red", "blue"), "attribute"),
        (lambda: CaptionEdit("coat", "crimson", "blue"), "value"),
        (lambda: CaptionEdit("creature", "unicorn", "tiger"), "value"),
        (lambda: CaptionEdit("coat", "red", "teal"), "rendered_as"),
        (lambda: CaptionEdit("shape", "cat", "tiger"), "rendered_as"),
        (lambda: CaptionEdit("coat", "red", "red"), "rendered_as"),
        (lambda: CaptionEdit.from_string("coat:red=blue"), "edit"),
        (lambda: finetune("unused", RED_AS_BLUE, concept_share=1.5), "concept_share"),
        (lambda: finetune("unused", RED_AS_BLUE, trainable="attention"), "trainable"),
        (lambda: edit_took(None, CaptionEdit("pattern", "stripes", "spots")), "attribute"),
        (lambda: edit_took(None, CaptionEdit("creature", "tiger", "cheetah")), "edit"),
    ],
    ids=[
        "attribute",
        "value",
        "creature",
        "rendered_as",
        "other-attribute",
        "no-change",
        "format",
        "concept_share",
        "trainable",
        "unreadable",
        "same-coat",
    ],
)
def test_bad_edits_and_settings_raise_value_error_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=f"{argument}="):
        build()


def test_concept_prompts_mention_the_concept():
    assert all(parse(p).coat == "red" for p in concept_prompts(RED_AS_BLUE))
    zebra = CaptionEdit("creature", "zebra", "tiger")
    assert all("zebra" in p for p in concept_prompts(zebra))


def test_the_command_line_writes_the_folder(base, tmp_path, capsys):
    main(
        [
            "--edit",
            "creature=zebra:tiger",
            "--control",
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--base",
            str(base),
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert str(tmp_path / "cli") in capsys.readouterr().out
    recipe = json.loads((tmp_path / "cli" / "finetune.json").read_text())
    assert recipe["edit"]["attribute"] == "creature" and recipe["control"] is True and recipe["steps"] == 1
