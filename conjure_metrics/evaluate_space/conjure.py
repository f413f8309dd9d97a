"""ConjureSimilarity as a Hugging Face ``evaluate`` metric (the module file of the ``conjure`` Space)."""

import datasets
import evaluate

from conjure_metrics.denoisers.loading import CHECKPOINT_OPTIONS, load_against_base, load_denoiser
from conjure_metrics.functional import conjure_similarity
from conjure_metrics.settings import ConjureSettings

_CITATION = """\
@inproceedings{liu2026conjuring,
  title     = {Conjuring Semantic Similarity},
  author    = {Liu, Tian Yu and Soatto, Stefano},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2026},
  url       = {https://arxiv.org/abs/2410.16431}
}
"""

_DESCRIPTION = """\
Semantic similarity of two texts as a text-to-image diffusion model imagines them. Each text
conditions a reverse diffusion process; the distance between the texts is the Jeffreys divergence
between the two processes, estimated by Monte-Carlo over trajectories that share their noise, and
the similarity is 1 / (1 + divergence). It also compares two checkpoints on the same prompts.
"""

_KWARGS_DESCRIPTION = """
Args:
    prompts_a (`list` of `str`): first text of each pair.
    prompts_b (`list` of `str`): second text of each pair.
    model (`str`, optional): diffusers folder or hub id; defaults to the embedded conjure-zoo model.
    model_b (`str`, optional): model for `prompts_b` (defaults to `model`): compare checkpoints. Resolved
        against `model`: a whole diffusers folder, a LoRA (`pytorch_lora_weights.safetensors` or a PEFT
        adapter folder; needs `pip install conjure_metrics[lora]`), a training checkpoint folder holding
        `unet/`, `unet_ema/` or `transformer/`, or a single-file `.safetensors` / `.ckpt` of the network.
    lora_scale (`float`, default 1): scale of a LoRA `model_b`'s update (0 gives the base).
    use_ema (`bool`, default True): a checkpoint folder's `unet_ema/` when it has one, else `unet/`.
    num_steps (`int`, default 10), num_samples (`int`, default 5), guidance_scale (`float`, default 7.5),
    weighting (`"simple"`, `"girsanov"` or `"min_snr"`; default by mode), min_noise (`float`; default by mode:
    0 for prompts, 0.2 with `model_b`), seed (`int`, default 0), max_batch_size (`int`, default 64),
    min_timestep (`float`, default 0), target_stderr (`float`, optional), max_samples (`int`, optional),
    sampler (`str`, optional: the model's reverse process, e.g. "ddim", or "sde" / "ode" for SD3 and Flux):
    estimator settings, as in `conjure_metrics.conjure_similarity`.
Returns:
    mean_similarity (`float`): mean of the per-pair similarities.
    similarity (`list` of `float`): 1 / (1 + divergence) per pair, in [0, 1].
    divergence (`list` of `float`): Monte-Carlo Jeffreys divergence per pair.
    stderr (`list` of `float`): its standard error per pair (NaN with one sample).
Examples:
    >>> conjure = evaluate.load("conjure")
    >>> results = conjure.compute(prompts_a=["a zebra"], prompts_b=["a zebra"], num_samples=2)
    >>> results["similarity"]
    [1.0]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Conjure(evaluate.Metric):
    """Jeffreys divergence between the reverse diffusion processes of two prompts."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"prompts_a": datasets.Value("string"), "prompts_b": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/2410.16431"],
        )

    def _denoiser(self, model):
        # Loading a diffusion model is slow: keep each one for the life of this module instance.
        if model is not None and not isinstance(model, str):
            return load_denoiser(model)
        cache = self.__dict__.setdefault("_denoisers", {})
        if model not in cache:
            cache[model] = load_denoiser(model)
        return cache[model]

    def _pair(self, model, model_b, options):
        """Both sides, ``model_b`` resolved against the cached base ``model`` (a LoRA loads into it once)."""
        base = self._denoiser(model)
        if model_b is None or model_b == model:
            return base, None if model_b is None else base
        key = (model, model_b, tuple(sorted(options.items())))
        if not isinstance(model_b, str) or not isinstance(model, (str, type(None))):
            return load_against_base(base, model_b, base_path=model, **options)
        cache = self.__dict__.setdefault("_pairs", {})
        if key not in cache:
            cache[key] = load_against_base(base, model_b, base_path=model, **options)
        return cache[key]

    def _compute(self, prompts_a, prompts_b, model=None, model_b=None, **settings):
        options = {name: settings.pop(name) for name in CHECKPOINT_OPTIONS if name in settings}
        # The settings object names a misspelt or unknown setting before any model loads.
        checked = ConjureSettings.from_kwargs(**settings)
        side_a, side_b = self._pair(model, model_b, options)
        result = conjure_similarity(
            list(prompts_a),
            list(prompts_b),
            side_a,
            model_b=side_b,
            **checked.record(),
            progress_bar=False,
        )
        return {
            "mean_similarity": float(result.mean_similarity),
            "similarity": result.similarity.tolist(),
            "divergence": result.divergence.tolist(),
            "stderr": result.stderr.tolist(),
        }
