"""Analytic Gaussian conditionals: denoisers with closed-form outputs and exact divergences.

If ``x0 | y ~ N(m_y, v_y I)`` then a noised sample ``x = a x0 + b eps`` is Gaussian too, and the optimal
predictions of the noise, of ``v`` and of the flow velocity are affine in ``x``. For a
variance-preserving model (``a = sqrt(abar_t)``, ``b = sigma_t = sqrt(1 - abar_t)``),
``p_t(x | y) = N(sqrt(abar_t) m_y, (abar_t v_y + sigma_t²) I)`` and
``eps*(x, t, y) = sigma_t (x - sqrt(abar_t) m_y) / (abar_t v_y + sigma_t²)``; for a flow-matching model
(``a = 1 - sigma``, ``b = sigma``) the velocity is ``u* = E[eps | x] - E[x0 | x]``. A reverse chain
driven by an affine output stays Gaussian: its mean and (isotropic) variance can be propagated step by
step, and the expected Monte-Carlo terms of :mod:`conjure_metrics.estimator` have closed forms. This is
the ground truth the estimator is tested against, and a cheap model to experiment with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor

from conjure_metrics.chains import PredictionType, ReverseChain, ddim_chain, ddpm_chain, leading_timesteps
from conjure_metrics.chains_flow import (
    DEFAULT_FLOW_NOISE_LEVEL,
    flow_ancestral_chain,
    flow_ode_chain,
    flow_sde_chain,
    flow_sigmas,
)
from conjure_metrics.weighting import all_step_weights, counted_steps


class _AnalyticConditionals(ABC):
    """Prompts with Gaussian data, their conditioning rows ``[mean..., variance]``, and the exact terms.

    A subclass says how its model's output depends on the input at a noise level
    (:meth:`_output_affine`), which noise level a timestep means, and which chain samples it.
    """

    dtype = torch.float64

    def __init__(self, means: Mapping[str, Tensor | Sequence[float]], variances: Mapping[str, float]) -> None:
        if set(means) != set(variances):
            raise ValueError("means and variances must name the same prompts")
        self.prompts = list(means)
        self.means = {p: torch.as_tensor(m, dtype=torch.float64) for p, m in means.items()}
        self.variances = {p: float(v) for p, v in variances.items()}
        self.sample_shape = tuple(next(iter(self.means.values())).shape)
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> _AnalyticConditionals:
        self._device = torch.device(device)
        return self

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        unknown = [p for p in prompts if p not in self.means]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no distribution for prompts {unknown}")
        rows = [
            torch.cat([self.means[p].flatten(), torch.tensor([self.variances[p]], dtype=torch.float64)])
            for p in prompts
        ]
        return torch.stack(rows).to(self._device)

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """The exact model output (in this model's parametrisation) for each row."""
        rows = (-1, *([1] * (x.dim() - 1)))
        level = self._timestep_levels(timesteps.to(x.device)).view(rows)
        mean, variance = conditioning[:, :-1].view(x.shape), conditioning[:, -1].view(rows)
        slope, offset = self._output_affine(mean, variance, level)
        return slope * x + offset

    @abstractmethod
    def reverse_chain(self, num_steps: int) -> ReverseChain:
        """The sampler the estimator runs with ``num_steps`` steps."""

    @abstractmethod
    def _timestep_levels(self, timesteps: Tensor) -> Tensor:
        """The noise level (the subclass's own variable) at which the model is evaluated, per timestep."""

    def _chain_levels(self, chain: ReverseChain) -> Tensor:
        return self._timestep_levels(chain.timesteps)

    @abstractmethod
    def _output_affine(self, mean: Tensor, variance: Tensor | float, level: Tensor) -> tuple[Tensor, Tensor]:
        """``output = slope * model_input + offset`` for data ``N(mean, variance I)`` at noise ``level``."""

    def _guided_affine(self, prompt: str, level: Tensor, guidance_scale: float) -> tuple[Tensor, Tensor]:
        slope, offset = self._output_affine(self.means[prompt], self.variances[prompt], level)
        if guidance_scale == 1:
            return slope, offset
        slope_u, offset_u = self._output_affine(self.means[""], self.variances[""], level)
        return slope_u + guidance_scale * (slope - slope_u), offset_u + guidance_scale * (offset - offset_u)

    def exact_terms(
        self,
        prompt_a: str,
        prompt_b: str,
        num_steps: int,
        guidance_scale: float = 1.0,
        min_timestep: float = 0,
        min_noise: float = 0,
    ) -> dict[str, Tensor]:
        """Expected per-step contributions, ``(2, num_steps)`` per weighting, of the estimator's terms.

        Direction 0 propagates the exact Gaussian marginals of the chain driven by ``prompt_a`` and
        takes the expectation of ``||Δoutput_w||²`` under them; direction 1 the same under ``prompt_b``.
        Summed, the ``girsanov`` entry is the exact Jeffreys divergence of the two discrete chains.
        """
        chain = self.reverse_chain(num_steps)
        dim = self.means[prompt_a].numel()
        weights = all_step_weights(chain, dim, counted_steps(chain, min_noise, min_timestep))
        levels = self._chain_levels(chain)
        expected = torch.zeros(2, num_steps, dtype=torch.float64)
        for direction, driver in enumerate((prompt_a, prompt_b)):
            mean = torch.zeros(dim, dtype=torch.float64)
            variance = torch.tensor(chain.init_std**2, dtype=torch.float64)
            for step in range(num_steps):
                scale = chain.input_scale[step].double()
                slope_a, offset_a = self._guided_affine(prompt_a, levels[step], guidance_scale)
                slope_b, offset_b = self._guided_affine(prompt_b, levels[step], guidance_scale)
                slope_d, offset_d = (slope_a - slope_b) * scale, offset_a - offset_b
                expected[direction, step] = ((slope_d * mean + offset_d) ** 2).sum() + slope_d**2 * variance * dim
                slope, offset = (slope_a, offset_a) if driver == prompt_a else (slope_b, offset_b)
                gain = chain.x_coef[step] + chain.output_coef[step] * slope * scale
                mean = gain * mean + chain.output_coef[step] * offset
                variance = gain**2 * variance + chain.noise_std[step] ** 2
        return {name: expected * weight for name, weight in weights.items()}

    def exact_divergence(
        self,
        prompt_a: str,
        prompt_b: str,
        num_steps: int,
        guidance_scale: float = 1.0,
        weighting: str = "girsanov",
        min_timestep: float = 0,
        min_noise: float = 0,
    ) -> float:
        """The expected value of the estimator's divergence (exact discrete-chain Jeffreys for ``girsanov``)."""
        terms = self.exact_terms(prompt_a, prompt_b, num_steps, guidance_scale, min_timestep, min_noise)
        return float(terms[weighting].sum())


class GaussianConditionals(_AnalyticConditionals):
    """A variance-preserving :class:`~conjure_metrics.Denoiser` whose data under prompt ``y`` is ``N(means[y], variances[y] I)``.

    The empty prompt ``""`` is the unconditional model used by classifier-free guidance; give it a
    mean and variance like any other prompt. Works in float64.

    Args:
        means: prompt -> mean vector (all of the same length ``d``).
        variances: prompt -> scalar data variance.
        alphas_cumprod: the training schedule ``abar_t``.
        sampler: ``"ddpm"`` or ``"ddim"`` (with ``eta``).
        steps_offset: added to the leading-spaced timesteps (diffusers' ``steps_offset``).
        prediction_type: the model outputs its exact noise (``"epsilon"``) or ``v`` (``"v_prediction"``).

    Examples:
        >>> import torch
        >>> from conjure_metrics.chains import linear_betas
        >>> model = GaussianConditionals(
        ...     means={"": torch.zeros(2), "cat": torch.ones(2), "dog": -torch.ones(2)},
        ...     variances={"": 1.0, "cat": 0.5, "dog": 0.5},
        ...     alphas_cumprod=torch.cumprod(1 - linear_betas(), 0),
        ... )
        >>> model.sample_shape
        (2,)
    """

    def __init__(
        self,
        means: Mapping[str, Tensor | Sequence[float]],
        variances: Mapping[str, float],
        alphas_cumprod: Tensor,
        sampler: str = "ddpm",
        eta: float = 1.0,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
    ) -> None:
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        super().__init__(means, variances)
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.sampler, self.eta, self.steps_offset = sampler, eta, steps_offset
        self.prediction_type: PredictionType = cast(PredictionType, prediction_type)  # checked just above

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        timesteps = leading_timesteps(num_steps, len(self.alphas_cumprod), self.steps_offset)
        if self.sampler == "ddpm":
            return ddpm_chain(self.alphas_cumprod, timesteps, prediction_type=self.prediction_type)
        return ddim_chain(self.alphas_cumprod, timesteps, eta=self.eta, prediction_type=self.prediction_type)

    def _timestep_levels(self, timesteps: Tensor) -> Tensor:
        return self.alphas_cumprod.to(timesteps.device)[timesteps.long()]

    def _chain_levels(self, chain: ReverseChain) -> Tensor:
        return chain.alpha_bar.double()  # floored like the chain's own steps

    def _output_affine(self, mean: Tensor, variance: Tensor | float, level: Tensor) -> tuple[Tensor, Tensor]:
        signal, noise = level.sqrt(), (1 - level).sqrt()
        denominator = level * variance + noise**2
        if self.prediction_type == "epsilon":
            return noise / denominator, -noise * signal * mean / denominator
        # v = signal * eps - noise * E[x0 | x], with E[x0 | x] = mean + signal * variance * (x - signal * mean) / denominator
        slope = signal * noise * (1 - variance) / denominator
        return slope, -slope * signal * mean - noise * mean


class FlowGaussianConditionals(_AnalyticConditionals):
    """A flow-matching :class:`~conjure_metrics.Denoiser` whose data under prompt ``y`` is ``N(means[y], variances[y] I)``.

    Noised as ``x = (1 - sigma) x0 + sigma eps``, the model outputs the exact velocity
    ``u*(x, sigma, y) = E[eps | x] - E[x0 | x] = (sigma - (1 - sigma) v_y) (x - (1 - sigma) m_y) / D - m_y``,
    ``D = (1 - sigma)² v_y + sigma²``, at timestep ``num_train_timesteps * sigma`` (as SD3). The empty
    prompt ``""`` is the unconditional model. Works in float64.

    Args:
        means: prompt -> mean vector (all of the same length ``d``).
        variances: prompt -> scalar data variance.
        sampler: ``"sde"`` (:func:`~conjure_metrics.chains_flow.flow_sde_chain`, with ``noise_level``),
            ``"ancestral"`` (:func:`~conjure_metrics.chains_flow.flow_ancestral_chain`) or ``"ode"``.
        shift, mu: the sigma schedule's static shift or dynamic-shift ``mu`` (:func:`~conjure_metrics.chains_flow.flow_sigmas`).

    Examples:
        >>> import torch
        >>> model = FlowGaussianConditionals(
        ...     means={"": torch.zeros(2), "cat": torch.ones(2), "dog": -torch.ones(2)},
        ...     variances={"": 1.0, "cat": 0.5, "dog": 0.5}, shift=3.0)
        >>> model.reverse_chain(4).prediction_type
        'flow_prediction'
        >>> model.exact_divergence("cat", "dog", 4) > 0
        True
    """

    def __init__(
        self,
        means: Mapping[str, Tensor | Sequence[float]],
        variances: Mapping[str, float],
        sampler: str = "sde",
        noise_level: float = DEFAULT_FLOW_NOISE_LEVEL,
        shift: float = 1.0,
        mu: float | None = None,
        num_train_timesteps: int = 1000,
    ) -> None:
        if sampler not in ("sde", "ancestral", "ode"):
            raise ValueError(f"sampler must be 'sde', 'ancestral' or 'ode', got {sampler!r}")
        super().__init__(means, variances)
        self.sampler, self.noise_level = sampler, noise_level
        self.shift, self.mu, self.num_train_timesteps = shift, mu, num_train_timesteps

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        sigmas = flow_sigmas(num_steps, self.shift, self.mu, self.num_train_timesteps)
        timesteps = self.num_train_timesteps * sigmas[:-1]
        if self.sampler == "sde":
            return flow_sde_chain(sigmas, timesteps, self.noise_level)
        if self.sampler == "ancestral":
            return flow_ancestral_chain(sigmas, timesteps)
        return flow_ode_chain(sigmas, timesteps)

    def _timestep_levels(self, timesteps: Tensor) -> Tensor:
        return timesteps.double() / self.num_train_timesteps

    def _output_affine(self, mean: Tensor, variance: Tensor | float, level: Tensor) -> tuple[Tensor, Tensor]:
        sigma = level
        denominator = (1 - sigma) ** 2 * variance + sigma**2
        slope = (sigma - (1 - sigma) * variance) / denominator
        return slope, -slope * (1 - sigma) * mean - mean
