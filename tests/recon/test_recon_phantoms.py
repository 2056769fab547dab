"""Synthetic anatomy: determinism, value range, slice smoothness, texture."""

from __future__ import annotations

import numpy as np
import pytest

from fedforget.recon.phantoms import PHANTOMS, brain_slices, knee_slices

ANATOMIES = sorted(PHANTOMS)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.abs(a).ravel(), np.abs(b).ravel())[0, 1])


def _high_frequency_fraction(volume: np.ndarray, cutoff: float) -> float:
    """Share of the non-DC spectral energy of |volume| above ``cutoff`` cycles/pixel."""
    mag = np.abs(volume)
    power = np.abs(np.fft.fft2(mag)) ** 2
    power[:, 0, 0] = 0.0
    freq = np.fft.fftfreq(mag.shape[-1])
    radius = np.hypot(freq[:, None], freq[None, :])
    return float(power[:, radius > cutoff].sum() / power.sum())


def test_registry():
    assert PHANTOMS == {"brain": brain_slices, "knee": knee_slices}


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_shape_dtype_range(anatomy):
    vol = PHANTOMS[anatomy](5, 64, 3)
    assert vol.shape == (5, 64, 64)
    assert vol.dtype == np.complex64
    assert np.isfinite(vol).all()
    mag = np.abs(vol)
    assert mag.min() >= 0.0 and mag.max() <= 1.0 + 1e-5
    # Real anatomy, not an empty frame: bright tissue and dark background.
    assert mag.max() > 0.8
    assert (mag < 0.02).mean() > 0.1


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_deterministic_per_seed(anatomy):
    fn = PHANTOMS[anatomy]
    np.testing.assert_array_equal(fn(4, 64, 5), fn(4, 64, 5))
    other = fn(4, 64, 6)
    assert np.abs(np.abs(fn(4, 64, 5)) - np.abs(other)).mean() > 0.02


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_slices_vary_smoothly(anatomy):
    vol = PHANTOMS[anatomy](16, 64, 21)
    adjacent = [_corr(vol[i], vol[i + 1]) for i in range(15)]
    assert min(adjacent) > 0.9
    # ...while the ends of the stack show different anatomy.
    assert _corr(vol[0], vol[-1]) < min(adjacent)


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_phase_smooth_and_nontrivial(anatomy):
    vol = PHANTOMS[anatomy](2, 64, 8)
    inside = np.abs(vol) > 0.1
    step = np.angle(vol[:, :, 1:] * np.conj(vol[:, :, :-1]))
    both = inside[:, :, 1:] & inside[:, :, :-1]
    assert np.abs(step[both]).max() < 0.5  # radians per pixel
    phase = np.angle(vol[0][inside[0]] * np.conj(vol[0][inside[0]][0]))
    assert np.ptp(np.unwrap(phase)) > 0.3


@pytest.mark.parametrize("size", [128, 256, 320])
@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_other_sizes(anatomy, size):
    vol = PHANTOMS[anatomy](1, size, 2)
    assert vol.shape == (1, size, size) and np.isfinite(vol).all()
    assert np.abs(vol).max() <= 1.0 + 1e-5


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_same_subject_at_every_size(anatomy):
    fn = PHANTOMS[anatomy]
    coarse = np.abs(fn(2, 64, 4))
    fine = np.abs(fn(2, 128, 4)).reshape(2, 64, 2, 64, 2).mean(axis=(2, 4))
    assert _corr(coarse, fine) > 0.9


def test_knee_has_more_fine_texture_than_brain():
    seeds = range(4)
    brain = np.mean(
        [_high_frequency_fraction(brain_slices(4, 128, s), 0.25) for s in seeds]
    )
    knee = np.mean(
        [_high_frequency_fraction(knee_slices(4, 128, s), 0.25) for s in seeds]
    )
    # Trabecular struts are faint on PD-weighted images, so the knee's excess of
    # fine texture over the brain is moderate (about 1.2x at 128 px), not several-fold.
    assert knee > 1.15 * brain


def test_brain_and_knee_differ_structurally():
    # Same seed, different anatomy: the images must be unrelated.
    assert abs(_corr(brain_slices(1, 64, 0), knee_slices(1, 64, 0))) < 0.5


@pytest.mark.parametrize("args", [(0, 64, 1), (3, 8, 1)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        brain_slices(*args)
    with pytest.raises(ValueError):
        knee_slices(*args)
