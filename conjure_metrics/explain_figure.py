"""Matplotlib rendering of an :class:`~conjure_metrics.explain.Explanation`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from conjure_metrics.explain import Explanation

# Plain words first (a newcomer reads these), the notation of docs/method.md after.
ROW_LABELS = (
    "A's path,\ndenoised by A\n(x̂₀ | A)",
    "A's path,\ndenoised by B\n(x̂₀ | B)",
    "B's path,\ndenoised by A\n(x̂₀ | A)",
    "B's path,\ndenoised by B\n(x̂₀ | B)",
)
DIFFERENCE_LABELS = ("difference\non A's path", "difference\non B's path")
CAPTION = (
    "A and B start from the same noise. Each column is one reverse step, from noise (left) to image (right); each "
    "picture is the clean image predicted at that step. A's path is driven by A; on it, the rows show what A and "
    "what B would make of the same state (then likewise on B's path). Difference rows: mean absolute pixel "
    "difference of the two predictions, on the colour scale at the right. Bars: how much each step adds to the "
    "divergence along each path; red frames mark the largest."
)


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
    figure = plt.figure(figsize=(1.2 * steps + 2.2, 10.4))
    grid = figure.add_gridspec(
        7, steps, height_ratios=[1, 1, 1, 1, 1, 1, 1.6], hspace=0.12, wspace=0.05, bottom=0.12, top=0.93, right=0.9
    )
    top = torch.topk(contributions.flatten(), k=min(highlight, contributions.numel())).indices.tolist()
    framed = {(i // steps, i % steps) for i in top if contributions.flatten()[i] > 0}

    for row in range(4):
        trajectory, prompt = divmod(row, 2)
        for step in range(steps):
            ax = figure.add_subplot(grid[row, step])
            ax.imshow(images[trajectory, prompt, step].permute(1, 2, 0).numpy(), interpolation="nearest")
            _bare(ax, framed_red=(trajectory, step) in framed)
            if step == 0:
                ax.set_ylabel(ROW_LABELS[row], rotation=0, ha="right", va="center", fontsize=7)
            if row == 0:
                ax.set_title(f"t={int(explanation.timesteps[step])}", fontsize=8)
    scale = float(explanation.difference.max()) or 1.0
    maps = []
    for trajectory in range(2):
        for step in range(steps):
            ax = figure.add_subplot(grid[4 + trajectory, step])
            maps.append(ax)
            shown = ax.imshow(
                explanation.difference[trajectory, step].numpy(),
                cmap="magma",
                vmin=0,
                vmax=scale,
                interpolation="nearest",
            )
            _bare(ax, framed_red=(trajectory, step) in framed)
            if step == 0:
                ax.set_ylabel(DIFFERENCE_LABELS[trajectory], rotation=0, ha="right", va="center", fontsize=7)
    # One colour scale for both difference rows, beside them (a colorbar sharing their grid would narrow them).
    upper, lower = maps[steps - 1].get_position(), maps[-1].get_position()
    scale_axis = figure.add_axes((upper.x1 + 0.01, lower.y0, 0.012, upper.y1 - lower.y0))
    figure.colorbar(shown, cax=scale_axis)
    scale_axis.tick_params(labelsize=6)
    scale_axis.set_ylabel("|A − B|", fontsize=7)

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
    strip.legend(fontsize=7, loc="best")  # the largest bars are often the first ones
    strip.tick_params(labelsize=7)
    divergence = explanation.divergence[weighting]
    figure.text(0.02, 0.01, CAPTION, fontsize=7, wrap=True, va="bottom", ha="left", color="0.25")
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
