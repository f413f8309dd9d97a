"""Analytic Gaussian conditionals: a denoiser with closed-form noise predictions and exact divergences.

If ``x0 | y ~ N(m_y, v_y I)`` then ``p_t(x | y) = N(sqrt(abar_t) m_y, (abar_t v_y + sigma_t²) I)`` and the
optimal noise prediction is ``eps*(x, t, y) = sigma_t (x - sqrt(abar_t) m_y) / (abar_t v_y + sigma_t²)``.
It is affine in ``x``, so a reverse chain driven by it stays Gaussian: its mean and (isotropic)
variance can be propagated step by step, and the expected Monte-Carlo terms of
:mod:`conjure_metrics.estimator` have closed forms. This is the ground truth the estimator is
tested against, and a cheap model to experiment with.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain, ddim_chain, ddpm_chain, leading_timesteps
from conjure_metrics.weighting import all_step_weights, counted_steps


class GaussianConditionals:
    """A :class:`~conjure_metrics.Denoiser` whose data under prompt ``y`` is ``N(means[y], variances[y] I)``.

    The empty prompt ``""`` is the unconditional model used by classifier-free guidance; give it a
    mean and variance like any other prompt. Works in float64.

    Args:
        means: prompt -> mean vector (all of the same length ``d``).
        variances: prompt -> scalar data variance.
        alphas_cumprod: the training schedule ``abar_t``.
        sampler: ``"ddpm"`` or ``"ddim"`` (with ``eta``).
        steps_offset: added to the leading-spaced timesteps (diffusers' ``steps_offset``).

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

    dtype = torch.float64

    def __init__(
        self,
        means: Mapping[str, Tensor | Sequence[float]],
        variances: Mapping[str, float],
        alphas_cumprod: Tensor,
        sampler: str = "ddpm",
        eta: float = 1.0,
        steps_offset: int = 0,
    ) -> None:
        if set(means) != set(variances):
            raise ValueError("means and variances must name the same prompts")
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        self.prompts = list(means)
        self.means = {p: torch.as_tensor(m, dtype=torch.float64) for p, m in means.items()}
        self.variances = {p: float(v) for p, v in variances.items()}
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.sampler, self.eta, self.steps_offset = sampler, eta, steps_offset
        self.sample_shape = tuple(next(iter(self.means.values())).shape)
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> "GaussianConditionals":
        self._device = torch.device(device)
        return self

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        unknown = [p for p in prompts if p not in self.means]
        if unknown:
            raise ValueError(f"GaussianConditionals has no distribution for prompts {unknown}")
        rows = [torch.cat([self.means[p].flatten(), torch.tensor([self.variances[p]], dtype=torch.float64)]) for p in prompts]
        return torch.stack(rows).to(self._device)

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        abar = self.alphas_cumprod.to(x.device)[timesteps.long()].view(-1, *([1] * (x.dim() - 1)))
        mean, variance = conditioning[:, :-1].view(x.shape), conditioning[:, -1].view(abar.shape)
        sigma = (1 - abar).sqrt()
        return sigma * (x - abar.sqrt() * mean) / (abar * variance + sigma**2)

    def reverse_chain(self, num_steps: int) -> ReverseChain:
        timesteps = leading_timesteps(num_steps, len(self.alphas_cumprod), self.steps_offset)
        if self.sampler == "ddpm":
            return ddpm_chain(self.alphas_cumprod, timesteps)
        return ddim_chain(self.alphas_cumprod, timesteps, eta=self.eta)

    def _affine(self, prompt: str, abar: Tensor) -> tuple[Tensor, Tensor]:
        """``eps*(x) = slope * x + offset`` for one prompt at signal level ``abar``."""
        sigma = (1 - abar).sqrt()
        denominator = abar * self.variances[prompt] + sigma**2
        return sigma / denominator, -sigma * abar.sqrt() * self.means[prompt] / denominator

    def _guided_affine(self, prompt: str, abar: Tensor, guidance_scale: float) -> tuple[Tensor, Tensor]:
        slope, offset = self._affine(prompt, abar)
        if guidance_scale == 1:
            return slope, offset
        slope_u, offset_u = self._affine("", abar)
        return slope_u + guidance_scale * (slope - slope_u), offset_u + guidance_scale * (offset - offset_u)

    def exact_terms(
        self, prompt_a: str, prompt_b: str, num_steps: int, guidance_scale: float = 1.0, min_timestep: float = 0,
        min_noise: float = 0,
    ) -> dict[str, Tensor]:
        """Expected per-step contributions, ``(2, num_steps)`` per weighting, of the estimator's terms.

        Direction 0 propagates the exact Gaussian marginals of the chain driven by ``prompt_a`` and
        takes the expectation of ``||Δeps_w||²`` under them; direction 1 the same under ``prompt_b``.
        Summed, the ``girsanov`` entry is the exact Jeffreys divergence of the two discrete chains.
        """
        chain = self.reverse_chain(num_steps)
        dim = self.means[prompt_a].numel()
        weights = all_step_weights(chain, dim, counted_steps(chain, min_noise, min_timestep))
        expected = torch.zeros(2, num_steps, dtype=torch.float64)
        for direction, driver in enumerate((prompt_a, prompt_b)):
            mean = torch.zeros(dim, dtype=torch.float64)
            variance = torch.tensor(chain.init_std**2, dtype=torch.float64)
            for step in range(num_steps):
                abar, scale = chain.alpha_bar[step], chain.input_scale[step]
                slope_a, offset_a = self._guided_affine(prompt_a, abar, guidance_scale)
                slope_b, offset_b = self._guided_affine(prompt_b, abar, guidance_scale)
                slope_d, offset_d = (slope_a - slope_b) * scale, offset_a - offset_b
                expected[direction, step] = ((slope_d * mean + offset_d) ** 2).sum() + slope_d**2 * variance * dim
                slope, offset = (slope_a, offset_a) if driver == prompt_a else (slope_b, offset_b)
                gain = chain.x_coef[step] + chain.eps_coef[step] * slope * scale
                mean = gain * mean + chain.eps_coef[step] * offset
                variance = gain**2 * variance + chain.noise_std[step] ** 2
        return {name: expected * weight for name, weight in weights.items()}

    def exact_divergence(self, prompt_a: str, prompt_b: str, num_steps: int, guidance_scale: float = 1.0,
                         weighting: str = "girsanov", min_timestep: float = 0, min_noise: float = 0) -> float:
        """The expected value of the estimator's divergence (exact discrete-chain Jeffreys for ``girsanov``)."""
        terms = self.exact_terms(prompt_a, prompt_b, num_steps, guidance_scale, min_timestep, min_noise)
        return float(terms[weighting].sum())
