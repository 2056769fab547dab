"""PGA: projected gradient ascent around the retain-site reference model (Halimi et al. 2022).

The reference ``w_ref`` is the average of the other sites' models in the last
FedAvg round, ``(N w_global - n_f w_f) / (N - n_f)``, which the server can form
from the updates it received. The forget site ascends its loss while the weights
are kept inside the L2 ball of radius ``radius_fraction * ||w_ref - w_random||``
around ``w_ref``; retain fine-tuning follows.

Local form (``local_steps = k > 1``): the server sends ``w_ref`` and the radius with each
ascent round, and the forget site projects into the ball after each of its k ascent
steps, so every local iterate, and the round's result, stays inside it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedforget.unlearning.bad_teacher import random_twin
from fedforget.unlearning.base import (
    FORGET,
    AscentThenRepair,
    MethodState,
    Phase,
    RoundInputs,
    Tensors,
    trainable,
)
from fedforget.unlearning.ga import negated


def reference_model(global_state: Tensors, forget_state: Tensors, total_examples: int, forget_examples: int) -> Tensors:
    """The FedAvg average without the forget site, recovered from the global and its update."""
    if not 0 < forget_examples < total_examples:
        raise ValueError(f"need 0 < forget examples ({forget_examples}) < total examples ({total_examples})")
    rest = total_examples - forget_examples
    return {k: (total_examples * global_state[k].float() - forget_examples * forget_state[k].float()) / rest
            for k in global_state}


def project_to_ball(model: nn.Module, centre: Tensors, radius: float) -> None:
    params = trainable(model)
    distance = torch.sqrt(sum(torch.sum((p - centre[k].to(p.device)) ** 2) for k, p in params.items()))
    if float(distance) > radius:
        scale = radius / float(distance)
        for k, p in params.items():
            c = centre[k].to(p.device, p.dtype)
            p.copy_(c + (p - c) * scale)


class PGA(AscentThenRepair):
    name = "pga"
    needs_reference = True
    ascent_name = "projected_ascent"
    ascent_roles = (FORGET,)

    @property
    def share(self) -> float:
        return self.cfg.pga.ascent_share

    def ascent_direction(self, grads: Mapping[str, Tensors]) -> Tensors:
        return negated(grads[FORGET])

    def radius(self, model: nn.Module, state: MethodState) -> float:
        """``radius_fraction * ||w_ref - w_random||`` (computed once per run)."""
        if state.reference is None:
            raise ValueError("pga needs the retain-site reference model (the last round's site updates)")
        if "radius" not in state.extras:
            random_params = dict(random_twin(model, seed=12345).named_parameters())
            gap = torch.sqrt(sum(torch.sum((random_params[k].float().cpu() - state.reference[k].float().cpu()) ** 2)
                                 for k in trainable(model)))
            state.extras["radius"] = self.cfg.pga.radius_fraction * float(gap)
        return state.extras["radius"]

    def after_step(self, phase: Phase, model: nn.Module, state: MethodState) -> None:
        if phase.name == self.ascent_name:
            project_to_ball(model, state.reference, self.radius(model, state))

    def round_input_names(self, phase: Phase) -> tuple[str, ...]:
        return ("centre",) if phase.name == self.ascent_name else ()

    def round_inputs(self, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        if phase.name != self.ascent_name:
            return RoundInputs()
        radius = self.radius(model, state)
        centre = {k: state.reference[k] for k in trainable(model)}
        return RoundInputs(tensors={"centre": centre}, values={"radius": radius})

    def after_local_step(self, role: str, phase: Phase, model: nn.Module, inputs: RoundInputs) -> None:
        if role == FORGET and phase.name == self.ascent_name:
            project_to_ball(model, inputs.tensors["centre"], inputs.values["radius"])
