"""An offline CLIP tokenizer for the zoo world's vocabulary.

Byte-level BPE exactly as CLIP's: every byte character and its end-of-word form ``c</w>``
is in the vocabulary, so any text tokenizes, and merges make each word of the world's
grammar a single token.

Example:
    >>> from conjure_metrics.zoo.tokenizer import build_tokenizer
    >>> tok = build_tokenizer()
    >>> ids = tok("a striped cat")["input_ids"]
    >>> len(ids), tok.convert_ids_to_tokens(ids[1:4])
    (5, ['a</w>', 'striped</w>', 'cat</w>'])
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer

from . import captions

MODEL_MAX_LENGTH = 16  # the longest grammar caption is 14 tokens with start and end

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def world_words() -> list[str]:
    """Every word the caption grammar can produce, sorted."""
    groups = (
        captions.COLOUR_WORDS,
        captions.SHAPE_WORDS,
        captions.PATTERN_ADJECTIVES,
        captions.PATTERN_NOUNS,
        captions.ORIENTATION_WORDS,
        captions.ORIENTATION_ADVERBS,
        captions.BACKGROUND_PHRASES,
        captions.CREATURE_WORDS,
    )
    phrases = [p for group in groups for values in group.values() for p in values]
    phrases += list(captions.ANIMAL_WORDS) + ["a", "an", "and", "with"]
    return sorted({word for phrase in phrases for word in phrase.split()})


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def vocabulary_and_merges(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style ``vocab`` and ``merges`` that keep every word of ``words`` a single token.

    A merge is appended (lowest priority) for the first two pieces of a word that is still
    split; words already single tokens contain no adjacent pair, so they are unaffected.
    """
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    ranks: dict[tuple[str, str], int] = {}
    for word in words if words is not None else world_words():
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces := _bpe(symbols, ranks)) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(ranks)
            tokens.append(pair[0] + pair[1])
    tokens += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    merges = sorted(ranks, key=ranks.__getitem__)
    return vocab, merges


def build_tokenizer(model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """The zoo's CLIP tokenizer, built in memory with no file or network access."""
    vocab, merges = vocabulary_and_merges()
    special: dict[str, Any] = dict(
        unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS, model_max_length=model_max_length
    )
    try:
        # tokenizers' BPE takes the (a, b) pairs; transformers 5 annotates merges as list[str]
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, **special)  # type: ignore[arg-type]
    except TypeError:  # transformers versions whose CLIPTokenizer only reads files
        with tempfile.TemporaryDirectory() as folder:
            vocab_file, merges_file = Path(folder, "vocab.json"), Path(folder, "merges.txt")
            vocab_file.write_text(json.dumps(vocab))
            merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
            tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), **special)
    ids = tokenizer("a cat")["input_ids"]
    if tokenizer.convert_ids_to_tokens(ids) != [BOS, "a</w>", "cat</w>", EOS]:
        raise RuntimeError(f"the zoo tokenizer came out broken: 'a cat' -> {ids}")
    return tokenizer
