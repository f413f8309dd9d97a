"""Reverse processes of flow-matching models (SD3, Flux) as linear-Gaussian chains.

Flow matching noises data as ``x_sigma = (1 - sigma) x0 + sigma eps`` (``sigma`` from 1, pure noise,
to 0, the data) and the model predicts the velocity ``u = eps - x0``, so that ``x0 = x - sigma u``
and ``eps = x + (1 - sigma) u``. diffusers samples it with ``FlowMatchEulerDiscreteScheduler``. Three
reverse processes share those marginals (up to discretisation):

* :func:`flow_ode_chain` — the ODE ``dx/dsigma = u`` with Euler steps (diffusers' default step):
  deterministic, so it has no finite path KL and ``girsanov`` refuses it.
* :func:`flow_ancestral_chain` — diffusers' ``stochastic_sampling=True`` step: jump to the predicted
  clean sample and re-noise it afresh, ``x' = (1 - sigma') x0_hat + sigma' z``.
* :func:`flow_sde_chain` — the Euler–Maruyama discretisation of an SDE with diffusion
  ``g(sigma) = a sqrt(sigma / (1 - sigma))`` and the drift correction that keeps the flow's marginals
  (the SDE Flow-GRPO samples SD3 and Flux with); ``a`` sets how much noise is injected.

The model sees the state unscaled; ``alpha_bar`` is the variance-preserving-equivalent signal level
``(1 - sigma)² / ((1 - sigma)² + sigma²)`` (the same signal-to-noise ratio). Pure torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from conjure_metrics.chains import ReverseChain

DEFAULT_FLOW_NOISE_LEVEL = 0.7
"""Default ``a`` of :func:`flow_sde_chain` (Flow-GRPO's): the Euler–Maruyama step stays contracting
(``x_coef > 0.55``) on SD3's, Flux's and unshifted 4–50-step schedules, where ``a = sqrt(2)`` (the exact
time reversal of the noising process) collapses or overshoots (``x_coef <= 0``) next to pure noise. In
continuous time ``a`` only scales the path KL by ``(1 + a²/2)² / a²``, so it changes no ranking
(docs/method.md)."""


def flow_sigmas(num_steps: int, shift: float = 1.0, mu: float | None = None, num_train_timesteps: int = 1000) -> Tensor:
    """The sigmas (float64, ``num_steps + 1`` entries ending with 0) of diffusers' ``FlowMatchEulerDiscreteScheduler``
    after ``set_timesteps(num_steps)`` with a static ``shift`` (SD3: 3.0), or ``set_timesteps(num_steps, mu=mu)``
    with dynamic shifting (``use_dynamic_shifting=True``, exponential time shift; ``mu`` replaces ``shift``).

    Examples:
        >>> [round(s, 3) for s in flow_sigmas(4).tolist()]
        [1.0, 0.667, 0.334, 0.001, 0.0]
        >>> [round(s, 3) for s in flow_sigmas(4, shift=3.0).tolist()]
        [1.0, 0.858, 0.602, 0.009, 0.0]
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if mu is None and shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    # As diffusers: the range comes from the training sigmas (already shifted when the shift is static),
    # and is shifted again.
    training_range = torch.tensor([1.0, 1 / num_train_timesteps], dtype=torch.float64)
    sigma_max, sigma_min = (training_range if mu is not None else _shifted(training_range, shift, None)).tolist()
    sigmas = _shifted(torch.linspace(sigma_max, sigma_min, num_steps, dtype=torch.float64), shift, mu)
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def _shifted(sigmas: Tensor, shift: float, mu: float | None) -> Tensor:
    """diffusers' static ``shift`` of the sigmas, or its exponential time shift by ``mu``."""
    if mu is None:
        return shift * sigmas / (1 + (shift - 1) * sigmas)
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def flow_ode_chain(sigmas: Tensor | Sequence[float], timesteps: Tensor | Sequence[float]) -> ReverseChain:
    """Euler steps of the flow ODE, ``x' = x + (sigma' - sigma) u`` (diffusers' default flow-matching step).

    Deterministic: ``weighting="girsanov"`` is refused for it; ``simple`` works.

    Examples:
        >>> sigmas = flow_sigmas(4, shift=3.0)
        >>> chain = flow_ode_chain(sigmas, 1000 * sigmas[:-1])
        >>> chain.prediction_type, bool(chain.stochastic.any())
        ('flow_prediction', False)
    """
    sigma, sigma_next = _checked_sigmas(sigmas, timesteps)
    return _flow_chain(
        sigmas,
        timesteps,
        x_coef=torch.ones_like(sigma),
        output_coef=sigma_next - sigma,
        noise_std=torch.zeros_like(sigma),
    )


def flow_ancestral_chain(sigmas: Tensor | Sequence[float], timesteps: Tensor | Sequence[float]) -> ReverseChain:
    """diffusers' ``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)`` step,
    ``x' = (1 - sigma') (x - sigma u) + sigma' z``.

    Each step is Gaussian with standard deviation ``sigma'``, so its KL between two velocities is
    ``(1 - sigma')² sigma² ||Δu||² / (2 sigma'²)``; the last step, to ``sigma' = 0``, is deterministic.
    ``sigmas`` (``len(timesteps) + 1`` entries, the scheduler's ``sigmas``) and ``timesteps`` (what the
    model is given) come from the scheduler, or from :func:`flow_sigmas`.

    Examples:
        >>> sigmas = flow_sigmas(4, shift=3.0)
        >>> chain = flow_ancestral_chain(sigmas, 1000 * sigmas[:-1])
        >>> chain.stochastic.tolist()
        [True, True, True, False]
    """
    sigma, sigma_next = _checked_sigmas(sigmas, timesteps)
    return _flow_chain(
        sigmas, timesteps, x_coef=1 - sigma_next, output_coef=-(1 - sigma_next) * sigma, noise_std=sigma_next.clone()
    )


def flow_sde_chain(
    sigmas: Tensor | Sequence[float],
    timesteps: Tensor | Sequence[float],
    noise_level: float = DEFAULT_FLOW_NOISE_LEVEL,
) -> ReverseChain:
    """Euler–Maruyama steps of the SDE with diffusion ``g = a sqrt(sigma / (1 - sigma))`` (``a = noise_level``)
    whose marginals are the flow's.

    Adding diffusion ``g`` to the ODE keeps the marginals ``p_sigma`` when the drift gains
    ``-g²/2 · score``, and ``score = -(x + (1 - sigma) u) / sigma``; in decreasing ``sigma``:

        dx = [u + g² / (2 sigma) (x + (1 - sigma) u)] dsigma + g dW.

    One step to ``sigma' < sigma`` (``Δ = sigma' - sigma``) is Gaussian:
    ``x' = (1 + g² Δ / (2 sigma)) x + Δ (1 + a²/2) u + g sqrt(-Δ) z`` (as ``g² (1 - sigma) / sigma = a²``),
    so its KL between two velocities is ``(1 + a²/2)² |Δ| ||Δu||² / (2 g²)``. Every step, the last one
    to the data included, adds noise.

    ``g`` is infinite at ``sigma = 1``, where SD3 and Flux schedules start, and there the SDE forgets
    its state: solved exactly over the step with the model's ``x0`` prediction held fixed, it lands on
    ``x' = (1 - sigma') x0_hat + sigma' z``, the ancestral step of :func:`flow_ancestral_chain`, which
    a step from ``sigma = 1`` takes instead. (Flow-GRPO instead evaluates ``g`` there at ``1 - sigma'``,
    which inflates the next state's variance by about ``a⁴/4``.) Euler–Maruyama is least accurate just
    below pure noise, where ``g² |Δ|`` is not small at any number of steps on shifted schedules (its
    error there relaxes as ``sigma`` falls), and contracts (``x_coef > 0``) only while
    ``|Δ| < 2 (1 - sigma) / a²``: keep ``a`` moderate.

    Examples:
        >>> sigmas = flow_sigmas(4, shift=3.0)
        >>> chain = flow_sde_chain(sigmas, 1000 * sigmas[:-1])
        >>> bool(chain.stochastic.all()), bool((chain.x_coef > 0).all())
        (True, True)
    """
    if noise_level <= 0:
        raise ValueError(f"noise_level must be positive (0 is the ODE: use flow_ode_chain), got {noise_level}")
    sigma, sigma_next = _checked_sigmas(sigmas, timesteps)
    step = sigma_next - sigma
    from_noise = sigma >= 1
    diffusion_squared = noise_level**2 * sigma / torch.where(from_noise, torch.ones_like(sigma), 1 - sigma)
    return _flow_chain(
        sigmas,
        timesteps,
        x_coef=torch.where(from_noise, 1 - sigma_next, 1 + diffusion_squared * step / (2 * sigma)),
        output_coef=torch.where(from_noise, -(1 - sigma_next) * sigma, step * (1 + noise_level**2 / 2)),
        noise_std=torch.where(from_noise, sigma_next, (diffusion_squared * -step).sqrt()),
    )


def _checked_sigmas(sigmas: Tensor | Sequence[float], timesteps: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    if len(sig) != len(timesteps) + 1:
        raise ValueError(f"sigmas must have len(timesteps) + 1 = {len(timesteps) + 1} entries, got {len(sig)}")
    if not (bool((sig[:-1] > sig[1:]).all()) and 0 <= float(sig[-1]) and float(sig[0]) <= 1):
        raise ValueError(f"flow sigmas must decrease strictly within [0, 1], got {sig.tolist()}")
    return sig[:-1], sig[1:]


def _vp_signal_level(sigma: Tensor) -> Tensor:
    """The variance-preserving ``abar`` with the signal-to-noise ratio of ``(1 - sigma) x0 + sigma eps``."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def _flow_chain(
    sigmas: Tensor | Sequence[float],
    timesteps: Tensor | Sequence[float],
    *,
    x_coef: Tensor,
    output_coef: Tensor,
    noise_std: Tensor,
) -> ReverseChain:
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    return ReverseChain(
        timesteps=torch.as_tensor(timesteps),
        input_scale=torch.ones_like(x_coef),
        x_coef=x_coef,
        output_coef=output_coef,
        noise_std=noise_std,
        alpha_bar=_vp_signal_level(sig[:-1]),
        final_alpha_bar=float(_vp_signal_level(sig[-1])),
        prediction_type="flow_prediction",
    )
