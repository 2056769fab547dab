"""Reconstruction loss: fastMRI's SSIM loss + L1, batch and per sample."""

from __future__ import annotations

import fastmri
import pytest
import torch
import torch.nn.functional as F

from fedforget.recon.losses import ReconLoss, center_crop_pair


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 24, 24, generator=gen)
    output = target + 0.1 * torch.randn(3, 24, 24, generator=gen)
    max_value = target.amax(dim=(1, 2)).double()  # collated attrs are float64
    return output, target, max_value


@pytest.mark.parametrize("l1_weight", [0.0, 0.5])
def test_matches_fastmri_ssim_loss(batch, l1_weight):
    output, target, max_value = batch
    loss = ReconLoss(l1_weight)(output, target, max_value)
    expected = fastmri.SSIMLoss()(
        output.unsqueeze(1), target.unsqueeze(1), data_range=max_value.float()
    ) + l1_weight * F.l1_loss(output, target)
    assert loss.ndim == 0
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("l1_weight", [0.0, 1e-5, 0.5])
def test_per_sample(batch, l1_weight):
    output, target, max_value = batch
    loss_fn = ReconLoss(l1_weight)
    per = loss_fn.per_sample(output, target, max_value)
    assert per.shape == (3,)
    torch.testing.assert_close(per.mean(), loss_fn(output, target, max_value))
    for i in range(3):
        torch.testing.assert_close(
            per[i], loss_fn(output[i : i + 1], target[i : i + 1], max_value[i : i + 1])
        )
    # A better reconstruction has a lower loss.
    better = loss_fn.per_sample(target + 0.01 * (output - target), target, max_value)
    assert (better < per).all()


def test_gradients_flow(batch):
    output, target, max_value = batch
    output = output.clone().requires_grad_(True)
    ReconLoss(1e-5)(output, target, max_value).backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()


def test_shape_checks(batch):
    output, target, max_value = batch
    with pytest.raises(ValueError, match="center_crop_pair"):
        ReconLoss()(output[:, :20], target, max_value)
    with pytest.raises(ValueError, match="max_value"):
        ReconLoss()(output, target, max_value[:2])
    with pytest.raises(ValueError):
        ReconLoss(-1.0)


def test_center_crop_pair():
    output = torch.arange(2 * 10 * 8, dtype=torch.float32).reshape(2, 10, 8)
    target = torch.zeros(2, 6, 12)
    a, b = center_crop_pair(output, target)
    assert a.shape == b.shape == (2, 6, 8)
    torch.testing.assert_close(a, output[:, 2:8, :])
