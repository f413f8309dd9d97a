"""Tokenizers built in memory from a small vocabulary, so tiny models need no download."""

from __future__ import annotations

import string


def byte_level_clip_tokenizer(model_max_length: int = 77):
    """A valid CLIP tokenizer with no merges: every byte character and its ``</w>`` form is a token.

    Vocabulary and merges are passed in memory (transformers 5 silently builds a broken tokenizer
    from ``vocab_file=``/``merges_file=`` keywords).
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    characters = sorted(ByteLevel.alphabet())
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def character_t5_tokenizer(model_max_length: int = 32):
    """A valid T5 (unigram) tokenizer whose pieces are single characters, with and without the word-start mark.

    Examples:
        >>> tokenizer = character_t5_tokenizer()
        >>> tokenizer.convert_ids_to_tokens(tokenizer("a cat").input_ids)
        ['▁a', '▁c', 'a', 't', '</s>']
    """
    from transformers import T5Tokenizer

    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in characters] + [("▁" + c, -1.5) for c in characters]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)
