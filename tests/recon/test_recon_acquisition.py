"""Coil maps, the fastMRI FFT convention and the simulated acquisition."""

from __future__ import annotations

import fastmri
import numpy as np
import pytest
from fastmri.data.transforms import to_tensor

from fedforget.recon.acquisition import Acquisition, acquire, fft2c, ifft2c, rss
from fedforget.recon.coils import coil_sensitivities
from fedforget.recon.phantoms import knee_slices


def _random_complex(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(
        np.complex64
    )


@pytest.mark.parametrize("shape", [(3, 8, 10), (2, 7, 9), (1, 2, 16, 16)])
def test_fft_matches_fastmri(shape):
    data = _random_complex(shape)
    expected = fastmri.tensor_to_complex_np(fastmri.fft2c(to_tensor(data)))
    np.testing.assert_allclose(fft2c(data), expected, rtol=1e-5, atol=1e-5)
    expected_inv = fastmri.tensor_to_complex_np(fastmri.ifft2c(to_tensor(data)))
    np.testing.assert_allclose(ifft2c(data), expected_inv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ifft2c(fft2c(data)), data, atol=1e-5)


def test_fft_is_orthonormal():
    data = _random_complex((4, 12, 12))
    assert np.isclose(np.linalg.norm(fft2c(data)), np.linalg.norm(data), rtol=1e-5)


@pytest.mark.parametrize("num_coils", [1, 4, 8])
def test_coil_maps_normalised(num_coils):
    maps = coil_sensitivities(num_coils, (48, 40), seed=3)
    assert maps.shape == (num_coils, 48, 40) and maps.dtype == np.complex64
    np.testing.assert_allclose(rss(maps, axis=0), 1.0, atol=1e-5)
    # RSS of the coil images equals the image magnitude.
    image = knee_slices(1, 48, 1)[0][:, :40]
    np.testing.assert_allclose(
        rss(maps * image[None], axis=0), np.abs(image), atol=1e-5
    )


def test_coil_maps_smooth_and_distinct():
    maps = coil_sensitivities(8, (64, 64), seed=1)
    # Neighbouring pixels change little (smooth magnitude and phase)...
    step = np.abs(maps[:, :, 1:] - maps[:, :, :-1]).max()
    assert step < 0.1
    # ...while coils see different parts of the field of view.
    mags = np.abs(maps).reshape(8, -1)
    assert np.corrcoef(mags).min() < 0.0
    assert not np.allclose(maps, coil_sensitivities(8, (64, 64), seed=2))
    np.testing.assert_array_equal(maps, coil_sensitivities(8, (64, 64), seed=1))


@pytest.mark.parametrize("num_coils,shape", [(0, (8, 8)), (2, (0, 8))])
def test_coil_bad_arguments(num_coils, shape):
    with pytest.raises(ValueError):
        coil_sensitivities(num_coils, shape, seed=0)


def test_acquire_matches_fastmri_rss():
    images = knee_slices(2, 32, 4)
    maps = coil_sensitivities(4, (32, 32), seed=5)
    acq = acquire(images, maps, noise_std=0.02, seed=6)
    assert isinstance(acq, Acquisition)
    assert acq.kspace.shape == (2, 4, 32, 32) and acq.kspace.dtype == np.complex64
    assert acq.target.shape == (2, 32, 32) and acq.target.dtype == np.float32
    expected = fastmri.rss(
        fastmri.complex_abs(fastmri.ifft2c(to_tensor(acq.kspace))), dim=1
    )
    np.testing.assert_allclose(acq.target, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_noiseless_target_is_image_magnitude():
    images = knee_slices(2, 32, 4)
    maps = coil_sensitivities(3, (32, 32), seed=5)
    acq = acquire(images, maps, noise_std=0.0, seed=0)
    np.testing.assert_allclose(acq.target, np.abs(images), atol=1e-5)
    np.testing.assert_allclose(
        acq.kspace, fft2c(images[:, None] * maps[None]), atol=1e-5
    )


def test_noise_convention():
    zeros = np.zeros((4, 64, 64), dtype=np.complex64)
    maps = coil_sensitivities(2, (64, 64), seed=0)
    acq = acquire(zeros, maps, noise_std=0.05, seed=1)
    # noise_std is the std of each of the real and imaginary parts.
    assert np.std(acq.kspace.real) == pytest.approx(0.05, rel=0.05)
    assert np.std(acq.kspace.imag) == pytest.approx(0.05, rel=0.05)
    again = acquire(zeros, maps, noise_std=0.05, seed=1)
    np.testing.assert_array_equal(acq.kspace, again.kspace)
    assert not np.array_equal(
        acq.kspace, acquire(zeros, maps, noise_std=0.05, seed=2).kspace
    )


def test_acquire_bad_arguments():
    images = np.zeros((2, 16, 16), dtype=np.complex64)
    with pytest.raises(ValueError, match="sensitivities"):
        acquire(images, np.ones((2, 16, 8), dtype=np.complex64), 0.0, 0)
    with pytest.raises(ValueError, match="noise_std"):
        acquire(images, np.ones((2, 16, 16), dtype=np.complex64), -1.0, 0)
    with pytest.raises(ValueError, match="images"):
        acquire(images[0], np.ones((2, 16, 16), dtype=np.complex64), 0.0, 0)
