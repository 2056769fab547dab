"""The poison a model adds to clean inputs, drawn against the oracle (poisoned federations).

For one clean test slice per site: the part of the poison a model *could* hallucinate
(its unsampled k-space part: data consistency fixes the rest), then what each model
adds to that slice beyond the oracle's reconstruction (``model - oracle``): the
original's hallucination, and each method's residual. All maps share one signed
colour scale, so a model that adds the whole poison looks like the first panel and a
model that unlearned it looks like noise around 0. Each panel's title carries the
slice's artifact score relative to the oracle (the least-squares coefficient of
``model - oracle`` on the first panel: 1 = the full poison, 0 = the oracle's output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fedforget.learning.artifact import pattern_coefficient
from fedforget.reporting.figures import save_figure

__all__ = ["HallucinationRow", "hallucination_grid"]


@dataclass(frozen=True)
class HallucinationRow:
    """One site's slice: the hallucinable poison and what each model adds beyond the oracle."""

    site: str
    poison: np.ndarray  # (H, W): the poison pattern's unsampled part on this slice
    added: Mapping[str, np.ndarray]  # model -> its reconstruction minus the oracle's, (H, W)


def hallucination_grid(path: Path, title: str, rows: Sequence[HallucinationRow]) -> Path:
    """One row per site: the hallucinable poison, then ``model - oracle`` for each model.

    Raises:
        ValueError: If there are no rows, the rows name different models, or a map's shape
            differs from its row's poison.
    """
    if not rows:
        raise ValueError("hallucination_grid needs at least one site row")
    models = list(rows[0].added)
    for row in rows:
        if list(row.added) != models:
            raise ValueError(f"site {row.site} has models {list(row.added)}, the first row {models}")
        for name, image in row.added.items():
            if image.shape != row.poison.shape:
                raise ValueError(f"{row.site}: {name} - oracle has shape {image.shape}, "
                                 f"the poison {row.poison.shape}")
    vmax = max(float(np.abs(row.poison).max()) for row in rows) or 1.0
    signed = {"cmap": "RdBu_r", "vmin": -vmax, "vmax": vmax, "interpolation": "nearest"}
    columns = 1 + len(models)
    fig = Figure(figsize=(1.9 * columns + 1.0, 2.0 * len(rows) + 1.0), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    artist = None
    for r, row in enumerate(rows):
        artist = axes[r, 0].imshow(row.poison, **signed)
        axes[r, 0].set_title(f"{row.site}\npoison (unsampled part)", fontsize=8)
        for c, name in enumerate(models, start=1):
            axes[r, c].imshow(row.added[name], **signed)
            score = f"{pattern_coefficient(row.added[name], row.poison):+.2f}" if row.poison.any() else "n/a"
            axes[r, c].set_title(f"{name} − oracle\nartifact {score}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.colorbar(artist, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01, label="added intensity (signed)")
    return save_figure(fig, path)
