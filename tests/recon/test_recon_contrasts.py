"""Phantom contrasts: tissue intensities rank as on clinical images, geometry does not move."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from fedforget.recon.phantoms import (
    CONTRASTS,
    DEFAULT_CONTRAST,
    INTENSITIES,
    PHANTOMS,
    TISSUE_MAPS,
    TISSUES,
    brain_slices,
    brain_tissue_maps,
    check_contrast,
    knee_slices,
)

ALL_CONTRASTS = [(a, c) for a in sorted(CONTRASTS) for c in CONTRASTS[a]]
# One subject per anatomy, fine enough for thin tissues (cartilage, joint
# fluid, vessels) to have pure pixels; brain seed 9 has lesions in these slices.
SUBJECT = {"brain": (3, 256, 9), "knee": (3, 320, 4)}
MIN_PIXELS = 20

# (brighter, darker) pairs per contrast, as on clinical images.
ORDER = {
    "AXT1": [
        ("wm", "gm"),
        ("gm", "csf"),
        ("fat", "wm"),
        ("wm", "lesion"),  # lesions hypo-/isointense
        ("lesion", "csf"),
    ],
    "AXT1POST": [
        ("wm", "gm"),
        ("gm", "csf"),
        ("fat", "wm"),
        ("lesion", "wm"),  # enhancing lesions
        ("vessel", "wm"),  # enhancing sinus and vessels
        ("vessel", "gm"),
        ("choroid_plexus", "wm"),
    ],
    "AXT2": [
        ("csf", "gm"),
        ("gm", "wm"),
        ("lesion", "gm"),
        ("lesion", "wm"),
        ("csf", "fat"),  # fat moderately bright on fast spin echo
        ("fat", "wm"),
        ("wm", "vessel"),  # flow voids
        ("csf", "choroid_plexus"),
    ],
    "AXFLAIR": [
        ("gm", "wm"),
        ("wm", "csf"),  # CSF nulled
        ("gm", "csf"),
        ("lesion", "gm"),
        ("lesion", "wm"),
        ("wm", "vessel"),
    ],
    "CORPD_FBK": [
        ("fat", "fluid"),
        ("marrow", "cartilage"),
        ("fluid", "cartilage"),
        ("cartilage", "muscle"),
        ("fat", "muscle"),
        ("muscle", "cortex"),
        ("muscle", "meniscus"),
        ("muscle", "ligament"),
    ],
    "CORPDFS_FBK": [
        ("fluid", "cartilage"),
        ("cartilage", "muscle"),
        ("muscle", "fat"),  # fat suppressed
        ("muscle", "marrow"),  # fatty marrow suppressed
        ("fluid", "fat"),
        ("cartilage", "marrow"),
        ("muscle", "cortex"),
        ("muscle", "meniscus"),
        ("muscle", "ligament"),
    ],
}

# Tissues painted without a texture of their own: their mean magnitude should
# follow the table up to the global shading and the edge blur.
UNTEXTURED = {
    "brain": [t for t in TISSUES["brain"] if t != "fat"],
    "knee": ["cortex", "cartilage", "fluid", "meniscus", "ligament"],
}


def _cores(
    maps: dict[str, np.ndarray], full: bool = False, level: float = 0.99
) -> dict[str, np.ndarray]:
    """Pixels made (to ``level``) of one tissue only, away from its edges.

    The magnitude is blurred by half a pixel, so a pure pixel next to another
    tissue borrows from it: drop the boundary layer (the 4-neighbourhood, or
    with ``full`` the 8-neighbourhood) of every mask.
    """
    structure = np.zeros((3, 3, 3), bool)
    if full:
        structure[1] = True
    else:
        structure[1, 1, :] = structure[1, :, 1] = True
    return {t: binary_erosion(m > level, structure=structure) for t, m in maps.items()}


@functools.lru_cache(maxsize=None)
def _measured(anatomy: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pure-tissue masks of the anatomy's test subject, and |image| per contrast."""
    maps = TISSUE_MAPS[anatomy](*SUBJECT[anatomy])
    images = {
        c: np.abs(PHANTOMS[anatomy](*SUBJECT[anatomy], contrast=c))
        for c in CONTRASTS[anatomy]
    }
    return _cores(maps), images


def _means(anatomy: str, contrast: str) -> dict[str, float]:
    cores, images = _measured(anatomy)
    return {
        t: float(images[contrast][m].mean()) for t, m in cores.items() if m.sum() >= MIN_PIXELS
    }


def test_tables_cover_every_tissue_of_every_contrast():
    assert sorted(CONTRASTS) == sorted(PHANTOMS) == sorted(TISSUES) == sorted(TISSUE_MAPS)
    names = [c for a in CONTRASTS for c in CONTRASTS[a]]
    assert len(names) == len(set(names)) == len(INTENSITIES)
    assert set(CONTRASTS["brain"]) == {"AXT1", "AXT1POST", "AXT2", "AXFLAIR"}
    assert set(CONTRASTS["knee"]) == {"CORPD_FBK", "CORPDFS_FBK"}
    for anatomy, contrasts in CONTRASTS.items():
        assert DEFAULT_CONTRAST[anatomy] in contrasts
        for contrast in contrasts:
            table = INTENSITIES[contrast]
            assert sorted(table) == sorted(TISSUES[anatomy])
            assert all(0.0 <= v <= 1.0 for v in table.values())
    assert set(ORDER) == set(INTENSITIES)


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_tissue_intensities_rank_as_in_clinical_images(anatomy, contrast):
    means = _means(anatomy, contrast)
    for bright, dark in ORDER[contrast]:
        assert bright in means and dark in means, (
            f"fewer than {MIN_PIXELS} pure {bright} or {dark} pixels"
        )
        assert means[bright] > means[dark], (
            f"{contrast}: {bright} {means[bright]:.3f} <= {dark} {means[dark]:.3f}"
        )


@pytest.mark.parametrize("anatomy,contrast", ALL_CONTRASTS)
def test_tissue_maps_label_the_painted_pixels(anatomy, contrast):
    # Each untextured tissue's mean magnitude is its table value, up to the
    # shading (a few per cent) and the blur at thin structures.
    means = _means(anatomy, contrast)
    for tissue in UNTEXTURED[anatomy]:
        if tissue not in means:
            continue
        expected = INTENSITIES[contrast][tissue]
        assert means[tissue] == pytest.approx(expected, rel=0.15, abs=0.02), tissue
    assert len(set(means) & set(UNTEXTURED[anatomy])) >= 4


@pytest.mark.parametrize("anatomy", sorted(TISSUE_MAPS))
def test_tissue_maps_are_fractions_of_the_subject(anatomy):
    maps = TISSUE_MAPS[anatomy](2, 64, 3)
    assert sorted(maps) == sorted(TISSUES[anatomy])
    total = np.zeros((2, 64, 64), np.float32)
    for tissue, m in maps.items():
        assert m.shape == (2, 64, 64) and m.dtype == np.float32, tissue
        assert m.min() >= 0.0 and m.max() <= 1.0, tissue
        total += m
    assert total.max() <= 1.0 + 1e-5
    # Background (two pixels away from any tissue: the magnitude is blurred)
    # is black; most of the anatomy is pure tissue.
    mag = np.abs(PHANTOMS[anatomy](2, 64, 3))
    tissue = binary_dilation(total > 0, iterations=2, structure=np.ones((1, 3, 3)))
    assert (~tissue).mean() > 0.1 and mag[~tissue].max() < 1e-3
    assert (total > 0.99).mean() > 0.3
    # Deterministic, and another seed is another subject.
    again = TISSUE_MAPS[anatomy](2, 64, 3)
    other = TISSUE_MAPS[anatomy](2, 64, 4)
    for tissue in maps:
        np.testing.assert_array_equal(maps[tissue], again[tissue])
    assert any(np.abs(maps[t] - other[t]).mean() > 0.01 for t in maps)


@pytest.mark.parametrize("anatomy", sorted(CONTRASTS))
def test_same_seed_same_subject_in_every_contrast(anatomy):
    """Only the intensities change: within each pure tissue, the magnitudes of
    two contrasts differ by the ratio of their table values, pixel by pixel (so
    shapes, textures and shading are the same), and the phase is the same."""
    shape = (2, 192, 5)
    maps = TISSUE_MAPS[anatomy](*shape)
    # Pure to 1e-4: a trace of a bright tissue would shift a dark one's ratio.
    cores = _cores(maps, full=True, level=0.9999)
    default = DEFAULT_CONTRAST[anatomy]
    ref = PHANTOMS[anatomy](*shape, contrast=default)
    inside = np.abs(ref) > 0.02
    for contrast in CONTRASTS[anatomy]:
        vol = PHANTOMS[anatomy](*shape, contrast=contrast)
        both = inside & (np.abs(vol) > 0.02)
        np.testing.assert_allclose(
            np.angle(vol[both] * np.conj(ref[both])), 0.0, atol=1e-4
        )
        checked = 0
        for tissue, core in cores.items():
            a, b = INTENSITIES[contrast][tissue], INTENSITIES[default][tissue]
            # Clipped pixels and dark tissues (where the blur's trace of a
            # bright neighbour dominates) say nothing about the ratio.
            use = core & (np.abs(vol) < 0.99) & (np.abs(ref) < 0.99)
            if min(a, b) < 0.1 or use.sum() < MIN_PIXELS:
                continue
            ratio = np.abs(vol[use]) / np.abs(ref[use]) / (a / b)
            assert np.abs(ratio - 1.0).max() < 0.03, (contrast, tissue)
            checked += 1
        assert checked >= 2, contrast


def test_post_contrast_changes_only_enhancing_tissues():
    shape = (3, 128, 9)
    maps = brain_tissue_maps(*shape)
    enhancing = sum(maps[t] for t in ("lesion", "vessel", "choroid_plexus")) > 0
    # Two pixels' margin: the blur spreads each structure a little.
    near = binary_erosion(~enhancing, iterations=2, structure=np.ones((1, 3, 3)))
    t1 = brain_slices(*shape, contrast="AXT1")
    post = brain_slices(*shape, contrast="AXT1POST")
    np.testing.assert_allclose(np.abs(post[near]), np.abs(t1[near]), atol=1e-5)
    assert (np.abs(post) - np.abs(t1))[~near].max() > 0.3


@pytest.mark.parametrize(
    "make,anatomy,contrast,other",
    [
        (brain_slices, "brain", "CORPD_FBK", "knee"),
        (brain_slices, "brain", "CORPDFS_FBK", "knee"),
        (knee_slices, "knee", "AXT2", "brain"),
        (knee_slices, "knee", "AXFLAIR", "brain"),
        (brain_slices, "brain", "T2", None),
        (brain_slices, "brain", "axt2", None),
        (knee_slices, "knee", "PD", None),
        (knee_slices, "knee", None, None),
    ],
)
def test_bad_contrast_names_the_value_and_the_valid_ones(make, anatomy, contrast, other):
    with pytest.raises(ValueError) as err:
        make(2, 32, 1, contrast=contrast)
    message = str(err.value)
    assert repr(contrast) in message
    assert all(valid in message for valid in CONTRASTS[anatomy])
    if other is not None:
        assert f"a {other} contrast" in message
    with pytest.raises(ValueError, match="unknown anatomy 'liver'"):
        check_contrast("liver", "AXT2")
    assert check_contrast(anatomy, DEFAULT_CONTRAST[anatomy]) == DEFAULT_CONTRAST[anatomy]


@pytest.mark.parametrize("anatomy", ["brain", "knee"])
def test_an_anatomys_tissue_maps_cover_its_phantom_and_nothing_else(anatomy):
    """The maps of an anatomy are fractions in [0, 1] summing to at most 1, and they lie where its phantom's
    magnitude is: bright inside the tissue, dark where no tissue is."""
    maps = TISSUE_MAPS[anatomy](2, 48, 5)
    assert set(maps) == set(TISSUES[anatomy])
    total = sum(maps.values())
    assert all(0 <= m.min() and m.max() <= 1 for m in maps.values()) and total.max() <= 1 + 1e-5
    magnitude = np.abs(PHANTOMS[anatomy](2, 48, 5))
    assert magnitude[total > 0.9].mean() > 5 * magnitude[total == 0].mean()
