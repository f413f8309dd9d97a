"""Reverse diffusion samplers written as linear-Gaussian chains, parametrised by the model's own output.

Every sampler the estimator runs takes one step of the form

    x_next = x_coef[i] * x + output_coef[i] * output_w(input_scale[i] * x, timesteps[i]) + noise_std[i] * z,

with ``z ~ N(0, I)`` and ``output_w`` the (guided) model output in the model's own parametrisation:
noise ``epsilon``, ``v_prediction``, the clean ``sample``, or a flow-matching velocity
(``flow_prediction``, :mod:`conjure_metrics.chains_flow`). Writing the sampler this way gives the
estimator everything it needs without knowing which scheduler produced it: the drift to move
trajectories, and the per-step Gaussian whose KL between two conditionals is
``output_coef**2 * ||Δoutput_w||**2 / (2 * noise_std**2)``.

The model input is ``input_scale * x = a * x0 + b * eps``. Variance-preserving models have
``a = sqrt(abar)``, ``b = sqrt(1 - abar)``; flow-matching models ``a = 1 - sigma``, ``b = sigma``.
``alpha_bar[i]`` is the variance-preserving-equivalent signal level ``a² / (a² + b²)`` in both cases,
so noise floors and SNR weightings mean the same for every family. From it and the prediction type
the chain gives the clean-sample prediction :meth:`ReverseChain.denoised` and the factor
:attr:`ReverseChain.eps_factor` with ``Δeps = eps_factor * Δoutput`` (so the paper's ``||Δeps||²``
keeps its meaning whatever the model outputs).

This module is pure torch: diffusers schedulers are converted to chains in
:mod:`conjure_metrics.denoisers.diffusers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Literal

import torch
from torch import Tensor

PredictionType = Literal["epsilon", "v_prediction", "sample", "flow_prediction"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample", "flow_prediction")
VARIANCE_PRESERVING_PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class ReverseChain:
    """A reverse-time sampler as a sequence of linear-Gaussian steps (all tensors of length ``num_steps``).

    Attributes:
        timesteps: the time value passed to the denoiser at each step.
        input_scale: factor mapping the chain state to the denoiser's input.
        x_coef: coefficient of the state in the step mean.
        output_coef: coefficient of the guided model output in the step mean.
        noise_std: standard deviation of the fresh noise added by the step (0 for deterministic steps).
        alpha_bar: variance-preserving-equivalent signal level of the model input at each step.
        init_std: standard deviation of the initial state ``x_T``.
        final_alpha_bar: signal level the last step lands on (1: the data).
        prediction_type: what the model outputs: ``"epsilon"``, ``"v_prediction"``, ``"sample"``
            (diffusers' names) or ``"flow_prediction"`` (the velocity ``eps - x0`` of flow matching).
    """

    timesteps: Tensor
    input_scale: Tensor
    x_coef: Tensor
    output_coef: Tensor
    noise_std: Tensor
    alpha_bar: Tensor
    init_std: float = 1.0
    final_alpha_bar: float = 1.0
    prediction_type: PredictionType = "epsilon"

    def __post_init__(self) -> None:
        tensors = (self.timesteps, self.input_scale, self.x_coef, self.output_coef, self.noise_std, self.alpha_bar)
        lengths = {len(t) for t in tensors}
        if len(lengths) != 1:
            raise ValueError(f"all ReverseChain tensors must have the same length, got lengths {sorted(lengths)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def eps_coef(self) -> Tensor:
        """:attr:`output_coef` under its name from when every model predicted noise (the same for ``epsilon``)."""
        return self.output_coef

    @property
    def noise_level(self) -> Tensor:
        """Variance-preserving noise standard deviation ``sqrt(1 - abar)`` at which each step evaluates the model."""
        return (1 - self.alpha_bar.double()).clamp_min(0).sqrt()

    @property
    def landing_noise_level(self) -> Tensor:
        """The noise level each step lands on: the next step's, and ``final_alpha_bar``'s after the last."""
        final = torch.tensor([1 - self.final_alpha_bar], dtype=torch.float64).clamp_min(0).sqrt()
        return torch.cat([self.noise_level[1:], final])

    @property
    def stochastic(self) -> Tensor:
        """Boolean mask of the steps that add noise (the only ones with a finite path KL)."""
        return self.noise_std > 0

    @property
    def eps_factor(self) -> Tensor:
        """Per-step factor (float64) turning an output difference into a noise difference: ``Δeps = eps_factor * Δoutput``.

        1 for ``epsilon``; ``sqrt(abar)`` for ``v_prediction``; ``-sqrt(abar / (1 - abar))`` for
        ``sample``; ``1 - sigma`` for ``flow_prediction`` (0 at pure noise, where ``eps = x`` whatever
        the model says).
        """
        return _output_conversions(self, self.prediction_type)[1]

    def girsanov_weight(self) -> Tensor:
        """Per-step factor turning ``||Δoutput_w||²`` (summed over elements) into the exact step KL.

        Deterministic steps get weight 0: two different deterministic maps have no finite KL, so they
        are excluded from the ``girsanov`` divergence (documented in the README).
        """
        variance = self.noise_std.double() ** 2
        weight = torch.zeros_like(variance)
        stochastic = variance > 0
        weight[stochastic] = self.output_coef.double()[stochastic] ** 2 / (2 * variance[stochastic])
        return weight

    def denoised(self, x: Tensor, output: Tensor, step: int) -> Tensor:
        """The model's prediction of the clean sample ``x0`` at ``step`` from the state ``x`` and its ``output``."""
        _, _, state_coef, output_coef = _output_conversions(self, self.prediction_type)
        return state_coef[step].to(x.dtype) * x + output_coef[step].to(x.dtype) * output


def _input_signal_and_noise(chain: ReverseChain) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with model input ``a * x0 + b * eps``: ``a² + b² = 1`` (variance preserving) or ``a + b = 1`` (flow)."""
    abar = chain.alpha_bar.double()
    signal, noise = abar.sqrt(), (1 - abar).clamp_min(0).sqrt()
    if chain.prediction_type == "flow_prediction":
        return signal / (signal + noise), noise / (signal + noise)
    return signal, noise


def _output_conversions(chain: ReverseChain, prediction_type: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-step coefficients (float64) with ``eps = c0 * x + c1 * output`` and ``x0 = c2 * x + c3 * output``
    for a model that outputs ``prediction_type`` (``x`` the chain state)."""
    a, b = _input_signal_and_noise(chain)
    scale = chain.input_scale.double()
    if prediction_type == "epsilon":
        return torch.zeros_like(a), torch.ones_like(a), scale / a, -b / a
    if prediction_type == "v_prediction":  # v = a * eps - b * x0
        return b * scale, a, a * scale, -b
    if prediction_type == "sample":
        return scale / b, -a / b, torch.zeros_like(a), torch.ones_like(a)
    return scale, a, scale, -b  # flow velocity u = eps - x0 with a + b = 1


def _for_prediction_type(eps_chain: ReverseChain, prediction_type: PredictionType) -> ReverseChain:
    """The same sampler, driven by a model that outputs ``prediction_type`` instead of noise.

    Substituting ``eps = c0 * x + c1 * output`` into the noise-predicting step keeps every step's
    mean and variance, so the steps (and their KL) are the same as the noise form's.
    """
    if prediction_type not in VARIANCE_PRESERVING_PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {VARIANCE_PRESERVING_PREDICTION_TYPES} for this "
            f"variance-preserving sampler, got {prediction_type!r}"
        )
    eps_state, eps_output, _, _ = _output_conversions(eps_chain, prediction_type)
    return replace(
        eps_chain,
        x_coef=eps_chain.x_coef + eps_chain.output_coef * eps_state,
        output_coef=eps_chain.output_coef * eps_output,
        prediction_type=prediction_type,
    )


def _as_double(values: Tensor | Sequence[float]) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


# Zero-terminal-SNR schedules (diffusers' ``rescale_betas_zero_snr``) end at abar = 0, where the
# epsilon form of a step divides by sqrt(abar). Like diffusers' Euler schedulers, floor it at 2^-24.
_MIN_ALPHA_CUMPROD = 2.0**-24


def _signal_levels(alphas_cumprod: Tensor | Sequence[float]) -> Tensor:
    return _as_double(alphas_cumprod).clamp_min(_MIN_ALPHA_CUMPROD)


def ddpm_chain(
    alphas_cumprod: Tensor | Sequence[float],
    timesteps: Sequence[int] | Tensor,
    variance_type: str = "fixed_small",
    prediction_type: PredictionType = "epsilon",
) -> ReverseChain:
    """Ancestral DDPM over a (possibly strided) subset of training timesteps.

    The step from ``t`` to the next listed timestep ``s`` (or to the data, ``abar_s = 1``, after the
    last) uses the effective ``alpha = abar_t / abar_s`` and ``beta = 1 - alpha``:
    ``mean = (x - beta / sqrt(1 - abar_t) * eps) / sqrt(alpha)`` and variance
    ``beta * (1 - abar_s) / (1 - abar_t)`` (``fixed_small``) or ``beta`` (``fixed_large``), as diffusers'
    ``DDPMScheduler`` does without sample clipping. The last step to the data is deterministic.
    ``abar`` is floored at 2^-24 so zero-terminal-SNR schedules give finite steps. ``prediction_type``
    is what the model outputs (diffusers' ``epsilon``, ``v_prediction`` or ``sample``); the steps are
    the same, written in terms of that output.

    Examples:
        >>> betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        >>> chain = ddpm_chain(torch.cumprod(1 - betas, 0), timesteps=[900, 600, 300, 0])
        >>> chain.num_steps, bool(chain.stochastic[-1])
        (4, False)
        >>> v_chain = ddpm_chain(torch.cumprod(1 - betas, 0), [900, 600, 300, 0], prediction_type="v_prediction")
        >>> bool(torch.allclose(v_chain.girsanov_weight() * v_chain.eps_factor**-2, chain.girsanov_weight()))
        True
    """
    if variance_type not in ("fixed_small", "fixed_large"):
        raise ValueError(f"variance_type must be 'fixed_small' or 'fixed_large', got {variance_type!r}")
    abar_all = _signal_levels(alphas_cumprod)
    steps = torch.as_tensor(timesteps, dtype=torch.long)
    abar = abar_all[steps]
    abar_prev = torch.cat([abar[1:], torch.ones(1, dtype=torch.float64)])
    alpha = abar / abar_prev
    beta = 1 - alpha
    if variance_type == "fixed_small":
        variance = beta * (1 - abar_prev) / (1 - abar)
    else:
        variance = beta.clone()
        variance[-1] = 0.0
    eps_chain = ReverseChain(
        timesteps=steps,
        input_scale=torch.ones_like(abar),
        x_coef=1 / alpha.sqrt(),
        output_coef=-beta / (alpha.sqrt() * (1 - abar).sqrt()),
        noise_std=variance.clamp_min(0).sqrt(),
        alpha_bar=abar,
    )
    return _for_prediction_type(eps_chain, prediction_type)


def ddim_chain(
    alphas_cumprod: Tensor | Sequence[float],
    timesteps: Sequence[int] | Tensor,
    eta: float = 1.0,
    final_alpha_cumprod: float = 1.0,
    prediction_type: PredictionType = "epsilon",
) -> ReverseChain:
    """DDIM with stochasticity ``eta`` (``eta = 1`` is ancestral, ``eta = 0`` fully deterministic).

    ``final_alpha_cumprod`` is the signal level after the last step (diffusers' ``set_alpha_to_one``);
    ``prediction_type`` as in :func:`ddpm_chain`.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    abar_all = _signal_levels(alphas_cumprod)
    steps = torch.as_tensor(timesteps, dtype=torch.long)
    abar = abar_all[steps]
    abar_prev = torch.cat([abar[1:], torch.tensor([final_alpha_cumprod], dtype=torch.float64)])
    variance = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    std = eta * variance.clamp_min(0).sqrt()
    eps_chain = ReverseChain(
        timesteps=steps,
        input_scale=torch.ones_like(abar),
        x_coef=(abar_prev / abar).sqrt(),
        output_coef=-(abar_prev * (1 - abar) / abar).sqrt() + (1 - abar_prev - std**2).clamp_min(0).sqrt(),
        noise_std=std,
        alpha_bar=abar,
        final_alpha_bar=float(final_alpha_cumprod),
    )
    return _for_prediction_type(eps_chain, prediction_type)


def euler_ancestral_chain(
    sigmas: Tensor | Sequence[float],
    timesteps: Sequence[float] | Tensor,
    init_std: float,
    prediction_type: PredictionType = "epsilon",
) -> ReverseChain:
    """Euler-ancestral (k-diffusion ``sample_euler_ancestral``) in sigma space.

    ``sigmas`` has ``len(timesteps) + 1`` entries, the last usually 0; the model sees ``x / sqrt(sigma² + 1)``.
    ``prediction_type`` as in :func:`ddpm_chain` (diffusers' scheduler supports ``epsilon`` and
    ``v_prediction``); the conversion uses each step's own sigma, also at fractional timesteps.
    """
    sig = _as_double(sigmas)
    if len(sig) != len(timesteps) + 1:
        raise ValueError(f"sigmas must have len(timesteps) + 1 = {len(timesteps) + 1} entries, got {len(sig)}")
    sigma_from, sigma_to = sig[:-1], sig[1:]
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).clamp_min(0).sqrt()
    sigma_down = (sigma_to**2 - sigma_up**2).clamp_min(0).sqrt()
    eps_chain = ReverseChain(
        timesteps=torch.as_tensor(timesteps),
        input_scale=1 / (sigma_from**2 + 1).sqrt(),
        x_coef=torch.ones_like(sigma_from),
        output_coef=sigma_down - sigma_from,
        noise_std=sigma_up,
        alpha_bar=1 / (sigma_from**2 + 1),
        init_std=float(init_std),
        final_alpha_bar=float(1 / (sigma_to[-1] ** 2 + 1)),
    )
    return _for_prediction_type(eps_chain, prediction_type)


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear beta schedule."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def cosine_betas(num_train_timesteps: int = 1000, max_beta: float = 0.999) -> Tensor:
    """The cosine ("squaredcos_cap_v2") schedule of Nichol & Dhariwal."""
    t = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((t + 0.008) / 1.008 * torch.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def leading_timesteps(num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 0) -> Tensor:
    """Evenly strided timesteps from high to low noise, as diffusers' ``timestep_spacing="leading"``.

    ``num_steps`` must be between 1 and ``num_train_timesteps``: beyond it the stride is 0 and every step
    would sit at timestep ``steps_offset``.

    Examples:
        >>> leading_timesteps(4, 1000).tolist()
        [750, 500, 250, 0]
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, Integral) or not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(
            f"num_steps must be an int from 1 to the model's {num_train_timesteps} training timesteps, "
            f"got {num_steps!r}"
        )
    stride = num_train_timesteps // num_steps
    return torch.arange(num_steps - 1, -1, -1, dtype=torch.long) * stride + steps_offset
