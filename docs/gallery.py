"""Render the gallery of ``explain`` figures from the embedded conjure-zoo model.

python docs/gallery.py          # writes docs/images/gallery_*.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from conjure_metrics import explain  # noqa: E402
from conjure_metrics.denoisers.loading import load_denoiser  # noqa: E402

PAIRS = {
    "snow_leopard_vs_bengal_tiger": ("a snow leopard", "a bengal tiger"),
    "crimson_vs_red_dog": ("a crimson dog", "a red dog"),
    "zebra_on_snow_vs_in_the_sea": ("a zebra in the snow", "a zebra in the ocean"),
    "dalmatian_vs_panther": ("a dalmatian", "a panther"),
}
SETTINGS = dict(num_steps=10, num_samples=3, guidance_scale=3.0, seed=0)


def main() -> None:
    out = Path(__file__).resolve().parent / "images"
    out.mkdir(exist_ok=True)
    model = load_denoiser(None)
    for name, (a, b) in PAIRS.items():
        result = explain(a, b, model, **SETTINGS)
        figure = result.figure(path=out / f"gallery_{name}.png")
        plt.close(figure)
        print(f"{name}: simple J = {result.divergence['simple']:.4f}, girsanov J = {result.divergence['girsanov']:.4g}")


if __name__ == "__main__":
    main()
