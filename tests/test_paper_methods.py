"""The methods of papers 003 and 004, Flower-free: activation pruning, soft relabelling, boundary relabelling."""

from __future__ import annotations

import copy

import numpy as np
import torch

from fedforget.configs import load_experiment
from fedforget.learning.evaluation import zero_filled
from fedforget.recon.losses import center_crop_pair
from fedforget.unlearning import unlearn
from fedforget.unlearning.activation_pruning import (
    apply_mask,
    channel_means,
    layer_quantile,
    prunable_layers,
    pruning_mask,
)
from fedforget.unlearning.base import FORGET, RETAIN, output_of
from fedforget.unlearning.boundary_relabel import boundary_perturbation, boundary_targets, measured_scale
from fedforget.unlearning.soft_relabel import RELABELLED, TEACHING, SoftRelabel, soft_targets

CPU = torch.device("cpu")


def _activations(model: torch.nn.Module, layers: list, batch) -> list[torch.Tensor]:
    """Every prunable layer's activation map on ``batch``."""
    seen: list[torch.Tensor] = [torch.zeros(0)] * len(layers)
    hooks = [layer.activation.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out.clone()))
             for i, layer in enumerate(layers)]
    with torch.no_grad():
        output_of(model.eval(), batch)
    for hook in hooks:
        hook.remove()
    return seen


def test_prunable_layers_cover_every_cascade_unet_activation(setting: dict) -> None:
    model = setting["model"]
    layers = prunable_layers(model)
    cascades = len(model.cascades)
    pools = layers[0].pools
    # per U-Net: 2 per down block and the bottleneck, 1 per transpose block, 2 per up block
    assert len(layers) == cascades * (2 * (pools + 1) + 3 * pools)
    assert all(not layer.weight.startswith("sens_net") for layer in layers)
    assert {layer.level for layer in layers} == set(range(pools + 1))
    assert layer_quantile(layers[0], 0.99, 0.9) == 0.99
    assert np.isclose(layer_quantile(next(x for x in layers if x.level == pools), 0.99, 0.9), 0.9)


def test_pruning_zeroes_exactly_the_activations_above_the_percentile(setting: dict) -> None:
    model = copy.deepcopy(setting["model"])
    layers = prunable_layers(model)
    batch = setting["forget"].batch(0)
    before = _activations(model, layers, batch)
    means = channel_means(model, layers, setting["forget"], 1, CPU)
    q_early, q_deep = 0.9, 0.6
    mask = pruning_mask(model, layers, means, q_early, q_deep)
    with torch.no_grad():
        apply_mask(model, mask)
    after = _activations(model, layers, batch)
    for i, layer in enumerate(layers):
        expected_means = before[i].double().mean(dim=(0, 2, 3)).numpy()
        assert np.allclose(means[i].numpy(), expected_means, rtol=1e-5, atol=1e-6)
        pruned = expected_means > np.quantile(expected_means, layer_quantile(layer, q_early, q_deep))
        assert pruned.any() and not pruned.all()
        assert torch.equal(after[i][:, torch.from_numpy(pruned)], torch.zeros_like(after[i][:, torch.from_numpy(pruned)]))
        assert (after[i][:, torch.from_numpy(~pruned)].abs().amax(dim=(0, 2, 3)) > 0).all()
    # the first layer sees the unpruned input: its kept channels are untouched
    kept = torch.from_numpy(~(means[0].numpy() > np.quantile(means[0].numpy(), q_early)))
    assert torch.allclose(after[0][:, kept], before[0][:, kept])


def test_pruned_weights_stay_zero_through_the_repair(setting: dict) -> None:
    cfg = load_experiment("smoke", ["unlearning.activation_pruning.q_deep=0.5"])
    for local_steps in (1, 2):
        model = copy.deepcopy(setting["model"])
        cfg.unlearning.local_steps = local_steps
        means = channel_means(model, prunable_layers(model), setting["forget"], 4, CPU)
        mask = pruning_mask(model, prunable_layers(model), means, cfg.unlearning.activation_pruning.q_early,
                            cfg.unlearning.activation_pruning.q_deep)
        report = unlearn("activation_pruning", model, setting["forget"], setting["retain"], cfg.unlearning, 4,
                         cfg.seed, setting["loss"])
        assert report.dampened_elements == sum(int((m == 0).sum()) for m in mask.values()) > 0
        params = dict(model.named_parameters())
        for name, m in mask.items():
            assert torch.equal(params[name][m == 0], torch.zeros_like(params[name][m == 0])), (local_steps, name)
        moved = [name for name, m in mask.items()
                 if not torch.equal(params[name][m == 1], setting["model"].state_dict()[name][m == 1])]
        assert moved, "the repair fine-tuned nothing"
        assert report.evaluations[RETAIN] == 4


def test_boundary_perturbation_stays_in_its_ball_and_beats_a_random_one(setting: dict) -> None:
    original = copy.deepcopy(setting["model"]).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    batch = setting["forget"].batch(0)
    radius = 0.3
    delta = boundary_perturbation(original, batch, setting["loss"], radius, 3, torch.Generator().manual_seed(0))
    bound = radius * measured_scale(batch)
    assert (delta.abs() <= bound * (1 + 1e-6)).all()
    assert torch.equal(delta * (~batch.mask), torch.zeros_like(delta)), "unmeasured k-space stays unmeasured"

    def error(perturbation: torch.Tensor) -> float:
        output = output_of(original, batch._replace(masked_kspace=batch.masked_kspace + perturbation))
        return float(setting["loss"](output.float(), center_crop_pair(output, batch.target)[1], batch.max_value))

    signs = torch.randint(0, 2, delta.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    random = signs * bound * batch.mask  # a corner of the same ball: the largest random perturbation
    assert error(delta) > error(random) > error(torch.zeros_like(delta))


def test_boundary_targets_are_reproducible_per_batch(setting: dict) -> None:
    original = copy.deepcopy(setting["model"]).eval()
    batch = setting["forget"].batch(1)
    first = boundary_targets(original, batch, setting["loss"], 0.2, 2, seed=3, index=1)
    assert torch.equal(first, boundary_targets(original, batch, setting["loss"], 0.2, 2, seed=3, index=1))
    assert not torch.equal(first, boundary_targets(original, batch, setting["loss"], 0.2, 2, seed=3, index=2))


def test_soft_targets_weigh_the_teacher_by_its_fit() -> None:
    target = torch.rand(3, 8, 8) + 0.5
    teacher = target.clone()
    teacher[1] += 0.3
    teacher[2] = 0.0
    empty = torch.full_like(target, 0.25)
    labels = soft_targets(teacher, empty, target, temperature=0.1)
    error = ((teacher - target) ** 2).flatten(1).sum(1) / (target ** 2).flatten(1).sum(1)
    a = torch.exp(-error / 0.1).view(-1, 1, 1)
    assert torch.allclose(labels, a * teacher + (1 - a) * empty)
    assert torch.equal(labels[0], teacher[0]), "a perfect teacher keeps its own answer"
    assert torch.allclose(labels[2], empty[2], atol=1e-3), "a teacher that knows nothing gives way to zero-filled"


def test_soft_relabel_teacher_is_the_model_after_the_retain_phase(setting: dict) -> None:
    cfg = load_experiment("smoke")
    method = SoftRelabel(cfg.unlearning)
    phases = method.phases(8)
    assert [(p.name, p.roles) for p in phases] == [(TEACHING, (RETAIN,)), (RELABELLED, (FORGET, RETAIN))]
    assert method.step_input_names(FORGET, phases[0]) == () and method.step_input_names(RETAIN, phases[1]) == ()
    model = copy.deepcopy(setting["model"])
    teacher = method.step_inputs(FORGET, phases[1], model, None).tensors["teacher"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    again = method.step_inputs(FORGET, phases[1], model, None).tensors["teacher"]
    assert all(torch.equal(teacher[k], again[k]) for k in teacher), "the teacher is frozen once relabelling starts"


def test_soft_relabel_pushes_forget_outputs_towards_its_soft_labels(setting: dict) -> None:
    cfg = load_experiment("smoke", ["unlearning.soft_relabel.temperature=0.001", "unlearning.lr=0.003"])
    model = copy.deepcopy(setting["model"])
    batch = setting["forget"].batch(0)
    empty, _ = zero_filled(batch)
    before = float((output_of(model.eval(), batch) - empty).pow(2).mean())
    unlearn("soft_relabel", model, setting["forget"], setting["retain"], cfg.unlearning, 8, cfg.seed,
            setting["loss"])
    with torch.no_grad():
        after = float((output_of(model.eval(), batch) - empty).pow(2).mean())
    assert after < before, "at a small temperature the forget outputs move towards zero-filled"
