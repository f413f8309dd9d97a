"""Conditioning as a structure of tensors: the same results as one tensor, through the estimator and the wrappers."""

import pytest
import torch

from conjure_metrics import CallableDenoiser, CompiledDenoiser, jeffreys_terms
from conjure_metrics.conditioning import concat_rows, pad_rows, repeat_rows, select_rows
from tests.helpers import gaussian_model

SETTINGS = dict(num_steps=5, num_samples=3, guidance_scale=3.0, seed=2, max_batch_size=7)
PROMPTS_A, PROMPTS_B = ["tiger", "zebra", "tiger"], ["zebra", "fox", "fox"]


class StructuredConditioning:
    """The analytic model with its conditioning split into a dict holding a tensor and a tuple, as SDXL's is."""

    def __init__(self, inner):
        self.inner = inner
        self.structures_seen = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_prompts(self, prompts):
        rows = self.inner.encode_prompts(prompts)
        return {"mean": rows[:, :-1], "extra": (rows[:, -1], torch.zeros(len(prompts), 2, dtype=rows.dtype))}

    def predict_noise(self, x, timesteps, conditioning):
        self.structures_seen += 1
        variance, padding = conditioning["extra"]
        assert padding.shape == (x.shape[0], 2)
        return self.inner.predict_noise(x, timesteps, torch.cat([conditioning["mean"], variance[:, None]], dim=1))


def _nested(rows):
    return {"states": rows, "pooled": (rows[:, 0], {"ids": rows.long()})}


def test_row_helpers_act_on_every_tensor_of_a_nested_structure():
    rows = torch.arange(12.0).view(4, 3)
    for helper, expected in [
        (lambda c: select_rows(c, torch.tensor([3, 1])), rows[[3, 1]]),
        (lambda c: select_rows(c, slice(1, 3)), rows[1:3]),
        (lambda c: concat_rows([c, select_rows(c, slice(0, 1))]), torch.cat([rows, rows[:1]])),
        (lambda c: repeat_rows(c, 2), rows.repeat_interleave(2, dim=0)),
        (lambda c: pad_rows(c, 2), torch.cat([rows, rows[-1:], rows[-1:]])),
    ]:
        got = helper(_nested(rows))
        assert torch.equal(got["states"], expected)
        assert torch.equal(got["pooled"][0], expected[:, 0])
        assert torch.equal(got["pooled"][1]["ids"], expected.long())
        assert isinstance(got["pooled"], tuple)
        assert torch.equal(helper(rows), expected)  # a plain tensor is the one-leaf structure


def test_a_structure_of_something_else_than_tensors_is_refused():
    with pytest.raises(TypeError, match="conditioning"):
        select_rows({"states": [1.0, 2.0]}, slice(0, 1))


def test_dict_conditioning_gives_the_estimator_the_same_results_as_one_tensor():
    model = gaussian_model()
    structured = StructuredConditioning(model)
    as_tensor = jeffreys_terms(PROMPTS_A, PROMPTS_B, model, **SETTINGS)
    as_structure = jeffreys_terms(PROMPTS_A, PROMPTS_B, structured, **SETTINGS)
    assert structured.structures_seen > 0
    assert torch.equal(as_structure.squared, as_tensor.squared)


def test_dict_conditioning_is_padded_by_the_compiled_denoiser_like_one_tensor():
    model = gaussian_model()
    structured = StructuredConditioning(model)
    as_tensor = jeffreys_terms(PROMPTS_A, PROMPTS_B, CompiledDenoiser(model, batch_size=5, compile=False), **SETTINGS)
    as_structure = jeffreys_terms(
        PROMPTS_A, PROMPTS_B, CompiledDenoiser(structured, batch_size=5, compile=False), **SETTINGS
    )
    assert structured.structures_seen > 0
    assert torch.equal(as_structure.squared, as_tensor.squared)


def test_callable_denoiser_stacks_structured_conditioning_from_a_mapping():
    model = gaussian_model()
    as_tensors = {p: model.encode_prompts([p])[0] for p in model.prompts}
    as_dicts = {p: {"mean": row[:-1], "variance": row[-1]} for p, row in as_tensors.items()}

    def predict_from_dict(x, timesteps, conditioning):
        return model.predict_noise(
            x, timesteps, torch.cat([conditioning["mean"], conditioning["variance"][:, None]], dim=1)
        )

    from_tensors = CallableDenoiser(model.predict_noise, as_tensors, model.sample_shape, model.reverse_chain)
    from_dicts = CallableDenoiser(predict_from_dict, as_dicts, model.sample_shape, model.reverse_chain)
    encoded = from_dicts.encode_prompts(["tiger", "fox"])
    assert torch.equal(encoded["mean"], torch.stack([model.means["tiger"], model.means["fox"]]))
    assert encoded["variance"].tolist() == [model.variances["tiger"], model.variances["fox"]]
    assert torch.equal(
        jeffreys_terms(PROMPTS_A, PROMPTS_B, from_dicts, **SETTINGS).squared,
        jeffreys_terms(PROMPTS_A, PROMPTS_B, from_tensors, **SETTINGS).squared,
    )
