"""FedRecover (Cao et al., IEEE S&P 2023): retrain from the initial model, estimating most updates.

Recovery replays the R rounds from the initial model over the retain sites. In the first
``warmup_rounds``, every ``correction_period``-th round after them and the last ``final_rounds``, the
retain sites compute their exact updates; in every other round the server estimates each site's
update from the one it stored for that round,

    g^_i,t = g_i,t + H~_i,t (w^_t - w_t),

where ``g = -U`` is the site's pseudo-gradient (its update negated), ``w_t`` the original global
model of round t, ``w^_t`` the recovered one, and ``H~_i,t`` the L-BFGS approximation of the
integrated Hessian built from the site's last ``buffer_size`` exact rounds: pairs
``(w^_t - w_t, g^exact_i,t - g_i,t)``. A site whose buffer is still empty, or (abnormality fixing,
``abnormality_tolerance = a > 0``) whose estimate has an element above ``tau``, the largest over the
stored rounds of the (1 - a) quantile of the stored updates' absolute elements, is asked for its exact
update instead. The forget site is never contacted.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State
from fedforget.learning.plain_loop import aggregate
from fedforget.unlearning.history_base import HistoryMethod, HistoryRun


def flatten(state: State) -> torch.Tensor:
    """A state's tensors as one float64 vector (in the state's key order)."""
    return torch.cat([v.detach().reshape(-1).double() for v in state.values()])


def unflatten(vector: torch.Tensor, like: State) -> State:
    """The inverse of :func:`flatten`, in ``like``'s shapes and float32."""
    result, position = {}, 0
    for key, value in like.items():
        count = value.numel()
        result[key] = vector[position:position + count].reshape(value.shape).float()
        position += count
    return result


def lbfgs_hessian_product(steps: list[torch.Tensor], changes: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """``H v`` for the L-BFGS (compact form, Byrd, Nocedal and Schnabel 1994) Hessian approximation
    built from weight steps ``s_k`` and gradient changes ``y_k`` (oldest first), as FedRecover's Algorithm 1:

        H = sigma I - [sigma S, Y] [[sigma S'S, L], [L', -D]]^-1 [sigma S'; Y'],

    with ``sigma = y_m's_m / s_m's_m`` of the newest pair, ``L`` the strictly lower triangle of ``S'Y``
    and ``D`` its diagonal. ``H s_m = y_m`` holds for the newest pair (the secant equation).
    """
    s = torch.stack(steps, dim=1).double()
    y = torch.stack(changes, dim=1).double()
    v = v.double()
    sy = s.T @ y
    sigma = (y[:, -1] @ s[:, -1]) / (s[:, -1] @ s[:, -1])
    lower = torch.tril(sy, diagonal=-1)
    middle = torch.cat([torch.cat([sigma * (s.T @ s), lower], dim=1),
                        torch.cat([lower.T, -torch.diag(torch.diagonal(sy))], dim=1)], dim=0)
    p = torch.linalg.solve(middle, torch.cat([sigma * (s.T @ v), y.T @ v]))
    return sigma * v - torch.cat([sigma * s, y], dim=1) @ p


def exact_round(server_round: int, rounds: int, warmup: int, period: int, final: int) -> bool:
    """Whether the retain sites compute exact updates in ``server_round`` (warm-up, correction, final tuning)."""
    return server_round <= warmup or (server_round - warmup) % period == 0 or server_round > rounds - final


def abnormality_bound(run: HistoryRun, tolerance: float) -> float:
    """``tau``: the largest over stored rounds and retain sites of the (1 - tolerance) quantile of |U|."""
    tau = 0.0
    for server_round in run.history.rounds:
        entry = run.history.entry(server_round)
        for site in run.retain_sites:
            if site in entry.updates:
                values = flatten(entry.updates[site]).abs()
                rank = max(1, min(values.numel(), math.ceil((1 - tolerance) * values.numel())))
                tau = max(tau, float(values.kthvalue(rank).values))
    return tau


class Recovery:
    """The server's side of FedRecover's rounds: the sites' secant buffers and the abnormality bound."""

    def __init__(self, run: HistoryRun, buffer_size: int, tau: float) -> None:
        self.run = run
        self.tau = tau
        self.buffers: dict[str, deque] = {site: deque(maxlen=buffer_size) for site in run.retain_sites}

    def round(self, server_round: int, state: State, always_exact: bool) -> tuple[State, int]:
        """One recovered round from ``state``: exact updates where needed, estimates elsewhere; returns the new
        global model and how many sites computed exactly."""
        run, fed = self.run, self.run.fed
        entry = run.history.entry(server_round)
        sites = [s for s in run.participants(server_round) if s in entry.updates]
        step = flatten(state) - flatten(entry.start)
        estimates = {} if always_exact else estimated_updates(entry.updates, self.buffers, sites, step, self.tau)
        exact = [s for s in sites if s not in estimates]
        replies = run.local_round(exact, state, (server_round - 1) * fed.local_steps, fed.local_steps,
                                  fed.round_lr(server_round)) if exact else {}
        for site in exact:
            if float(step.norm()) > 0:
                change = flatten(entry.updates[site]) - (flatten(replies[site].state) - flatten(state))
                # Pseudo-gradients g = -U: the pair is (w^ - w, g^exact - g_stored), kept in fp32.
                self.buffers[site].append((step.float(), change.float()))
        site_states = [(replies[s].state, replies[s].examples) if s in replies
                       else ({k: v + estimates[s][k] for k, v in state.items()}, entry.examples[s]) for s in sites]
        return aggregate(site_states, state), len(exact)


def estimated_updates(stored: dict[str, State], buffers: dict[str, deque], sites: list[str], step: torch.Tensor,
                      tau: float) -> dict[str, State]:
    """Each site's estimated update ``U - H~ (w^ - w)``, for the sites whose buffer can give one and whose
    estimate has no element above ``tau`` (the others compute theirs exactly)."""
    estimates = {}
    for site in sites:
        if not buffers[site]:
            continue
        pairs = list(buffers[site])
        update = flatten(stored[site]) - lbfgs_hessian_product([a for a, _ in pairs], [b for _, b in pairs], step)
        if float(update.abs().max()) > tau:
            continue
        estimates[site] = unflatten(update, stored[site])
    return estimates


class FedRecover(HistoryMethod):
    name = "fedrecover"

    def remove(self, run: HistoryRun) -> State:
        knobs, fed = self.cfg.fedrecover, run.fed
        if run.history.every != 1:
            raise ValueError("fedrecover estimates every round from its stored updates: set federation.history.every=1")
        tau = abnormality_bound(run, knobs.abnormality_tolerance) if knobs.abnormality_tolerance else math.inf
        recovery = Recovery(run, knobs.buffer_size, tau)
        state, exact_counts = run.history.entry(1).start, {}
        for server_round in range(1, fed.rounds + 1):
            always_exact = exact_round(server_round, fed.rounds, knobs.warmup_rounds, knobs.correction_period,
                                       knobs.final_rounds)
            state, exact = recovery.round(server_round, state, always_exact)
            exact_counts[str(server_round)] = exact
            run.advanced(state, fed.local_steps, {"exact_sites": float(exact)})
        run.details.update({"abnormality_bound": tau if math.isfinite(tau) else None,
                            "exact_sites_per_round": exact_counts})
        return state

    def planned_rounds(self, fed: FederationConfig) -> int:
        return fed.rounds

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        """Warm-up, corrections and final tuning (abnormality fixing may add rounds; not planned)."""
        k = self.cfg.fedrecover
        return [(retain_sites, fed.local_steps) for r in range(1, fed.rounds + 1)
                if exact_round(r, fed.rounds, k.warmup_rounds, k.correction_period, k.final_rounds)]
