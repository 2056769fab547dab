"""VarNet presets: parameter counts and a forward pass of the CPU demo model."""

from __future__ import annotations

import pytest
import torch
from fastmri.data.transforms import apply_mask
from fastmri.models import VarNet

from fedforget.recon.masks import make_mask_func
from fedforget.recon.models import (
    PRESETS,
    VarNetShape,
    build_varnet,
    count_parameters,
    varnet_preset,
)


def test_presets():
    assert PRESETS["tiny"] == VarNetShape(4, 8, 2, 4, 2)
    assert PRESETS["small"] == VarNetShape(6, 12, 3, 6, 3)
    assert PRESETS["paper"] == VarNetShape(12, 18, 4, 8, 4)
    assert varnet_preset("tiny") is PRESETS["tiny"]
    with pytest.raises(ValueError, match="'huge'.*paper"):
        varnet_preset("huge")


def test_paper_parameter_count():
    model = build_varnet(PRESETS["paper"])
    assert isinstance(model, VarNet)
    assert count_parameters(model) == 29_936_966


def test_tiny_forward():
    torch.manual_seed(0)
    model = build_varnet(PRESETS["tiny"])
    assert count_parameters(model) == 124_222
    kspace = torch.randn(1, 4, 64, 64, 2)
    masked, mask, num_low = apply_mask(
        kspace, make_mask_func("equispaced_fraction", 8, 0.04), seed=(1,)
    )
    with torch.no_grad():
        out = model(masked, mask.bool(), num_low)
    assert out.shape == (1, 64, 64)
    assert torch.isfinite(out).all()
