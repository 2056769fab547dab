"""Synthetic receive-coil sensitivity maps.

The maps mimic a phased array wrapped around the field of view: each coil
sits on a ring just outside the image, its magnitude falls off smoothly with
distance, and its phase varies slowly across the image. The set is
normalised so that ``sqrt(sum_c |S_c|^2) == 1`` at every pixel; the
root-sum-of-squares of the coil images ``S_c * x`` then equals ``|x|``, which
keeps the fully-sampled RSS target equal to the phantom magnitude (up to
noise), as the E2E-VarNet sensitivity model assumes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coil_sensitivities"]


def coil_sensitivities(num_coils: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth, normalised birdcage-like coil sensitivity maps.

    Args:
        num_coils: Number of receive coils (>= 1).
        shape: Image shape ``(rows, cols)``.
        seed: Seed of the random coil placement, reach and phase.

    Returns:
        Complex64 array of shape (num_coils, rows, cols) whose
        root-sum-of-squares over coils is 1 at every pixel.

    Raises:
        ValueError: If ``num_coils < 1`` or a dimension of ``shape`` is < 1.
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    rows, cols = (int(n) for n in shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be positive (rows, cols), got {tuple(shape)}")

    rng = np.random.default_rng(seed)
    y = ((np.arange(rows) + 0.5) / rows * 2.0 - 1.0)[:, None]
    x = ((np.arange(cols) + 0.5) / cols * 2.0 - 1.0)[None, :]

    ring_radius = rng.uniform(1.15, 1.45)
    first_angle = rng.uniform(0.0, 2.0 * np.pi)
    maps = np.empty((num_coils, rows, cols), dtype=np.complex128)
    for c in range(num_coils):
        # Evenly spaced around the ring, with a little placement jitter.
        angle = first_angle + 2.0 * np.pi * c / num_coils + rng.normal(0.0, 0.08)
        cx, cy = ring_radius * np.cos(angle), ring_radius * np.sin(angle)
        reach = rng.uniform(0.8, 1.2)
        dist2 = (x - cx) ** 2 + (y - cy) ** 2
        # A loop's receive field decays roughly like an inverse power of the
        # distance; a Lorentzian keeps it smooth and bounded.
        magnitude = 1.0 / (1.0 + dist2 / reach**2) ** 1.5
        # Smooth phase: linear plus a weak quadratic term in the coil's own
        # frame (radial / tangential), about one to three radians across.
        radial = x * np.cos(angle) + y * np.sin(angle)
        tangential = -x * np.sin(angle) + y * np.cos(angle)
        phase = (
            rng.uniform(0.0, 2.0 * np.pi)
            + rng.normal(0.0, 0.8) * radial
            + rng.normal(0.0, 0.8) * tangential
            + rng.normal(0.0, 0.3) * tangential**2
        )
        maps[c] = magnitude * np.exp(1j * phase)

    norm = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    return (maps / norm).astype(np.complex64)
