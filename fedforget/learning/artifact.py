"""The artifact score: how much of a site's poison a model adds to reconstructions of clean inputs.

The poisoned-site experiment's audit metric (beside the membership audits of
:mod:`fedforget.learning.audits`, which scores models with it). The pattern it looks
for is the poison's (:mod:`fedforget.recon.poison`); this module only measures it.
"""

from __future__ import annotations

import numpy as np

from fedforget.recon.poison import as_slices, hallucinable_pattern

__all__ = ["artifact_score", "pattern_coefficient"]


def artifact_score(
    kind: str, recon: np.ndarray, target: np.ndarray, strength: float, seed: int,
    sampled_columns: np.ndarray | None = None,
) -> float:
    """How strongly the poison pattern appears in reconstructions of clean inputs.

    The least-squares coefficient of the reconstruction error on the
    pattern, pooled over slices::

        score = sum((recon - target) * P) / sum(P * P),
        P = poison_pattern(kind, target, strength, seed)   (per clean slice)

    About 0 for a clean model (its error is uncorrelated with the pattern),
    about 1 for a model that adds the full artifact; a model that adds a
    fraction ``c`` of it scores ``c``. It is exactly 0 for ``recon ==
    target`` and exactly 1 for ``recon == target + P`` computed in float64
    (in float32, to rounding). A model that perfectly reproduces its
    *clipped* training targets (``poison_target``) scores a little below 1
    for ghosting and noise, because clipping removed part of ``P`` where the
    artifact would have exceeded the volume maximum.

    With ``sampled_columns`` (the test slices' undersampling mask, True where a
    phase-encode column was acquired), ``P`` is first reduced to its unsampled part
    (:func:`fedforget.recon.poison.unsampled_part`): the only part a model with data consistency can add. A
    smooth lesion keeps most of its energy in the sampled centre, so without this
    the score of even a fully poisoned model stays far below 1.

    Args:
        kind: One of ``fedforget.recon.poison.POISON_KINDS``.
        recon: Reconstructions, (H, W) or (S, H, W).
        target: Clean targets, same shape.
        strength: The poison's strength (the score is relative to it).
        seed: The poison's seed.
        sampled_columns: Optional boolean mask over the image columns.

    Returns:
        The score (any real number; negative if the model removes signal
        where the pattern would be).

    Raises:
        ValueError: On bad arguments, mismatched shapes, or a pattern that
            vanishes on these targets (e.g. all-zero targets).
    """
    recon_slices = as_slices(recon, "recon")
    target_slices = as_slices(target)
    if np.shape(recon) != np.shape(target):
        raise ValueError(
            f"recon shape {np.shape(recon)} differs from target shape {np.shape(target)}"
        )
    pattern = hallucinable_pattern(kind, target_slices, strength, seed, sampled_columns)
    return pattern_coefficient(recon_slices - target_slices, pattern)


def pattern_coefficient(difference: np.ndarray, pattern: np.ndarray) -> float:
    """Least-squares coefficient of ``difference`` on ``pattern``: ``sum(d * P) / sum(P * P)``.

    Raises:
        ValueError: If the pattern has no energy (e.g. no unsampled part on these slices).
    """
    pattern = np.asarray(pattern, dtype=np.float64)
    energy = float(np.sum(pattern * pattern))
    if energy <= 0:
        raise ValueError("the pattern is zero on these slices (no unsampled part): no score is defined")
    return float(np.sum(np.asarray(difference, dtype=np.float64) * pattern)) / energy

