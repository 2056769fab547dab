"""Geometry on one subject's sampling grid, the same for every anatomy and contrast.

The frame (a subject's pose and its pixel grid), anti-aliased coverage of regions and
lines (``cover``, ``band_coverage``, ``cover_band``, ``union``), approximate signed
distances (``ellipse_sdf``, ``smin``), smooth 3D random fields (plane waves,
``random_field``; waves around an outline, ``angular_field``) and the smooth image
phase. The anatomies (``brain``, ``knee``) build their layers from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Frame(NamedTuple):
    """Sampling grid of one subject.

    Attributes:
        x: Image-frame column coordinate, shape (1, 1, W), in [-1, 1].
        y: Image-frame row coordinate, shape (1, H, 1), in [-1, 1].
        u: Subject-frame left-right coordinate, shape (1, H, W).
        v: Subject-frame coordinate along the other in-plane axis, (1, H, W).
        z: Slice coordinate of each slice, shape (S, 1, 1).
        px: Pixels per unit length of the subject frame.
        angle: In-plane rotation of the subject (radians).
        size: Image side in pixels.
    """

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    px: float
    angle: float
    size: int


def check_args(num_slices: int, size: int) -> None:
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")


def make_frame(
    rng: np.random.Generator,
    num_slices: int,
    size: int,
    spacing: float,
    span: float,
    max_shift: float,
    max_angle_deg: float,
    scale_range: tuple[float, float],
    flip: bool,
) -> Frame:
    """Draws a subject pose and builds its sampling grid."""
    coords = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(
        np.float32
    )
    x = coords[None, None, :]
    y = coords[None, :, None]
    angle = float(np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg)))
    cx, cy = rng.uniform(-max_shift, max_shift, size=2)
    scale = rng.uniform(*scale_range)
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * (x - cx) + sin * (y - cy)) / scale
    v = (-sin * (x - cx) + cos * (y - cy)) / scale
    if flip:
        u = -u
    # Thin stacks keep the anatomical spacing; thick ones are squeezed so the
    # whole stack stays within the anatomy (adjacent slices never get farther
    # apart than the nominal spacing).
    dz = spacing if num_slices <= 1 else min(spacing, span / (num_slices - 1))
    z_center = rng.uniform(-0.08, 0.08)
    z = z_center + (np.arange(num_slices, dtype=np.float32) - (num_slices - 1) / 2) * dz
    return Frame(
        x=x,
        y=y,
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        z=z.astype(np.float32)[:, None, None],
        px=size / 2.0 * scale,
        angle=angle,
        size=size,
    )


def cover(sdf: np.ndarray, px: float) -> np.ndarray:
    """Pixel coverage of the region ``sdf > 0``.

    Args:
        sdf: Approximate signed distance (positive inside) in subject units.
        px: Pixels per subject unit.

    Returns:
        Values in [0, 1] with a one-pixel linear ramp across the boundary,
        i.e. box-filter anti-aliasing.
    """
    return np.clip(sdf * px + 0.5, 0.0, 1.0).astype(np.float32)


def band_coverage(
    dist_px: np.ndarray, half_width_px: np.ndarray | float
) -> np.ndarray:
    """Pixel coverage of a line of given half-width at a given distance.

    Exact 1D box-filter overlap of the pixel ``[d - 1/2, d + 1/2]`` with the
    line ``[-w, w]``: lines thinner than a pixel come out faint and
    continuous instead of dotted (point-sampling them would alias).

    Args:
        dist_px: Distance from the line's centre, in pixels (>= 0).
        half_width_px: Half-width of the line, in pixels.

    Returns:
        Coverage in [0, 1], float32.
    """
    w = np.maximum(half_width_px, 0.0)
    overlap = np.minimum(w, dist_px + 0.5) - np.maximum(-w, dist_px - 0.5)
    return np.clip(overlap, 0.0, 1.0).astype(np.float32)


def cover_band(field: np.ndarray, half_width: float | np.ndarray) -> np.ndarray:
    """Pixel coverage of the band ``|field| < half_width`` of a smooth field.

    Args:
        field: Array of shape (S, H, W) whose zero set is the band's centre.
        half_width: Half-width in field units (scalar or broadcastable).

    Returns:
        Coverage in [0, 1], float32, shape (S, H, W).
    """
    gy, gx = np.gradient(field, axis=(1, 2))
    slope = np.maximum(np.hypot(gx, gy), 1e-6)
    return band_coverage(np.abs(field) / slope, half_width / slope)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (rounds the corner where two distance fields meet)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def ellipse_sdf(
    u: np.ndarray,
    v: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float] | tuple[np.ndarray, np.ndarray],
    angle: float = 0.0,
) -> np.ndarray:
    """First-order signed distance to an ellipse (exact for circles).

    Args:
        u: Subject-frame coordinate.
        v: Subject-frame coordinate.
        center: Ellipse centre ``(u0, v0)``.
        axes: Semi-axes ``(a, b)``; may be arrays broadcasting against ``u``
            (e.g. a per-slice size of shape (S, 1, 1)); a non-positive axis
            means the ellipse is absent from that slice.
        angle: Rotation of the ellipse (radians).

    Returns:
        Positive inside, approximately the Euclidean distance near the edge.
    """
    a = np.maximum(np.asarray(axes[0], dtype=np.float32), 1e-4)
    b = np.maximum(np.asarray(axes[1], dtype=np.float32), 1e-4)
    cos, sin = np.cos(angle), np.sin(angle)
    du, dv = u - center[0], v - center[1]
    p = cos * du + sin * dv
    q = -sin * du + cos * dv
    r = np.sqrt((p / a) ** 2 + (q / b) ** 2) + 1e-6
    grad = np.sqrt((p / a**2) ** 2 + (q / b**2) ** 2) / r + 1e-6
    sdf = (1.0 - r) / grad
    absent = (np.asarray(axes[0]) <= 1e-4) | (np.asarray(axes[1]) <= 1e-4)
    return np.where(absent, -1.0, sdf).astype(np.float32)


def ellipsoid_section(z: np.ndarray, z0: float, half_depth: float) -> np.ndarray:
    """Relative size of an ellipsoid's cross-section at slice position ``z``."""
    return np.sqrt(np.clip(1.0 - ((z - z0) / half_depth) ** 2, 0.0, None))


def random_field(
    rng: np.random.Generator,
    frame: Frame,
    num_modes: int,
    freq: tuple[float, float],
    z_freq: float,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Smooth 3D random field sampled on the slice stack.

    A sum of random plane waves with in-plane frequencies in ``freq``
    (cycles per unit) and through-plane frequencies ~N(0, z_freq). Waves are
    defined in the subject frame (rotated with the subject) and evaluated
    separably, so the cost is one batched (S, H, K) @ (K, W) product. Waves
    above 0.7 x the grid's Nyquist frequency are dropped to avoid aliasing;
    they are still drawn so that the subject is the same at every size.

    Args:
        rng: Random generator (consumed).
        frame: Sampling grid.
        num_modes: Number of plane waves.
        freq: Range of in-plane spatial frequency, cycles per subject unit.
        z_freq: Standard deviation of the through-plane frequency.
        stretch: Multipliers of the (u, v) frequency components; unequal
            values give anisotropic (streaky) textures.

    Returns:
        Field of shape (S, H, W), float32, roughly zero mean, unit variance.
    """
    mag = rng.uniform(freq[0], freq[1], size=num_modes)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=num_modes)
    ku = mag * np.cos(theta) * stretch[0]
    kv = mag * np.sin(theta) * stretch[1]
    kz = rng.normal(0.0, z_freq, size=num_modes)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=num_modes)

    # Subject-frame frequencies -> image-frame frequencies (cycles per image
    # unit): rotate by the subject angle and divide by the subject scale.
    scale = frame.px / (frame.size / 2.0)
    cos, sin = np.cos(frame.angle), np.sin(frame.angle)
    kx = (cos * ku - sin * kv) / scale
    ky = (sin * ku + cos * kv) / scale
    nyquist = frame.size / 4.0  # cycles per unit for a pixel pitch of 2/size
    amp = np.where(np.hypot(kx, ky) < 0.7 * nyquist, np.sqrt(2.0 / num_modes), 0.0)

    xs = frame.x.reshape(-1).astype(np.float64)
    ys = frame.y.reshape(-1).astype(np.float64)
    zs = frame.z.reshape(-1).astype(np.float64)
    ex = np.exp(2j * np.pi * np.outer(kx, xs)).astype(np.complex64)  # (K, W)
    ey = np.exp(2j * np.pi * np.outer(ky, ys)).astype(np.complex64)  # (K, H)
    ez = amp[:, None] * np.exp(1j * (2 * np.pi * np.outer(kz, zs) + phase[:, None]))
    ez = ez.astype(np.complex64)  # (K, S)
    field = (ez.T[:, None, :] * ey.T[None, :, :]) @ ex  # (S, H, W)
    return field.real.astype(np.float32)


def angular_field(
    rng: np.random.Generator,
    theta: np.ndarray,
    depth: np.ndarray,
    z: np.ndarray,
    num_modes: int,
    orders: tuple[int, int],
    depth_freq: float,
    z_freq: float,
) -> np.ndarray:
    """Random field made of waves around a closed outline.

    Each wave is ``cos(m * theta + 2 pi (kd * depth + kz * z) + phase)`` with
    an integer angular order ``m``, so the field is continuous across the
    +-pi seam and its zero set forms lines roughly perpendicular to the
    outline (sulci), bent by the slow depth and slice dependence.

    Args:
        rng: Random generator (consumed).
        theta: Polar angle around the outline, radians.
        depth: Distance below the outline, subject units.
        z: Slice coordinate, shape (S, 1, 1).
        num_modes: Number of waves.
        orders: Inclusive range of the angular order m.
        depth_freq: Standard deviation of the depth frequency (cycles/unit).
        z_freq: Standard deviation of the slice frequency (cycles/unit).

    Returns:
        Field broadcast to the common shape of the inputs, float32, roughly
        unit variance.
    """
    m = rng.integers(orders[0], orders[1] + 1, size=num_modes)
    kd = rng.normal(0.0, depth_freq, size=num_modes)
    kz = rng.normal(0.0, z_freq, size=num_modes)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=num_modes)
    amp = np.float32(np.sqrt(2.0 / num_modes))
    field = np.zeros(np.broadcast_shapes(theta.shape, depth.shape, z.shape), np.float32)
    for k in range(num_modes):
        field += amp * np.cos(
            m[k] * theta
            + np.float32(2 * np.pi * kd[k]) * depth
            + np.float32(2 * np.pi * kz[k]) * z
            + np.float32(phase[k])
        )
    return field


def smooth_phase(rng: np.random.Generator, frame: Frame) -> np.ndarray:
    """Low-order polynomial phase, a few radians across the field of view."""
    c = rng.normal(0.0, 1.0, size=7) * np.array([1.0, 1.2, 1.2, 0.6, 0.6, 0.6, 1.0])
    x, y, z = frame.x, frame.y, frame.z
    return (
        c[0]
        + c[1] * x
        + c[2] * y
        + c[3] * x * x
        + c[4] * x * y
        + c[5] * y * y
        + c[6] * z
    ).astype(np.float32)


def union(alphas: Sequence[np.ndarray]) -> np.ndarray:
    """Coverage of overlapping parts of one tissue.

    Painting the parts one after the other with the same value gives the
    same image as painting their union ``1 - prod(1 - alpha)`` once.
    """
    outside = np.float32(1.0)
    for alpha in alphas:
        outside = outside * (1.0 - alpha)
    return (1.0 - outside).astype(np.float32)
