"""The offline CLIP tokenizer."""

import random

from transformers import CLIPTokenizer

from conjure_metrics.zoo.captions import sample_caption
from conjure_metrics.zoo.tokenizer import BOS, EOS, MODEL_MAX_LENGTH, build_tokenizer, world_words


def test_every_world_word_is_one_token():
    tok = build_tokenizer()
    for word in world_words():
        assert tok.tokenize(word) == [word + "</w>"], word


def test_unknown_words_fall_back_to_characters():
    tok = build_tokenizer()
    ids = tok("a xyzzy!")["input_ids"]
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.convert_ids_to_tokens(ids)[1:-1] == ["a</w>", "x", "y", "z", "z", "y</w>", "!</w>"]


def test_captions_fit_the_model_length():
    tok = build_tokenizer()
    rng = random.Random(0)
    for split in ("train", "held_out"):
        for _ in range(2000):
            ids = tok(sample_caption(rng, split).text)["input_ids"]
            assert len(ids) <= MODEL_MAX_LENGTH
            assert ids[0] == tok.convert_tokens_to_ids(BOS) and ids[-1] == tok.convert_tokens_to_ids(EOS)


def test_save_and_reload_round_trips(tmp_path):
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "in the snow, a red and black vertically striped kitty"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.model_max_length == MODEL_MAX_LENGTH
    padded = again(text, padding="max_length", max_length=again.model_max_length)["input_ids"]
    assert len(padded) == MODEL_MAX_LENGTH and len(set(padded)) > 5
