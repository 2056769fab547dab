"""Synthetic anatomy: determinism, value range, slice smoothness, texture."""

from __future__ import annotations

import numpy as np
import pytest

from fedforget.recon.phantoms import CONTRASTS, PHANTOMS, brain_slices, knee_slices, untextured_slices

ANATOMIES = sorted(PHANTOMS)
ALL_CONTRASTS = [(a, c) for a in ANATOMIES for c in CONTRASTS[a]]


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


def test_every_anatomy_a_site_can_name_has_a_phantom_of_that_anatomy():
    from fedforget.configs.schema import ANATOMIES as SITE_ANATOMIES

    assert set(PHANTOMS) == set(SITE_ANATOMIES)
    brain, knee = PHANTOMS["brain"](2, 48, 5), PHANTOMS["knee"](2, 48, 5)
    assert np.array_equal(brain, brain_slices(2, 48, 5)) and np.array_equal(knee, knee_slices(2, 48, 5))
    assert not np.allclose(np.abs(brain), np.abs(knee))


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_shape_dtype_range(anatomy, contrast):
    vol = PHANTOMS[anatomy](5, 64, 3, contrast=contrast)
    assert vol.shape == (5, 64, 64)
    assert vol.dtype == np.complex64
    assert np.isfinite(vol).all()
    mag = np.abs(vol)
    assert mag.min() >= 0.0 and mag.max() <= 1.0 + 1e-5
    # Real anatomy, not an empty frame: bright tissue and dark background.
    assert mag.max() > 0.7
    assert (mag < 0.02).mean() > 0.1


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_deterministic_per_seed(anatomy, contrast):
    fn = PHANTOMS[anatomy]
    vol = fn(4, 64, 5, contrast=contrast)
    np.testing.assert_array_equal(vol, fn(4, 64, 5, contrast=contrast))
    other = fn(4, 64, 6, contrast=contrast)
    assert np.abs(np.abs(vol) - np.abs(other)).mean() > 0.02


def test_default_contrasts():
    np.testing.assert_array_equal(brain_slices(2, 32, 1), brain_slices(2, 32, 1, "AXT2"))
    np.testing.assert_array_equal(
        knee_slices(2, 32, 1), knee_slices(2, 32, 1, contrast="CORPD_FBK")
    )


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_slices_vary_smoothly(anatomy, contrast):
    vol = PHANTOMS[anatomy](16, 64, 21, contrast=contrast)
    adjacent = [_corr(vol[i], vol[i + 1]) for i in range(15)]
    assert min(adjacent) > 0.9
    # ...while the ends of the stack show different anatomy. (Not less than
    # every neighbour pair: near the vertex the head outline shrinks fast,
    # and on T1 and FLAIR, where the fat ring dominates the variance, the
    # last step is as large as the whole stack's change.)
    assert _corr(vol[0], vol[-1]) < np.median(adjacent)


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


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_same_subject_at_every_size(anatomy, contrast):
    fn = PHANTOMS[anatomy]
    coarse = np.abs(fn(2, 64, 4, contrast=contrast))
    fine = np.abs(fn(2, 128, 4, contrast=contrast))
    fine = fine.reshape(2, 64, 2, 64, 2).mean(axis=(2, 4))
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
    # fine texture over the brain is moderate (about 1.2x at 128 px, PD knee
    # against T2 brain), not several-fold. Other contrast pairs differ less or
    # invert: fat-suppressed knees are smoother, T1 and FLAIR brains sharper.
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


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_untextured_slices_are_the_same_subject_with_less_fine_detail(anatomy, contrast):
    textured = PHANTOMS[anatomy](4, 64, 5, contrast=contrast)
    smooth = untextured_slices(anatomy, 4, 64, 5, contrast)
    assert smooth.shape == textured.shape and smooth.dtype == np.complex64
    assert _corr(smooth, textured) > 0.9  # the anatomy is unchanged
    assert _high_frequency_fraction(smooth, 0.25) < _high_frequency_fraction(textured, 0.25)


def test_texture_layers_are_the_knees_fat_streaks():
    without = untextured_slices("knee", 3, 64, 2, "CORPD_FBK")
    kept = untextured_slices("knee", 3, 64, 2, "CORPD_FBK", keep_texture_layers=True)
    # Streaks are fat painted over muscle: keeping them only brightens the PD image.
    assert (np.abs(kept) - np.abs(without)).min() > -1e-4
    assert np.abs(kept - without).max() > 0.1
    brain = untextured_slices("brain", 3, 64, 2, "AXT2")
    np.testing.assert_array_equal(brain, untextured_slices("brain", 3, 64, 2, "AXT2", keep_texture_layers=True))


def test_untextured_slices_reject_an_unknown_contrast():
    with pytest.raises(ValueError, match="AXT2.*brain contrast"):
        untextured_slices("knee", 2, 64, 0, "AXT2")
