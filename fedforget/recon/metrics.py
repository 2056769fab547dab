"""Reconstruction metrics with the fastMRI conventions (``fastmri.evaluate``).

Per volume: the data range is the volume's target maximum; PSNR is computed
over the whole volume at once; SSIM (scikit-image, 7 x 7 window) slice by
slice with the volume's data range and averaged over slices; NMSE is
``||gt - pred||^2 / ||gt||^2`` over the volume. Results are averaged over
volumes, as in the fastMRI leaderboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["ReconMetrics", "volume_metrics", "mean_metrics"]


class ReconMetrics(NamedTuple):
    """Reconstruction quality of one volume (or a mean over volumes).

    Attributes:
        psnr: Peak signal-to-noise ratio, dB (higher is better).
        ssim: Structural similarity, at most 1 (higher is better).
        nmse: Normalised mean squared error (lower is better).
    """

    psnr: float
    ssim: float
    nmse: float


def volume_metrics(target: np.ndarray, recon: np.ndarray) -> ReconMetrics:
    """fastMRI PSNR / SSIM / NMSE of one reconstructed volume.

    Args:
        target: Ground truth, real array of shape (slices, rows, cols).
        recon: Reconstruction, same shape.

    Returns:
        The volume's metrics.

    Raises:
        ValueError: If the shapes differ, are not 3D, or the target maximum
            is not positive (the data range would be empty).
    """
    # skimage pulls in scipy.stats (~0.8 s): import it only when metrics are computed.
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    target = np.asarray(target)
    recon = np.asarray(recon)
    if target.shape != recon.shape:
        raise ValueError(
            f"target shape {target.shape} differs from recon shape {recon.shape}"
        )
    if target.ndim != 3:
        raise ValueError(
            f"expected (slices, rows, cols) volumes, got shape {target.shape}"
        )
    data_range = target.max()
    if not data_range > 0:
        raise ValueError(
            f"target maximum must be > 0 to define the data range, got {data_range}"
        )

    # A perfect reconstruction has PSNR = inf; don't warn about it.
    with np.errstate(divide="ignore"):
        psnr = peak_signal_noise_ratio(target, recon, data_range=data_range)
    ssim = np.mean(
        [
            structural_similarity(target[i], recon[i], data_range=data_range)
            for i in range(target.shape[0])
        ]
    )
    nmse = np.linalg.norm(target - recon) ** 2 / np.linalg.norm(target) ** 2
    return ReconMetrics(psnr=float(psnr), ssim=float(ssim), nmse=float(nmse))


def mean_metrics(per_volume: Sequence[ReconMetrics]) -> ReconMetrics:
    """Mean of per-volume metrics (each volume weighs the same).

    Args:
        per_volume: Metrics of one or more volumes.

    Returns:
        Their element-wise mean.

    Raises:
        ValueError: If ``per_volume`` is empty.
    """
    if len(per_volume) == 0:
        raise ValueError("mean_metrics needs at least one volume's metrics, got none")
    values = np.asarray([tuple(m) for m in per_volume], dtype=np.float64)
    psnr, ssim, nmse = values.mean(axis=0)
    return ReconMetrics(psnr=float(psnr), ssim=float(ssim), nmse=float(nmse))
