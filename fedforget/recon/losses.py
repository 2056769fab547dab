"""Reconstruction training loss: fastMRI's SSIM loss plus an optional L1 term."""

from __future__ import annotations

import fastmri
import torch
import torch.nn.functional as F
from fastmri.data.transforms import center_crop_to_smallest
from torch import Tensor

__all__ = ["ReconLoss", "center_crop_pair"]


def center_crop_pair(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Centre-crops two images to their common (smallest) size.

    fastMRI's VarNetModule does this before the loss: the VarNet output has
    the k-space size, the target the (smaller) reconstruction size.

    Args:
        output: Tensor (..., H1, W1).
        target: Tensor (..., H2, W2).

    Returns:
        ``(output, target)`` both cropped to ``(min(H1, H2), min(W1, W2))``.
    """
    return center_crop_to_smallest(output, target)


class ReconLoss(torch.nn.Module):
    """``SSIMLoss + l1_weight * L1``, the papers' reconstruction objective.

    The SSIM term is fastMRI's ``SSIMLoss`` (7 x 7 window) with each
    sample's data range set to its volume maximum (the ``max`` attribute).
    The code of "Erase to Enhance" uses ``l1_weight = 1e-5``; fastMRI's own
    VarNet training uses 0.
    """

    def __init__(self, l1_weight: float = 0.0) -> None:
        """
        Args:
            l1_weight: Weight of the mean absolute error term, >= 0.

        Raises:
            ValueError: If ``l1_weight`` is negative.
        """
        super().__init__()
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        self.l1_weight = float(l1_weight)
        self.ssim = fastmri.SSIMLoss()

    @staticmethod
    def _check(output: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        if output.shape != target.shape or output.ndim != 3:
            raise ValueError(
                f"output and target must both be (batch, rows, cols) of the same shape "
                f"(crop with center_crop_pair first); got {tuple(output.shape)} and "
                f"{tuple(target.shape)}"
            )
        max_value = torch.as_tensor(max_value).to(output).reshape(-1)
        if max_value.shape[0] != output.shape[0]:
            raise ValueError(
                f"max_value must hold one value per sample ({output.shape[0]}), "
                f"got shape {tuple(max_value.shape)}"
            )
        return max_value

    def forward(self, output: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        """Batch loss.

        Args:
            output: Reconstructions, (batch, rows, cols).
            target: Ground truth, same shape.
            max_value: Each sample's data range, (batch,).

        Returns:
            Scalar loss: SSIM loss over the batch plus the weighted L1.
        """
        max_value = self._check(output, target, max_value)
        loss = self.ssim(output.unsqueeze(1), target.unsqueeze(1), data_range=max_value)
        if self.l1_weight:
            loss = loss + self.l1_weight * F.l1_loss(output, target)
        return loss

    def per_sample(self, output: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        """Each sample's loss (for membership-inference audits).

        With equal image sizes, ``per_sample(...).mean()`` equals
        ``forward(...)``.

        Args:
            output: Reconstructions, (batch, rows, cols).
            target: Ground truth, same shape.
            max_value: Each sample's data range, (batch,).

        Returns:
            Tensor (batch,) of losses.
        """
        max_value = self._check(output, target, max_value)
        ssim_map = self.ssim(
            output.unsqueeze(1),
            target.unsqueeze(1),
            data_range=max_value,
            reduced=False,
        )
        loss = ssim_map.mean(dim=(1, 2, 3))
        if self.l1_weight:
            loss = loss + self.l1_weight * (output - target).abs().mean(dim=(1, 2))
        return loss
