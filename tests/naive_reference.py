"""The test oracle: a slow, obviously correct Conjure estimator that the engine must match.

One pair, one Monte-Carlo sample, one trajectory, one step and one prompt per model call, in plain
Python loops: no batching, no deduplication of shared prompts or states, no chunking. For the same
seed it draws the same noise (:func:`conjure_metrics.noise.trajectory_noise`) and runs the same
reverse chain as :func:`conjure_metrics.jeffreys_terms`, so the two agree to round-off;
``tests/test_naive_reference.py`` holds the engine to it. ``benchmarks/bench_engine.py`` imports it
too, as the baseline of its speed-up (through a ``sys.path`` insert of this folder).

Written straight from the method (``docs/method.md``): along the trajectory driven by each prompt,
accumulate at every counted step

* ``simple``: the mean over elements of ``||Δeps_w||²``, with ``Δeps = eps_factor · Δoutput`` (the
  model may output noise, v or a flow velocity), averaged uniformly over the counted steps;
* ``girsanov``: ``output_coef² ||Δoutput_w||² / (2 noise_std²)`` on stochastic steps (the exact
  step KL; deterministic steps count 0).

A step counts when the noise level it lands on is at least ``min_noise`` and its timestep at least
``min_timestep``. Classifier-free guidance only (the analytic models and SD-1/2 adapters).
"""

from __future__ import annotations

import torch

from conjure_metrics.noise import trajectory_noise


def naive_divergence(
    prompt_a: str,
    prompt_b: str,
    denoiser,
    *,
    num_steps: int,
    num_samples: int,
    guidance_scale: float,
    seed: int,
    weighting: str = "simple",
    min_timestep: float = 0,
    min_noise: float = 0,
) -> torch.Tensor:
    """Per-sample Jeffreys estimates ``(num_samples,)`` of one pair (float64).

    Example:
        >>> from tests.helpers import gaussian_model
        >>> samples = naive_divergence("tiger", "zebra", gaussian_model(), num_steps=3, num_samples=2,
        ...                            guidance_scale=1.0, seed=0)
        >>> samples.shape, bool((samples > 0).all())
        (torch.Size([2]), True)
    """
    if weighting not in ("simple", "girsanov"):
        raise ValueError(f"weighting must be 'simple' or 'girsanov', got {weighting!r}")
    chain = denoiser.reverse_chain(num_steps)
    dtype = torch.float64 if getattr(denoiser, "dtype", None) == torch.float64 else torch.float32
    initial, step_noise = trajectory_noise(seed, num_samples, num_steps, tuple(denoiser.sample_shape), dtype)
    counted = [
        float(chain.landing_noise_level[i]) >= min_noise and float(chain.timesteps[i]) >= min_timestep
        for i in range(num_steps)
    ]
    num_counted = max(sum(counted), 1)
    eps_factor = chain.eps_factor.double()
    output_coef, noise_std = chain.output_coef.double(), chain.noise_std.double()

    def guided(x, timestep, prompt):
        def output(p):
            conditioning = denoiser.encode_prompts([p])
            return denoiser.predict_noise(x[None], timestep.reshape(1), conditioning)[0]

        conditional = output(prompt)
        if guidance_scale == 1:
            return conditional
        unconditional = output("")
        return unconditional + guidance_scale * (conditional - unconditional)

    samples = torch.zeros(num_samples, dtype=torch.float64)
    with torch.inference_mode():
        for j in range(num_samples):
            for driver in (prompt_a, prompt_b):
                x = initial[j] * chain.init_std
                for i in range(num_steps):
                    model_input = x * chain.input_scale[i].to(dtype)
                    out_a = guided(model_input, chain.timesteps[i], prompt_a)
                    out_b = guided(model_input, chain.timesteps[i], prompt_b)
                    squared = (out_a - out_b).double().pow(2).sum()
                    if counted[i] and weighting == "simple":
                        samples[j] += eps_factor[i] ** 2 * squared / x.numel() / num_counted
                    elif counted[i] and noise_std[i] > 0:
                        samples[j] += output_coef[i] ** 2 * squared / (2 * noise_std[i] ** 2)
                    drive = out_a if driver == prompt_a else out_b
                    x = (
                        chain.x_coef[i].to(dtype) * x
                        + chain.output_coef[i].to(dtype) * drive
                        + chain.noise_std[i].to(dtype) * step_noise[i, j]
                    )
    return samples
