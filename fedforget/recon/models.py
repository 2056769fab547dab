"""E2E-VarNet model presets (fastMRI's ``VarNet``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fastmri.models import VarNet
from fastmri.models.varnet import VarNetBlock

from fedforget.configs.schema import MODEL_PRESETS

__all__ = [
    "VarNetShape",
    "PRESETS",
    "varnet_preset",
    "build_varnet",
    "count_parameters",
    "reinitialise",
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


def reinitialise(model: torch.nn.Module) -> None:
    """Gives every parameter fresh initial values, drawn from torch's global generator.

    Modules with ``reset_parameters`` (convolutions) redraw theirs; fastMRI's
    ``VarNetBlock.dc_weight`` has no such method and is set to its constructor
    value, 1.

    Args:
        model: A VarNet (or any model built from such modules), changed in place.

    Raises:
        ValueError: If a parameter is covered by neither rule (the message names it),
            so a new architecture cannot silently keep trained weights.
    """
    reset: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
            if isinstance(module, VarNetBlock):
                module.dc_weight.fill_(1.0)
                reset.add(id(module.dc_weight))
    kept = [name for name, p in model.named_parameters() if id(p) not in reset]
    if kept:
        raise ValueError(f"cannot re-initialise parameters {kept}: their modules have no reset_parameters")
