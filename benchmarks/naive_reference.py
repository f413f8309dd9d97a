"""A deliberately naive ConjureSimilarity: one pair, one direction, one prompt per model call.

Kept only as the baseline for ``bench_engine.py`` and as an independent check of the engine: for
the same seed it gives the same numbers as :func:`conjure_metrics.jeffreys_terms` (same noise
streams, same chain), computed with plain Python loops and no batching or deduplication.
"""

from __future__ import annotations

import torch

from conjure_metrics.noise import trajectory_noise


def naive_divergence(prompt_a: str, prompt_b: str, denoiser, *, num_steps: int, num_samples: int,
                     guidance_scale: float, seed: int, weighting: str = "simple", min_timestep: float = 0) -> torch.Tensor:
    """Per-sample Jeffreys estimates ``(num_samples,)`` for one pair."""
    chain = denoiser.reverse_chain(num_steps)
    dtype = torch.float64 if getattr(denoiser, "dtype", None) == torch.float64 else torch.float32
    initial, step_noise = trajectory_noise(seed, num_samples, num_steps, tuple(denoiser.sample_shape), dtype)
    included = [float(t) >= min_timestep for t in chain.timesteps]
    weights = chain.girsanov_weight()

    def guided(x, timestep, prompt):
        def eps(p):
            conditioning = denoiser.encode_prompts([p])
            return denoiser.predict_noise(x[None], timestep.reshape(1), conditioning)[0]

        conditional = eps(prompt)
        if guidance_scale == 1:
            return conditional
        unconditional = eps("")
        return unconditional + guidance_scale * (conditional - unconditional)

    samples = torch.zeros(num_samples, dtype=torch.float64)
    with torch.inference_mode():
        for j in range(num_samples):
            for driver in (prompt_a, prompt_b):
                x = initial[j] * chain.init_std
                for i in range(num_steps):
                    model_input = x * chain.input_scale[i].to(dtype)
                    eps_a = guided(model_input, chain.timesteps[i], prompt_a)
                    eps_b = guided(model_input, chain.timesteps[i], prompt_b)
                    squared = (eps_a - eps_b).double().pow(2).sum()
                    if included[i]:
                        if weighting == "simple":
                            samples[j] += squared / squared.new_tensor(x.numel()) / sum(included)
                        else:
                            samples[j] += squared * weights[i]
                    drive = eps_a if driver == prompt_a else eps_b
                    x = (chain.x_coef[i].to(dtype) * x + chain.eps_coef[i].to(dtype) * drive
                         + chain.noise_std[i].to(dtype) * step_noise[i, j])
    return samples
