"""Confidence intervals: volume bootstrap (slices of one volume are not independent) and t-intervals over seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
REPLICATES = 2000


def resampled_groups(groups: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Indices of the items of a volume-bootstrap replicate: whole groups drawn with replacement."""
    groups = np.asarray(groups)
    labels = np.unique(groups)
    chosen = rng.choice(labels, size=len(labels), replace=True)
    members = {label: np.flatnonzero(groups == label) for label in labels}
    return np.concatenate([members[label] for label in chosen])


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(statistic: Callable[..., float], samples: Sequence[tuple[np.ndarray, np.ndarray]],
                       seed: int, replicates: int = REPLICATES, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A volume-bootstrap interval of ``statistic(*arrays)``.

    Args:
        statistic: A function of one value array per sample (e.g. members' and held-out scores).
        samples: ``(values, groups)`` per sample; every replicate resamples each sample's groups
            (volumes) with replacement, independently of the other samples.
        seed: Seed of the resampling (the same seed resamples the same volumes: paired comparisons).
        replicates: Number of bootstrap replicates.
        confidence: Coverage of the interval.
    """
    rng = np.random.default_rng(seed)
    values = np.empty(replicates)
    for r in range(replicates):
        values[r] = statistic(*[np.asarray(v)[resampled_groups(g, rng)] for v, g in samples])
    return percentile_interval(values, confidence)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student-t interval of a mean over independent runs (seeds); None for fewer than two values."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) < 2:
        return None
    from scipy import stats  # here: a site's ClientApp process uses this module but never this function

    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)
