"""Mask helpers: same masks as fastMRI, clear errors on bad arguments."""

from __future__ import annotations

import pytest
from fastmri.data.subsample import (
    EquispacedMaskFractionFunc,
    EquiSpacedMaskFunc,
    RandomMaskFunc,
)

from fedforget.recon.masks import MASK_TYPES, make_mask_func


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_every_listed_mask_type_samples_its_acceleration_and_the_centre(mask_type):
    """Each name the config accepts builds a mask at 4x with the centre fully sampled."""
    from fedforget.configs.schema import MASK_TYPES as CONFIG_MASK_TYPES

    assert mask_type in CONFIG_MASK_TYPES  # a type the schema would refuse could never be used
    mask, low = make_mask_func(mask_type, 4, 0.08)((1, 64, 128, 2), seed=(3,))
    columns = mask.reshape(-1).numpy().astype(bool)
    assert 0.18 <= columns.mean() <= 0.34  # about 1 / 4 of the columns
    centre = slice(64 - low // 2, 64 + (low + 1) // 2)
    assert low >= round(128 * 0.08) - 1 and columns[centre].all()


@pytest.mark.parametrize(
    "mask_type,cls",
    [
        ("equispaced_fraction", EquispacedMaskFractionFunc),
        ("equispaced", EquiSpacedMaskFunc),
        ("random", RandomMaskFunc),
    ],
)
def test_classes(mask_type, cls):
    func = make_mask_func(mask_type, 4, 0.08)
    assert type(func) is cls
    assert list(func.accelerations) == [4] and list(func.center_fractions) == [0.08]


@pytest.mark.parametrize("cols", [64, 368])
def test_equispaced_fraction_8x_columns_match_fastmri(cols):
    shape = (1, 640, cols, 2)
    for seed in [(1, 2, 3), (7,), (42, 0)]:
        ours, ours_low = make_mask_func("equispaced_fraction", 8, 0.04)(
            shape, seed=seed
        )
        ref, ref_low = EquispacedMaskFractionFunc([0.04], [8])(shape, seed=seed)
        assert ours.shape == (1, 1, cols, 1)
        assert ours_low == ref_low == round(cols * 0.04)
        assert int(ours.sum()) == int(ref.sum())
        assert (ours == ref).all()
        # About cols / 8 columns in total.
        assert abs(int(ours.sum()) - cols / 8) <= 3


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("spiral", 8, 0.04), "'spiral'"),
        (("spiral", 8, 0.04), "equispaced_fraction"),
        (("random", 0, 0.04), "got 0"),
        (("random", 2.5, 0.04), "got 2.5"),
        (("random", 8, 0.0), "got 0.0"),
        (("equispaced", 8, 1.5), "got 1.5"),
        (("equispaced_fraction", 8, 0.125), "center_fraction 0.125"),
    ],
)
def test_bad_arguments(args, fragment):
    with pytest.raises(ValueError) as err:
        make_mask_func(*args)
    assert fragment in str(err.value)
