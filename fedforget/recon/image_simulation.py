"""Multicoil k-space simulated from a magnitude image volume (``data.kind=images``).

One volume, in order (docs/image-sites.md says why each step is there):

1. **Conform**: each slice is padded with zeros to a centred square (background, like a larger field of
   view: nothing is cropped away), then resized to ``size x size`` by linear interpolation with an
   anti-aliasing Gaussian when shrinking. A source smaller than ``size`` would have to be upsampled,
   which invents detail that was never acquired (Shimron et al.'s zero-padding crime): refused unless
   ``allow_upsampling``, and then marked ``upsampled``.
2. **Normalise**: divided by the conformed volume's maximum, so magnitudes lie in [0, 1] like the phantoms'.
3. **Select slices**: a slice's foreground is its pixels above ``FOREGROUND_LEVEL`` (5 % of the maximum);
   slices whose foreground covers less than ``min_foreground_fraction`` of the slice are dropped, and
   ``max_slices`` (0 = all) keeps that many of the rest, evenly spaced through the stack.
4. **Phase**: a smooth low-order polynomial background phase (a few radians across the field of view,
   drifting slowly through the stack), drawn from the volume's phase seed. Real phase is not recoverable
   from magnitude images; this one only keeps the k-space from being Hermitian-symmetric.
5. **Coils**: :func:`fedforget.recon.coils.coil_sensitivities`, whose root-sum-of-squares is 1 at every
   pixel, so the RSS of the noiseless coil images is the normalised magnitude itself.
6. **Acquire** (:func:`fedforget.recon.acquisition.acquire`): centred orthonormal FFT, complex Gaussian
   noise of per-component standard deviation ``mean foreground magnitude / snr``, and the RSS of the
   noisy k-space as the target, exactly as the synthetic sites store it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from fedforget.recon.acquisition import acquire
from fedforget.recon.coils import coil_sensitivities
from fedforget.recon.image_readers import ImageFileError, ImageVolume

__all__ = ["FOREGROUND_LEVEL", "ImageSimulation", "VolumeSeeds", "SimulatedVolume", "conform",
           "foreground_fractions", "select_slices", "background_phase", "simulate_volume"]

# A pixel is foreground above this fraction of the normalised volume's maximum: above the noise floor of
# typical magnitude DICOMs (1-2 %), below the darkest tissue of interest (CSF on T1 is about 10 %).
FOREGROUND_LEVEL = 0.05
# Phase polynomial weights of 1, x, y, x^2, xy, y^2, z (as the phantoms' phase: a few radians across).
_PHASE_WEIGHTS = np.array([1.0, 1.2, 1.2, 0.6, 0.6, 0.6, 1.0])


class ImageSimulation(NamedTuple):
    """How a volume is simulated (``data.size``, ``data.coils`` and ``data.images``).

    Attributes:
        size: Image side in pixels (k-space and target are size x size).
        coils: Receive coils.
        snr: Mean foreground magnitude over the per-component k-space noise std (``math.inf``: no noise).
        min_foreground_fraction: Slices with less foreground than this fraction are dropped.
        max_slices: Keep at most this many of the remaining slices, evenly spaced (0 = all).
        allow_upsampling: Accept sources smaller than ``size`` (marked ``upsampled``).
    """

    size: int
    coils: int
    snr: float
    min_foreground_fraction: float = 0.1
    max_slices: int = 0
    allow_upsampling: bool = False


class VolumeSeeds(NamedTuple):
    """Seeds of a volume's three random draws."""

    phase: int
    coils: int
    noise: int


class Conformed(NamedTuple):
    """A volume padded, resized and normalised: ``images`` (slices, size, size) in [0, 1]."""

    images: np.ndarray
    scale: float
    upsampled: bool


class SimulatedVolume(NamedTuple):
    """A simulated acquisition and what it was made from.

    Attributes:
        kspace: Complex64 (slices, coils, size, size), fastMRI's convention.
        target: Float32 RSS of the noisy k-space (slices, size, size).
        magnitude: The normalised magnitude of the kept slices (slices, size, size): the noiseless truth.
        kept: Indices of the kept slices in the source volume.
        noise_std: Per-component k-space noise standard deviation.
        scale: The source intensity that became 1 (the conformed volume's maximum).
        upsampled: Whether the source was smaller than ``size`` and interpolated up.
    """

    kspace: np.ndarray
    target: np.ndarray
    magnitude: np.ndarray
    kept: tuple[int, ...]
    noise_std: float
    scale: float
    upsampled: bool


def conform(volume: ImageVolume, size: int, allow_upsampling: bool = False) -> Conformed:
    """Pad a volume's slices to a centred square, resize them to ``size`` and divide by the maximum.

    Raises:
        ImageFileError: the slices are smaller than ``size`` and ``allow_upsampling`` is off, or nothing
            is left above 0 after resizing (the message names the volume).
    """
    from skimage.transform import resize

    slices = volume.slices
    rows, cols = slices.shape[1:]
    side = max(rows, cols)
    if side < size and not allow_upsampling:
        raise ImageFileError(
            f"{volume.entry}: is {rows} x {cols} pixels, smaller than data.size={size}: upsampling would "
            f"interpolate detail that was never acquired (the zero-padding data crime); expected images of at "
            f"least {size} pixels on their longer side, or data.images.allow_upsampling=true", volume.entry)
    top, left = (side - rows) // 2, (side - cols) // 2
    square = np.zeros((slices.shape[0], side, side), np.float32)
    square[:, top:top + rows, left:left + cols] = slices
    resized = resize(square, (slices.shape[0], size, size), order=1, mode="constant", preserve_range=True,
                     anti_aliasing=side > size).astype(np.float32)
    resized = np.clip(resized, 0.0, None)
    scale = float(resized.max())
    if scale <= 0:
        raise ImageFileError(f"{volume.entry}: is an empty volume after resizing to {size} x {size}; "
                             "expected a magnitude image with signal", volume.entry)
    return Conformed(resized / scale, scale, side < size)


def foreground_fractions(images: np.ndarray) -> np.ndarray:
    """Each slice's fraction of pixels above ``FOREGROUND_LEVEL`` (images normalised to a maximum of 1)."""
    return (images > FOREGROUND_LEVEL).mean(axis=(1, 2))


def select_slices(fractions: np.ndarray, min_fraction: float, max_slices: int = 0) -> list[int]:
    """The slices kept: foreground fraction >= ``min_fraction``, then at most ``max_slices`` of them,
    evenly spaced through the stack (0 = all)."""
    kept = [int(i) for i in np.flatnonzero(fractions >= min_fraction)]
    if max_slices and len(kept) > max_slices:
        picks = np.linspace(0, len(kept) - 1, max_slices).round().astype(int)
        kept = [kept[i] for i in picks]
    return kept


def background_phase(num_slices: int, size: int, seed: int) -> np.ndarray:
    """A smooth random phase (radians), (num_slices, size, size): a low-order polynomial in x, y and the
    slice position, a few radians across the field of view."""
    c = np.random.default_rng(seed).normal(0.0, 1.0, size=7) * _PHASE_WEIGHTS
    axis = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = axis[None, :, None], axis[None, None, :]
    z = (np.arange(num_slices) - (num_slices - 1) / 2.0)[:, None, None] / max(num_slices, 1)
    phase = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y + c[6] * z
    return np.broadcast_to(phase, (num_slices, size, size)).astype(np.float32)


def noise_std_for(magnitude: np.ndarray, snr: float) -> float:
    """The per-component k-space noise std that gives the mean foreground magnitude an SNR of ``snr``.

    The FFT is orthonormal and the coil maps have unit root-sum-of-squares, so this is also the noise
    std of the RSS image where the signal is well above the noise (``fedforget.recon.acquisition``).
    """
    if math.isinf(snr):
        return 0.0
    foreground = magnitude[magnitude > FOREGROUND_LEVEL]
    return float(foreground.mean()) / snr


def simulate_volume(volume: ImageVolume, settings: ImageSimulation, seeds: VolumeSeeds) -> SimulatedVolume:
    """The fully sampled multicoil acquisition of one image volume (the module docstring's six steps).

    Raises:
        ImageFileError: the volume is too small (see :func:`conform`), or no slice has enough foreground
            (the message names the volume and the setting).
    """
    conformed = conform(volume, settings.size, settings.allow_upsampling)
    kept = select_slices(foreground_fractions(conformed.images), settings.min_foreground_fraction,
                         settings.max_slices)
    if not kept:
        raise ImageFileError(
            f"{volume.entry}: is an empty volume: no slice has foreground (pixels above {FOREGROUND_LEVEL:g} of "
            f"the maximum) on at least data.images.min_foreground_fraction={settings.min_foreground_fraction:g} "
            "of its area; expected a volume with anatomy in it, or a lower min_foreground_fraction", volume.entry)
    magnitude = conformed.images[kept]
    phase = background_phase(len(kept), settings.size, seeds.phase)
    maps = coil_sensitivities(settings.coils, (settings.size, settings.size), seeds.coils)
    noise_std = noise_std_for(magnitude, settings.snr)
    acquisition = acquire(magnitude * np.exp(1j * phase), maps, noise_std, seeds.noise)
    return SimulatedVolume(acquisition.kspace, acquisition.target, magnitude, tuple(kept), noise_std,
                           conformed.scale, conformed.upsampled)
