"""The embedded zoo LM: offline loading, its training entry point, and whether it tells paraphrases apart."""

import json
import os
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conjure_metrics.trajectory import default_lm_path, trajectory_similarity
from conjure_metrics.trajectory.train import main as train_main
from conjure_metrics.zoo.captions import paraphrase_pair, parse


def test_the_package_ships_the_zoo_lm():
    assert (default_lm_path() / "config.json").is_file()  # a packaging regression must fail, not skip


def test_embedded_lm_loads_offline_and_is_small():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModelForCausalLM.from_pretrained(default_lm_path(), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(default_lm_path(), local_files_only=True)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tokenizer.convert_ids_to_tokens(tokenizer("A crimson cat")["input_ids"]) == ["a", "crimson", "cat"]
    assert sum(f.stat().st_size for f in default_lm_path().iterdir()) < 10 * 2**20


def test_embedded_lm_continues_prompts_within_the_grammar():
    result = trajectory_similarity(["a striped"], ["a red cat"], num_continuations=10)
    texts = [f"a striped {c}" for c in result.terms.continuations[0][0]]
    first_captions = [t.split(" ;")[0].removesuffix(" </s>") for t in texts if ";" in t or "</s>" in t]
    assert len(first_captions) >= 8
    assert sum(parse(t).pattern == "stripes" for t in first_captions) >= 0.8 * len(first_captions)


def test_embedded_lm_ranks_paraphrases_above_unrelated_pairs():
    rng = random.Random(0)
    pairs = [paraphrase_pair(rng, split="train") for _ in range(6)]
    paraphrases = [(a.text, b.text) for a, b in pairs]
    unrelated = [(pairs[i][0].text, pairs[(i + 1) % len(pairs)][1].text) for i in range(len(pairs))]
    a, b = zip(*(paraphrases + unrelated))
    similarity = trajectory_similarity(list(a), list(b)).similarity  # paper defaults, n = m = 20
    assert similarity[:6].mean() > similarity[6:].mean()
    assert (similarity[:6] > similarity[6:]).all()


def test_embedded_lm_finds_a_synonym_closer_than_another_animal():
    result = trajectory_similarity(["a red cat", "a red cat"], ["a crimson cat", "a blue horse in the snow"])
    assert result.similarity[0] > result.similarity[1]
    assert result.divergence[1] - result.divergence[0] > 3 * (result.stderr[0] ** 2 + result.stderr[1] ** 2).sqrt()


def test_training_resumes_exactly_and_saves_a_loadable_model(tmp_path):
    common = ["--preset", "tiny", "--batch-size", "4", "--log-every", "2", "--threads", "1"]
    train_main(["--out", str(tmp_path / "straight"), "--steps", "6", *common])
    train_main(["--out", str(tmp_path / "resumed"), "--steps", "3", *common])
    train_main(["--out", str(tmp_path / "resumed"), "--steps", "6", "--resume", *common])
    straight = AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "zoo-lm", local_files_only=True)
    resumed = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed" / "zoo-lm", local_files_only=True)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    log = json.loads((tmp_path / "resumed" / "log.json").read_text())
    assert [r["step"] for r in log["records"]] == [2, 3, 4, 6] and log["step"] == 6  # 3: end of the first run
    assert set(log["eval_loss"]) == {"train", "held_out"}
