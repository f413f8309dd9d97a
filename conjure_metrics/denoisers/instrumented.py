"""A denoiser wrapper that counts what the estimator asks of the model (for benchmarks and tests)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from conjure_metrics.conditioning import Conditioning


class InstrumentedDenoiser:
    """Forwards everything to ``inner``, counting ``predict_noise`` calls, rows, and seconds spent inside.

    On CUDA the clock waits for the device (``torch.cuda.synchronize``) so the seconds are the model's.

    Examples:
        >>> import torch
        >>> from conjure_metrics import conjure_similarity
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> model = InstrumentedDenoiser(GaussianConditionals({"": torch.zeros(2), "a": torch.ones(2), "b": -torch.ones(2)},
        ...     {"": 1.0, "a": 0.5, "b": 0.5}, torch.cumprod(1 - linear_betas(), 0)))
        >>> _ = conjure_similarity(["a"], ["b"], model, num_steps=4, num_samples=2, guidance_scale=1.0)
        >>> model.rows  # first step: 2 prompts x 2 samples; then 2 trajectories x 2 prompts x 2 samples
        28
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found normally. While copy/pickle rebuild the object, ``inner``
        # is not set yet: looking it up through here again would recurse forever.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def reset(self) -> None:
        self.calls, self.rows, self.seconds = 0, 0, 0.0

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning, **options: Any) -> Tensor:
        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.inner.predict_noise(x, timesteps, conditioning, **options)
        if cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += x.shape[0]
        return out
