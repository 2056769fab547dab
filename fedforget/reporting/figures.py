"""Figures of a run: reconstructions with error maps, method comparison, retain-fraction sweep.

Every function renders off-screen (an explicit Agg canvas on a
``matplotlib.figure.Figure``; pyplot is never imported, so no display is
needed, no global backend is switched and no figure outlives its call) and
writes a PNG atomically (``configs.atomic``: a hidden temporary file in the
destination folder, then a rename), so a report never links a half-written image.

Inputs are plain arrays and the dictionaries of ``results.json``, so the
figures can be re-rendered from a finished run folder.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from fedforget.configs.atomic import atomic_write
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED
from fedforget.recon.metrics import volume_metrics

__all__ = ["reconstruction_grid", "method_comparison_chart", "frontier_chart", "sweep_curve", "save_figure"]

_DPI = 120
# Columns of results.json's summary, with what they measure.
_SPLITS = (
    ("BTA", "BTA (retain sites, test)", "#1f77b4"),
    ("KTA", "KTA (forget site, test)", "#ff7f0e"),
    ("UA", "UA (forget site, train)", "#2ca02c"),
)
# Error maps saturate above this percentile of the models' errors: one hot
# pixel (or the zero-filled image's aliasing) would otherwise squash every
# map into black.
_ERROR_PERCENTILE = 99.5


def save_figure(fig: Figure, path: Path) -> Path:
    """Writes ``fig`` to ``path`` as PNG, atomically."""
    FigureCanvasAgg(fig)
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI), temp=".{name}.tmp")


def _image(name: str, array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    array = np.asarray(array)
    if np.iscomplexobj(array) or array.ndim != 2:
        raise ValueError(
            f"{name} must be a real (H, W) image, got dtype {array.dtype} and shape {array.shape}"
        )
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, ground truth {shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array.astype(np.float64)


def _metrics_title(name: str, ground_truth: np.ndarray, image: np.ndarray) -> str:
    metrics = volume_metrics(ground_truth[None], image[None])
    psnr = "inf" if math.isinf(metrics.psnr) else f"{metrics.psnr:.2f}"
    return f"{_panel_name(name)}\nPSNR {psnr} dB · SSIM {metrics.ssim:.3f}"


def _panel_name(name: str, width: int = 26) -> str:
    """A model's name over a panel, broken after its '+' where it is wider than a panel (compositions)."""
    if len(name) <= width:
        return name
    return "\n".join(textwrap.wrap(name.replace("+", "+ "), width)).replace("+ ", "+")


def _draw_region(ax: Any, region: tuple[int, int, int, int], shape: tuple[int, int]) -> None:
    row0, col0, row1, col1 = region
    # Pixel edges sit at +-0.5; clamp so a region touching the border
    # is still drawn whole (an edge outside the axes would be clipped away).
    top, left = max(row0, 0) - 0.5, max(col0, 0) - 0.5
    bottom, right = min(row1, shape[0]) - 0.5, min(col1, shape[1]) - 0.5
    ax.add_patch(
        Rectangle(
            (left, top), right - left, bottom - top,
            fill=False, edgecolor="red", linewidth=1.3, clip_on=False,
            # A thin white halo keeps the red outline visible on the
            # error maps' orange and on bright anatomy alike.
            path_effects=[patheffects.withStroke(linewidth=2.6, foreground="white")],
        )
    )


def reconstruction_grid(
    path: Path,
    title: str,
    ground_truth: np.ndarray,
    zero_filled: np.ndarray,
    recons: dict[str, np.ndarray],
    region: tuple[int, int, int, int] | None = None,
) -> Path:
    """One slice of one site: images on top, absolute error maps below.

    Top row: ground truth, zero-filled, then each model in ``recons``'s order,
    all on one grey scale from 0 to the ground truth's maximum. Bottom row:
    ``|image - ground truth|`` for zero-filled and every model on one shared
    colour scale (saturating at the 99.5th percentile of the models' errors,
    or of the zero-filled error when there are no models) with one colour
    bar. Each panel's title gives its PSNR / SSIM on this slice (fastMRI
    conventions, via ``volume_metrics`` on a 1-slice volume).

    Args:
        path: Destination ``.png``.
        title: Figure title (e.g. site and slice).
        ground_truth: Target image, real (H, W).
        zero_filled: Zero-filled reconstruction, (H, W).
        recons: Model name -> reconstruction (H, W), e.g. original, oracle,
            methods; may be empty.
        region: ``(row0, col0, row1, col1)``, half-open like a slice: a
            region (hallucination, poison) outlined in red on every panel.

    Returns:
        ``path``.

    Raises:
        ValueError: If an image is not a finite real 2D array of the ground
            truth's shape, the ground truth's maximum is not positive, or
            the region is empty.
    """
    gt = _image("ground_truth", ground_truth, None)
    if not gt.max() > 0:
        raise ValueError(f"ground_truth maximum must be > 0, got {gt.max()}")
    panels = [("zero-filled", _image(ZERO_FILLED, zero_filled, gt.shape))]
    panels += [(name, _image(name, image, gt.shape)) for name, image in recons.items()]
    if region is not None:
        row0, col0, row1, col1 = (int(v) for v in region)
        if row1 <= row0 or col1 <= col0:
            raise ValueError(f"region {region} is empty; expected (row0, col0, row1, col1)")
        region = (row0, col0, row1, col1)

    errors = [np.abs(image - gt) for _, image in panels]
    scale_from = errors[1:] if len(errors) > 1 else errors
    vmax = float(np.percentile(np.concatenate([e.ravel() for e in scale_from]), _ERROR_PERCENTILE))
    if not vmax > 0:
        vmax = max(float(max(e.max() for e in errors)), 1e-12 * gt.max())
    extend = "max" if any(e.max() > vmax for e in errors) else "neither"

    columns = len(panels) + 1
    aspect = gt.shape[0] / gt.shape[1]
    panel = 2.1
    fig = Figure(figsize=(panel * columns + 1.2, 2 * panel * aspect + 1.4), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": float(gt.max()), "interpolation": "nearest"}
    heat = {"cmap": "inferno", "vmin": 0.0, "vmax": vmax, "interpolation": "nearest"}

    image_artist = axes[0, 0].imshow(gt, **grey)
    axes[0, 0].set_title("ground truth\n(reference)", fontsize=9)
    for column, ((name, image), error) in enumerate(zip(panels, errors), start=1):
        axes[0, column].imshow(image, **grey)
        axes[0, column].set_title(_metrics_title(name, gt, image), fontsize=9)
        error_artist = axes[1, column].imshow(error, **heat)
        axes[1, column].set_title(f"|{_panel_name(name)} − ground truth|", fontsize=8)
    axes[1, 0].text(
        0.5, 0.5,
        "absolute error\n|image − ground truth|\n\none colour scale\nfor all maps",
        ha="center", va="center", fontsize=9, transform=axes[1, 0].transAxes,
    )
    for ax in axes.ravel():
        # No ticks or frames on images (also halves the layout time).
        ax.set_axis_off()
    if region is not None:
        for ax in [axes[0, 0], *axes[0, 1:], *axes[1, 1:]]:
            _draw_region(ax, region, gt.shape)

    fig.colorbar(image_artist, ax=axes[0, :].tolist(), shrink=0.9, pad=0.01, label="intensity")
    fig.colorbar(
        error_artist, ax=axes[1, :].tolist(), shrink=0.9, pad=0.01, extend=extend, label="|error|"
    )
    return save_figure(fig, path)


def _mean_std(container: Any, key: str) -> tuple[float | None, float]:
    """(mean, std) of one summary value: a number, None, missing, or with a ``<key>_std``."""
    if not isinstance(container, Mapping) or container.get(key) is None:
        return None, 0.0
    value = container[key]
    if isinstance(value, Mapping):  # {"mean": m, "std": s}
        mean, std = value.get("mean"), value.get("std", 0.0)
    else:
        mean, std = value, container.get(f"{key}_std", 0.0)
    if mean is None or not np.isfinite(float(mean)):
        return None, 0.0
    return float(mean), float(std or 0.0)


def _bar_labels(ax: Any, models: Sequence[str]) -> None:
    ax.set_xticks(range(len(models)))
    crowded = len(models) > 4 or max(len(m) for m in models) > 9
    ax.set_xticklabels(models, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _grouped_panel(
    ax: Any, summary: Mapping[str, Mapping], models: list[str], metric: str, oracle: str,
    unit: str, decimals: int,
) -> None:
    """Bars of ``metric`` for BTA / KTA / UA per model, oracle levels dashed."""
    width = 0.8 / len(_SPLITS)
    values: list[float] = []
    for k, (split, label, colour) in enumerate(_SPLITS):
        offset = (k - (len(_SPLITS) - 1) / 2) * width
        for i, model in enumerate(models):
            mean, std = _mean_std(summary[model].get(split), metric)
            if mean is None:
                continue
            values += [mean - std, mean + std]
            ax.bar(
                i + offset, mean, width * 0.92, color=colour, label=label,
                yerr=std if std > 0 else None, capsize=2.5, error_kw={"elinewidth": 0.9},
                edgecolor="black" if model == oracle else "none", linewidth=0.8,
            )
            if len(models) * len(_SPLITS) <= 18:
                ax.annotate(
                    f"{mean:.{decimals}f}", (i + offset, mean + std), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=6.5,
                    rotation=90,
                )
        level, _ = _mean_std(summary.get(oracle, {}).get(split), metric)
        if level is not None:
            ax.axhline(level, color=colour, linestyle="--", linewidth=1.1, alpha=0.9)
    if values:
        low, high = min(values), max(values)
        span = max(high - low, 1e-3 if metric == "ssim" else 0.5)
        top = high + 0.3 * span
        ax.set_ylim(low - 0.25 * span, min(top, 1.0 + 0.02 * span) if metric == "ssim" else top)
    _bar_labels(ax, models)
    ax.set_ylabel(f"{metric.upper()}{f' ({unit})' if unit else ''}")
    ax.set_title(
        f"{metric.upper()}: BTA higher is better; KTA, UA closest to the oracle", fontsize=10
    )


def _single_panel(
    ax: Any, summary: Mapping[str, Mapping], models: list[str], key: str, oracle: str,
    colour: str, log: bool,
) -> None:
    """Bars of a per-model scalar (RTE, artifact), oracle's level dashed, n/a for missing."""
    present = []
    for i, model in enumerate(models):
        mean, std = _mean_std(summary[model], key)
        if mean is None or (log and mean <= 0):
            ax.annotate("n/a", (i, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                        textcoords="offset points", ha="center", fontsize=8, color="grey")
            continue
        present.append((mean, std))
        ax.bar(i, mean, 0.6, color=colour, yerr=std if std > 0 else None, capsize=3,
               edgecolor="black" if model == oracle else "none", linewidth=0.8)
        ax.annotate(f"{mean:.3g}", (i, mean + std), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)
    level, _ = _mean_std(summary.get(oracle, {}), key)
    if level is not None and (level > 0 or not log):
        ax.axhline(level, color="black", linestyle="--", linewidth=1.0, label=f"{oracle}")
    if log and present:  # a log axis without positive data only warns
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        low = min(m - s if m - s > 0 else m for m, s in present)
        high = max(m + s for m, s in present)
        ax.set_ylim(low / 3, high * 4)
    elif not log:
        ax.axhline(0.0, color="grey", linewidth=0.8)
        if present:
            high = max([m + s for m, s in present] + [1.0])
            low = min([m - s for m, s in present] + [0.0])
            ax.set_ylim(low - 0.1 * (high - low), high + 0.15 * (high - low))
    _bar_labels(ax, models)


def method_comparison_chart(path: Path, summary: dict[str, dict], oracle: str = ORACLE) -> Path:
    """Bars comparing models: PSNR and SSIM per split, RTE, and the artifact score.

    Panels: PSNR (dB) and SSIM as grouped bars per model for BTA, KTA and UA;
    RTE (oracle time / model time, log scale); and the artifact score when
    any model has one. The oracle's values are dashed horizontal lines (in
    each split's colour), so "closer to the oracle" reads directly; its
    bars are outlined in black.

    Args:
        path: Destination ``.png``.
        summary: ``results.json``'s ``summary``: model -> ``{"BTA": {"psnr",
            "ssim"}, "KTA": {...}, "UA": {...}, "RTE": float | None}``, plus
            optionally ``"artifact": float | None``. Any value may come with
            a spread for error bars, as ``"psnr_std"`` / ``"ssim_std"`` next
            to it, ``"RTE_std"`` / ``"artifact_std"`` at model level, or as
            ``{"mean": m, "std": s}``. Missing values are drawn as gaps.
        oracle: The model whose values are the reference lines.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``summary`` is empty.
    """
    models = list(summary)
    if not models:
        raise ValueError("summary has no models to compare")
    has_artifact = any(_mean_std(summary[m], "artifact")[0] is not None for m in models)
    width = max(10.0, 1.15 * len(models) + 3.5)
    fig = Figure(figsize=(width, 7.8), layout="constrained")
    # Without artifact scores RTE takes the whole bottom row.
    axes = fig.subplot_mosaic(
        [["psnr", "ssim"], ["rte", "artifact" if has_artifact else "rte"]]
    )
    fig.suptitle("Unlearning methods compared (dashed lines: the oracle's values)",
                 fontsize=12, fontweight="bold")

    _grouped_panel(axes["psnr"], summary, models, "psnr", oracle, "dB", 1)
    _grouped_panel(axes["ssim"], summary, models, "ssim", oracle, "", 3)
    _single_panel(axes["rte"], summary, models, "RTE", oracle, "#7f7f7f", log=True)
    axes["rte"].set_title("RTE = oracle time / model time (higher is faster)", fontsize=10)
    axes["rte"].set_ylabel("RTE (log scale)")
    if has_artifact:
        _single_panel(axes["artifact"], summary, models, "artifact", oracle, "#d62728", log=False)
        axes["artifact"].set_title(
            "artifact score on clean inputs (0 = clean, 1 = full poison)", fontsize=10
        )
        axes["artifact"].set_ylabel("artifact score")

    # One legend for the splits and the oracle line, outside the panels.
    handles = [Rectangle((0, 0), 1, 1, color=colour) for _, _, colour in _SPLITS]
    labels = [label for _, label, _ in _SPLITS]
    if oracle in summary:
        handles.append(Line2D([], [], color="black", linestyle="--"))
        labels.append(f"{oracle} (reference)")
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9,
               frameon=False)
    return save_figure(fig, path)


_SWEEP_KEYS = ("method", "retain_fraction", "seed", "bta_psnr", "seconds")


def _percent(value: float, _pos: int = 0) -> str:
    percent = 100 * value
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.2g}%"


class RetainTrajectory(NamedTuple):
    """One method's runs summarised per retain fraction, in ascending order of fraction."""

    fractions: np.ndarray
    mean_seconds: np.ndarray
    mean_bta: np.ndarray
    std_bta: np.ndarray


def retain_trajectory(fractions: np.ndarray, seconds: np.ndarray, bta: np.ndarray) -> RetainTrajectory:
    """One method's mean unlearning time and mean and spread of BTA at each retain fraction.

    Args:
        fractions: Retain fraction of each run.
        seconds: Unlearning wall time of each run.
        bta: BTA PSNR (dB) of each run.

    Returns:
        The distinct fractions in ascending order and, for each, the mean
        time, the mean BTA and the BTA's standard deviation over its runs.
    """
    levels = np.unique(fractions)
    runs = [fractions == level for level in levels]
    return RetainTrajectory(
        fractions=levels,
        mean_seconds=np.array([seconds[at].mean() for at in runs]),
        mean_bta=np.array([bta[at].mean() for at in runs]),
        std_bta=np.array([bta[at].std() for at in runs]),
    )


def sweep_curve(
    path: Path,
    points: list[dict],
    reference: dict[str, float] | None = None,
) -> Path:
    """Retain-fraction sweep: BTA PSNR against retain fraction and against time.

    Left: BTA PSNR against the retain fraction ``p`` (log axis); every seed
    is a faint dot, the line is the mean over seeds with ± one standard
    deviation. Right: BTA PSNR against unlearning wall time (the trade-off
    of the federated-unlearning paper's retain-fraction study), every run a
    dot, and per method a line through its mean point at each ``p`` in
    order of ``p``, labelled with ``p``. No curve is fitted: with a fixed
    step budget the times of different ``p`` differ by a few seconds, and a
    fitted polynomial drew maxima where no run was. One
    colour per method; original and oracle BTA as dashed lines when given.

    Args:
        path: Destination ``.png``.
        points: One dict per run: ``method``, ``retain_fraction`` in (0, 1],
            ``seed``, ``bta_psnr`` (dB), ``seconds``; ``kta_psnr`` and other
            keys are ignored.
        reference: Optional ``{"original": bta, "oracle": bta}`` (either
            key may be left out).

    Returns:
        ``path``.

    Raises:
        ValueError: If ``points`` is empty, a point lacks a key, or a retain
            fraction is outside (0, 1].
    """
    if not points:
        raise ValueError("sweep_curve needs at least one point")
    for point in points:
        missing = [k for k in _SWEEP_KEYS if k not in point]
        if missing:
            raise ValueError(f"sweep point {point} lacks {missing}")
        if not 0 < float(point["retain_fraction"]) <= 1:
            raise ValueError(f"retain_fraction must be in (0, 1], got {point['retain_fraction']}")
    methods = list(dict.fromkeys(str(p["method"]) for p in points))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}

    fig = Figure(figsize=(11.5, 4.8), layout="constrained")
    # One y axis for both panels: the same BTA reads the same height.
    left, right = fig.subplots(1, 2, sharey=True)
    fig.suptitle("How much retain data does unlearning need?", fontsize=12, fontweight="bold")
    fractions = sorted({float(p["retain_fraction"]) for p in points})

    for method in methods:
        runs = [p for p in points if str(p["method"]) == method]
        colour = colours[method]
        p = np.array([float(r["retain_fraction"]) for r in runs])
        bta = np.array([float(r["bta_psnr"]) for r in runs])
        seconds = np.array([float(r["seconds"]) for r in runs])
        left.scatter(p, bta, s=14, color=colour, alpha=0.35, linewidths=0)
        trajectory = retain_trajectory(p, seconds, bta)
        left.errorbar(trajectory.fractions, trajectory.mean_bta, yerr=trajectory.std_bta, color=colour,
                      marker="o", markersize=5, capsize=3, linewidth=1.6, label=method)

        right.scatter(seconds, bta, s=14, color=colour, alpha=0.35, linewidths=0)
        right.plot(trajectory.mean_seconds, trajectory.mean_bta, color=colour, marker="o", markersize=5,
                   linewidth=1.6)
        for level, x, y in zip(trajectory.fractions, trajectory.mean_seconds, trajectory.mean_bta):
            right.annotate(_percent(level), (x, y), textcoords="offset points", xytext=(4, 4),
                           fontsize=7, color=colour)

    for name, style in ((ZERO_FILLED, "-."), (ORIGINAL, ":"), (ORACLE, "--")):
        if reference and reference.get(name) is not None:
            for ax in (left, right):
                ax.axhline(float(reference[name]), color="black", linestyle=style,
                           linewidth=1.1, label=f"{name} BTA" if ax is left else None)

    left.set_xscale("log")
    left.xaxis.set_major_locator(FixedLocator(fractions))
    left.xaxis.set_major_formatter(FuncFormatter(_percent))
    left.xaxis.set_minor_locator(NullLocator())
    left.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)
    left.set_xlabel("retain data used, p (log scale)")
    left.set_ylabel("BTA PSNR, retain sites (dB)")
    left.set_title("BTA vs retain fraction (mean ± std; dots: seeds)", fontsize=10)
    right.set_xlabel("unlearning wall time (s)")
    right.set_title("BTA vs time (dots: runs; line: mean per p, in order of p)", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    # Methods first, then the reference lines.
    handles, labels = left.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] not in methods)
    fig.legend([handles[i] for i in order], [labels[i] for i in order],
               loc="outside right center", fontsize=9, frameon=False)
    return save_figure(fig, path)


_FAMILY_MARKERS = {"centralised": "o", "history": "s", "retrain": "D", "composition": "^"}


def tradeoff_chart(path: Path, curves: Mapping[str, Sequence[Any]], title: str,
                   original: tuple[float, float] | None = None) -> Path:
    """Each method's forget/retain trade-off: BTA - oracle (x) against KTA - oracle (y), one line per method
    through its knob values (labelled), 95 % intervals as error bars, the oracle at (0, 0).

    The axes are the frontier's (:func:`frontier_chart`): distances to the oracle, never absolute values.

    Args:
        path: Destination ``.png``.
        curves: method -> ``TradeoffPoint``-like items (``value, bta, kta, bta_ci, kta_ci``) in knob order.
        title: The figure's title.
        original: The original model's (BTA - oracle, KTA - oracle), drawn for reference, or None.

    Raises:
        ValueError: If ``curves`` is empty.
    """
    if not curves:
        raise ValueError("no method varied its trade-off knob")
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    ax = fig.add_subplot()
    for method, points in curves.items():
        xs, ys = [p.bta for p in points], [p.kta for p in points]
        line = ax.plot(xs, ys, marker="o", linewidth=1.5, label=f"{method} ({points[0].knob.split('.')[-1]})")[0]
        for p in points:
            xerr = None if p.bta_ci is None else [[p.bta - p.bta_ci[0]], [p.bta_ci[1] - p.bta]]
            yerr = None if p.kta_ci is None else [[p.kta - p.kta_ci[0]], [p.kta_ci[1] - p.kta]]
            if xerr or yerr:
                ax.errorbar([p.bta], [p.kta], xerr=xerr, yerr=yerr, color=line.get_color(), linewidth=0.8,
                            capsize=2)
            ax.annotate(f"{p.value:g}", (p.bta, p.kta), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=line.get_color())
    ax.scatter([0.0], [0.0], marker="*", s=220, color="black", zorder=4, label="oracle (retrained without the site)")
    if original is not None:
        ax.scatter([original[0]], [original[1]], marker="X", s=120, color="#7f7f7f", zorder=4, label="original")
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.axvline(0.0, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("BTA - oracle (dB): retain quality against retraining (right is better)")
    ax.set_ylabel("KTA - oracle (dB): 0 = forgotten as retraining would")
    ax.set_title(textwrap.fill(title, 100), fontsize=11)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def frontier_chart(path: Path, points: Sequence[Any], title: str) -> Path:
    """The forget/retain frontier: site compute (log x) against KTA - oracle (y, with its interval),
    each marker coloured by BTA - oracle; retraining on a budget is drawn as a curve over its budgets.

    Args:
        path: Destination ``.png``.
        points: ``FrontierPoint``-like items (``model, compute, kta, kta_ci, bta, family``); a model
            with no site compute (0) is drawn at the left edge.
        title: The figure's title.

    Raises:
        ValueError: If ``points`` is empty.
    """
    if not points:
        raise ValueError("no models to place on the frontier")
    positive = [p.compute for p in points if p.compute > 0]
    left = min(positive) / 3 if positive else 0.01
    xs = [p.compute if p.compute > 0 else left for p in points]
    low, high = min(min(p.bta for p in points), -0.5), max(max(p.bta for p in points), 0.5)
    norm = TwoSlopeNorm(vmin=low, vcenter=0.0, vmax=high)
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    ax = fig.add_subplot()
    retrain = sorted((x, p) for x, p in zip(xs, points) if p.family == "retrain")
    if retrain:
        ax.plot([x for x, _ in retrain], [p.kta for _, p in retrain], color="#7f7f7f", linewidth=1.5, zorder=1,
                label="retraining from scratch on a budget")
    for x, p in zip(xs, points):
        if p.kta_ci is not None:
            ax.errorbar([x], [p.kta], yerr=[[p.kta - p.kta_ci[0]], [p.kta_ci[1] - p.kta]], color="#555555",
                        linewidth=0.8, capsize=2, zorder=2)
    scatter = None
    for name, marker in _FAMILY_MARKERS.items():
        chosen = [(x, p) for x, p in zip(xs, points) if p.family == name]
        if chosen:
            scatter = ax.scatter([x for x, _ in chosen], [p.kta for _, p in chosen], c=[p.bta for _, p in chosen],
                                 cmap="RdYlGn", norm=norm, marker=marker, s=70, edgecolors="black", linewidths=0.6,
                                 zorder=3, label={"centralised": "centralised methods", "history": "history-based",
                                                  "retrain": "retraining (controls)",
                                                  "composition": "compositions of unlearned models"}[name])
    for x, p in zip(xs, points):
        label = p.model if p.compute > 0 else f"{p.model} (no site steps)"
        ax.annotate(label, (x, p.kta), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.axvline(1.0, color="black", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("site compute relative to the oracle's retraining (local steps over all sites; log scale)")
    ax.set_ylabel("KTA - oracle (dB): 0 = forgotten as retraining would")
    # A multirun's title carries its overrides, which run wider than the axes.
    ax.set_title(textwrap.fill(title, 100), fontsize=11)
    ax.legend(loc="best", fontsize=8)
    if scatter is not None:
        fig.colorbar(scatter, ax=ax, label="BTA - oracle (dB): retain quality against retraining")
    return save_figure(fig, path)
