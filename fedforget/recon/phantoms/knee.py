"""Knee phantoms: coronal sections through a synthetic knee joint.

Subcutaneous fat and striated muscle, femur, tibia and fibular head (cortex around
trabecular marrow, physeal scars), cartilage, joint fluid, menisci and ligaments, each
a layer of ``rendering.Layer`` built from ``primitives``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedforget.recon.phantoms.primitives import (
    Frame,
    band_coverage,
    check_args,
    cover,
    cover_band,
    ellipse_sdf,
    ellipsoid_section,
    make_frame,
    random_field,
    smin,
    smooth_phase,
    smoothstep,
    union,
)
from fedforget.recon.phantoms.rendering import (
    DEFAULT_CONTRAST,
    SHADING,
    Layer,
    Subject,
    check_contrast,
    render,
    tissue_fractions,
)

# Texture strengths (contrast-independent multiplicative modulations).
_SEPTA_DARKENING = 0.5  # fibrous septa crossing the subcutaneous fat
_MUSCLE_FIBRES = 0.3  # striation of muscle along the limb


# Trabecular struts are faint on the PD-weighted images (fatty marrow
# dominates each voxel): ~30 % darkening, not a near-black binary network.
_STRUT_DARKENING = 0.3
# Fat volume fractions of partial-volume structures in the knee.
_PERIARTICULAR_FAT = 0.43  # muscle bellies give way to fat and tendons
_STREAK_FAT = 0.72  # thin intermuscular fat streaks
_NOTCH_FAT = 0.5  # fat around the cruciates in the intercondylar notch


# Slice spacing in subject-frame units (the knee half-extent is ~1): ~3 mm over
# ~70 mm. Stacks with many slices are squeezed into SPAN so that they stay inside
# the anatomy.
_KNEE_SPACING, _KNEE_SPAN = 0.04, 1.0


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


def _knee_frame(rng: np.random.Generator, num_slices: int, size: int) -> Frame:
    flip = bool(rng.uniform() < 0.5)  # left or right knee
    return make_frame(
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
    rng: np.random.Generator, f: Frame, joint: float
) -> tuple[list[Layer], np.ndarray]:
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
    ) * (0.75 + 0.25 * ellipsoid_section(f.z, 0.0, 0.9))
    fat_thick = rng.uniform(0.05, 0.10)
    limb_sdf = limb_half - np.abs(f.u + 0.02 * np.sin(3.0 * f.v))
    septa = random_field(rng, f, 32, (4.0, 8.0), 2.0)
    streaks = random_field(rng, f, 24, (2.0, 4.5), 1.0, stretch=(1.0, 0.2))
    fibres = random_field(rng, f, 48, (8.0, 14.0), 3.0, stretch=(1.0, 0.15))
    muscle = cover(limb_sdf - fat_thick, f.px)
    near_joint = np.exp(-((f.v - joint) ** 2) / 0.05)
    layers = [
        Layer(
            "fat",
            cover(limb_sdf, f.px),
            1.0 - _SEPTA_DARKENING * cover_band(septa, 0.15),
        ),
        Layer("muscle", muscle, 1.0 + _MUSCLE_FIBRES * fibres),
        Layer("fat", muscle * (_PERIARTICULAR_FAT * near_joint)),
        Layer("fat", muscle * (_STREAK_FAT * cover_band(streaks, 0.18)), is_texture=True),
    ]
    return layers, near_joint


def _femur(rng: np.random.Generator, f: Frame, joint: float) -> _Femur:
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
    notch = 0.55 + 0.45 * smoothstep((0.25 - f.z) / 0.6)
    cond_u = (condyle_half - cond_ru) * notch + 0.02
    flare = smoothstep((f.v - (cond_v - 0.65)) / 0.55)
    fem_half = shaft_half + (condyle_half - shaft_half) * flare
    metaphysis = np.minimum(fem_half - np.abs(f.u), cond_v - f.v)
    condyles = np.maximum(
        ellipse_sdf(f.u, f.v, (-cond_u, cond_v), (cond_ru, cond_rv)),
        ellipse_sdf(f.u, f.v, (cond_u, cond_v), (cond_ru, cond_rv)),
    )
    sdf = np.maximum(metaphysis, condyles)
    return _Femur(sdf, gap, cart, condyle_half, cond_u, cond_v, cond_rv, flare)


def _tibia(rng: np.random.Generator, f: Frame, fem: _Femur, joint: float) -> _Tibia:
    """Plateau slightly concave on each side with central spines.

    It tapers to the shaft; corners are rounded with a smooth minimum.
    """
    plateau = joint + fem.gap / 2 + fem.cart
    top = fem.condyle_half * rng.uniform(0.92, 1.0)
    shaft = rng.uniform(0.18, 0.23)
    taper = smoothstep((f.v - plateau) / rng.uniform(0.4, 0.55))
    half = top - (top - shaft) * taper
    spines = 0.035 * np.exp(-(((np.abs(f.u) - 0.045) / 0.035) ** 2))
    concave = 0.012 * np.cos(np.pi * np.clip(np.abs(f.u) / top, 0, 1)) ** 2
    surface = plateau - spines + concave
    sdf = smin(half - np.abs(f.u), f.v - surface, 0.04)
    return _Tibia(sdf, surface, plateau, top, taper)


def _fibula(rng: np.random.Generator, f: Frame, tib: _Tibia) -> np.ndarray:
    """Fibular head: lateral, below the plateau, posterior slices only."""
    section = ellipsoid_section(f.z, rng.uniform(-0.35, -0.2), 0.22)
    return ellipse_sdf(
        f.u,
        f.v,
        (tib.top + 0.03, tib.plateau + 0.16),
        (0.075 * section, 0.1 * section),
        0.3,
    )


def _notch_layers(f: Frame, fem: _Femur, joint: float) -> list[Layer]:
    """Notch fat and the cruciate and collateral ligaments.

    The cruciates run through the notch between the condyles; the collateral
    ligaments are dark bands hugging the joint margins.
    """
    inside_notch = cover(fem.cond_u - np.abs(f.u), f.px)
    notch = cover(
        np.minimum(fem.cond_v + fem.cond_rv * 0.4 - f.v, fem.cond_u - np.abs(f.u)), f.px
    )
    acl = ellipse_sdf(f.u, f.v, (0.02, fem.cond_v + 0.04), (0.035, 0.10), 0.35)
    ligaments = [cover(acl, f.px) * inside_notch]
    for side in (-1.0, 1.0):
        center = (side * (fem.condyle_half + 0.015), joint)
        ligaments.append(cover(ellipse_sdf(f.u, f.v, center, (0.018, 0.2)), f.px))
    return [Layer("fat", _NOTCH_FAT * notch), Layer("ligament", union(ligaments))]


def _joint_layers(f: Frame, fem: _Femur, tib: _Tibia, joint: float) -> list[Layer]:
    """Joint fluid between the bones, cartilage on both joint surfaces."""
    fluid = cover(fem.gap / 2 + fem.cart - np.abs(f.v - joint), f.px)
    fluid *= cover(fem.condyle_half - 0.02 - np.abs(f.u), f.px)
    femoral = cover(fem.sdf + fem.cart, f.px) * cover(f.v - (fem.cond_v - 0.02), f.px)
    tibial = cover(tib.sdf + fem.cart, f.px) * cover(tib.surface + 0.04 - f.v, f.px)
    tibial *= cover(tib.top - 0.03 - np.abs(f.u), f.px)
    return [Layer("fluid", fluid), Layer("cartilage", union([femoral, tibial]))]


def _meniscus_layer(
    rng: np.random.Generator, f: Frame, fem: _Femur, joint: float
) -> Layer:
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
        parts.append(cover(wedge, f.px))
    return Layer("meniscus", union(parts))


def _bone_layers(
    rng: np.random.Generator,
    f: Frame,
    bones: tuple[_Femur, _Tibia, np.ndarray],
    near_joint: np.ndarray,
) -> list[Layer]:
    """Cortical bone around fatty trabecular marrow, and physeal scars.

    Thin bands around the zero set of band-pass noise form interconnected
    struts; a coarser field modulates strut thickness (thicker near the
    joint surfaces). Physeal scars are thin wavy lines across the
    metaphyses.
    """
    fem, tib, fibula = bones
    trab = random_field(rng, f, 64, (7.0, 11.0), 4.0)
    trab += 0.8 * random_field(rng, f, 64, (11.0, 18.0), 6.0)
    density = random_field(rng, f, 6, (0.5, 1.5), 0.5)
    struts = cover_band(trab, 0.34 + 0.08 * density + 0.12 * near_joint)
    trabecular = 1.0 - _STRUT_DARKENING * struts
    thickness = (
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * (1.0 - fem.flare)),
        rng.uniform(0.025, 0.035) * (1.0 + 1.2 * tib.taper),
        0.02,
    )
    layers, scars = [], []
    for sdf, thick in zip((fem.sdf, tib.sdf, fibula), thickness, strict=True):
        layers.append(Layer("cortex", cover(sdf, f.px)))
        layers.append(Layer("marrow", cover(sdf - thick, f.px), trabecular))
    for sdf, level, thick in (
        (fem.sdf, fem.cond_v - 0.28, thickness[0]),
        (tib.sdf, tib.plateau + 0.2, thickness[1]),
    ):
        wavy = level + 0.025 * np.sin(2 * np.pi * (f.u * 1.3 + rng.uniform(0, 1)))
        scar = band_coverage(np.abs(f.v - wavy) * f.px, 0.008 * f.px)
        scars.append(scar * cover(sdf - thick, f.px))
    layers.append(Layer("physis", union(scars)))
    return layers


def knee_subject(num_slices: int, size: int, seed: int) -> Subject:
    """Draws one knee subject: layers, shading and phase."""
    check_args(num_slices, size)
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
    shading = random_field(rng, f, 6, (0.2, 0.6), 0.3)
    modulation = (1.0 + SHADING * shading).astype(np.float32)
    return Subject("knee", layers, modulation, smooth_phase(rng, f))


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
    return render(knee_subject(num_slices, size, seed), contrast)


def knee_tissue_maps(num_slices: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Visible fraction of each knee tissue in ``knee_slices``' pixels.

    The maps are the same in every contrast; they are not blurred (the
    magnitude is, by ``BLUR_SIGMA_PX``), and they sum to at most 1 (the
    rest is background).

    Returns:
        ``{tissue: float32 array (num_slices, size, size) in [0, 1]}`` for
        every tissue of ``TISSUES["knee"]``.
    """
    return tissue_fractions(knee_subject(num_slices, size, seed))
