"""Metrics follow fastmri.evaluate exactly."""

from __future__ import annotations

import numpy as np
import pytest
from fastmri import evaluate
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio

from fedforget.recon.metrics import ReconMetrics, mean_metrics, volume_metrics
from fedforget.recon.phantoms import knee_slices


@pytest.fixture(scope="module")
def pair():
    target = (
        np.abs(knee_slices(3, 48, 9)).astype(np.float32) * 3e-4
    )  # fastMRI-like scale
    rng = np.random.default_rng(0)
    recon = gaussian_filter(target, (0, 1, 1)) + rng.normal(
        0, 1e-5, target.shape
    ).astype(np.float32)
    return target, recon.astype(np.float32)


def test_matches_fastmri_evaluate(pair):
    target, recon = pair
    m = volume_metrics(target, recon)
    assert isinstance(m, ReconMetrics)
    assert m.psnr == pytest.approx(float(evaluate.psnr(target, recon)), rel=1e-6)
    assert m.ssim == pytest.approx(evaluate.ssim(target, recon).item(), rel=1e-6)
    assert m.nmse == pytest.approx(float(evaluate.nmse(target, recon)), rel=1e-6)
    assert m.psnr == pytest.approx(
        peak_signal_noise_ratio(target, recon, data_range=target.max()), rel=1e-6
    )
    assert 0 < m.ssim < 1 and m.nmse > 0


def test_data_range_is_the_volume_max(pair):
    target, recon = pair
    # Scaling both images leaves fastMRI's metrics unchanged.
    scaled = volume_metrics(target * 10, recon * 10)
    base = volume_metrics(target, recon)
    assert scaled.psnr == pytest.approx(base.psnr, rel=1e-5)
    assert scaled.ssim == pytest.approx(base.ssim, rel=1e-4)


def test_perfect_reconstruction(pair):
    target, _ = pair
    m = volume_metrics(target, target.copy())
    assert m.ssim == pytest.approx(1.0) and m.nmse == 0.0 and m.psnr == np.inf


def test_shape_mismatch_names_both_shapes(pair):
    target, recon = pair
    with pytest.raises(ValueError) as err:
        volume_metrics(target, recon[:, :40])
    assert "(3, 48, 48)" in str(err.value) and "(3, 40, 48)" in str(err.value)
    with pytest.raises(ValueError):
        volume_metrics(target[0], recon[0])
    with pytest.raises(ValueError):
        volume_metrics(np.zeros_like(target), recon)


def test_mean_metrics():
    m = mean_metrics([ReconMetrics(30.0, 0.8, 0.02), ReconMetrics(20.0, 0.6, 0.04)])
    assert m == pytest.approx(ReconMetrics(25.0, 0.7, 0.03))
    assert isinstance(m, ReconMetrics)
    with pytest.raises(ValueError):
        mean_metrics([])
