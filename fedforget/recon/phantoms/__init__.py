"""Deterministic synthetic anatomy in fastMRI's contrasts: axial brain, coronal knee.

Each call builds a stack of slices through one synthetic subject, in one of
the contrasts that fastMRI's ``acquisition`` attribute names (``CONTRASTS``):
brain T1, T1 post-contrast, T2 and FLAIR; knee proton density with and
without fat suppression. A phantom is made in two stages:

1. **Geometry** (``brain.brain_subject``, ``knee.knee_subject``): every random draw of
   the subject (pose, shapes, textures, phase) is made from the seed alone
   and turned into an ordered list of layers. A layer is one tissue's
   fractional coverage (a float map in [0, 1]) with an optional
   multiplicative texture (marrow struts, fat septa, muscle fibres). The
   contrast plays no part here, so a seed gives the same subject, drawn from
   the same random numbers, in every contrast.
2. **Contrast** (``rendering.render``): the layers are painted in order ("over"
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

Modules: ``primitives`` (the sampling grid, coverage, distances, random fields,
phase), ``rendering`` (contrasts, intensity tables, layers, painting), ``brain``
and ``knee`` (each anatomy's subject); this package re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedforget.recon.phantoms.brain import brain_slices, brain_subject, brain_tissue_maps
from fedforget.recon.phantoms.knee import knee_slices, knee_subject, knee_tissue_maps
from fedforget.recon.phantoms.rendering import (
    CONTRASTS,
    DEFAULT_CONTRAST,
    INTENSITIES,
    TISSUES,
    check_contrast,
    render,
    without_texture,
)

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
    subject = (brain_subject if anatomy == "brain" else knee_subject)(num_slices, size, seed)
    return render(without_texture(subject, keep_texture_layers), contrast)


PHANTOMS: dict[str, Callable[..., np.ndarray]] = {
    "brain": brain_slices,
    "knee": knee_slices,
}
TISSUE_MAPS: dict[str, Callable[[int, int, int], dict[str, np.ndarray]]] = {
    "brain": brain_tissue_maps,
    "knee": knee_tissue_maps,
}
