"""Simulated fully-sampled multicoil Cartesian acquisition.

Physics only, in numpy: coil images, the fastMRI k-space convention (centred,
orthonormal 2D FFT over the last two axes, identical to ``fastmri.fft2c``),
complex Gaussian receiver noise, and the root-sum-of-squares target that
fastMRI stores as ``reconstruction_rss``.

Noise convention: ``noise_std`` is the standard deviation of *each* of the
real and imaginary parts of the k-space noise, in absolute units. Because the
FFT is orthonormal, each coil image then carries white noise of the same
per-component standard deviation. With phantom magnitudes in [0, 1] and
sensitivities normalised to unit root-sum-of-squares, tissue of magnitude
``m`` has a signal-to-noise ratio of about ``m / noise_std`` in the RSS
image, and the RSS background floor is about ``noise_std * sqrt(2 * coils)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Acquisition", "acquire", "fft2c", "ifft2c", "rss"]


class Acquisition(NamedTuple):
    """A fully-sampled multicoil acquisition of a slice stack.

    Attributes:
        kspace: Complex64 k-space of shape (slices, coils, rows, cols).
        target: Float32 RSS image of the noisy k-space, (slices, rows, cols).
    """

    kspace: np.ndarray
    target: np.ndarray


def fft2c(data: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes (fastMRI convention).

    Args:
        data: Complex array with at least two dimensions.

    Returns:
        Its k-space, same shape.
    """
    axes = (-2, -1)
    shifted = np.fft.ifftshift(data, axes=axes)
    return np.fft.fftshift(np.fft.fft2(shifted, axes=axes, norm="ortho"), axes=axes)


def ifft2c(data: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D inverse FFT over the last two axes.

    Args:
        data: Complex k-space with at least two dimensions.

    Returns:
        Its image, same shape.
    """
    axes = (-2, -1)
    shifted = np.fft.ifftshift(data, axes=axes)
    return np.fft.fftshift(np.fft.ifft2(shifted, axes=axes, norm="ortho"), axes=axes)


def rss(coil_images: np.ndarray, axis: int = 1) -> np.ndarray:
    """Root-sum-of-squares coil combination.

    Args:
        coil_images: Complex or real coil images.
        axis: The coil axis.

    Returns:
        Real magnitude image with ``axis`` removed.
    """
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=axis))


def acquire(
    images: np.ndarray, sensitivities: np.ndarray, noise_std: float, seed: int
) -> Acquisition:
    """Simulates a fully-sampled multicoil acquisition of a slice stack.

    Args:
        images: Complex (or real) images of shape (slices, rows, cols).
        sensitivities: Coil maps of shape (coils, rows, cols).
        noise_std: Standard deviation of each of the real and imaginary parts
            of the complex Gaussian k-space noise (absolute units, see the
            module docstring); 0 for noiseless data.
        seed: Seed of the noise.

    Returns:
        The noisy k-space and its RSS target, as fastMRI would store them.

    Raises:
        ValueError: On mismatched shapes or a negative / non-finite noise.
    """
    if images.ndim != 3:
        raise ValueError(
            f"images must have shape (slices, rows, cols), got {images.shape}"
        )
    if sensitivities.ndim != 3 or sensitivities.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"sensitivities must have shape (coils, {images.shape[1]}, {images.shape[2]}) "
            f"to match images {images.shape}, got {sensitivities.shape}"
        )
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")

    coil_images = images[:, None, :, :].astype(np.complex64) * sensitivities[None]
    kspace = fft2c(coil_images)
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(kspace.shape + (2,), dtype=np.float32)
        kspace = kspace + noise_std * (noise[..., 0] + 1j * noise[..., 1])
    kspace = kspace.astype(np.complex64)
    # fastMRI's reconstruction_rss is the RSS of the (noisy) fully-sampled
    # data, so the target keeps the noise the network can never predict.
    target = rss(ifft2c(kspace), axis=1).astype(np.float32)
    return Acquisition(kspace=kspace, target=target)
