"""Federation overhead: the same FedAvg training as a plain PyTorch loop and through ``flwr run``.

Workload: the experiment's original-model training (its sites, rounds, local steps,
batch, model and seed). Both sides do the same work with the same parallelism, in
two pairings:

- ``sequential``: one site at a time on every core. Plain: the sites one after
  another in this process with ``cores`` torch threads. Flower: one Ray actor at a
  time (``client_cpus = cores``), each site using ``cores`` threads.
- ``parallel``: ``cores`` sites at a time on one core each. Plain: a pool of
  ``cores`` single-threaded worker processes, each holding its sites' data (as a Ray
  actor does). Flower: ``client_cpus = 1``, so ``cores`` actors train at once.

Neither timer includes opening and validating the data (done before the first
round on both sides) or evaluation. Flower's rounds are timed from sending the
round to the last reply's *arrival* (the reply's creation time), not to when the
server's polling noticed it; the polling delay is reported apart. Both runs must
end with the same final weights (same seed, same arithmetic) or the benchmark
fails: otherwise it would be timing different computations.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.checkpoints import State, load_checkpoint
from fedforget.learning.plain_loop import PlainResult, SequentialTrainer, Update, plain_fedavg

REPO = Path(__file__).resolve().parents[1]
GOAL_RATIO = 1.05
PAIRINGS = ("sequential", "parallel")

# --- the plain side's worker processes (parallel pairing) ------------------------------------------------

_TRAINER: SequentialTrainer | None = None


def _start_worker(cfg: ExperimentConfig, sites: list[str]) -> None:
    global _TRAINER
    torch.set_num_threads(1)
    _TRAINER = SequentialTrainer(cfg, sites)


def _train_site(name: str, server_round: int, state: State) -> Update:
    assert _TRAINER is not None
    return _TRAINER.train_site(name, server_round, state)


class ParallelTrainer:
    """Sites trained ``workers`` at a time, each in its own single-threaded process (site i in worker i % W)."""

    def __init__(self, cfg: ExperimentConfig, sites: Sequence[str], workers: int) -> None:
        self.owner = {name: i % workers for i, name in enumerate(sites)}
        self.pools = [ProcessPoolExecutor(1, initializer=_start_worker,
                                          initargs=(cfg, [s for s in sites if self.owner[s] == i]))
                      for i in range(workers)]
        for pool in self.pools:  # start and open the data now, before the timer
            pool.submit(int).result()

    def train(self, sites: Sequence[str], server_round: int, state: State) -> list[Update]:
        futures = [self.pools[self.owner[name]].submit(_train_site, name, server_round, state) for name in sites]
        return [future.result() for future in futures]

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()


def plain_training(cfg: ExperimentConfig, pairing: str, cores: int) -> PlainResult:
    if pairing == "sequential":
        torch.set_num_threads(cores)
        return plain_fedavg(cfg, cfg.site_names)
    trainer = ParallelTrainer(cfg, cfg.site_names, cores)
    try:
        return plain_fedavg(cfg, cfg.site_names, trainer=trainer)
    finally:
        trainer.close()


# --- the Flower side ----------------------------------------------------------------------------------------

def flower_training(experiment: str, overrides: list[str], output: Path) -> dict[str, Any]:
    """The original model's training through ``fedforget run`` (one tiny method, no figures), timed per round."""
    command = [sys.executable, "-m", "fedforget.cli", "run", f"experiment={experiment}", *overrides,
               "unlearning.methods=[ft]", "unlearning.steps=1", "report.figures=false", "--output-dir", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"fedforget run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    audit = json.loads((output / "audit.json").read_text())
    _, meta = load_checkpoint(output / "checkpoints" / "progress" / "original.pt")
    observed = [h["seconds"] for h in meta["history"]]
    polling = [h.get("poll_seconds", 0.0) for h in meta["history"]]
    state, _ = load_checkpoint(output / "checkpoints" / "original.pt")
    return {"round_seconds": [o - p for o, p in zip(observed, polling)], "observed_round_seconds": observed,
            "poll_seconds": polling, "run_wall_seconds": wall, "state": state,
            "original_cache_key": audit["model_cache_keys"]["original"]}


def max_difference(a: State, b: State) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def measure(experiment: str, overrides: list[str], scratch: Path, pairing: str, cores: int) -> dict[str, Any]:
    """One pairing: plain and Flower with the same parallelism, the same seed, the same final weights."""
    cfg = load_experiment(experiment, overrides)
    plain = plain_training(cfg, pairing, cores)
    client_cpus = cores if pairing == "sequential" else 1
    flower = flower_training(experiment, [*overrides, f"federation.client_cpus={client_cpus}"],
                             scratch / f"run-{pairing}")
    difference = max_difference(plain.state, flower.pop("state"))
    if difference > 1e-5:
        raise AssertionError(f"{pairing}: the plain loop and Flower end {difference:.2e} apart in some weight: "
                             f"they did not run the same training")
    flower_seconds = sum(flower["round_seconds"])
    rounds = cfg.federation.rounds
    return {"pairing": pairing, "client_cpus": client_cpus, "plain_workers": 1 if pairing == "sequential" else cores,
            "plain_training_seconds": plain.seconds, "plain_round_seconds": plain.round_seconds,
            "flower_training_seconds": flower_seconds, **flower,
            "ratio": flower_seconds / plain.seconds,
            "per_round_overhead_seconds": (flower_seconds - plain.seconds) / rounds,
            "mean_poll_seconds": sum(flower["poll_seconds"]) / rounds,
            "max_weight_difference": difference}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--pairing", choices=[*PAIRINGS, "both"], default="both")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to both runs")
    args = parser.parse_args(argv)
    pairings = PAIRINGS if args.pairing == "both" else (args.pairing,)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        cache = scratch_path / "cache"
        overrides = [f"data.root={scratch_path / 'data'}", f"cache_dir={cache}", *args.overrides]
        prepare_synthetic_data(load_experiment(args.experiment, overrides))
        for pairing in pairings:
            result = measure(args.experiment, overrides, scratch_path, pairing, args.cores)
            # The next pairing retrains the original; the oracle (the same for both) stays cached.
            shutil.rmtree(cache / result["original_cache_key"], ignore_errors=True)
            results.append(result)
    cfg = load_experiment(args.experiment, overrides)
    fed = cfg.federation
    payload = {"experiment": args.experiment, "overrides": args.overrides, "sites": len(cfg.sites),
               "rounds": fed.rounds, "local_steps": fed.local_steps, "batch_size": fed.batch_size,
               "cores": args.cores, "goal_ratio": GOAL_RATIO, "pairings": results}
    summary = "; ".join(f"{r['pairing']}: plain {r['plain_training_seconds']:.1f} s vs Flower "
                        f"{r['flower_training_seconds']:.1f} s, ratio {r['ratio']:.3f}, "
                        f"{r['per_round_overhead_seconds'] * 1000:+.0f} ms/round (+{r['mean_poll_seconds'] * 1000:.0f}"
                        f" ms polling), weights within {r['max_weight_difference']:.1e}" for r in results)
    write_result("federation_overhead", payload, f"{summary} (goal ratio <= {GOAL_RATIO})")


if __name__ == "__main__":
    main()
