"""Monte-Carlo estimate of the Jeffreys divergence between the reverse processes of two conditionals.

Pure torch. For a batch of pairs ``(model_a, prompt_a[p])`` vs ``(model_b, prompt_b[p])`` it runs,
for every Monte-Carlo sample, one reverse trajectory under each side of the pair from the same
initial noise and with the same step noise, and at every step evaluates both sides' guided model
outputs at both current states. The squared difference of those outputs, integrated along the
trajectories of side a, estimates ``KL(P_a || P_b)``; along side b, ``KL(P_b || P_a)``; their sum is
the Jeffreys divergence.

What is recorded is the raw ``||Δoutput_w||²`` of every step, in the model's own parametrisation
(noise, v or flow velocity, as its reverse chain declares); each weighting of
:mod:`conjure_metrics.weighting` (``simple``, the paper's ``||Δeps_w||²``; ``girsanov``, the exact KL
of the discrete chains; ``min_snr``) is a per-step factor on it, so all of them share every model call.
The noise floor ``min_noise`` (and ``min_timestep``) decides which steps count.

Guidance follows the model's declared mode (:func:`~conjure_metrics.denoisers.protocol.guidance_mode`):
classifier-free guidance evaluates the empty prompt too; embedded guidance passes the scale to the
model; ``none`` uses the model as it is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from conjure_metrics.chains import ReverseChain
from conjure_metrics.conditioning import Conditioning, concat_rows, repeat_rows, select_rows
from conjure_metrics.denoisers.protocol import Denoiser, GuidanceMode, guidance_mode
from conjure_metrics.noise import trajectory_noise
from conjure_metrics.weighting import WEIGHTINGS, Weighting, all_step_weights, counted_steps

__all__ = ["WEIGHTINGS", "JeffreysTerms", "StepState", "Weighting", "jeffreys_terms"]


@dataclass(frozen=True)
class StepState:
    """What a ``callback`` sees after the model calls of one step (before the chain moves on).

    ``x[d, p, j]`` is the state of sample ``j`` of pair ``p`` on the trajectory driven by side ``d``
    (0 = a, 1 = b); ``output_a[d, p, j]`` / ``output_b[d, p, j]`` are the guided model outputs of
    side a / b at that state (``chain.denoised(x, output, step)`` turns them into clean samples).
    """

    step: int
    timestep: Tensor
    x: Tensor
    output_a: Tensor
    output_b: Tensor
    chain: ReverseChain

    @property
    def eps_a(self) -> Tensor:
        """:attr:`output_a` under its name from when every model predicted noise."""
        return self.output_a

    @property
    def eps_b(self) -> Tensor:
        """:attr:`output_b` under its name from when every model predicted noise."""
        return self.output_b


@dataclass(frozen=True)
class JeffreysTerms:
    """Per-step Monte-Carlo terms, float64, shaped ``(pairs, samples, 2, steps)``.

    ``squared`` holds ``||Δoutput_w||²`` (summed over elements) at every step, the squared difference
    of the two sides' guided outputs in the model's own parametrisation (``||Δeps_w||²`` for noise
    predictors; :attr:`ReverseChain.eps_factor` converts); index 2 is the direction:
    0 along trajectories of side a (``KL(P_a || P_b)``), 1 along side b. ``weights`` maps each
    weighting to its per-step factors (zero on steps that do not count); ``counted_steps`` marks the
    steps above the noise floor. ``contributions(w)`` summed over its last two dimensions is one
    Monte-Carlo sample of the Jeffreys divergence. ``sample_mask`` (pairs, samples) marks the samples
    drawn for each pair when pairs got different numbers of samples (adaptive sampling); ``None``
    means all.
    """

    squared: Tensor
    weights: Mapping[str, Tensor]
    timesteps: Tensor
    counted_steps: Tensor
    sample_mask: Tensor | None = None

    @property
    def simple(self) -> Tensor:
        return self.contributions("simple")

    @property
    def girsanov(self) -> Tensor:
        return self.contributions("girsanov")

    @property
    def included_steps(self) -> Tensor:
        """Alias of :attr:`counted_steps` (its name before noise floors)."""
        return self.counted_steps

    @property
    def num_samples(self) -> Tensor:
        """Monte-Carlo samples behind each pair's estimate."""
        if self.sample_mask is None:
            return torch.full(self.squared.shape[:1], self.squared.shape[1], dtype=torch.long)
        return self.sample_mask.sum(dim=1)

    def contributions(self, weighting: Weighting) -> Tensor:
        """Per-step contributions of ``weighting``, ``(pairs, samples, 2, steps)``."""
        if weighting not in self.weights:
            raise ValueError(f"weighting must be one of {tuple(self.weights)}, got {weighting!r}")
        return self.squared * self.weights[weighting]

    def samples(self, weighting: Weighting) -> Tensor:
        """One Jeffreys estimate per Monte-Carlo sample, ``(pairs, samples)``."""
        return self.contributions(weighting).sum(dim=(-1, -2))

    def divergence(self, weighting: Weighting) -> Tensor:
        """Monte-Carlo mean per pair."""
        return self.samples(weighting).sum(dim=1) / self.num_samples

    def stderr(self, weighting: Weighting) -> Tensor:
        """Standard error of :meth:`divergence` per pair (NaN with a single sample)."""
        samples, count = self.samples(weighting), self.num_samples.double()
        deviations = samples - self.divergence(weighting)[:, None]
        if self.sample_mask is not None:
            deviations = deviations * self.sample_mask
        variance = deviations.pow(2).sum(dim=1) / (count - 1)
        return torch.where(count > 1, (variance / count).sqrt(), torch.full_like(variance, float("nan")))

    def select(self, pairs: slice) -> JeffreysTerms:
        """The terms of some pairs (all samples)."""
        mask = None if self.sample_mask is None else self.sample_mask[pairs]
        return replace(self, squared=self.squared[pairs], sample_mask=mask)

    @staticmethod
    def concat_samples(parts: Sequence[JeffreysTerms]) -> JeffreysTerms:
        """One set of terms holding the samples of ``parts`` (same pairs, drawn in turn)."""
        return replace(parts[0], squared=torch.cat([p.squared for p in parts], dim=1), sample_mask=None)

    @staticmethod
    def stack_pairs(per_pair: Sequence[JeffreysTerms]) -> JeffreysTerms:
        """One set of terms from single-pair terms with possibly different numbers of samples."""
        longest = max(t.squared.shape[1] for t in per_pair)
        mask = torch.zeros(len(per_pair), longest, dtype=torch.bool)
        for i, t in enumerate(per_pair):
            mask[i, : t.squared.shape[1]] = True
        squared = torch.cat(
            [torch.nn.functional.pad(t.squared, (0, 0, 0, 0, 0, longest - t.squared.shape[1])) for t in per_pair]
        )
        return replace(per_pair[0], squared=squared, sample_mask=None if bool(mask.all()) else mask)


class _ConditioningTable:
    """Unique prompts per model, encoded once per batch (STS sets repeat sentences)."""

    def __init__(self, models: Sequence[Denoiser], max_batch_size: int) -> None:
        self._models = models
        self._max_batch_size = max_batch_size
        self._rows: list[dict[str, int]] = [{} for _ in models]

    def row(self, model: int, prompt: str) -> int:
        rows = self._rows[model]
        return rows.setdefault(prompt, len(rows))

    def encode(self) -> list[Conditioning]:
        tables = []
        for model, rows in zip(self._models, self._rows):
            prompts = list(rows)
            chunks = [
                model.encode_prompts(prompts[i : i + self._max_batch_size])
                for i in range(0, len(prompts), self._max_batch_size)
            ]
            tables.append(concat_rows(chunks))
        return tables


@dataclass(frozen=True)
class _Request:
    trajectory: int
    model: int
    row: int


class _EvaluationPlan:
    """Which trajectories to run and which predictions each step needs, deduplicated.

    A trajectory is driven by one (model, prompt) and one Monte-Carlo sample; since sample ``j`` uses
    the same noise in every pair, pairs that share a (model, prompt) share its whole trajectory (STS
    sets repeat sentences; a similarity matrix of n prompts needs n trajectories, not n(n-1)). At each
    state the driver's prediction and those of all its partners (and the unconditional ones) are
    requested once (the unconditional ones only under classifier-free guidance). A pair with the same
    model and prompt on both sides therefore asks for a single prediction, and its difference is
    exactly zero.

    Index tensors, per pair and direction ``d`` (0: trajectory of side a, 1: of side b):
    ``trajectory[d]``, and the requests holding side a's / side b's conditional and unconditional
    predictions at that trajectory's states.
    """

    def __init__(
        self,
        side_models: tuple[int, int],
        prompts: tuple[Sequence[str], Sequence[str]],
        guided: bool,
        table: _ConditioningTable,
    ) -> None:
        num_pairs = len(prompts[0])
        drivers: dict[tuple[int, str], int] = {}
        index: dict[_Request, int] = {}

        def request(trajectory: int, model: int, prompt: str) -> int:
            return index.setdefault(_Request(trajectory, model, table.row(model, prompt)), len(index))

        self.trajectory = torch.zeros(2, num_pairs, dtype=torch.long)
        self.cond = torch.zeros(2, 2, num_pairs, dtype=torch.long)  # [direction, side, pair]
        self.uncond = torch.zeros(2, 2, num_pairs, dtype=torch.long)
        for pair in range(num_pairs):
            for direction in (0, 1):
                driver = (side_models[direction], prompts[direction][pair])
                trajectory = drivers.setdefault(driver, len(drivers))
                self.trajectory[direction, pair] = trajectory
                for side in (0, 1):
                    self.cond[direction, side, pair] = request(trajectory, side_models[side], prompts[side][pair])
                    if guided:
                        self.uncond[direction, side, pair] = request(trajectory, side_models[side], "")
        self.guided = guided
        self.drivers = list(drivers)
        self.requests = list(index)
        # Where each trajectory finds its own (driver's) predictions, to move it along.
        self.drive_cond = torch.tensor(
            [index[_Request(t, m, table.row(m, p))] for t, (m, p) in enumerate(self.drivers)]
        )
        self.drive_uncond = (
            torch.tensor([index[_Request(t, m, table.row(m, ""))] for t, (m, _) in enumerate(self.drivers)])
            if guided
            else None
        )
        self.request_trajectory = torch.tensor([r.trajectory for r in self.requests])
        self.request_row = torch.tensor([r.row for r in self.requests])
        self.request_model = torch.tensor([r.model for r in self.requests])

    @property
    def num_trajectories(self) -> int:
        return len(self.drivers)


def _check_same_chain(first: ReverseChain, second: ReverseChain) -> None:
    fields = ("timesteps", "input_scale", "x_coef", "output_coef", "noise_std")
    if (
        first.num_steps != second.num_steps
        or first.prediction_type != second.prediction_type
        or not all(torch.allclose(getattr(first, f).double(), getattr(second, f).double()) for f in fields)
    ):
        raise ValueError(
            "model_b samples with a different reverse chain than model; both sides of a comparison "
            "must share the noise schedule, the sampler and the prediction type"
        )


def _shared_guidance_mode(models: Sequence[Denoiser]) -> GuidanceMode:
    modes = {guidance_mode(model) for model in models}
    if len(modes) != 1:
        raise ValueError(
            f"model and model_b are guided differently ({sorted(modes)}); both sides of a "
            "comparison must share the guidance mode"
        )
    return modes.pop()


def _state_dtype(model: Denoiser) -> torch.dtype:
    return torch.float64 if getattr(model, "dtype", None) == torch.float64 else torch.float32


def jeffreys_terms(
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    model_a: Denoiser,
    model_b: Denoiser | None = None,
    *,
    num_steps: int = 10,
    num_samples: int = 5,
    guidance_scale: float = 7.5,
    seed: int = 0,
    max_batch_size: int = 64,
    min_noise: float = 0,
    min_timestep: float = 0,
    progress_bar: bool | None = False,
    callback: Callable[[StepState], None] | None = None,
    first_sample: int = 0,
    antithetic: bool = False,
) -> JeffreysTerms:
    """Monte-Carlo terms of the Jeffreys divergence for each pair ``(model_a, a[p])`` vs ``(model_b, b[p])``.

    Arguments are assumed valid (the public entry points check them). ``model_b`` defaults to
    ``model_a`` (prompt comparison); give another model with the same prompts to compare checkpoints.
    Model evaluations of one step for the whole batch go through each model in calls of at most
    ``max_batch_size`` rows. ``progress_bar=None`` shows a bar only on a terminal. ``first_sample``
    selects which Monte-Carlo samples to draw (``first_sample, ..., first_sample + num_samples - 1``),
    so more samples can be added to an estimate later. ``antithetic`` pairs each sample with one
    drawn from the negated noise (a variance-reduction option; see ``benchmarks/variance_reduction.py``).
    Steps count towards the divergence when they land at noise level ``min_noise`` or above and their
    timestep is at least ``min_timestep`` (:func:`~conjure_metrics.weighting.counted_steps`).
    ``guidance_scale`` is used as the models' shared guidance mode says (both sides must share it).
    """
    models: list[Denoiser] = [model_a] if model_b is None or model_b is model_a else [model_a, model_b]
    side_models = (0, len(models) - 1)
    chain = models[0].reverse_chain(num_steps)
    if len(models) == 2:
        _check_same_chain(chain, models[1].reverse_chain(num_steps))
        if tuple(models[1].sample_shape) != tuple(models[0].sample_shape):
            raise ValueError(
                f"model_b's sample shape {models[1].sample_shape} differs from model's {models[0].sample_shape}"
            )

    mode = _shared_guidance_mode(models)
    guided = mode == "cfg" and guidance_scale != 1
    model_options = {"guidance_scale": guidance_scale} if mode == "embedded" else {}
    table = _ConditioningTable(models, max_batch_size)
    plan = _EvaluationPlan(side_models, (prompts_a, prompts_b), guided, table)
    num_pairs, shape = len(prompts_a), tuple(models[0].sample_shape)
    device, dtype = models[0].device, _state_dtype(models[0])

    batch_limits = [max_batch_size] * len(models)  # lowered for good after a CUDA out-of-memory
    with torch.inference_mode(), _eval_modes(models):
        conditioning = table.encode()
        initial, step_noise = trajectory_noise(
            seed, num_samples, chain.num_steps, shape, dtype, first_sample, antithetic
        )
        x = (initial * chain.init_std).to(device).expand(plan.num_trajectories, *initial.shape).clone()

        squared = torch.zeros(2, num_pairs, num_samples, chain.num_steps, dtype=torch.float64)

        all_requests = torch.arange(len(plan.requests))
        # The unconditional prediction only moves a trajectory on (with one model on both sides it
        # cancels in the difference), so the last step, after which nothing moves, can skip it.
        last_step_requests = (
            plan.cond.flatten().unique() if guided and len(models) == 1 and callback is None else all_requests
        )
        for step in tqdm(range(chain.num_steps), desc="conjure", disable=_disable(progress_bar), leave=False):
            model_input = x * chain.input_scale[step].to(dtype)
            last = step == chain.num_steps - 1
            # Every trajectory starts from the same x_T: the first step needs each prediction once.
            outputs = _evaluate(
                models,
                plan,
                conditioning,
                model_input,
                chain.timesteps[step],
                batch_limits,
                last_step_requests if last else all_requests,
                model_options,
                states_identical=(step == 0),
            )
            output_a = _guide(outputs, plan.cond[:, 0], plan.uncond[:, 0] if guided else None, guidance_scale)
            output_b = _guide(outputs, plan.cond[:, 1], plan.uncond[:, 1] if guided else None, guidance_scale)

            squared[..., step] = (output_a - output_b).double().pow(2).flatten(3).sum(-1).cpu()

            if callback is not None:
                callback(StepState(step, chain.timesteps[step], x[plan.trajectory], output_a, output_b, chain))
            if last:
                break
            drive = _guide(outputs, plan.drive_cond, plan.drive_uncond, guidance_scale)
            x = (
                chain.x_coef[step].to(dtype) * x
                + chain.output_coef[step].to(dtype) * drive
                + chain.noise_std[step].to(dtype) * step_noise[step].to(device)
            )

    counted = counted_steps(chain, min_noise, min_timestep)
    weights = all_step_weights(chain, math.prod(shape), counted)
    return JeffreysTerms(squared.permute(1, 2, 0, 3).clone(), weights, chain.timesteps.clone(), counted)


def _disable(progress_bar: bool | None) -> bool | None:
    return None if progress_bar is None else not progress_bar


def _guide(outputs: Tensor, cond: Tensor, uncond: Tensor | None, scale: float) -> Tensor:
    if uncond is None:
        return outputs[cond]
    unconditional = outputs[uncond]
    return unconditional + scale * (outputs[cond] - unconditional)


def _evaluate(
    models: Sequence[Denoiser],
    plan: _EvaluationPlan,
    conditioning: list[Conditioning],
    x: Tensor,
    timestep: Tensor,
    batch_limits: list[int],
    requests: Tensor,
    model_options: Mapping[str, float],
    states_identical: bool = False,
) -> Tensor:
    """The predictions ``requests`` asks for, in a ``(len(plan.requests), samples, *shape)`` tensor
    (zero where not asked), in chunks of at most ``batch_limits[m]`` rows.

    With ``states_identical`` (all trajectories at the same state) each (model, prompt) is evaluated
    once and shared by every trajectory.
    """
    if states_identical:
        keys = (plan.request_model * (plan.request_row.max() + 1) + plan.request_row)[requests]
        unique_keys, inverse = torch.unique(keys, return_inverse=True)
        first = torch.full((len(unique_keys),), len(keys), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(keys)), reduce="amin"
        )
        predictions = _evaluate_requests(
            models, plan, conditioning, x, timestep, batch_limits, requests[first], model_options
        )[inverse.to(x.device)]
    else:
        predictions = _evaluate_requests(models, plan, conditioning, x, timestep, batch_limits, requests, model_options)
    if len(requests) == len(plan.requests):  # all of them, in order: nothing to place
        return predictions
    out = torch.zeros((len(plan.requests), *x.shape[1:]), dtype=x.dtype, device=x.device)
    out[requests.to(x.device)] = predictions
    return out


def _evaluate_requests(
    models: Sequence[Denoiser],
    plan: _EvaluationPlan,
    conditioning: list[Conditioning],
    x: Tensor,
    timestep: Tensor,
    batch_limits: list[int],
    requests: Tensor,
    model_options: Mapping[str, float],
) -> Tensor:
    num_samples = x.shape[1]
    out = torch.empty((len(requests), *x.shape[1:]), dtype=x.dtype, device=x.device)
    for model_index, model in enumerate(models):
        positions = (plan.request_model[requests] == model_index).nonzero().flatten()
        if len(positions) == 0:
            continue
        chosen = requests[positions]
        rows_x = x[plan.request_trajectory[chosen].to(x.device)].flatten(0, 1)
        rows_cond = repeat_rows(select_rows(conditioning[model_index], plan.request_row[chosen]), num_samples)
        predictions, batch_limits[model_index] = _predict_in_chunks(
            model, rows_x, rows_cond, timestep, batch_limits[model_index], model_options
        )
        out[positions.to(x.device)] = predictions.to(device=x.device, dtype=x.dtype).unflatten(
            0, (len(positions), num_samples)
        )
    return out


def _predict_in_chunks(
    model: Denoiser,
    rows_x: Tensor,
    rows_cond: Conditioning,
    timestep: Tensor,
    batch: int,
    model_options: Mapping[str, float],
) -> tuple[Tensor, int]:
    """Predictions for all rows in micro-batches of ``batch`` rows, and the micro-batch that worked.

    On CUDA out-of-memory the micro-batch halves and the chunk is retried.
    """
    predictions, start = [], 0
    while start < rows_x.shape[0]:
        chunk = rows_x[start : start + batch]
        try:
            output = model.predict_noise(
                chunk.to(model.device),
                timestep.to(model.device).expand(chunk.shape[0]),
                select_rows(rows_cond, slice(start, start + batch)),
                **model_options,
            )
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)
            warnings.warn(
                f"CUDA out of memory: retrying with micro-batches of {batch} rows", RuntimeWarning, stacklevel=2
            )
            torch.cuda.empty_cache()
            continue
        if output.shape != chunk.shape:
            raise ValueError(f"model returned outputs of shape {tuple(output.shape)} for inputs {tuple(chunk.shape)}")
        if not torch.isfinite(output).all():
            raise ValueError(f"model returned non-finite (NaN or inf) outputs at timestep {timestep.item()}")
        predictions.append(output.to(rows_x.device))
        start += chunk.shape[0]
    return torch.cat(predictions), batch


def _eval_modes(models: Sequence[Denoiser]):
    """Each model's own ``eval_mode()`` context when it has one (restores training mode afterwards)."""
    stack = ExitStack()
    for model in models:
        stack.enter_context(getattr(model, "eval_mode", nullcontext)())
    return stack
