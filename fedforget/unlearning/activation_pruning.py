"""Activation pruning (paper 004, sec. 3.3), per channel: prune what fires most on the forget data,
then fine-tune the pruned model on retain data with the pruning fixed.

1. The forget site forwards its slices through the model and averages each activation map (the
   output of every LeakyReLU in the cascades' U-Nets) over its batches and pixels: one mean per
   channel. In each layer it prunes the channels whose mean lies above the layer's ``q``-th
   quantile. ``q`` runs linearly from ``q_early`` at full resolution to ``q_deep`` at the U-Net's
   bottleneck: the paper keeps early, generic layers nearly whole and prunes deeper, more
   sample-specific ones harder.
2. A channel is pruned by zeroing the output-channel rows of the convolution that feeds it. In
   fastMRI's U-Net every such convolution is followed by an InstanceNorm without affine terms and a
   LeakyReLU, and both map an all-zero channel to exactly zero, so the activation is zero for every
   input: the weight mask *is* the activation mask.
3. The retain party fine-tunes; the server masks every update, so pruned rows stay zero.

What changed from the paper: its masks are spatial (C x H x W). Here they are per channel, because
a spatial mask computed on forget images is an image-shaped summary of forget anatomy and would
travel to the server; a per-channel mask, sent as a parameter-shaped 0/1 array, says only which
filters fire most. The coil-sensitivity network is not pruned: it estimates coil physics that
every site shares. The trade-off knob is ``q_deep``: lower prunes more (more forgetting, more repair).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedforget.data.batches import BatchSource
from fedforget.unlearning.base import (
    FORGET,
    GRADIENT,
    IMPORTANCE,
    REPAIR,
    RETAIN,
    Method,
    MethodState,
    Phase,
    RoundInputs,
    Tensors,
    TermContext,
    output_of,
    trainable,
)

MASK = "mask"


@dataclass(frozen=True)
class PrunableLayer:
    """One activation map: the LeakyReLU that produces it, the convolution feeding it, and its U-Net level."""

    activation: nn.Module
    weight: str  # the convolution's weight, by parameter name
    channel_dim: int  # its output-channel dimension (0 for Conv2d, 1 for ConvTranspose2d)
    level: int  # 0 = full resolution .. pools = the bottleneck
    pools: int


def prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """Every conv -> InstanceNorm (no affine) -> LeakyReLU triple in the cascades' U-Nets, in forward order."""
    layers = []
    for prefix, unet in _cascade_unets(model):
        pools = unet.num_pool_layers
        groups = [(f"down_sample_layers.{i}", block, i) for i, block in enumerate(unet.down_sample_layers)]
        groups.append(("conv", unet.conv, pools))
        for j, (transpose, conv) in enumerate(zip(unet.up_transpose_conv, unet.up_conv)):
            groups += [(f"up_transpose_conv.{j}", transpose, pools - 1 - j), (f"up_conv.{j}", conv, pools - 1 - j)]
        for path, block, level in groups:
            layers += _triples(f"{prefix}.{path}", block, level, pools)
    return layers


def _cascade_unets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"{name}.unet", module.unet) for name, module in model.named_modules()
            if name.startswith("cascades.") and hasattr(module, "unet") and hasattr(module.unet, "num_pool_layers")]


def _triples(prefix: str, block: nn.Module, level: int, pools: int) -> list[PrunableLayer]:
    found = []
    for name, seq in block.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (conv_name, conv), (_, norm), (_, act) in zip(children, children[1:], children[2:]):
            if (isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and conv.bias is None
                    and isinstance(norm, nn.InstanceNorm2d) and not norm.affine and isinstance(act, nn.LeakyReLU)):
                where = ".".join(part for part in (prefix, name, conv_name) if part)
                found.append(PrunableLayer(act, f"{where}.weight", 1 if isinstance(conv, nn.ConvTranspose2d) else 0,
                                           level, pools))
    return found


def layer_quantile(layer: PrunableLayer, q_early: float, q_deep: float) -> float:
    """The layer's pruning quantile: ``q_early`` at full resolution, ``q_deep`` at the bottleneck."""
    return q_early + (q_deep - q_early) * layer.level / max(layer.pools, 1)


@torch.no_grad()
def channel_means(model: nn.Module, layers: list[PrunableLayer], source: BatchSource, batches: int,
                  device: torch.device) -> list[torch.Tensor]:
    """Each layer's activation averaged over ``batches`` batches, their slices and pixels: one value per channel."""
    sums = [torch.zeros(0)] * len(layers)
    counts = [0] * len(layers)

    def recorder(i: int):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            total = output.detach().float().sum(dim=(0, 2, 3))
            sums[i] = total if counts[i] == 0 else sums[i] + total
            counts[i] += output.shape[0] * output.shape[2] * output.shape[3]
        return hook

    handles = [layer.activation.register_forward_hook(recorder(i)) for i, layer in enumerate(layers)]
    model.eval()
    try:
        for k in range(batches):
            output_of(model, source.batch(k).to(device))
    finally:
        for handle in handles:
            handle.remove()
    return [total / count for total, count in zip(sums, counts)]


def pruned_channels(means: torch.Tensor, q: float) -> torch.Tensor:
    """Which channels to prune: those whose mean activation lies above the ``q``-th quantile."""
    return means > torch.quantile(means, q)


def pruning_mask(model: nn.Module, layers: list[PrunableLayer], means: list[torch.Tensor], q_early: float,
                 q_deep: float) -> Tensors:
    """A 0/1 array per trainable parameter: 0 on the output-channel rows that feed pruned channels."""
    mask = {name: torch.ones_like(p) for name, p in trainable(model).items()}
    for layer, layer_means in zip(layers, means):
        pruned = pruned_channels(layer_means, layer_quantile(layer, q_early, q_deep)).to(mask[layer.weight].device)
        shape = [1] * mask[layer.weight].dim()
        shape[layer.channel_dim] = -1
        mask[layer.weight] = mask[layer.weight] * (~pruned).to(mask[layer.weight].dtype).view(shape)
    return mask


def apply_mask(model: nn.Module, mask: Tensors) -> None:
    """Zero the pruned weights in place."""
    for name, p in trainable(model).items():
        p.mul_(mask[name].to(p.device, p.dtype))


class ActivationPruning(Method):
    name = "activation_pruning"
    tradeoff_knob = "activation_pruning.q_deep"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.mask: Tensors | None = None

    def phases(self, budget: int) -> list[Phase]:
        # The pruning pass is forward-only (no optimizer step): the whole budget goes to the repair.
        return [Phase("prune", IMPORTANCE, budget, (FORGET,)), Phase(REPAIR, GRADIENT, budget, (RETAIN,))]

    def importance(self, role: str, model: nn.Module, source: BatchSource, batches: int, ctx: TermContext,
                   device: torch.device) -> Tensors:
        settings = self.cfg.activation_pruning
        layers = prunable_layers(model)
        means = channel_means(model, layers, source, batches, device)
        return pruning_mask(model, layers, means, settings.q_early, settings.q_deep)

    def dampen(self, model: nn.Module, importances: Mapping[str, Tensors]) -> int:
        self.mask = {name: (m > 0.5).to(torch.float32) for name, m in importances[FORGET].items()}
        apply_mask(model, self.mask)
        return int(sum(int((m == 0).sum()) for m in self.mask.values()))

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        return self._masked(grads[RETAIN])

    def after_step(self, phase: Phase, model: nn.Module, state: MethodState) -> None:
        apply_mask(model, self._require_mask())

    def round_input_names(self, phase: Phase) -> tuple[str, ...]:
        return (MASK,)

    def round_inputs(self, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        return RoundInputs(tensors={MASK: self._require_mask()})

    def local_gradient(self, role: str, phase: Phase, grads: Tensors, inputs: RoundInputs) -> Tensors:
        mask = inputs.tensors[MASK]
        return {name: g * mask[name].to(g.device, g.dtype) for name, g in grads.items()}

    def after_local_step(self, role: str, phase: Phase, model: nn.Module, inputs: RoundInputs) -> None:
        apply_mask(model, inputs.tensors[MASK])

    def _masked(self, grads: Tensors) -> Tensors:
        mask = self._require_mask()
        return {name: g * mask[name].to(g.device, g.dtype) for name, g in grads.items()}

    def _require_mask(self) -> Tensors:
        if self.mask is None:
            raise RuntimeError("activation_pruning: the repair phase ran before the forget site's pruning mask")
        return self.mask
