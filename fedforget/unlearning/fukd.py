"""FUKD (Wu, Zhu and Mitra 2022): subtract the forget site's history, then repair.

The final global model is the sum of every round's averaged update. FUKD removes the forget site's
share of it, ``w <- w_R - sum_t (n_f,t / n_t) U_f,t`` over every round t in which it trained, which
leaves a skewed model, and repairs that model without the forget site:

- ``repair=rounds``: ``repair_rounds`` FedAvg rounds over the retain sites, continuing their training
  streams after the original's last round, at ``fukd.lr`` (by default the schedule's last rate);
- ``repair=kd``: the paper's knowledge distillation, at the server: the subtracted model (student)
  learns to reproduce the original model's (teacher's) reconstructions of the server's retain data
  (``retain_access=server``; in the paper, unlabelled server data), for ``kd_steps`` Adam steps at the
  unlearning learning rate. This costs no site compute at all.

The forget site is never contacted.
"""

from __future__ import annotations

import torch
from torch import nn

from fedforget.configs.schema import RETAIN, FederationConfig
from fedforget.data.datasets import Batch
from fedforget.learning.checkpoints import State
from fedforget.learning.history import RoundHistory
from fedforget.recon.losses import ReconLoss
from fedforget.unlearning.bad_teacher import matching_loss
from fedforget.unlearning.base import GRADIENT, LocalWorker, Method, Phase, TermContext, frozen_copy, output_of
from fedforget.unlearning.base import run_unlearning as run_steps
from fedforget.unlearning.history_base import HistoryMethod, HistoryRun


def subtract_site(final: State, history: RoundHistory, site: str) -> State:
    """``final - sum_t (n_site,t / n_t) U_site,t`` over the history's rounds (it must keep every round)."""
    if history.every != 1:
        raise ValueError(f"subtracting a site's updates needs every round; this history keeps every "
                         f"{history.every}-th (set federation.history.every=1)")
    result = {k: v.float().clone() for k, v in final.items()}
    for server_round in history.rounds:
        examples = history.examples(server_round)
        if site not in examples:
            continue
        weight = examples[site] / sum(examples.values())
        update = history.entry(server_round).updates[site]
        for k in result:
            result[k] -= weight * update[k].float()
    return {k: v.to(final[k].dtype) for k, v in result.items()}


class _Distillation(Method):
    """The student reproduces the teacher's (the original's) reconstructions of retain data."""

    name = "fukd"
    needs_original = frozenset({RETAIN})

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("distil", GRADIENT, budget, (RETAIN,))]

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
        with torch.no_grad():
            teacher = output_of(ctx.original, batch)
        return matching_loss(output_of(model, batch), teacher, batch.max_value)


class FUKD(HistoryMethod):
    name = "fukd"

    def remove(self, run: HistoryRun) -> State:
        knobs, fed = self.cfg.fukd, run.fed
        state = subtract_site(run.original, run.history, run.forget_site)
        run.advanced(state, 0, {"subtracted": 1.0})
        run.details["repair"] = knobs.repair
        if knobs.repair == "kd":
            return self._distil(run, state)
        first, lr = fed.rounds * fed.local_steps, knobs.lr or fed.round_lr(fed.rounds)
        for index in range(knobs.repair_rounds):
            state = run.fedavg_round(run.retain_sites, state, first + index * fed.local_steps, fed.local_steps, lr)
            run.advanced(state, fed.local_steps)
        return state

    def _distil(self, run: HistoryRun, state: State) -> State:
        if run.server_retain is None:
            raise ValueError("fukd with repair=kd distils on the server's retain data: set "
                             "unlearning.retain_access=server")
        steps = self.cfg.fukd.kd_steps or self.cfg.budget_steps(run.fed.training_steps)
        student, teacher = run.new_model(), run.new_model()
        student.load_state_dict(state)
        teacher.load_state_dict(run.original)
        ctx = TermContext(loss=ReconLoss(run.fed.l1_weight), seed=run.seed, original=frozen_copy(teacher))
        method = _Distillation(self.cfg)
        report = run_steps(method, student, LocalWorker(method, {RETAIN: run.server_retain}, ctx), steps,
                           self.cfg.lr)
        run.details["kd_steps"] = report.steps
        result = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        run.advanced(result, 0)
        return result

    def planned_rounds(self, fed: FederationConfig) -> int:
        return 1 + (self.cfg.fukd.repair_rounds if self.cfg.fukd.repair == "rounds" else 1)

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        rounds = self.cfg.fukd.repair_rounds if self.cfg.fukd.repair == "rounds" else 0
        return [(retain_sites, fed.local_steps)] * rounds
