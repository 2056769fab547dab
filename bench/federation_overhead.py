"""Federation overhead: the same FedAvg training as a plain PyTorch loop and through ``flwr run``.

Workload: the experiment's original-model training (its sites, rounds, local steps,
batch, model and seed). The plain loop trains the sites one after another in one
process; the Flower simulation runs one node per site on the same cores. Both
times exclude evaluation. Reported: both training times, their ratio, the mean
per-round overhead, and the whole ``fedforget run`` wall time (Ray start, FAB
install and the other phases included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.plain_loop import plain_fedavg

REPO = Path(__file__).resolve().parents[1]


def flower_training(experiment: str, overrides: list[str], output: Path) -> dict:
    command = [sys.executable, "-m", "fedforget.cli", "run", f"experiment={experiment}", *overrides,
               "unlearning.methods=[ft]", "unlearning.steps=1", "report.figures=false", "--output-dir", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"flwr run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    results = json.loads((output / "results.json").read_text())
    _, meta = load_checkpoint(output / "checkpoints" / "progress" / "original.pt")
    rounds = [h["seconds"] for h in meta["history"]]
    return {"training_seconds": results["models"]["original"]["wall_seconds"], "round_seconds": rounds,
            "run_wall_seconds": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to both runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        overrides = [f"data.root={scratch_path / 'data'}", f"cache_dir={scratch_path / 'cache'}", *args.overrides]
        cfg = load_experiment(args.experiment, overrides)
        prepare_synthetic_data(cfg)
        started = time.perf_counter()
        plain = plain_fedavg(cfg, cfg.site_names)
        plain_wall = time.perf_counter() - started
        flower = flower_training(args.experiment, overrides, scratch_path / "run")
    rounds = cfg.federation.rounds
    ratio = flower["training_seconds"] / plain.seconds
    per_round = (flower["training_seconds"] - plain.seconds) / rounds
    payload = {"experiment": args.experiment, "overrides": args.overrides, "sites": len(cfg.sites),
               "rounds": rounds, "local_steps": cfg.federation.local_steps, "batch_size": cfg.federation.batch_size,
               "plain_training_seconds": plain.seconds, "plain_wall_seconds": plain_wall,
               "plain_torch_threads": torch.get_num_threads(),
               "flower_training_seconds": flower["training_seconds"],
               "flower_round_seconds": flower["round_seconds"], "flower_run_wall_seconds": flower["run_wall_seconds"],
               "ratio": ratio, "per_round_overhead_seconds": per_round, "goal_ratio": 1.15}
    write_result("federation_overhead", payload,
                 f"plain {plain.seconds:.1f} s vs Flower {flower['training_seconds']:.1f} s for {rounds} rounds: "
                 f"ratio {ratio:.2f} (goal <= 1.15), {per_round * 1000:+.0f} ms per round")


if __name__ == "__main__":
    main()
