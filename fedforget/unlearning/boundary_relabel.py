"""Boundary relabelling with perturbed sign gradients (paper 003), regression form.

Inner loop, at the forget site, per forget batch: starting from a uniform random point of the
ball (the paper's perturbed FGSM), ``inner_steps`` sign-gradient steps of size
``2.5 * radius / inner_steps`` move a perturbation of the *measured* k-space so as to maximise the
original model's reconstruction loss, projected back onto the L-infinity ball after each step.
The radius is relative: ``radius`` times the RMS of the slice's measured k-space samples, per real
and imaginary component, and unmeasured entries stay zero, so the perturbed input is still a
valid undersampled acquisition.

Relabelling: the slice's target becomes the original model's reconstruction of the perturbed
input. Outer loop: the model fine-tunes towards those targets on forget data, plus (weight
``retain_weight``, 0 = none) the ordinary loss on retain data.

What changed from the paper: it searches the nearest point across the original model's decision
boundary and relabels with the class found there. A reconstruction model has no classes or
boundary; the analogue of "the closest wrong answer" is the original model's answer to the
closest input (inside the radius) on which it fails most. The radius sets how wrong that answer
is, hence how far the forget outputs move: it is the trade-off knob. The random start and the
perturbation are drawn from a generator seeded by (seed, batch index), so the Flower-free run
and a site compute the same labels.
"""

from __future__ import annotations

import torch
from torch import nn

from fedforget.data.datasets import Batch
from fedforget.recon.losses import center_crop_pair
from fedforget.unlearning.base import FORGET, GRADIENT, RETAIN, Method, Phase, TermContext, output_of


def measured_scale(batch: Batch) -> torch.Tensor:
    """Each slice's RMS over its measured k-space components, shaped to broadcast over the k-space."""
    sampled = batch.mask.to(batch.masked_kspace.dtype).expand_as(batch.masked_kspace)
    power = (batch.masked_kspace ** 2 * sampled).flatten(1).sum(1) / sampled.flatten(1).sum(1).clamp(min=1)
    return power.sqrt().view(-1, *([1] * (batch.masked_kspace.dim() - 1)))


def boundary_perturbation(original: nn.Module, batch: Batch, loss: nn.Module, radius: float, steps: int,
                          generator: torch.Generator) -> torch.Tensor:
    """A perturbation of the measured k-space, inside the ball, that raises ``original``'s loss on ``batch``."""
    sampled = batch.mask.to(batch.masked_kspace.dtype)
    bound = radius * measured_scale(batch)
    start = torch.rand(batch.masked_kspace.shape, generator=generator).to(batch.masked_kspace.device)
    delta = (2 * start - 1) * bound * sampled
    step = 2.5 * radius / max(steps, 1) * measured_scale(batch)
    for _ in range(steps):
        delta.requires_grad_(True)
        perturbed = batch._replace(masked_kspace=batch.masked_kspace + delta)
        output = output_of(original, perturbed).float()
        error = loss(output, center_crop_pair(output, batch.target)[1], batch.max_value)
        (grad,) = torch.autograd.grad(error, delta)
        with torch.no_grad():
            delta = torch.maximum(torch.minimum(delta + step * grad.sign(), bound), -bound) * sampled
    return delta.detach()


def boundary_targets(original: nn.Module, batch: Batch, loss: nn.Module, radius: float, steps: int, seed: int,
                     index: int) -> torch.Tensor:
    """The relabelled targets: ``original``'s reconstruction of each slice's boundary input."""
    generator = torch.Generator().manual_seed(seed * 104729 + index)
    delta = boundary_perturbation(original, batch, loss, radius, steps, generator)
    with torch.no_grad():
        return output_of(original, batch._replace(masked_kspace=batch.masked_kspace + delta)).float()


class BoundaryRelabel(Method):
    name = "boundary_relabel"
    tradeoff_knob = "boundary_relabel.radius"
    needs_original = frozenset({FORGET})

    def phases(self, budget: int) -> list[Phase]:
        roles = (FORGET, RETAIN) if self.cfg.boundary_relabel.retain_weight > 0 else (FORGET,)
        return [Phase("relabelled", GRADIENT, budget, roles)]

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
        settings = self.cfg.boundary_relabel
        if role == RETAIN:
            return settings.retain_weight * super().term(role, phase, model, batch, index, ctx)
        if ctx.original is None:
            raise ValueError("boundary_relabel needs the original model at the forget party")
        original = ctx.original.to(batch.target.device)
        targets = boundary_targets(original, batch, ctx.loss, settings.radius, settings.inner_steps, ctx.seed, index)
        output = output_of(model, batch).float()
        return ctx.loss(output, targets, batch.max_value)
