"""Matplotlib rendering of an :class:`~conjure_metrics.explain.Explanation`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from conjure_metrics.explain import Explanation

ROW_LABELS = ("traj. A: x̂₀ | A", "traj. A: x̂₀ | B", "traj. B: x̂₀ | A", "traj. B: x̂₀ | B")


def explanation_figure(explanation: Explanation, weighting: str = "simple", highlight: int = 2) -> Any:
    """Rows: the two trajectories, each denoised under both prompts, then the difference maps;
    columns: steps; below, per-step contributions of each direction. The ``highlight`` (direction,
    step) cells with the largest contributions are framed in red."""
    try:
        import matplotlib

        matplotlib.use(matplotlib.get_backend())
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("figures need matplotlib: pip install 'conjure_metrics[plot]'") from error
    if weighting == "girsanov" and weighting not in explanation.contributions:
        raise ValueError(
            "weighting='girsanov' needs stochastic steps (above the noise floor): a deterministic "
            "sampler has no finite path KL; use weighting='simple' or an ancestral sampler"
        )
    if weighting not in explanation.contributions:
        raise ValueError(f"weighting must be one of {tuple(explanation.contributions)}, got {weighting!r}")
    if isinstance(highlight, bool) or not isinstance(highlight, int) or highlight < 0:
        raise ValueError(f"highlight must be an int >= 0, got {highlight!r}")

    images = explanation.denoised  # (trajectory, prompt, step, 3, H, W)
    steps = images.shape[2]
    contributions = explanation.contributions[weighting]  # (2, steps)
    figure = plt.figure(figsize=(1.2 * steps + 1.6, 9.2))
    grid = figure.add_gridspec(7, steps, height_ratios=[1, 1, 1, 1, 1, 1, 1.6], hspace=0.12, wspace=0.05)
    top = torch.topk(contributions.flatten(), k=min(highlight, contributions.numel())).indices.tolist()
    framed = {(i // steps, i % steps) for i in top if contributions.flatten()[i] > 0}

    for row in range(4):
        trajectory, prompt = divmod(row, 2)
        for step in range(steps):
            ax = figure.add_subplot(grid[row, step])
            ax.imshow(images[trajectory, prompt, step].permute(1, 2, 0).numpy(), interpolation="nearest")
            _bare(ax, framed_red=(trajectory, step) in framed)
            if step == 0:
                ax.set_ylabel(ROW_LABELS[row], rotation=0, ha="right", va="center", fontsize=8)
            if row == 0:
                ax.set_title(f"t={int(explanation.timesteps[step])}", fontsize=8)
    for trajectory in range(2):
        for step in range(steps):
            ax = figure.add_subplot(grid[4 + trajectory, step])
            ax.imshow(
                explanation.difference[trajectory, step].numpy(),
                cmap="magma",
                vmin=0,
                vmax=float(explanation.difference.max()) or 1.0,
                interpolation="nearest",
            )
            _bare(ax, framed_red=(trajectory, step) in framed)
            if step == 0:
                ax.set_ylabel(f"|A − B|, traj. {'AB'[trajectory]}", rotation=0, ha="right", va="center", fontsize=8)

    strip = figure.add_subplot(grid[6, :])
    positions = torch.arange(steps).float()
    strip.bar(positions - 0.2, contributions[0].numpy(), width=0.4, label="along A (KL(A‖B))", color="tab:orange")
    strip.bar(positions + 0.2, contributions[1].numpy(), width=0.4, label="along B (KL(B‖A))", color="tab:blue")
    uncounted = [step for step in range(steps) if not bool(explanation.counted_steps[step])]
    for number, step in enumerate(uncounted):
        strip.axvspan(
            step - 0.5,
            step + 0.5,
            color="0.88",
            zorder=0,
            label="not counted (below the noise floor)" if number == 0 else None,
        )
    strip.set_xticks(positions.tolist(), [str(int(t)) for t in explanation.timesteps], fontsize=7)
    strip.set_xlim(-0.5, steps - 0.5)
    strip.set_xlabel("timestep (noisy → clean)", fontsize=8)
    strip.set_ylabel(f"{weighting}\ncontribution", fontsize=8)
    strip.legend(fontsize=7, loc="upper left")
    strip.tick_params(labelsize=7)
    divergence = explanation.divergence[weighting]
    figure.suptitle(
        f"“{explanation.prompt_a}” (A) vs “{explanation.prompt_b}” (B): {weighting} J = {divergence:.4g}, "
        f"similarity {1 / (1 + divergence):.3f}",
        fontsize=10,
    )
    return figure


def _bare(ax: Any, framed_red: bool) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("red" if framed_red else "0.7")
        spine.set_linewidth(2.5 if framed_red else 0.5)
