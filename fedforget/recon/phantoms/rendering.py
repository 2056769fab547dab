"""The contrast stage: tissue intensities of fastMRI's contrasts, and painting a subject in one of them.

A subject (``Subject``: the ordered tissue ``Layer`` s of one anatomy, a global
modulation and a phase) is drawn without any contrast; ``render`` paints its layers
in order ("over" compositing, ``paint_over``) with ``INTENSITIES[contrast][tissue]``,
applies the modulation, blurs slightly and attaches the phase. ``tissue_fractions``
says what each tissue finally covers in every pixel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

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


# Smooth receive-bias-like shading of every subject (a contrast-independent modulation).
SHADING = 0.06


# Gaussian blur (pixels) applied to the magnitude: removes the residual
# sharpness of the 1-pixel coverage ramps without visibly softening anatomy.
BLUR_SIGMA_PX = 0.5


class Layer(NamedTuple):
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


class Subject(NamedTuple):
    """Everything about one subject that does not depend on the contrast.

    Attributes:
        anatomy: "brain" or "knee".
        layers: Layers in painting order.
        modulation: Global multiplicative texture and shading, (S, H, W).
        phase: Smooth image phase (radians), broadcastable to (S, H, W).
    """

    anatomy: str
    layers: list[Layer]
    modulation: np.ndarray
    phase: np.ndarray


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


def paint_over(
    image: np.ndarray, alpha: np.ndarray, value: float | np.ndarray
) -> np.ndarray:
    """Composites ``value`` over ``image`` with coverage ``alpha`` (in place): "over" compositing."""
    image += alpha * (value - image)
    return image


def render(subject: Subject, contrast: str) -> np.ndarray:
    """Paints the subject's layers with the contrast's tissue intensities."""
    table = INTENSITIES[check_contrast(subject.anatomy, contrast)]
    image = np.zeros(subject.modulation.shape, dtype=np.float32)
    for layer in subject.layers:
        paint_over(image, layer.alpha, table[layer.tissue] * layer.texture)
    image *= subject.modulation
    return finish(image, subject.phase)


def finish(magnitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Blurs, clips and attaches the phase; returns complex64 (S, H, W)."""
    magnitude = gaussian_filter(magnitude, sigma=(0.0, BLUR_SIGMA_PX, BLUR_SIGMA_PX))
    magnitude = np.clip(magnitude, 0.0, 1.0)
    return (magnitude * np.exp(1j * phase)).astype(np.complex64)


def without_texture(subject: Subject, keep_texture_layers: bool) -> Subject:
    """The subject with every layer's texture 1, and the texture-only layers left out unless kept."""
    layers = [layer._replace(texture=1.0) for layer in subject.layers
              if keep_texture_layers or not layer.is_texture]
    return subject._replace(layers=layers)


def tissue_fractions(subject: Subject) -> dict[str, np.ndarray]:
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

