"""Bad teacher, regression form (Chundawat et al. 2023; paper 001 sec. 3.2).

The student matches a randomly initialised teacher's reconstruction on forget
data and the original model's reconstruction on retain data (the KL of the
classification form becomes a normalised squared error between images).

The teacher is built once per method at the forget party, from the seed alone
(``seed + 1``), so the Flower-free run, a simulated site and every process of a
deployed site use the same one. In local rounds each party takes its k steps on
its own matching term and the server averages the two weight changes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedforget.data.datasets import Batch
from fedforget.recon.models import reinitialise
from fedforget.unlearning.base import FORGET, GRADIENT, RETAIN, Method, Phase, TermContext, frozen_copy, output_of


def random_twin(template: nn.Module, seed: int) -> nn.Module:
    """A frozen copy of ``template``'s architecture with every weight freshly initialised.

    Its weights depend on the seed alone, not on ``template``'s values, so every party
    (and every process of a deployed site) builds the same twin.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = copy.deepcopy(template)
        reinitialise(twin)
    return frozen_copy(twin)


def matching_loss(student: torch.Tensor, teacher: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
    scale = max_value.view(-1, 1, 1)
    return ((student.float() - teacher.float()) / scale).pow(2).mean()


class BadTeacher(Method):
    name = "bad_teacher"
    tradeoff_knob = "bad_teacher.forget_weight"
    needs_original = frozenset({RETAIN})

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("distil", GRADIENT, budget, (FORGET, RETAIN))]

    def prepare(self, role: str, ctx: TermContext, template: nn.Module) -> None:
        if role == FORGET and "teacher" not in ctx.extras:
            ctx.extras["teacher"] = random_twin(template, ctx.seed + 1)

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
        student = output_of(model, batch)
        if role == FORGET:
            with torch.no_grad():
                teacher = output_of(ctx.extras["teacher"].to(batch.target.device), batch)
            return self.cfg.bad_teacher.forget_weight * matching_loss(student, teacher, batch.max_value)
        if ctx.original is None:
            raise ValueError("bad_teacher needs the original model at the retain party")
        with torch.no_grad():
            teacher = output_of(ctx.original, batch)
        return matching_loss(student, teacher, batch.max_value)
