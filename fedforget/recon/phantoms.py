"""Deterministic synthetic anatomy in fastMRI's contrasts: axial brain, coronal knee.

Each call builds a stack of slices through one synthetic subject, in one of
the contrasts that fastMRI's ``acquisition`` attribute names (``CONTRASTS``):
brain T1, T1 post-contrast, T2 and FLAIR; knee proton density with and
without fat suppression. A phantom is made in two stages:

1. **Geometry** (``_brain_subject``, ``_knee_subject``): every random draw of
   the subject (pose, shapes, textures, phase) is made from the seed alone
   and turned into an ordered list of layers. A layer is one tissue's
   fractional coverage (a float map in [0, 1]) with an optional
   multiplicative texture (marrow struts, fat septa, muscle fibres). The
   contrast plays no part here, so a seed gives the same subject, drawn from
   the same random numbers, in every contrast.
2. **Contrast** (``_render``): the layers are painted in order ("over"
   compositing) with the value ``INTENSITIES[contrast][tissue]``, then the
   global texture and shading modulate the result and the smooth phase is
   attached. Only tissue intensities depend on the contrast.

``brain_tissue_maps`` / ``knee_tissue_maps`` return what each tissue finally
covers in every pixel (its coverage times the share that later layers leave
visible), e.g. to measure tissue intensities on a generated slice.

Every structure is defined in a continuous 3D subject frame ``(u, v, z)`` and
then sampled on the requested pixel grid, so that

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
texture (trabecular marrow, muscle fibres, fat septa). A model trained only
on brain should therefore reconstruct knee worse than one that also saw knee.

Magnitudes lie in [0, 1]; the phase is a smooth low-order polynomial spanning
a few radians across the field of view, as in real multicoil data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "CONTRASTS",
    "DEFAULT_CONTRAST",
    "TISSUES",
    "INTENSITIES",
    "PHANTOMS",
    "TISSUE_MAPS",
    "check_contrast",
    "brain_slices",
    "untextured_slices",
    "brain_tissue_maps",
    "knee_slices",
    "knee_tissue_maps",
]

# fastMRI ``acquisition`` values of each anatomy, and the one a phantom
# function draws when no contrast is given.
CONTRASTS: dict[str, tuple[str, ...]] = {
    "brain": ("AXT1", "AXT1POST", "AXT2", "AXFLAIR"),
    "knee": ("CORPD_FBK", "CORPDFS_FBK"),
}
DEFAULT_CONTRAST: dict[str, str] = {"brain": "AXT2", "knee": "CORPD_FBK"}

# Relative intensity (magnitude before texture and shading) of each tissue in
# each contrast, as the tissues rank on clinical images:
# * T1: WM > GM > CSF (dark), fat and fatty marrow bright, lesions hypointense,
#   vessels flow voids / intermediate.
# * T1POST: T1 with enhancing lesions, bright venous sinuses, cortical vessels
#   and choroid plexus.
# * T2 (fast spin echo): CSF > GM > WM, lesions bright, fat moderately bright,
#   vessels flow voids.
# * FLAIR: T2 with CSF nulled; lesions and GM brighter than WM.
# * PD: fat and marrow bright, fluid bright-ish, cartilage intermediate,
#   muscle medium-dark, cortex, menisci and ligaments dark.
# * PDFS: fat and fatty marrow suppressed (dark), fluid brightest, cartilage
#   bright, muscle intermediate, cortex, menisci and ligaments dark.
# Columns follow CONTRASTS; rows are the tissues, in no particular order.
# fmt: off
_BRAIN_INTENSITY: dict[str, tuple[float, ...]] = {
    #                AXT1  AXT1POST AXT2  AXFLAIR
    "fat":          (0.95, 0.95,    0.62, 0.80),  # scalp fat
    "skull":        (0.03, 0.03,    0.03, 0.03),  # cortical bone of the tables
    "diploe":       (0.75, 0.75,    0.30, 0.45),  # fatty marrow between them
    "csf":          (0.10, 0.10,    1.00, 0.06),
    "gm":           (0.48, 0.48,    0.60, 0.62),
    "wm":           (0.68, 0.68,    0.36, 0.45),
    "deep_gm":      (0.55, 0.55,    0.47, 0.55),  # caudate heads, thalami
    "lesion":       (0.40, 0.88,    0.85, 0.95),  # enhancing after contrast
    "vessel":       (0.20, 0.90,    0.05, 0.05),  # sagittal sinus, cortical
    "choroid_plexus": (0.46, 0.85,  0.65, 0.40),
}
_KNEE_INTENSITY: dict[str, tuple[float, ...]] = {
    #             CORPD_FBK CORPDFS_FBK
    "fat":       (0.92,     0.08),  # subcutaneous, intermuscular, notch
    "muscle":    (0.30,     0.36),
    "cortex":    (0.03,     0.02),  # cortical bone
    "marrow":    (0.82,     0.12),  # fatty marrow
    "cartilage": (0.52,     0.62),
    "fluid":     (0.68,     0.95),  # joint fluid
    "meniscus":  (0.05,     0.04),
    "ligament":  (0.10,     0.07),  # cruciate and collateral ligaments
    "physis":    (0.35,     0.05),  # physeal scars
}
# fmt: on

TISSUES: dict[str, tuple[str, ...]] = {
    "brain": tuple(_BRAIN_INTENSITY),
    "knee": tuple(_KNEE_INTENSITY),
}
# contrast -> tissue -> intensity.
INTENSITIES: dict[str, dict[str, float]] = {
    contrast: {tissue: row[column] for tissue, row in table.items()}
    for anatomy, table in (("brain", _BRAIN_INTENSITY), ("knee", _KNEE_INTENSITY))
    for column, contrast in enumerate(CONTRASTS[anatomy])
}

# Texture strengths (contrast-independent multiplicative modulations).
_SCALP_TEXTURE = 0.05  # slow variation of the scalp fat
_BRAIN_TEXTURE = 0.025  # fine tissue texture over the whole head
_SHADING = 0.06  # smooth receive-bias-like shading (both anatomies)
_SEPTA_DARKENING = 0.5  # fibrous septa crossing the subcutaneous fat
_MUSCLE_FIBRES = 0.3  # striation of muscle along the limb
# Trabecular struts are faint on the PD-weighted images (fatty marrow
# dominates each voxel): ~30 % darkening, not a near-black binary network.
_STRUT_DARKENING = 0.3
# Fat volume fractions of partial-volume structures in the knee.
_PERIARTICULAR_FAT = 0.43  # muscle bellies give way to fat and tendons
_STREAK_FAT = 0.72  # thin intermuscular fat streaks
_NOTCH_FAT = 0.5  # fat around the cruciates in the intercondylar notch

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
# Layers: tissue coverage maps, composited with a contrast's intensity table.
# ----------------------------------------------------------------------------


class _Layer(NamedTuple):
    """One tissue painted over everything before it.

    Attributes:
        tissue: Key of the intensity table.
        alpha: Fractional coverage in [0, 1], broadcastable to (S, H, W).
        texture: Multiplicative modulation of the tissue's value (scalar or
            broadcastable map), the same in every contrast.
        is_texture: The whole layer is texture (random structure no anatomy
            predicts, such as intermuscular fat streaks), not anatomy.
    """

    tissue: str
    alpha: np.ndarray
    texture: np.ndarray | float = 1.0
    is_texture: bool = False


class _Subject(NamedTuple):
    """Everything about one subject that does not depend on the contrast.

    Attributes:
        anatomy: "brain" or "knee".
        layers: Layers in painting order.
        modulation: Global multiplicative texture and shading, (S, H, W).
        phase: Smooth image phase (radians), broadcastable to (S, H, W).
    """

    anatomy: str
    layers: list[_Layer]
    modulation: np.ndarray
    phase: np.ndarray


def _union(alphas: Sequence[np.ndarray]) -> np.ndarray:
    """Coverage of overlapping parts of one tissue.

    Painting the parts one after the other with the same value gives the
    same image as painting their union ``1 - prod(1 - alpha)`` once.
    """
    outside = np.float32(1.0)
    for alpha in alphas:
        outside = outside * (1.0 - alpha)
    return (1.0 - outside).astype(np.float32)


def check_contrast(anatomy: str, contrast: object) -> str:
    """Returns ``contrast`` if it is one of ``CONTRASTS[anatomy]``.

    Raises:
        ValueError: Naming the value and the valid contrasts, for an unknown
            anatomy or contrast, or a contrast of the other anatomy.
    """
    if anatomy not in CONTRASTS:
        raise ValueError(
            f"unknown anatomy {anatomy!r}; valid anatomies: {sorted(CONTRASTS)}"
        )
    valid = CONTRASTS[anatomy]
    if isinstance(contrast, str) and contrast in valid:
        return contrast
    owners = [
        name
        for name, names in CONTRASTS.items()
        if isinstance(contrast, str) and contrast in names
    ]
    hint = f" (a {owners[0]} contrast)" if owners else ""
    raise ValueError(
        f"unknown {anatomy} contrast {contrast!r}{hint}; "
        f"valid {anatomy} contrasts: {', '.join(valid)}"
    )


def _render(subject: _Subject, contrast: str) -> np.ndarray:
    """Paints the subject's layers with the contrast's tissue intensities."""
    table = INTENSITIES[check_contrast(subject.anatomy, contrast)]
    image = np.zeros(subject.modulation.shape, dtype=np.float32)
    for layer in subject.layers:
        image += layer.alpha * (table[layer.tissue] * layer.texture - image)
    image *= subject.modulation
    return _finish(image, subject.phase)


def _without_texture(subject: _Subject, keep_texture_layers: bool) -> _Subject:
    layers = [layer._replace(texture=1.0) for layer in subject.layers
              if keep_texture_layers or not layer.is_texture]
    return subject._replace(layers=layers)


def untextured_slices(
    anatomy: str, num_slices: int, size: int, seed: int, contrast: str, keep_texture_layers: bool = False
) -> np.ndarray:
    """The slices of ``brain_slices`` / ``knee_slices`` with every texture switched off.

    The same subject, contrast, shading and phase; every layer's
    multiplicative texture (marrow struts, fat septa, muscle fibres, scalp
    variation) is 1, and layers that are texture as a whole (the knee's
    intermuscular fat streaks) are left out unless ``keep_texture_layers``.
    The brain's faint global tissue texture (2.5 %) stays. What differs
    from the textured slices is what no model of the anatomy can predict
    (``bench/texture_floor.py``).

    Raises:
        ValueError: For an unknown anatomy or contrast, ``num_slices < 1`` or
            ``size < 16``.
    """
    check_contrast(anatomy, contrast)
    subject = (_brain_subject if anatomy == "brain" else _knee_subject)(num_slices, size, seed)
    return _render(_without_texture(subject, keep_texture_layers), contrast)


def _tissue_fractions(subject: _Subject) -> dict[str, np.ndarray]:
    """Visible fraction of every tissue of the subject's anatomy.

    A layer's visible weight is its coverage times the share that all later
    layers leave uncovered, so the rendered magnitude (before texture, blur
    and shading) is ``sum(INTENSITIES[contrast][t] * fractions[t])``.
    """
    shape = subject.modulation.shape
    fractions = {t: np.zeros(shape, np.float32) for t in TISSUES[subject.anatomy]}
    uncovered = np.ones(shape, np.float32)
    for layer in reversed(subject.layers):
        fractions[layer.tissue] += layer.alpha * uncovered
        uncovered *= 1.0 - layer.alpha
    return {t: np.clip(m, 0.0, 1.0) for t, m in fractions.items()}


# ----------------------------------------------------------------------------
# Brain: axial section of a head.
# ----------------------------------------------------------------------------


class _Head(NamedTuple):
    """Outline of the head in one subject.

    Attributes:
        q: Normalised radius, 1 at the scalp surface, (S, H, W).
        theta: Polar angle of the normalised outline, (S, H, W).
        radial_scale: Subject units per unit of ``q``, (S, H, W).
        half_lr: Left-right semi-axis per slice, (S, 1, 1).
        half_ap: Anterior-posterior semi-axis per slice, (S, 1, 1).
        harmonics: (amplitude, phase) of the outline's wobble of order 1..4.
        px: Pixels per subject unit.
    """

    q: np.ndarray
    theta: np.ndarray
    radial_scale: np.ndarray
    half_lr: np.ndarray
    half_ap: np.ndarray
    harmonics: tuple[tuple[float, float], ...]
    px: float

    def wobble(self, theta: np.ndarray | float) -> np.ndarray | float:
        """Relative radius of the outline at polar angle ``theta``."""
        return _wobble(self.harmonics, theta)

    def shell(self, level: float) -> np.ndarray:
        """Coverage of the region inside ``level`` times the outline."""
        return _cover((level - self.q) * self.radial_scale, self.px)

    def point(self, theta: float, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Subject-frame (u, v) per slice of the outline point at ``theta``."""
        radius = level * self.wobble(theta)
        return (
            radius * self.half_lr * np.cos(theta),
            radius * self.half_ap * np.sin(theta),
        )


def _wobble(
    harmonics: tuple[tuple[float, float], ...], theta: np.ndarray | float
) -> np.ndarray | float:
    """Relative outline radius: 1 plus low-order harmonics of the angle."""
    wobble = 1.0
    for n, (amp, phase) in enumerate(harmonics, start=1):
        wobble = wobble + amp * np.cos(n * theta + phase)
    # Posterior slightly wider than anterior (egg-shaped axial section).
    return wobble + 0.03 * np.sin(theta)


# Normalised radius of the brain surface (below the CSF rim).
_BRAIN_EDGE = 0.845


def _brain_frame(rng: np.random.Generator, num_slices: int, size: int) -> _Frame:
    return _make_frame(
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


def _head_outline(rng: np.random.Generator, f: _Frame) -> _Head:
    """An ellipsoid narrowing towards the vertex with a low-order wobble."""
    half_lr = rng.uniform(0.70, 0.80) * _ellipsoid_section(f.z, 0.0, 1.15)
    half_ap = rng.uniform(0.84, 0.93) * _ellipsoid_section(f.z, 0.0, 1.15)
    harmonics = tuple(
        (rng.normal(0.0, 0.025 / n), rng.uniform(0, 2 * np.pi)) for n in range(1, 5)
    )
    theta = np.arctan2(f.v / half_ap, f.u / half_lr)
    wobble = _wobble(harmonics, theta)
    q = np.sqrt((f.u / half_lr) ** 2 + (f.v / half_ap) ** 2) / wobble
    # ``radial_scale`` converts the "radius" q into subject units.
    radial_scale = np.sqrt(half_lr * half_ap) * wobble
    return _Head(q, theta, radial_scale, half_lr, half_ap, harmonics, f.px)


def _skull_layers(rng: np.random.Generator, f: _Frame, head: _Head) -> list[_Layer]:
    """Scalp fat, the skull's two tables with the diploe between, CSF rim."""
    skull_field = _random_field(rng, f, 6, (0.5, 1.5), 0.5)
    return [
        _Layer("fat", head.shell(1.0), 1.0 + _SCALP_TEXTURE * skull_field),
        _Layer("skull", head.shell(0.935)),
        _Layer("diploe", head.shell(0.915) * (1.0 - head.shell(0.895))),
        _Layer("skull", head.shell(0.875)),
        _Layer("csf", head.shell(0.86)),
    ]


def _cortex_layers(
    rng: np.random.Generator, f: _Frame, head: _Head
) -> tuple[list[_Layer], np.ndarray]:
    """Folded cortical ribbon, gyral white matter, sulci and the fissure.

    An angular random field G (waves in the polar angle and the depth below
    the brain surface) has a zero set tracing sulci that run inwards from the
    surface. Relative depth t is 0 at the brain surface and 1 about 0.27
    units inside. White matter fills |G| > h(t), with h falling to 0 at
    t = 1, so white-matter gyral cores reach out into the gyri; CSF lines
    (sulci) follow |G| ~ 0 and fade with depth; grey matter is the ribbon in
    between.

    Returns:
        The layers and the brain's coverage.
    """
    below = (_BRAIN_EDGE - head.q) * head.radial_scale  # depth, subject units
    depth = below / 0.27
    warp = _random_field(rng, f, 8, (0.8, 2.0), 0.8)
    theta = head.theta + 0.06 * warp
    gyri = _angular_field(rng, theta, below, f.z, 16, (8, 20), 3.0, 0.8)
    brain = head.shell(_BRAIN_EDGE)
    white = (1.0 - _cover_band(gyri, 1.5 * (1.0 - depth))) * brain
    sulcus_level = 0.2 * np.clip(1.0 - depth / 0.8, 0.0, 1.0)
    sulci = _cover_band(gyri, sulcus_level) * brain
    fissure_gm, fissure_csf = _fissure(rng, f, brain)
    layers = [
        _Layer("gm", brain),
        _Layer("wm", white * (1.0 - fissure_gm)),
        _Layer("csf", _union([sulci, fissure_csf])),
    ]
    return layers, brain


def _fissure(
    rng: np.random.Generator, f: _Frame, brain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interhemispheric fissure: grey-matter margin and CSF line coverages.

    A slightly wavy midline CSF line with a grey-matter margin, interrupted
    at the corpus callosum in mid slices.
    """
    wave = 0.012 * np.sin(
        2 * np.pi * (f.v * rng.uniform(0.8, 1.6) + rng.uniform(0, 1))
    )
    mid_px = np.abs(f.u - wave) * f.px
    callosum = _ellipsoid_section(f.z, rng.uniform(-0.1, 0.1), 0.45) * 0.32
    outside_callosum = _cover(np.abs(f.v) - callosum, f.px) * brain
    margin = _band_coverage(mid_px, 0.045 * f.px) * outside_callosum
    line = _band_coverage(mid_px, 0.012 * f.px) * outside_callosum
    return margin, line


def _deep_grey_layer(rng: np.random.Generator, f: _Frame) -> _Layer:
    """Caudate heads and thalami."""
    size = _ellipsoid_section(f.z, rng.uniform(-0.05, 0.15), 0.35)
    parts = []
    for side in (-1.0, 1.0):
        caudate = _ellipse_sdf(
            f.u, f.v, (side * 0.15, -0.13), (0.055 * size, 0.10 * size), side * 0.3
        )
        thalamus = _ellipse_sdf(
            f.u, f.v, (side * 0.095, 0.12), (0.075 * size, 0.11 * size), -side * 0.2
        )
        parts += [_cover(caudate, f.px), _cover(thalamus, f.px)]
    return _Layer("deep_gm", _union(parts))


def _ventricle_layers(rng: np.random.Generator, f: _Frame) -> list[_Layer]:
    """Lateral and third ventricles, choroid plexus in the atria.

    Frontal horns diverge anteriorly, bodies run back into occipital horns,
    each a tilted ellipse whose size follows an ellipsoid through the stack.
    Mild left-right asymmetry per subject. The choroid plexus glomus lies
    in the atrium, where the body meets the occipital horn.
    """
    vent_z = rng.uniform(-0.05, 0.1)
    body = _ellipsoid_section(f.z, vent_z, 0.38) * rng.uniform(0.8, 1.25)
    csf, choroid = [], []
    for side in (-1.0, 1.0):
        scale = body * (1.0 + rng.normal(0.0, 0.08))
        parts = (
            ((side * 0.075, -0.12), (0.045, 0.13), side * 0.35),
            ((side * 0.085, 0.04), (0.035, 0.17), -side * 0.1),
            ((side * 0.12, 0.24), (0.03, 0.09), -side * 0.45),
            # Choroid plexus glomus (painted over this side's ventricle).
            ((side * 0.105, 0.18), (0.022, 0.05), -side * 0.3),
        )
        covers = [
            _cover(_ellipse_sdf(f.u, f.v, c, (a[0] * scale, a[1] * scale), t), f.px)
            for c, a, t in parts
        ]
        csf += covers[:3]
        choroid.append(covers[3] * _union(covers[:3]))
    # Third ventricle: a thin midline slit below the lateral ventricles.
    third = _ellipsoid_section(f.z, vent_z + 0.25, 0.2)
    slit = _ellipse_sdf(f.u, f.v, (0.0, 0.05), (0.012 * third, 0.09 * third))
    csf.append(_cover(slit, f.px))
    return [_Layer("csf", _union(csf)), _Layer("choroid_plexus", _union(choroid))]


def _lesion_layer(rng: np.random.Generator, f: _Frame, brain: np.ndarray) -> _Layer:
    """White-matter lesions in about half the subjects.

    Small ellipsoids, so each shows on a few consecutive slices.
    """
    parts = []
    if rng.uniform() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            radius = rng.uniform(0.02, 0.05)
            lz = rng.uniform(-0.3, 0.3)
            ang = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(0.22, 0.45)
            center = (rad * np.cos(ang) * 0.8, rad * np.sin(ang))
            sec = _ellipsoid_section(f.z, lz, 1.5 * radius)
            sdf = _ellipse_sdf(f.u, f.v, center, (radius * sec, radius * 1.2 * sec))
            parts.append(_cover(sdf, f.px) * brain)
    return _Layer("lesion", _union(parts) if parts else np.zeros_like(brain))


def _vessel_layer(rng: np.random.Generator, f: _Frame, head: _Head) -> _Layer:
    """Superior sagittal sinus and a few cortical vessels.

    The sinus runs over the vertex, so an axial slice cuts it twice at the
    midline, just inside the inner table: large posteriorly, smaller
    anteriorly. Cortical vessels are small tubes on the brain surface, each
    running through a few slices.
    """
    sinus = (rng.uniform(0.03, 0.04), rng.uniform(0.022, 0.03))
    parts = []
    for theta, scale in ((np.pi / 2, 1.0), (-np.pi / 2, 0.6)):
        center = head.point(theta, 0.85)
        axes = (sinus[0] * scale, sinus[1] * scale)
        parts.append(_cover(_ellipse_sdf(f.u, f.v, center, axes), f.px))
    for _ in range(int(rng.integers(6, 11))):
        theta = rng.uniform(-np.pi, np.pi)
        level = rng.uniform(0.83, 0.855)
        radius = rng.uniform(0.01, 0.018)
        z0, half_depth = rng.uniform(-0.5, 0.5), rng.uniform(0.15, 0.35)
        section = _ellipsoid_section(f.z, z0, half_depth)
        center = head.point(theta, level)
        sdf = _ellipse_sdf(f.u, f.v, center, (radius * section, radius * section))
        parts.append(_cover(sdf, f.px))
    return _Layer("vessel", _union(parts))


def _brain_subject(num_slices: int, size: int, seed: int) -> _Subject:
    """Draws one brain subject: layers, texture/shading and phase."""
    _check_args(num_slices, size)
    rng = np.random.default_rng(seed)
    f = _brain_frame(rng, num_slices, size)
    head = _head_outline(rng, f)
    layers = _skull_layers(rng, f, head)
    cortex, brain = _cortex_layers(rng, f, head)
    layers += cortex
    layers.append(_deep_grey_layer(rng, f))
    layers += _ventricle_layers(rng, f)
    layers.append(_lesion_layer(rng, f, brain))
    texture = _random_field(rng, f, 32, (4.0, 9.0), 2.0)
    shading = _random_field(rng, f, 6, (0.2, 0.6), 0.3)
    modulation = (1.0 + _BRAIN_TEXTURE * texture) * (1.0 + _SHADING * shading)
    phase = _smooth_phase(rng, f)
    # Drawn last so that adding them left the earlier structures unchanged.
    layers.append(_vessel_layer(rng, f, head))
    return _Subject("brain", layers, modulation.astype(np.float32), phase)


def brain_slices(
    num_slices: int, size: int, seed: int, contrast: str = DEFAULT_CONTRAST["brain"]
) -> np.ndarray:
    """Axial brain slices of one synthetic subject in one contrast.

    Anatomy: scalp fat, skull (dark cortical bone with a diploe line),
    subarachnoid CSF, a folded cortical ribbon (grey matter with CSF-filled
    sulci and white-matter gyral cores), the interhemispheric fissure, deep
    grey nuclei, lateral and third ventricles with the choroid plexus, the
    superior sagittal sinus, cortical vessels and, in about half of the
    subjects, a few white-matter lesions.

    Args:
        num_slices: Number of slices in the stack.
        size: Image side in pixels (square images).
        seed: Subject seed; the same seed always gives the same subject, in
            every contrast.
        contrast: One of ``CONTRASTS["brain"]`` (fastMRI acquisition names).

    Returns:
        Complex64 array of shape (num_slices, size, size) with magnitude in
        [0, 1] and a smooth phase.

    Raises:
        ValueError: If ``num_slices < 1``, ``size < 16`` or the contrast is
            not a brain contrast.
    """
    check_contrast("brain", contrast)
    return _render(_brain_subject(num_slices, size, seed), contrast)


def brain_tissue_maps(num_slices: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Visible fraction of each brain tissue in ``brain_slices``' pixels.

    The maps are the same in every contrast; they are not blurred (the
    magnitude is, by ``_BLUR_SIGMA_PX``), and they sum to at most 1 (the
    rest is background).

    Returns:
        ``{tissue: float32 array (num_slices, size, size) in [0, 1]}`` for
        every tissue of ``TISSUES["brain"]``.
    """
    return _tissue_fractions(_brain_subject(num_slices, size, seed))


# ----------------------------------------------------------------------------
# Knee: coronal section through the joint.
# ----------------------------------------------------------------------------


class _Femur(NamedTuple):
    """Distal femur of one subject (with the joint-space parameters).

    Attributes:
        sdf: Signed distance to the femur (positive inside), (S, H, W).
        gap: Joint-space width between the cartilage layers.
        cart: Cartilage thickness.
        condyle_half: Half-width of the condyles.
        cond_u: Offset of each condyle's centre from the midline, (S, 1, 1).
        cond_v: Height of the condyle centres.
        cond_rv: Vertical semi-axis of the condyles.
        flare: 0 along the shaft, 1 at the condyles, (1, H, W).
    """

    sdf: np.ndarray
    gap: float
    cart: float
    condyle_half: float
    cond_u: np.ndarray
    cond_v: float
    cond_rv: float
    flare: np.ndarray


class _Tibia(NamedTuple):
    """Proximal tibia: distance field, plateau surface and shape."""

    sdf: np.ndarray
    surface: np.ndarray  # plateau height across the joint, (1, H, W)
    plateau: float
    top: float  # half-width of the plateau
    taper: np.ndarray  # 0 at the plateau, 1 along the shaft, (1, H, W)


def _knee_frame(rng: np.random.Generator, num_slices: int, size: int) -> _Frame:
    flip = bool(rng.uniform() < 0.5)  # left or right knee
    return _make_frame(
        rng,
        num_slices,
        size,
        _KNEE_SPACING,
        _KNEE_SPAN,
        max_shift=0.06,
        max_angle_deg=8.0,
        scale_range=(0.85, 1.05),
        flip=flip,
    )


def _limb_layers(
    rng: np.random.Generator, f: _Frame, joint: float
) -> tuple[list[_Layer], np.ndarray]:
    """Subcutaneous fat with septa, striated muscle, intermuscular fat.

    The limb is a vertical column, wider at the knee, narrower in the
    anterior/posterior-most slices. Fat streaks run along the limb (the streak
    field varies fast across the limb and slowly along it); near the joint
    the muscle bellies give way to fat and tendons.

    Returns:
        The layers and the closeness to the joint line (1 on it), (1, H, W).
    """
    limb_half = (
        rng.uniform(0.64, 0.72) + 0.08 * np.exp(-((f.v - joint) ** 2) / 0.15)
    ) * (0.75 + 0.25 * _ellipsoid_section(f.z, 0.0, 0.9))
    fat_thick = rng.uniform(0.05, 0.10)
    limb_sdf = limb_half - np.abs(f.u + 0.02 * np.sin(3.0 * f.v))
    septa = _random_field(rng, f, 32, (4.0, 8.0), 2.0)
    streaks = _random_field(rng, f, 24, (2.0, 4.5), 1.0, stretch=(1.0, 0.2))
    fibres = _random_field(rng, f, 48, (8.0, 14.0), 3.0, stretch=(1.0, 0.15))
    muscle = _cover(limb_sdf - fat_thick, f.px)
    near_joint = np.exp(-((f.v - joint) ** 2) / 0.05)
    layers = [
        _Layer(
            "fat",
            _cover(limb_sdf, f.px),
            1.0 - _SEPTA_DARKENING * _cover_band(septa, 0.15),
        ),
        _Layer("muscle", muscle, 1.0 + _MUSCLE_FIBRES * fibres),
        _Layer("fat", muscle * (_PERIARTICULAR_FAT * near_joint)),
        _Layer("fat", muscle * (_STREAK_FAT * _cover_band(streaks, 0.18)), is_texture=True),
    ]
    return layers, near_joint


def _femur(rng: np.random.Generator, f: _Frame, joint: float) -> _Femur:
    """Shaft flaring into the metaphysis, closed below by two condyles.

    The condyles merge anteriorly (trochlea) and separate posteriorly,
    deepening the intercondylar notch.
    """
    gap = rng.uniform(0.035, 0.05)
    cart = rng.uniform(0.022, 0.032)
    shaft_half = rng.uniform(0.19, 0.24)
    condyle_half = rng.uniform(0.46, 0.54)
    cond_ru = condyle_half * rng.uniform(0.47, 0.55)
    cond_rv = rng.uniform(0.13, 0.18)
    cond_v = joint - gap / 2 - cart - cond_rv
    notch = 0.55 + 0.45 * _smoothstep((0.25 - f.z) / 0.6)
    cond_u = (condyle_half - cond_ru) * notch + 0.02
    flare = _smoothstep((f.v - (cond_v - 0.65)) / 0.55)
    fem_half = shaft_half + (condyle_half - shaft_half) * flare
    metaphysis = np.minimum(fem_half - np.abs(f.u), cond_v - f.v)
    condyles = np.maximum(
        _ellipse_sdf(f.u, f.v, (-cond_u, cond_v), (cond_ru, cond_rv)),
        _ellipse_sdf(f.u, f.v, (cond_u, cond_v), (cond_ru, cond_rv)),
    )
    sdf = np.maximum(metaphysis, condyles)
    return _Femur(sdf, gap, cart, condyle_half, cond_u, cond_v, cond_rv, flare)


def _tibia(rng: np.random.Generator, f: _Frame, fem: _Femur, joint: float) -> _Tibia:
    """Plateau slightly concave on each side with central spines.

    It tapers to the shaft; corners are rounded with a smooth minimum.
    """
    plateau = joint + fem.gap / 2 + fem.cart
    top = fem.condyle_half * rng.uniform(0.92, 1.0)
    shaft = rng.uniform(0.18, 0.23)
    taper = _smoothstep((f.v - plateau) / rng.uniform(0.4, 0.55))
    half = top - (top - shaft) * taper
    spines = 0.035 * np.exp(-(((np.abs(f.u) - 0.045) / 0.035) ** 2))
    concave = 0.012 * np.cos(np.pi * np.clip(np.abs(f.u) / top, 0, 1)) ** 2
    surface = plateau - spines + concave
    sdf = _smin(half - np.abs(f.u), f.v - surface, 0.04)
    return _Tibia(sdf, surface, plateau, top, taper)


def _fibula(rng: np.random.Generator, f: _Frame, tib: _Tibia) -> np.ndarray:
    """Fibular head: lateral, below the plateau, posterior slices only."""
    section = _ellipsoid_section(f.z, rng.uniform(-0.35, -0.2), 0.22)
    return _ellipse_sdf(
        f.u,
        f.v,
        (tib.top + 0.03, tib.plateau + 0.16),
        (0.075 * section, 0.1 * section),
        0.3,
    )


def _notch_layers(f: _Frame, fem: _Femur, joint: float) -> list[_Layer]:
    """Notch fat and the cruciate and collateral ligaments.

    The cruciates run through the notch between the condyles; the collateral
    ligaments are dark bands hugging the joint margins.
    """
    inside_notch = _cover(fem.cond_u - np.abs(f.u), f.px)
    notch = _cover(
        np.minimum(fem.cond_v + fem.cond_rv * 0.4 - f.v, fem.cond_u - np.abs(f.u)), f.px
    )
    acl = _ellipse_sdf(f.u, f.v, (0.02, fem.cond_v + 0.04), (0.035, 0.10), 0.35)
    ligaments = [_cover(acl, f.px) * inside_notch]
    for side in (-1.0, 1.0):
        center = (side * (fem.condyle_half + 0.015), joint)
        ligaments.append(_cover(_ellipse_sdf(f.u, f.v, center, (0.018, 0.2)), f.px))
    return [_Layer("fat", _NOTCH_FAT * notch), _Layer("ligament", _union(ligaments))]


def _joint_layers(f: _Frame, fem: _Femur, tib: _Tibia, joint: float) -> list[_Layer]:
    """Joint fluid between the bones, cartilage on both joint surfaces."""
    fluid = _cover(fem.gap / 2 + fem.cart - np.abs(f.v - joint), f.px)
    fluid *= _cover(fem.condyle_half - 0.02 - np.abs(f.u), f.px)
    femoral = _cover(fem.sdf + fem.cart, f.px) * _cover(f.v - (fem.cond_v - 0.02), f.px)
    tibial = _cover(tib.sdf + fem.cart, f.px) * _cover(tib.surface + 0.04 - f.v, f.px)
    tibial *= _cover(tib.top - 0.03 - np.abs(f.u), f.px)
    return [_Layer("fluid", fluid), _Layer("cartilage", _union([femoral, tibial]))]


def _meniscus_layer(
    rng: np.random.Generator, f: _Frame, fem: _Femur, joint: float
) -> _Layer:
    """Menisci: dark wedges at the joint margins, base outwards."""
    parts = []
    for side in (-1.0, 1.0):
        inner = fem.condyle_half - rng.uniform(0.11, 0.15)
        outer = fem.condyle_half + 0.02
        along = (side * f.u - inner) / (outer - inner)
        height = (fem.gap / 2 + fem.cart * 1.2) * np.clip(along, 0.0, 1.0)
        wedge = np.minimum(height - np.abs(f.v - joint), outer - side * f.u)
        # Bound the inner side too: a zero-width wedge would otherwise get
        # half coverage along the whole joint line.
        wedge = np.minimum(wedge, side * f.u - inner)
        parts.append(_cover(wedge, f.px))
    return _Layer("meniscus", _union(parts))


def _bone_layers(
    rng: np.random.Generator,
    f: _Frame,
    bones: tuple[_Femur, _Tibia, np.ndarray],
    near_joint: np.ndarray,
) -> list[_Layer]:
    """Cortical bone around fatty trabecular marrow, and physeal scars.

    Thin bands around the zero set of band-pass noise form interconnected
    struts; a coarser field modulates strut thickness (thicker near the
    joint surfaces). Physeal scars are thin wavy lines across the
    metaphyses.
    """
    fem, tib, fibula = bones
    trab = _random_field(rng, f, 64, (7.0, 11.0), 4.0)
    trab += 0.8 * _random_field(rng, f, 64, (11.0, 18.0), 6.0)
    density = _random_field(rng, f, 6, (0.5, 1.5), 0.5)
    struts = _cover_band(trab, 0.34 + 0.08 * density + 0.12 * near_joint)
    trabecular = 1.0 - _STRUT_DARKENING * struts
    thickness = (
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * (1.0 - fem.flare)),
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * tib.taper),
        0.02,
    )
    layers, scars = [], []
    for sdf, thick in zip((fem.sdf, tib.sdf, fibula), thickness, strict=True):
        layers.append(_Layer("cortex", _cover(sdf, f.px)))
        layers.append(_Layer("marrow", _cover(sdf - thick, f.px), trabecular))
    for sdf, level, thick in (
        (fem.sdf, fem.cond_v - 0.28, thickness[0]),
        (tib.sdf, tib.plateau + 0.2, thickness[1]),
    ):
        wavy = level + 0.025 * np.sin(2 * np.pi * (f.u * 1.3 + rng.uniform(0, 1)))
        scar = _band_coverage(np.abs(f.v - wavy) * f.px, 0.008 * f.px)
        scars.append(scar * _cover(sdf - thick, f.px))
    layers.append(_Layer("physis", _union(scars)))
    return layers


def _knee_subject(num_slices: int, size: int, seed: int) -> _Subject:
    """Draws one knee subject: layers, shading and phase."""
    _check_args(num_slices, size)
    rng = np.random.default_rng(seed)
    f = _knee_frame(rng, num_slices, size)
    joint = rng.uniform(-0.05, 0.10)  # joint line (v grows downwards)
    layers, near_joint = _limb_layers(rng, f, joint)
    fem = _femur(rng, f, joint)
    tib = _tibia(rng, f, fem, joint)
    fibula = _fibula(rng, f, tib)
    layers += _notch_layers(f, fem, joint)
    layers += _joint_layers(f, fem, tib, joint)
    layers.append(_meniscus_layer(rng, f, fem, joint))
    layers += _bone_layers(rng, f, (fem, tib, fibula), near_joint)
    shading = _random_field(rng, f, 6, (0.2, 0.6), 0.3)
    modulation = (1.0 + _SHADING * shading).astype(np.float32)
    return _Subject("knee", layers, modulation, _smooth_phase(rng, f))


def knee_slices(
    num_slices: int, size: int, seed: int, contrast: str = DEFAULT_CONTRAST["knee"]
) -> np.ndarray:
    """Coronal knee slices of one synthetic subject in one contrast.

    Anatomy: subcutaneous fat rim with fibrous septa, striated muscle with
    intermuscular fat streaks, distal femur (shaft, two condyles and the
    intercondylar notch), proximal tibia (plateau with tibial spines),
    fibular head in posterior slices, cortical bone around fatty marrow with
    a fine trabecular texture and a physeal scar, cartilage layers on both
    joint surfaces with a thin joint space, menisci at the joint margins,
    collateral and cruciate ligaments.

    Args:
        num_slices: Number of slices in the stack.
        size: Image side in pixels (square images).
        seed: Subject seed; the same seed always gives the same subject, in
            every contrast.
        contrast: One of ``CONTRASTS["knee"]`` (fastMRI acquisition names).

    Returns:
        Complex64 array of shape (num_slices, size, size) with magnitude in
        [0, 1] and a smooth phase.

    Raises:
        ValueError: If ``num_slices < 1``, ``size < 16`` or the contrast is
            not a knee contrast.
    """
    check_contrast("knee", contrast)
    return _render(_knee_subject(num_slices, size, seed), contrast)


def knee_tissue_maps(num_slices: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Visible fraction of each knee tissue in ``knee_slices``' pixels.

    The maps are the same in every contrast; they are not blurred (the
    magnitude is, by ``_BLUR_SIGMA_PX``), and they sum to at most 1 (the
    rest is background).

    Returns:
        ``{tissue: float32 array (num_slices, size, size) in [0, 1]}`` for
        every tissue of ``TISSUES["knee"]``.
    """
    return _tissue_fractions(_knee_subject(num_slices, size, seed))


PHANTOMS: dict[str, Callable[..., np.ndarray]] = {
    "brain": brain_slices,
    "knee": knee_slices,
}
TISSUE_MAPS: dict[str, Callable[[int, int, int], dict[str, np.ndarray]]] = {
    "brain": brain_tissue_maps,
    "knee": knee_tissue_maps,
}
