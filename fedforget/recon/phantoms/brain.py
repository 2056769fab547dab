"""Brain phantoms: axial sections of a synthetic head.

Scalp, skull and diploe, a folded cortical ribbon with sulci and the interhemispheric
fissure, deep grey nuclei, ventricles with the choroid plexus, white-matter lesions
and vessels, each a layer of ``rendering.Layer`` built from ``primitives``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedforget.recon.phantoms.primitives import (
    Frame,
    angular_field,
    band_coverage,
    check_args,
    cover,
    cover_band,
    ellipse_sdf,
    ellipsoid_section,
    make_frame,
    random_field,
    smooth_phase,
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
_SCALP_TEXTURE = 0.05  # slow variation of the scalp fat
_BRAIN_TEXTURE = 0.025  # fine tissue texture over the whole head

# Slice spacing in subject-frame units (the head half-extent is ~1): ~5 mm over
# a ~80 mm half-height. Stacks with many slices are squeezed into SPAN so that
# they stay inside the anatomy.
_BRAIN_SPACING, _BRAIN_SPAN = 0.06, 1.1
# Head size: the frame's scale (1 = the head's outline spans about 0.75 x 0.9 of the field of view).
_BRAIN_SCALE_RANGE = (0.88, 1.02)


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
        return cover((level - self.q) * self.radial_scale, self.px)

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


def _brain_frame(rng: np.random.Generator, num_slices: int, size: int) -> Frame:
    return make_frame(
        rng,
        num_slices,
        size,
        _BRAIN_SPACING,
        _BRAIN_SPAN,
        max_shift=0.05,
        max_angle_deg=10.0,
        scale_range=_BRAIN_SCALE_RANGE,
        flip=False,
    )


def _head_outline(rng: np.random.Generator, f: Frame) -> _Head:
    """An ellipsoid narrowing towards the vertex with a low-order wobble."""
    half_lr = rng.uniform(0.70, 0.80) * ellipsoid_section(f.z, 0.0, 1.15)
    half_ap = rng.uniform(0.84, 0.93) * ellipsoid_section(f.z, 0.0, 1.15)
    harmonics = tuple(
        (rng.normal(0.0, 0.025 / n), rng.uniform(0, 2 * np.pi)) for n in range(1, 5)
    )
    theta = np.arctan2(f.v / half_ap, f.u / half_lr)
    wobble = _wobble(harmonics, theta)
    q = np.sqrt((f.u / half_lr) ** 2 + (f.v / half_ap) ** 2) / wobble
    # ``radial_scale`` converts the "radius" q into subject units.
    radial_scale = np.sqrt(half_lr * half_ap) * wobble
    return _Head(q, theta, radial_scale, half_lr, half_ap, harmonics, f.px)


def _skull_layers(rng: np.random.Generator, f: Frame, head: _Head) -> list[Layer]:
    """Scalp fat, the skull's two tables with the diploe between, CSF rim."""
    skull_field = random_field(rng, f, 6, (0.5, 1.5), 0.5)
    return [
        Layer("fat", head.shell(1.0), 1.0 + _SCALP_TEXTURE * skull_field),
        Layer("skull", head.shell(0.935)),
        Layer("diploe", head.shell(0.915) * (1.0 - head.shell(0.895))),
        Layer("skull", head.shell(0.875)),
        Layer("csf", head.shell(0.86)),
    ]


def _cortex_layers(
    rng: np.random.Generator, f: Frame, head: _Head
) -> tuple[list[Layer], np.ndarray]:
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
    warp = random_field(rng, f, 8, (0.8, 2.0), 0.8)
    theta = head.theta + 0.06 * warp
    gyri = angular_field(rng, theta, below, f.z, 16, (8, 20), 3.0, 0.8)
    brain = head.shell(_BRAIN_EDGE)
    white = (1.0 - cover_band(gyri, 1.5 * (1.0 - depth))) * brain
    sulcus_level = 0.2 * np.clip(1.0 - depth / 0.8, 0.0, 1.0)
    sulci = cover_band(gyri, sulcus_level) * brain
    fissure_gm, fissure_csf = _fissure(rng, f, brain)
    layers = [
        Layer("gm", brain),
        Layer("wm", white * (1.0 - fissure_gm)),
        Layer("csf", union([sulci, fissure_csf])),
    ]
    return layers, brain


def _fissure(
    rng: np.random.Generator, f: Frame, brain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interhemispheric fissure: grey-matter margin and CSF line coverages.

    A slightly wavy midline CSF line with a grey-matter margin, interrupted
    at the corpus callosum in mid slices.
    """
    wave = 0.012 * np.sin(
        2 * np.pi * (f.v * rng.uniform(0.8, 1.6) + rng.uniform(0, 1))
    )
    mid_px = np.abs(f.u - wave) * f.px
    callosum = ellipsoid_section(f.z, rng.uniform(-0.1, 0.1), 0.45) * 0.32
    outside_callosum = cover(np.abs(f.v) - callosum, f.px) * brain
    margin = band_coverage(mid_px, 0.045 * f.px) * outside_callosum
    line = band_coverage(mid_px, 0.012 * f.px) * outside_callosum
    return margin, line


def _deep_grey_layer(rng: np.random.Generator, f: Frame) -> Layer:
    """Caudate heads and thalami."""
    size = ellipsoid_section(f.z, rng.uniform(-0.05, 0.15), 0.35)
    parts = []
    for side in (-1.0, 1.0):
        caudate = ellipse_sdf(
            f.u, f.v, (side * 0.15, -0.13), (0.055 * size, 0.10 * size), side * 0.3
        )
        thalamus = ellipse_sdf(
            f.u, f.v, (side * 0.095, 0.12), (0.075 * size, 0.11 * size), -side * 0.2
        )
        parts += [cover(caudate, f.px), cover(thalamus, f.px)]
    return Layer("deep_gm", union(parts))


def _ventricle_layers(rng: np.random.Generator, f: Frame) -> list[Layer]:
    """Lateral and third ventricles, choroid plexus in the atria.

    Frontal horns diverge anteriorly, bodies run back into occipital horns,
    each a tilted ellipse whose size follows an ellipsoid through the stack.
    Mild left-right asymmetry per subject. The choroid plexus glomus lies
    in the atrium, where the body meets the occipital horn.
    """
    vent_z = rng.uniform(-0.05, 0.1)
    body = ellipsoid_section(f.z, vent_z, 0.38) * rng.uniform(0.8, 1.25)
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
            cover(ellipse_sdf(f.u, f.v, c, (a[0] * scale, a[1] * scale), t), f.px)
            for c, a, t in parts
        ]
        csf += covers[:3]
        choroid.append(covers[3] * union(covers[:3]))
    # Third ventricle: a thin midline slit below the lateral ventricles.
    third = ellipsoid_section(f.z, vent_z + 0.25, 0.2)
    slit = ellipse_sdf(f.u, f.v, (0.0, 0.05), (0.012 * third, 0.09 * third))
    csf.append(cover(slit, f.px))
    return [Layer("csf", union(csf)), Layer("choroid_plexus", union(choroid))]


def _lesion_layer(rng: np.random.Generator, f: Frame, brain: np.ndarray) -> Layer:
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
            sec = ellipsoid_section(f.z, lz, 1.5 * radius)
            sdf = ellipse_sdf(f.u, f.v, center, (radius * sec, radius * 1.2 * sec))
            parts.append(cover(sdf, f.px) * brain)
    return Layer("lesion", union(parts) if parts else np.zeros_like(brain))


def _vessel_layer(rng: np.random.Generator, f: Frame, head: _Head) -> Layer:
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
        parts.append(cover(ellipse_sdf(f.u, f.v, center, axes), f.px))
    for _ in range(int(rng.integers(6, 11))):
        theta = rng.uniform(-np.pi, np.pi)
        level = rng.uniform(0.83, 0.855)
        radius = rng.uniform(0.01, 0.018)
        z0, half_depth = rng.uniform(-0.5, 0.5), rng.uniform(0.15, 0.35)
        section = ellipsoid_section(f.z, z0, half_depth)
        center = head.point(theta, level)
        sdf = ellipse_sdf(f.u, f.v, center, (radius * section, radius * section))
        parts.append(cover(sdf, f.px))
    return Layer("vessel", union(parts))


def brain_subject(
    num_slices: int, size: int, seed: int, skull_stripped: bool = False
) -> Subject:
    """Draws one brain subject: layers, texture/shading and phase.

    ``skull_stripped``: the brain alone on an empty background, without scalp,
    skull and extra-axial CSF, as preprocessed research volumes and templates
    are; the rest of the subject is the same.
    """
    check_args(num_slices, size)
    rng = np.random.default_rng(seed)
    f = _brain_frame(rng, num_slices, size)
    head = _head_outline(rng, f)
    skull = _skull_layers(rng, f, head)
    layers = list(skull)
    cortex, brain = _cortex_layers(rng, f, head)
    layers += cortex
    layers.append(_deep_grey_layer(rng, f))
    layers += _ventricle_layers(rng, f)
    layers.append(_lesion_layer(rng, f, brain))
    texture = random_field(rng, f, 32, (4.0, 9.0), 2.0)
    shading = random_field(rng, f, 6, (0.2, 0.6), 0.3)
    modulation = (1.0 + _BRAIN_TEXTURE * texture) * (1.0 + SHADING * shading)
    phase = smooth_phase(rng, f)
    # Drawn last so that adding them left the earlier structures unchanged.
    layers.append(_vessel_layer(rng, f, head))
    if skull_stripped:
        layers = layers[len(skull):]
    return Subject("brain", layers, modulation.astype(np.float32), phase)


def brain_slices(
    num_slices: int,
    size: int,
    seed: int,
    contrast: str = DEFAULT_CONTRAST["brain"],
    skull_stripped: bool = False,
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
        skull_stripped: Image the brain alone (see ``brain_subject``).

    Returns:
        Complex64 array of shape (num_slices, size, size) with magnitude in
        [0, 1] and a smooth phase.

    Raises:
        ValueError: If ``num_slices < 1``, ``size < 16`` or the contrast is
            not a brain contrast.
    """
    check_contrast("brain", contrast)
    return render(brain_subject(num_slices, size, seed, skull_stripped), contrast)


def brain_tissue_maps(num_slices: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Visible fraction of each brain tissue in ``brain_slices``' pixels.

    The maps are the same in every contrast; they are not blurred (the
    magnitude is, by ``BLUR_SIGMA_PX``), and they sum to at most 1 (the
    rest is background).

    Returns:
        ``{tissue: float32 array (num_slices, size, size) in [0, 1]}`` for
        every tissue of ``TISSUES["brain"]``.
    """
    return tissue_fractions(brain_subject(num_slices, size, seed))
