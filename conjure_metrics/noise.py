"""Common random numbers: the noise of Monte-Carlo sample ``j`` depends on ``(seed, j)`` only.

Both prompts of a pair, every pair of a batch, and every rank draw sample ``j`` from the same
stream, so a pair's score does not change with batch size, pair order or world size, and the two
trajectories of a pair share their initial state and step noise (the paper's variance reduction).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def sample_seed(seed: int, sample_index: int) -> int:
    """A 63-bit generator seed for Monte-Carlo sample ``sample_index`` under the user's ``seed``."""
    digest = hashlib.sha256(f"conjure:{seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def trajectory_noise(
    seed: int,
    num_samples: int,
    num_steps: int,
    sample_shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    first_sample: int = 0,
    antithetic: bool = False,
) -> tuple[Tensor, Tensor]:
    """Initial states ``(num_samples, *shape)`` and step noise ``(num_steps, num_samples, *shape)``, on CPU,
    for samples ``first_sample, first_sample + 1, ...``.

    Drawn on the CPU in float32 whatever ``dtype`` (then cast), so that the same seed gives the same
    numbers on every device and in every precision: a float64 run differs from a float32 one by
    round-off only. With ``antithetic``, odd sample ``2i + 1`` uses the negated noise of sample ``2i``.
    """
    initial, steps = [], []
    for j in range(first_sample, first_sample + num_samples):
        base, sign = (j // 2, -1.0 if j % 2 else 1.0) if antithetic else (j, 1.0)
        generator = torch.Generator().manual_seed(sample_seed(seed, base))
        initial.append(sign * torch.randn(sample_shape, generator=generator))
        steps.append(sign * torch.randn((num_steps, *sample_shape), generator=generator))
    return torch.stack(initial).to(dtype), torch.stack(steps, dim=1).to(dtype)
