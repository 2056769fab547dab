"""The texture-floor benchmark: zero-filled against a numpy/fastMRI reference, and the ceiling's ordering."""

from __future__ import annotations

import numpy as np
import pytest
from fastmri.evaluate import psnr

from bench.texture_floor import SLICES, SUBJECTS, _column_mask, contrast_floor
from fedforget.recon.phantoms import knee_slices


def _numpy_zero_filled_psnr(size: int) -> float:
    scores = []
    for seed in range(SUBJECTS):
        image = knee_slices(SLICES, size, 1000 + seed, "CORPD_FBK")
        kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        kspace *= _column_mask(size, 4, 0.08, seed)
        recon = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"),
                                       axes=(-2, -1)))
        target = np.abs(image).astype(np.float64)
        scores.append(psnr(target, recon.astype(np.float64)))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def pd_knee_row() -> dict[str, float]:
    return contrast_floor("knee", "CORPD_FBK", 32, 4, 0.08)


def test_zero_filled_matches_a_numpy_reconstruction_scored_by_fastmri(pd_knee_row):
    assert abs(pd_knee_row["zero_filled"] - _numpy_zero_filled_psnr(32)) < 0.01


def test_knowing_more_of_the_image_never_lowers_the_ceiling(pd_knee_row):
    row = pd_knee_row
    assert row["zero_filled"] < row["anatomy_aware"] < row["anatomy_aware_streaks_known"]
    assert row["texture_ceiling_gain"] == row["anatomy_aware"] - row["zero_filled"]
    brain = contrast_floor("brain", "AXT2", 32, 4, 0.08)
    assert "anatomy_aware_streaks_known" not in brain
    # The brain has almost no texture: a model of its anatomy recovers nearly everything.
    assert brain["texture_ceiling_gain"] > row["texture_ceiling_gain"] + 10
