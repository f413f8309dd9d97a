"""trajectory_similarity: exact zeros, symmetry, seed invariance, and scores checked against a naive computation."""

import pytest
import torch

from conjure_metrics.trajectory import trajectory_similarity, trajectory_terms
from conjure_metrics.trajectory.estimator import encode_prompt
from conjure_metrics.trajectory.sampling import continuation_log_likelihoods
from tests.trajectory.helpers import SETTINGS, A, B, naive_continuation, naive_log_likelihood, tiny_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(), tiny_tokenizer()


@pytest.mark.parametrize("distance", ["mean_abs", "symmetric_kl"])
def test_identical_prompts_score_exactly_zero(lm, distance):
    result = trajectory_similarity(
        ["a red fox", "a zebra"], ["a red fox", "a zebra"], lm[0], tokenizer=lm[1], distance=distance, **SETTINGS
    )
    assert torch.equal(result.divergence, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(result.stderr, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(result.similarity, torch.ones(2, dtype=torch.float64))


def test_spellings_the_tokenizer_reads_alike_score_exactly_zero(lm):
    result = trajectory_similarity(["A Red fox"], ["a red  fox"], lm[0], tokenizer=lm[1], **SETTINGS)
    assert result.divergence.item() == 0.0 and result.similarity.item() == 1.0


@pytest.mark.parametrize("distance", ["mean_abs", "symmetric_kl"])
def test_swapping_the_prompts_of_a_pair_gives_the_same_score(lm, distance):
    both = trajectory_similarity(A + B, B + A, lm[0], tokenizer=lm[1], distance=distance, **SETTINGS)
    n = len(A)
    assert torch.equal(both.divergence[:n], both.divergence[n:])
    assert torch.equal(both.stderr[:n], both.stderr[n:])
    swapped = trajectory_similarity(B, A, lm[0], tokenizer=lm[1], distance=distance, **SETTINGS)
    torch.testing.assert_close(swapped.divergence, both.divergence[:n], rtol=1e-12, atol=0)


def test_score_does_not_depend_on_batch_size_or_pair_order(lm):
    reference = trajectory_similarity(A, B, lm[0], tokenizer=lm[1], **SETTINGS)
    order = [2, 0, 3, 1]
    shuffled = trajectory_similarity(
        [A[i] for i in order], [B[i] for i in order], lm[0], tokenizer=lm[1], max_batch_size=3, **SETTINGS
    )
    one_by_one = [
        trajectory_similarity([a], [b], lm[0], tokenizer=lm[1], max_batch_size=1, **SETTINGS) for a, b in zip(A, B)
    ]
    torch.testing.assert_close(shuffled.divergence, reference.divergence[order], rtol=1e-6, atol=0)
    torch.testing.assert_close(torch.cat([r.divergence for r in one_by_one]), reference.divergence, rtol=1e-6, atol=0)
    assert shuffled.terms.continuations[0][0] == reference.terms.continuations[0][order[0]]


def test_another_seed_draws_other_continuations(lm):
    first = trajectory_similarity(A[:1], B[:1], lm[0], tokenizer=lm[1], **SETTINGS)
    other = trajectory_similarity(A[:1], B[:1], lm[0], tokenizer=lm[1], **{**SETTINGS, "seed": 4})
    assert first.terms.continuations != other.terms.continuations
    assert not torch.equal(first.divergence, other.divergence)


def test_cross_scores_match_unbatched_sampling_and_scoring(lm):
    model, tokenizer = lm
    n, m, seed = SETTINGS["num_continuations"], SETTINGS["max_new_tokens"], SETTINGS["seed"]
    terms = trajectory_terms(A, B, model, tokenizer, num_continuations=n, max_new_tokens=m, seed=seed, max_batch_size=5)
    eos = tokenizer.eos_token_id
    for i, pair in enumerate(zip(A, B)):
        ids = [encode_prompt(tokenizer, p) for p in pair]
        for side in range(2):
            for j in range(n):
                continuation = naive_continuation(model, ids[side], seed, j, m, eos)
                assert terms.continuations[side][i][j] == tokenizer.decode(continuation)
                for scorer in range(2):
                    expected = naive_log_likelihood(model, ids[scorer], continuation)
                    assert terms.log_likelihood[i, side, scorer, j].item() == pytest.approx(expected, rel=1e-9)


def test_distances_follow_their_definitions(lm):
    terms = trajectory_terms(A, B, lm[0], lm[1], num_continuations=5, max_new_tokens=4, seed=0, max_batch_size=8)
    ll = terms.log_likelihood  # (pairs, side, scorer, n)
    all_abs = torch.cat([(ll[:, 0, 0] - ll[:, 0, 1]).abs(), (ll[:, 1, 0] - ll[:, 1, 1]).abs()], dim=1)
    torch.testing.assert_close(terms.divergence("mean_abs"), all_abs.mean(dim=1))
    kl_ab = (ll[:, 0, 0] - ll[:, 0, 1]).mean(dim=1)
    kl_ba = (ll[:, 1, 1] - ll[:, 1, 0]).mean(dim=1)
    torch.testing.assert_close(terms.divergence("symmetric_kl"), kl_ab + kl_ba)
    stderr_ab = (ll[:, 0, 0] - ll[:, 0, 1]).std(dim=1) / 5**0.5
    stderr_ba = (ll[:, 1, 1] - ll[:, 1, 0]).std(dim=1) / 5**0.5
    torch.testing.assert_close(terms.stderr("symmetric_kl"), (stderr_ab**2 + stderr_ba**2).sqrt())


def test_continuations_stop_at_eos_or_max_new_tokens(lm):
    model, tokenizer = lm
    terms = trajectory_terms(A, B, model, tokenizer, num_continuations=8, max_new_tokens=5, seed=1, max_batch_size=64)
    for side in terms.continuations:
        for texts in side:
            for text in texts:
                words = text.split()
                assert 1 <= len(words) <= 5
                assert tokenizer.eos_token not in words[:-1]


def test_batched_scoring_of_ragged_rows_matches_one_row_at_a_time(lm):
    model, tokenizer = lm
    rows = [([1, 5, 9, 30], [12]), ([1], [40, 41, 42, 2]), ([1, 7], [8, 9, 10]), ([1, 60, 61, 62, 63, 64], [2])]
    batched = continuation_log_likelihoods(model, rows, pad_id=tokenizer.pad_token_id, max_batch_size=3)
    expected = torch.tensor([naive_log_likelihood(model, p, c) for p, c in rows], dtype=torch.float64)
    torch.testing.assert_close(batched, expected, rtol=1e-9, atol=0)


def test_model_mode_is_restored_and_no_gradients_are_built(lm):
    model = tiny_lm()
    model.train()
    result = trajectory_similarity(A[:1], B[:1], model, tokenizer=lm[1], **SETTINGS)
    assert model.training
    assert not result.divergence.requires_grad and result.divergence.grad_fn is None  # no graph was built


def test_single_continuation_has_nan_stderr(lm):
    result = trajectory_similarity(A[:1], B[:1], lm[0], tokenizer=lm[1], num_continuations=1, max_new_tokens=3)
    assert torch.isnan(result.stderr).all() and torch.isfinite(result.divergence).all()


def test_a_tokenizer_that_appends_eos_does_not_end_the_prompt_with_it():
    from tokenizers import processors

    tokenizer = tiny_tokenizer()
    plain = encode_prompt(tokenizer, "a red fox")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A {tokenizer.eos_token}",
        special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id), (tokenizer.eos_token, tokenizer.eos_token_id)],
    )
    assert tokenizer("a red fox")["input_ids"][-1] == tokenizer.eos_token_id  # the template really appends it
    assert encode_prompt(tokenizer, "a red fox") == plain
    assert plain[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in plain


def test_gpt2_style_tokenizer_whose_unk_is_its_bos_gives_no_unknown_word_warning(recwarn):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = "<|endoftext|>"  # GPT-2 uses one token for unk, bos and eos
    tokenizer = GPT2TokenizerFast(tokenizer_object=backend, unk_token=special, bos_token=special, eos_token=special)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(vocab),
            n_positions=64,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=len(vocab) - 1,
            eos_token_id=len(vocab) - 1,
        )
    ).eval()
    result = trajectory_similarity(
        ["a cat"], ["a dog"], model, tokenizer=tokenizer, num_continuations=2, max_new_tokens=3
    )
    assert torch.isfinite(result.divergence).all()
    assert not [w for w in recwarn if "does not know" in str(w.message)]


def test_a_negative_symmetric_kl_estimate_counts_as_zero_distance():
    from conjure_metrics.trajectory.estimator import TrajectoryTerms
    from conjure_metrics.trajectory.functional import result_from_terms

    # One pair, two continuations per side; each side's continuations score higher under the other prompt.
    log_likelihood = torch.tensor([[[[-2.0, -2.2], [-1.9, -2.0]], [[-1.8, -2.1], [-1.9, -2.2]]]], dtype=torch.float64)
    terms = TrajectoryTerms(log_likelihood, ([["x", "y"]], [["z", "w"]]))
    result = result_from_terms(terms, "symmetric_kl")
    # By hand: side a, own - other = (-2.0 + 1.9, -2.2 + 2.0), mean -0.15; side b, (-1.9 + 1.8, -2.2 + 2.1), mean -0.1.
    assert result.divergence.item() == pytest.approx(-0.25)
    assert result.similarity.item() == 1.0
