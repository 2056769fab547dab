"""Why a history-based method does what it does, measured on a finished run's round history.

``sifu``: the forget site's sensitivity bound psi per round (as SIFU computes it) and, for each
rollback round T, the noise std sigma that the threshold ``psi* = epsilon sigma / sqrt(2 ln(1.25/delta))``
would need for SIFU to roll back only to T (so that it avoids retraining rounds 1..T).

``fedrecover``: replays recovery's first rounds Flower-free and, in every round, compares each retain
site's exact update with its stored one and with FedRecover's L-BFGS estimate: the norms, the
estimate's error, and the cosine between the secant pair's weight step and update change (the
curvature the estimate relies on).

Usage::

    python -m bench.history_diagnostics sifu RUN_DIR [--epsilon 10] [--name NAME]
    python -m bench.history_diagnostics fedrecover RUN_DIR [--rounds 8] [--name NAME]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from fedforget.configs.schema import ORIGINAL, ExperimentConfig
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.history import RoundHistory, history_folder
from fedforget.learning.plain_loop import aggregate
from fedforget.reporting.rerender import saved_experiment
from fedforget.unlearning.fedrecover import flatten, lbfgs_hessian_product
from fedforget.unlearning.history_base import local_round_worker
from fedforget.unlearning.sifu import psi_threshold, sensitivity_bounds


def _original(run: Path) -> tuple[ExperimentConfig, dict, RoundHistory]:
    cfg = saved_experiment(run)
    checkpoint = run / "checkpoints" / f"{ORIGINAL}.pt"
    state, meta = load_checkpoint(checkpoint)
    return cfg, state, RoundHistory.open(history_folder(checkpoint), meta.get("fingerprint"))


def sifu_report(run: Path, epsilon: float) -> dict[str, Any]:
    cfg, original, history = _original(run)
    delta = cfg.unlearning.sifu.delta or 1.0 / len(cfg.sites)
    bounds = sensitivity_bounds(history, original, cfg.unlearning.forget_site, 1.0)
    factor = math.sqrt(2 * math.log(1.25 / delta))
    # Rolling back to T needs psi(T + 1) > psi* >= psi(T): the smallest sigma is psi(T) sqrt(2 ln(1.25/delta)) / eps.
    needed = [{"rollback_round": t, "psi": bounds[t], "sigma_needed": bounds[t] * factor / epsilon}
              for t in range(len(bounds))]
    default = cfg.unlearning.sifu
    return {"run": str(run), "epsilon": epsilon, "delta": delta, "psi": bounds, "rollback": needed,
            "default_sigma": default.sigma, "default_threshold": psi_threshold(epsilon, default.sigma, delta),
            "weights_rms": math.sqrt(float(flatten(original).pow(2).mean()))}


def fedrecover_report(run: Path, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg, _, history = _original(run)
    fed, retain = cfg.federation, cfg.retain_sites
    worker = local_round_worker(cfg)
    state = history.entry(1).start
    pairs: dict[str, list] = {site: [] for site in retain}
    rows = []
    for server_round in range(1, rounds + 1):
        entry = history.entry(server_round)
        step = flatten(state) - flatten(entry.start)
        replies = worker.local_round(retain, state, (server_round - 1) * fed.local_steps, fed.local_steps,
                                     fed.round_lr(server_round))
        row: dict[str, Any] = {"round": server_round, "weight_step": float(step.norm())}
        for site in retain:
            exact, stored = flatten(replies[site].state) - flatten(state), flatten(entry.updates[site])
            site_row = {"stored": float(stored.norm()), "exact_minus_stored": float((exact - stored).norm()),
                        "cos_exact_stored": float(exact @ stored / (exact.norm() * stored.norm()))}
            if pairs[site]:
                steps, changes = zip(*pairs[site][-cfg.unlearning.fedrecover.buffer_size:])
                product = lbfgs_hessian_product(list(steps), list(changes), step)
                s, y = steps[-1].double(), changes[-1].double()
                site_row.update({"estimate_error": float((stored - product - exact).norm()),
                                 "hessian_product": float(product.norm()), "sigma": float(y @ s / (s @ s)),
                                 "cos_secant_pair": float(y @ s / (y.norm() * s.norm()))})
            row[site] = site_row
            if float(step.norm()) > 0:
                pairs[site].append((step.float(), (stored - exact).float()))
        rows.append(row)
        state = aggregate([(replies[s].state, replies[s].examples) for s in retain], state)
    return {"run": str(run), "rounds": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("sifu", "fedrecover"))
    parser.add_argument("run", type=Path)
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    if args.what == "sifu":
        report = sifu_report(args.run, args.epsilon)
        first = report["rollback"][1]
        summary = (f"psi after round 1 = {first['psi']:.2f} (threshold at sigma {report['default_sigma']}: "
                   f"{report['default_threshold']:.3f}); rolling back only to round 1 needs sigma >= "
                   f"{first['sigma_needed']:.2f} (weights' RMS {report['weights_rms']:.3f})")
    else:
        report = fedrecover_report(args.run, args.rounds)
        errors = [r[s]["estimate_error"] / r[s]["stored"] for r in report["rounds"] for s in r
                  if isinstance(r[s], dict) and "estimate_error" in r[s]]
        summary = f"L-BFGS estimate error / stored update norm: {min(errors):.1f} to {max(errors):.1f}"
    write_result(args.name or f"history_diagnostics_{args.what}", report, summary)


if __name__ == "__main__":
    main()
