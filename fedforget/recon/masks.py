"""k-space undersampling masks: a validated front-end to fastMRI's mask functions."""

from __future__ import annotations

from fastmri.data.subsample import (
    EquispacedMaskFractionFunc,
    EquiSpacedMaskFunc,
    MaskFunc,
    RandomMaskFunc,
)

# The mask types are the config's (data.mask_type); "equispaced_fraction" is what the fastMRI
# multicoil data and the papers' 8x / 0.04 VarNet setting use; the other two are fastMRI's alternatives.
from fedforget.configs.schema import EQUISPACED, EQUISPACED_FRACTION, MASK_TYPES, RANDOM

__all__ = ["MASK_TYPES", "make_mask_func"]

_MASK_CLASSES: dict[str, type[MaskFunc]] = {
    EQUISPACED_FRACTION: EquispacedMaskFractionFunc,
    EQUISPACED: EquiSpacedMaskFunc,
    RANDOM: RandomMaskFunc,
}


def make_mask_func(
    mask_type: str, acceleration: int, center_fraction: float
) -> MaskFunc:
    """Builds a fastMRI column mask function for one acceleration.

    Args:
        mask_type: One of ``MASK_TYPES``.
        acceleration: Undersampling factor, an integer >= 1.
        center_fraction: Fraction of fully-sampled central columns, in (0, 1).
            For "equispaced_fraction" and "random" it must also be below
            ``1 / acceleration``: those masks spread the remaining budget of
            ``cols / acceleration`` columns outside the centre, and a centre
            that already uses it divides by zero (equispaced_fraction) or
            leaves nothing to sample (random).

    Returns:
        A ``fastmri.data.subsample.MaskFunc``.

    Raises:
        ValueError: Naming the bad value and what is valid.
    """
    if mask_type not in _MASK_CLASSES:
        raise ValueError(
            f"unknown mask_type {mask_type!r}; valid mask types: {list(MASK_TYPES)}"
        )
    if (
        isinstance(acceleration, bool)
        or int(acceleration) != acceleration
        or acceleration < 1
    ):
        raise ValueError(f"acceleration must be an integer >= 1, got {acceleration!r}")
    if not 0.0 < center_fraction < 1.0:
        raise ValueError(
            f"center_fraction must be in the open interval (0, 1), got {center_fraction!r}"
        )
    if (
        mask_type in (EQUISPACED_FRACTION, RANDOM)
        and center_fraction * acceleration >= 1.0
    ):
        raise ValueError(
            f"center_fraction {center_fraction!r} must be below 1 / acceleration = "
            f"{1.0 / acceleration:.4g} for mask type {mask_type!r}"
        )
    return _MASK_CLASSES[mask_type]([float(center_fraction)], [int(acceleration)])
