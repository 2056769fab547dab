"""Deterministic synthetic anatomy: axial T2 brain and coronal PD knee slices.

Each call builds a stack of slices through one synthetic subject. Every
structure is defined in a continuous 3D subject frame ``(u, v, z)`` and then
sampled on the requested pixel grid, so that

* consecutive slices differ only by a small step in ``z`` (shapes and textures
  drift smoothly through the stack);
* the same subject looks the same at 64, 128, 256 or 320 pixels (finer grids
  only resolve more detail); and
* edges are anti-aliased: every mask is a pixel-coverage ramp computed from an
  approximate signed distance, followed by a slight Gaussian blur, so the
  ground truth carries no staircase or ringing artefacts.

The two anatomies differ in structure and texture on purpose: the brain is
a roughly elliptical section of smooth compartments (CSF, grey and white
matter) folded by radial sulci, the knee a vertical column of thin
bright/dark bands (cortex, cartilage, menisci, fat streaks) filled with fine
texture (trabecular marrow, muscle fibres, fat septa); at 128 pixels the
knee carries nearly twice the brain's share of high-frequency energy. A model
trained only on brain should therefore reconstruct knee worse than one that
also saw knee.

Magnitudes lie in [0, 1]; the phase is a smooth low-order polynomial spanning
a few radians across the field of view, as in real multicoil data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["brain_slices", "knee_slices", "PHANTOMS"]

# Slice spacing in subject-frame units (the head / knee half-extent is ~1):
# brain ~5 mm over a ~80 mm half-height, knee ~3 mm over ~70 mm. Stacks with
# many slices are squeezed into SPAN so that they stay inside the anatomy.
_BRAIN_SPACING, _BRAIN_SPAN = 0.06, 1.1
_KNEE_SPACING, _KNEE_SPAN = 0.04, 1.0

# Gaussian blur (pixels) applied to the magnitude: removes the residual
# sharpness of the 1-pixel coverage ramps without visibly softening anatomy.
_BLUR_SIGMA_PX = 0.5


class _Frame(NamedTuple):
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


def _check_args(num_slices: int, size: int) -> None:
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")


def _make_frame(
    rng: np.random.Generator,
    num_slices: int,
    size: int,
    spacing: float,
    span: float,
    max_shift: float,
    max_angle_deg: float,
    scale_range: tuple[float, float],
    flip: bool,
) -> _Frame:
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
    return _Frame(
        x=x,
        y=y,
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        z=z.astype(np.float32)[:, None, None],
        px=size / 2.0 * scale,
        angle=angle,
        size=size,
    )


def _cover(sdf: np.ndarray, px: float) -> np.ndarray:
    """Pixel coverage of the region ``sdf > 0``.

    Args:
        sdf: Approximate signed distance (positive inside) in subject units.
        px: Pixels per subject unit.

    Returns:
        Values in [0, 1] with a one-pixel linear ramp across the boundary,
        i.e. box-filter anti-aliasing.
    """
    return np.clip(sdf * px + 0.5, 0.0, 1.0).astype(np.float32)


def _band_coverage(
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


def _cover_band(field: np.ndarray, half_width: float | np.ndarray) -> np.ndarray:
    """Pixel coverage of the band ``|field| < half_width`` of a smooth field.

    Args:
        field: Array of shape (S, H, W) whose zero set is the band's centre.
        half_width: Half-width in field units (scalar or broadcastable).

    Returns:
        Coverage in [0, 1], float32, shape (S, H, W).
    """
    gy, gx = np.gradient(field, axis=(1, 2))
    slope = np.maximum(np.hypot(gx, gy), 1e-6)
    return _band_coverage(np.abs(field) / slope, half_width / slope)


def _paint(
    image: np.ndarray, alpha: np.ndarray, value: float | np.ndarray
) -> np.ndarray:
    """Composites ``value`` over ``image`` with coverage ``alpha`` (in place)."""
    image += alpha * (value - image)
    return image


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (rounds the corner where two distance fields meet)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ellipse_sdf(
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


def _ellipsoid_section(z: np.ndarray, z0: float, half_depth: float) -> np.ndarray:
    """Relative size of an ellipsoid's cross-section at slice position ``z``."""
    return np.sqrt(np.clip(1.0 - ((z - z0) / half_depth) ** 2, 0.0, None))


def _random_field(
    rng: np.random.Generator,
    frame: _Frame,
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


def _angular_field(
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


def _smooth_phase(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
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


def _finish(magnitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Blurs, clips and attaches the phase; returns complex64 (S, H, W)."""
    magnitude = gaussian_filter(magnitude, sigma=(0.0, _BLUR_SIGMA_PX, _BLUR_SIGMA_PX))
    magnitude = np.clip(magnitude, 0.0, 1.0)
    return (magnitude * np.exp(1j * phase)).astype(np.complex64)


# ----------------------------------------------------------------------------
# Brain: axial T2 (CSF bright, grey matter brighter than white matter).
# ----------------------------------------------------------------------------

_CSF, _GM, _WM, _DEEP_GM, _LESION = 1.0, 0.60, 0.36, 0.47, 0.85
_SCALP_FAT, _BONE, _DIPLOE = 0.62, 0.03, 0.30


def brain_slices(num_slices: int, size: int, seed: int) -> np.ndarray:
    """Axial T2-weighted brain slices of one synthetic subject.

    Anatomy: scalp fat, skull (dark cortical bone with a bright diploe line),
    subarachnoid CSF, a folded cortical ribbon (grey matter with CSF-filled
    sulci and white-matter gyral cores), the interhemispheric fissure, deep
    grey nuclei, lateral ventricles and, in about half of the subjects, a few
    bright white-matter lesions.

    Args:
        num_slices: Number of slices in the stack.
        size: Image side in pixels (square images).
        seed: Subject seed; the same seed always gives the same subject.

    Returns:
        Complex64 array of shape (num_slices, size, size) with magnitude in
        [0, 1] and a smooth phase.

    Raises:
        ValueError: If ``num_slices < 1`` or ``size < 16``.
    """
    _check_args(num_slices, size)
    rng = np.random.default_rng(seed)
    f = _make_frame(
        rng,
        num_slices,
        size,
        _BRAIN_SPACING,
        _BRAIN_SPAN,
        max_shift=0.05,
        max_angle_deg=10.0,
        scale_range=(0.88, 1.02),
        flip=False,
    )
    u, v, z = f.u, f.v, f.z

    # Head outline: an ellipsoid (narrowing towards the vertex) with a
    # subject-specific low-order harmonic wobble (egg shape, flat sides).
    half_lr = rng.uniform(0.70, 0.80) * _ellipsoid_section(z, 0.0, 1.15)
    half_ap = rng.uniform(0.84, 0.93) * _ellipsoid_section(z, 0.0, 1.15)
    theta = np.arctan2(v / half_ap, u / half_lr)
    wobble = 1.0
    for n in range(1, 5):
        wobble = wobble + rng.normal(0.0, 0.025 / n) * np.cos(
            n * theta + rng.uniform(0, 2 * np.pi)
        )
    # Posterior slightly wider than anterior (egg-shaped axial section).
    wobble = wobble + 0.03 * np.sin(theta)
    q = np.sqrt((u / half_lr) ** 2 + (v / half_ap) ** 2) / wobble
    # Convert "radius" q into an approximate distance in subject units.
    radial_scale = np.sqrt(half_lr * half_ap) * wobble

    def shell(level: float) -> np.ndarray:
        return _cover((level - q) * radial_scale, f.px)

    image = np.zeros((num_slices, size, size), dtype=np.float32)
    skull_field = _random_field(rng, f, 6, (0.5, 1.5), 0.5)
    _paint(image, shell(1.0), _SCALP_FAT * (1.0 + 0.05 * skull_field))
    _paint(image, shell(0.935), _BONE)
    _paint(image, shell(0.915) * (1.0 - shell(0.895)), _DIPLOE)
    _paint(image, shell(0.875), _BONE)
    _paint(image, shell(0.86), _CSF)

    # Cortex: an angular random field G (waves in the polar angle and the
    # depth below the brain surface) whose zero set traces sulci running
    # inwards from the surface. Relative depth t is 0 at the brain surface
    # and 1 about 0.27 units inside. White matter fills |G| > h(t), with h
    # falling to 0 at t = 1, so white-matter gyral cores reach out into the
    # gyri; CSF lines (sulci) follow |G| ~ 0 and fade with depth; grey matter
    # is the ribbon in between.
    brain_edge = 0.845
    below = (brain_edge - q) * radial_scale  # depth below the surface, units
    depth = below / 0.27
    warp = _random_field(rng, f, 8, (0.8, 2.0), 0.8)
    gyri = _angular_field(rng, theta + 0.06 * warp, below, z, 16, (8, 20), 3.0, 0.8)
    brain = shell(brain_edge)
    _paint(image, brain, _GM)
    wm_level = 1.5 * (1.0 - depth)
    white = (1.0 - _cover_band(gyri, wm_level)) * brain
    sulcus_level = 0.2 * np.clip(1.0 - depth / 0.8, 0.0, 1.0)
    sulci = _cover_band(gyri, sulcus_level) * brain

    # Interhemispheric fissure: a slightly wavy midline CSF line with a
    # grey-matter margin, interrupted at the corpus callosum in mid slices.
    wave = 0.012 * np.sin(2 * np.pi * (v * rng.uniform(0.8, 1.6) + rng.uniform(0, 1)))
    mid_dist = np.abs(u - wave)
    callosum = _ellipsoid_section(z, rng.uniform(-0.1, 0.1), 0.45) * 0.32
    outside_callosum = _cover(np.abs(v) - callosum, f.px)
    fissure_gm = (
        _band_coverage(mid_dist * f.px, 0.045 * f.px) * outside_callosum * brain
    )
    fissure_csf = (
        _band_coverage(mid_dist * f.px, 0.012 * f.px) * outside_callosum * brain
    )

    _paint(image, white * (1.0 - fissure_gm), _WM)
    _paint(image, sulci, _CSF)
    _paint(image, fissure_csf, _CSF)

    # Deep grey nuclei (caudate heads and thalami).
    deep_size = _ellipsoid_section(z, rng.uniform(-0.05, 0.15), 0.35)
    for side in (-1.0, 1.0):
        caud = _ellipse_sdf(
            u,
            v,
            (side * 0.15, -0.13),
            (0.055 * deep_size, 0.10 * deep_size),
            side * 0.3,
        )
        thal = _ellipse_sdf(
            u,
            v,
            (side * 0.095, 0.12),
            (0.075 * deep_size, 0.11 * deep_size),
            -side * 0.2,
        )
        _paint(image, _cover(caud, f.px), _DEEP_GM)
        _paint(image, _cover(thal, f.px), _DEEP_GM)

    # Lateral ventricles: frontal horns diverging anteriorly, bodies running
    # back and occipital horns, each a tilted ellipse whose size follows an
    # ellipsoid through the stack. Mild left-right asymmetry per subject.
    vent_z = rng.uniform(-0.05, 0.1)
    vent_size = rng.uniform(0.8, 1.25)
    body = _ellipsoid_section(z, vent_z, 0.38) * vent_size
    for side in (-1.0, 1.0):
        asym = 1.0 + rng.normal(0.0, 0.08)
        parts = (
            ((side * 0.075, -0.12), (0.045, 0.13), side * 0.35),
            ((side * 0.085, 0.04), (0.035, 0.17), -side * 0.1),
            ((side * 0.12, 0.24), (0.03, 0.09), -side * 0.45),
        )
        for center, axes, tilt in parts:
            sdf = _ellipse_sdf(
                u, v, center, (axes[0] * body * asym, axes[1] * body * asym), tilt
            )
            _paint(image, _cover(sdf, f.px), _CSF)

    # Third ventricle: a thin midline slit below the lateral ventricles.
    third = _ellipsoid_section(z, vent_z + 0.25, 0.2)
    _paint(
        image,
        _cover(_ellipse_sdf(u, v, (0.0, 0.05), (0.012 * third, 0.09 * third)), f.px),
        _CSF,
    )

    # White-matter lesions (T2-bright), present in about half the subjects;
    # small ellipsoids, so each shows on a few consecutive slices.
    if rng.uniform() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            r_lesion = rng.uniform(0.02, 0.05)
            lz = rng.uniform(-0.3, 0.3)
            ang = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(0.22, 0.45)
            center = (rad * np.cos(ang) * 0.8, rad * np.sin(ang))
            sec = _ellipsoid_section(z, lz, 1.5 * r_lesion)
            sdf = _ellipse_sdf(u, v, center, (r_lesion * sec, r_lesion * 1.2 * sec))
            _paint(image, _cover(sdf, f.px) * brain, _LESION)

    # Mild tissue texture and a smooth receive-bias-like shading.
    texture = _random_field(rng, f, 32, (4.0, 9.0), 2.0)
    shading = _random_field(rng, f, 6, (0.2, 0.6), 0.3)
    image *= (1.0 + 0.025 * texture) * (1.0 + 0.06 * shading)
    return _finish(image, _smooth_phase(rng, f))


# ----------------------------------------------------------------------------
# Knee: coronal proton density (fatty marrow and fat bright, cortex, menisci
# and ligaments dark, cartilage intermediate, muscle medium-dark).
# ----------------------------------------------------------------------------

_FAT, _MUSCLE, _CORTEX, _MARROW = 0.88, 0.30, 0.03, 0.80
_CARTILAGE, _FLUID, _MENISCUS, _LIGAMENT = 0.58, 0.76, 0.05, 0.10


def knee_slices(num_slices: int, size: int, seed: int) -> np.ndarray:
    """Coronal proton-density knee slices of one synthetic subject.

    Anatomy: subcutaneous fat rim with fibrous septa, striated muscle with
    bright intermuscular fat streaks, distal femur (shaft, two condyles and the intercondylar notch),
    proximal tibia (plateau with tibial spines), fibular head in posterior
    slices, dark cortical bone around fatty marrow with a fine trabecular
    texture and a physeal scar, cartilage layers on both joint surfaces with
    a thin joint space, dark menisci at the joint margins, collateral and
    cruciate ligaments.

    Args:
        num_slices: Number of slices in the stack.
        size: Image side in pixels (square images).
        seed: Subject seed; the same seed always gives the same subject.

    Returns:
        Complex64 array of shape (num_slices, size, size) with magnitude in
        [0, 1] and a smooth phase.

    Raises:
        ValueError: If ``num_slices < 1`` or ``size < 16``.
    """
    _check_args(num_slices, size)
    rng = np.random.default_rng(seed)
    f = _make_frame(
        rng,
        num_slices,
        size,
        _KNEE_SPACING,
        _KNEE_SPAN,
        max_shift=0.06,
        max_angle_deg=8.0,
        scale_range=(0.85, 1.05),
        flip=bool(rng.uniform() < 0.5),
    )
    u, v, z = f.u, f.v, f.z
    joint = rng.uniform(-0.05, 0.10)  # joint line (v grows downwards)

    # Limb outline: a vertical column, wider at the knee, narrower in the
    # anterior/posterior-most slices.
    limb_half = (
        rng.uniform(0.64, 0.72) + 0.08 * np.exp(-((v - joint) ** 2) / 0.15)
    ) * (0.75 + 0.25 * _ellipsoid_section(z, 0.0, 0.9))
    fat_thick = rng.uniform(0.05, 0.10)
    limb_sdf = limb_half - np.abs(u + 0.02 * np.sin(3.0 * v))
    image = np.zeros((num_slices, size, size), dtype=np.float32)
    # Subcutaneous fat crossed by thin dark fibrous septa.
    septa_field = _random_field(rng, f, 32, (4.0, 8.0), 2.0)
    fat_value = _FAT * (1.0 - 0.5 * _cover_band(septa_field, 0.15))
    _paint(image, _cover(limb_sdf, f.px), fat_value)

    # Muscle with intermuscular fat streaks running along the limb (the
    # streak field varies fast across the limb and slowly along it). Near
    # the joint the muscle bellies give way to fat and tendons.
    streaks = _random_field(rng, f, 24, (2.0, 4.5), 1.0, stretch=(1.0, 0.2))
    muscle_region = _cover(limb_sdf - fat_thick, f.px)
    near_joint = np.exp(-((v - joint) ** 2) / 0.05)
    # Fine fibre striation along the limb axis gives muscle its grain.
    fibres = _random_field(rng, f, 48, (8.0, 14.0), 3.0, stretch=(1.0, 0.15))
    muscle_value = (_MUSCLE + (0.55 - _MUSCLE) * near_joint) * (1.0 + 0.3 * fibres)
    _paint(image, muscle_region, muscle_value)
    fat_lines = _cover_band(streaks, 0.18) * muscle_region
    _paint(image, fat_lines, 0.72)

    # Femur: shaft flaring into the metaphysis, closed below by two
    # elliptical condyles. The condyles merge anteriorly (trochlea) and
    # separate posteriorly, deepening the notch.
    gap = rng.uniform(0.035, 0.05)
    cart = rng.uniform(0.022, 0.032)
    shaft_half = rng.uniform(0.19, 0.24)
    condyle_half = rng.uniform(0.46, 0.54)
    cond_ru = condyle_half * rng.uniform(0.47, 0.55)
    cond_rv = rng.uniform(0.13, 0.18)
    cond_v = joint - gap / 2 - cart - cond_rv
    notch = 0.55 + 0.45 * _smoothstep((0.25 - z) / 0.6)
    cond_u = (condyle_half - cond_ru) * notch + 0.02
    flare = _smoothstep((v - (cond_v - 0.65)) / 0.55)
    fem_half = shaft_half + (condyle_half - shaft_half) * flare
    fem_meta = np.minimum(fem_half - np.abs(u), cond_v - v)
    condyles = np.maximum(
        _ellipse_sdf(u, v, (-cond_u, cond_v), (cond_ru, cond_rv)),
        _ellipse_sdf(u, v, (cond_u, cond_v), (cond_ru, cond_rv)),
    )
    femur = np.maximum(fem_meta, condyles)

    # Tibia: plateau slightly concave on each side with central spines,
    # tapering to the shaft; corners rounded with a smooth minimum.
    plateau = joint + gap / 2 + cart
    tib_top = condyle_half * rng.uniform(0.92, 1.0)
    tib_shaft = rng.uniform(0.18, 0.23)
    taper = _smoothstep((v - plateau) / rng.uniform(0.4, 0.55))
    tib_half = tib_top - (tib_top - tib_shaft) * taper
    spines = 0.035 * np.exp(-(((np.abs(u) - 0.045) / 0.035) ** 2))
    concave = 0.012 * np.cos(np.pi * np.clip(np.abs(u) / tib_top, 0, 1)) ** 2
    tib_surface = plateau - spines + concave
    tibia = _smin(tib_half - np.abs(u), v - tib_surface, 0.04)

    # Fibular head: lateral, below the plateau, posterior slices only.
    fib_sec = _ellipsoid_section(z, rng.uniform(-0.35, -0.2), 0.22)
    fibula = _ellipse_sdf(
        u, v, (tib_top + 0.03, plateau + 0.16), (0.075 * fib_sec, 0.1 * fib_sec), 0.3
    )

    # Notch fat and cruciate ligaments between the condyles.
    notch_fat = _cover(np.minimum(cond_v + cond_rv * 0.4 - v, cond_u - np.abs(u)), f.px)
    _paint(image, notch_fat, 0.62)
    acl = _ellipse_sdf(u, v, (0.02, cond_v + 0.04), (0.035, 0.10), 0.35)
    _paint(image, _cover(acl, f.px) * _cover(cond_u - np.abs(u), f.px), _LIGAMENT)

    # Collateral ligaments: dark bands hugging the joint margins.
    for side in (-1.0, 1.0):
        lig = _ellipse_sdf(u, v, (side * (condyle_half + 0.015), joint), (0.018, 0.2))
        _paint(image, _cover(lig, f.px), _LIGAMENT)

    # Cartilage on both joint surfaces (thin intermediate-bright bands),
    # joint fluid in between.
    fem_cart = _cover(femur + cart, f.px) * _cover(v - (cond_v - 0.02), f.px)
    tib_cart = _cover(tibia + cart, f.px) * _cover(tib_surface + 0.04 - v, f.px)
    tib_cart *= _cover(tib_top - 0.03 - np.abs(u), f.px)
    joint_space = _cover(gap / 2 + cart - np.abs(v - joint), f.px)
    joint_space *= _cover(condyle_half - 0.02 - np.abs(u), f.px)
    _paint(image, joint_space, _FLUID)
    _paint(image, fem_cart, _CARTILAGE)
    _paint(image, tib_cart, _CARTILAGE)

    # Menisci: dark wedges at the joint margins, base outwards.
    for side in (-1.0, 1.0):
        inner = condyle_half - rng.uniform(0.11, 0.15)
        along = (side * u - inner) / (condyle_half + 0.02 - inner)
        wedge = (gap / 2 + cart * 1.2) * np.clip(along, 0.0, 1.0) - np.abs(v - joint)
        wedge = np.minimum(wedge, condyle_half + 0.02 - side * u)
        # Bound the inner side too: a zero-width wedge would otherwise get
        # half coverage along the whole joint line.
        wedge = np.minimum(wedge, side * u - inner)
        _paint(image, _cover(wedge, f.px), _MENISCUS)

    # Fatty marrow with a trabecular network: thin bands around the zero set
    # of band-pass noise form dark interconnected struts. A second, coarser
    # field modulates strut thickness (thicker near the joint surfaces).
    trab = _random_field(rng, f, 64, (7.0, 11.0), 4.0)
    trab += 0.8 * _random_field(rng, f, 64, (11.0, 18.0), 6.0)
    density = _random_field(rng, f, 6, (0.5, 1.5), 0.5)
    strut_width = 0.34 + 0.08 * density + 0.12 * near_joint
    struts = _cover_band(trab, strut_width)
    # Struts are faint on PD-weighted images (fatty marrow dominates each voxel):
    # ~30 % darkening, not the near-black speckle of a binary network.
    marrow_value = _MARROW * (1.0 - 0.3 * struts)
    bones = (femur, tibia, fibula)
    cortex_thick = (
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * (1.0 - flare)),
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * taper),
        0.02,
    )
    for bone, thick in zip(bones, cortex_thick, strict=True):
        _paint(image, _cover(bone, f.px), _CORTEX)
        _paint(image, _cover(bone - thick, f.px), marrow_value)

    # Physeal scars: thin wavy dark lines across the metaphyses.
    for bone, level, thick in (
        (femur, cond_v - 0.28, cortex_thick[0]),
        (tibia, plateau + 0.2, cortex_thick[1]),
    ):
        wavy = level + 0.025 * np.sin(2 * np.pi * (u * 1.3 + rng.uniform(0, 1)))
        scar = _band_coverage(np.abs(v - wavy) * f.px, 0.008 * f.px)
        scar = scar * _cover(bone - thick, f.px)
        _paint(image, scar, 0.35)

    shading = _random_field(rng, f, 6, (0.2, 0.6), 0.3)
    image *= 1.0 + 0.06 * shading
    return _finish(image, _smooth_phase(rng, f))


PHANTOMS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "brain": brain_slices,
    "knee": knee_slices,
}
