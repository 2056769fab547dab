"""E2E-VarNet model presets (fastMRI's ``VarNet``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fastmri.models import VarNet

from fedforget.configs.schema import MODEL_PRESETS

__all__ = [
    "VarNetShape",
    "PRESETS",
    "varnet_preset",
    "build_varnet",
    "count_parameters",
]


@dataclass(frozen=True)
class VarNetShape:
    """Architecture hyper-parameters of an E2E-VarNet.

    Attributes:
        num_cascades: Number of unrolled cascades.
        chans: Top-level channels of each cascade's U-Net.
        pools: Down-sampling levels of each cascade's U-Net.
        sens_chans: Top-level channels of the sensitivity-map U-Net.
        sens_pools: Down-sampling levels of the sensitivity-map U-Net.
    """

    num_cascades: int
    chans: int
    pools: int
    sens_chans: int
    sens_pools: int


PRESETS: dict[str, VarNetShape] = {name: VarNetShape(**shape) for name, shape in MODEL_PRESETS.items()}


def varnet_preset(name: str) -> VarNetShape:
    """Looks up a preset by name.

    Args:
        name: A key of ``PRESETS``.

    Returns:
        The preset's shape.

    Raises:
        ValueError: If the name is unknown (the message lists the presets).
    """
    if name not in PRESETS:
        raise ValueError(
            f"unknown VarNet preset {name!r}; valid presets: {sorted(PRESETS)}"
        )
    return PRESETS[name]


def build_varnet(shape: VarNetShape) -> VarNet:
    """Builds a freshly initialised E2E-VarNet.

    Any image size works: fastMRI's NormUnet pads its input internally.

    Args:
        shape: Architecture hyper-parameters.

    Returns:
        The model (in training mode, on the CPU).
    """
    return VarNet(
        num_cascades=shape.num_cascades,
        sens_chans=shape.sens_chans,
        sens_pools=shape.sens_pools,
        chans=shape.chans,
        pools=shape.pools,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameter elements of a model (all of them are trainable in VarNet)."""
    return sum(p.numel() for p in model.parameters())
