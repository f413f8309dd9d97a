"""A denoiser whose model calls all have one batch size, so ``torch.compile`` builds one graph.

The engine's micro-batches vary in size (the last chunk of a step, the first step's shared
predictions, retries after an out-of-memory), and every new shape makes a compiled model
recompile, and with CUDA graphs (``mode="reduce-overhead"``) record a new graph. Padding each
call to a fixed number of rows keeps the shape static; the padding rows cost compute, so pick
``batch_size`` equal to the metric's ``max_batch_size``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from conjure_metrics.conditioning import Conditioning, pad_rows, select_rows


class CompiledDenoiser:
    """Wraps a denoiser: ``predict_noise`` runs a compiled copy of it on fixed-size batches.

    Args:
        denoiser: any :class:`~conjure_metrics.Denoiser` (e.g. a ``DiffusersDenoiser``).
        batch_size: rows per model call; smaller calls are padded, larger ones split.
        mode: ``torch.compile`` mode. ``"reduce-overhead"`` adds CUDA graphs on GPUs;
            ``"max-autotune-no-cudagraphs"`` tunes kernels without them; ``None`` is the default mode.
        compile: set ``False`` to keep the fixed batch size without compiling (eager).
        backend: ``torch.compile`` backend (default ``"inductor"``); ``"aot_eager"`` traces the same graph
            without generating kernels, to check a model compiles where inductor is slow or missing.

    Everything else (``encode_prompts``, ``reverse_chain``, ``sample_shape``, ``device``,
    ``guidance_mode``, ...) is the wrapped denoiser's. Conditioning may be a structure of tensors
    (:mod:`conjure_metrics.conditioning`); every tensor of it is padded alike. Keyword arguments of
    ``predict_noise`` (an embedded-guidance model's ``guidance_scale``) are passed on. The first calls
    are slow while the graph compiles.

    Examples:
        >>> import torch
        >>> from conjure_metrics import conjure_similarity
        >>> from conjure_metrics.analytic import GaussianConditionals
        >>> from conjure_metrics.chains import linear_betas
        >>> model = GaussianConditionals({"": torch.zeros(2), "a": torch.ones(2), "b": -torch.ones(2)},
        ...     {"": 1.0, "a": 0.5, "b": 0.5}, torch.cumprod(1 - linear_betas(), 0))
        >>> fixed = CompiledDenoiser(model, batch_size=8, compile=False)
        >>> args = dict(num_steps=4, num_samples=3, guidance_scale=2.0)
        >>> same = conjure_similarity(["a"], ["b"], fixed, **args).divergence
        >>> bool(torch.allclose(same, conjure_similarity(["a"], ["b"], model, **args).divergence))
        True
    """

    def __init__(
        self,
        denoiser: Any,
        batch_size: int = 64,
        *,
        mode: str | None = None,
        compile: bool = True,
        backend: str = "inductor",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.inner = denoiser
        self.batch_size = batch_size
        self._predict = (
            torch.compile(denoiser.predict_noise, mode=mode, dynamic=False, backend=backend)
            if compile
            else denoiser.predict_noise
        )

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found normally. While copy/pickle rebuild the object, ``inner``
        # is not set yet: looking it up through here again would recurse forever.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def to(self, device: torch.device | str) -> CompiledDenoiser:
        self.inner.to(device)
        return self

    def predict_noise(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning, **options: Any) -> Tensor:
        outputs = []
        for start in range(0, x.shape[0], self.batch_size):
            rows = slice(start, start + self.batch_size)
            outputs.append(self._fixed_batch(x[rows], timesteps[rows], select_rows(conditioning, rows), options))
        return torch.cat(outputs)

    def _fixed_batch(self, x: Tensor, timesteps: Tensor, conditioning: Conditioning, options: dict[str, Any]) -> Tensor:
        missing = self.batch_size - x.shape[0]
        # Repeating the last row (not zeros) keeps the padding inside the model's usual input range.
        # Every input goes through the same concatenation, even with nothing to pad, so that all
        # calls hand the compiled graph the same kind of tensor (under inference mode, fresh
        # tensors are inference tensors; views of outside tensors are not, and would recompile).
        x = cast(Tensor, pad_rows(x, missing))  # a tensor pads to a tensor
        timesteps = cast(Tensor, pad_rows(timesteps, missing))
        conditioning = pad_rows(conditioning, missing)
        out = self._predict(x, timesteps, conditioning, **options)
        # CUDA graphs reuse their output buffers on the next replay: copy out before returning.
        return out[: self.batch_size - missing].clone()
