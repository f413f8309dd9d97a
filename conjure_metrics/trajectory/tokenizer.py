"""An offline word-level tokenizer for the zoo world's captions, in the GPT-2 layout.

One token per word of the caption grammar (plus the comma of held-out phrasings and the ``;`` that
joins the captions of one scene, see :mod:`.corpus`), lower-cased,
with ``<s>`` / ``</s>`` / ``<pad>`` / ``<unk>``. Like GPT-2's, it adds no special tokens itself:
the trajectory code prepends ``bos_token`` to prompts and training appends ``eos_token``.

Example:
    >>> from conjure_metrics.trajectory.tokenizer import build_lm_tokenizer
    >>> tok = build_lm_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("A crimson fox, in the snow")["input_ids"])
    ['a', 'crimson', 'fox', ',', 'in', 'the', 'snow']
    >>> tok.decode(tok("a red fox")["input_ids"])
    'a red fox'
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from conjure_metrics.zoo.tokenizer import world_words

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
MODEL_MAX_LENGTH = 128  # documents are at most ~50 tokens; room for prompt + continuation


def lm_vocabulary() -> dict[str, int]:
    """Special tokens, the two punctuation marks, then every word of the caption grammar (sorted)."""
    tokens = [BOS, EOS, PAD, UNK, ",", ";"] + world_words()
    return {token: i for i, token in enumerate(tokens)}


def build_lm_tokenizer() -> PreTrainedTokenizerFast:
    """The zoo LM's tokenizer, built in memory with no file or network access."""
    backend = Tokenizer(models.WordLevel(vocab=lm_vocabulary(), unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # splits "fox," into "fox" ","
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MODEL_MAX_LENGTH,
    )
