"""What the round history and the history-based methods cost at another scale, without running them.

For an experiment (by default the paper's ``paper-brain-knee``: the 29.9M-parameter VarNet, three
brain hospitals and a knee hospital), projects from the configuration alone:

- the history's storage: rounds kept x (one fp32 global model + one update per site, in fp32 or fp16);
- per method (from each method's own ``plan``): site steps (and their share of retraining's),
  messages and bytes moved, and the history it needs kept;
- FedAvg training's own traffic, for scale.

Bytes are the packed parameter arrays (4 bytes a weight, both ways per local round); Flower's
framing adds well under 1 %. Usage::

    python -m bench.history_projection [--experiment paper-brain-knee] [HYDRA OVERRIDES...]
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.configs.schema import HISTORY_EVERY, ExperimentConfig
from fedforget.learning.training import model_from_config
from fedforget.unlearning import HISTORY_REGISTRY, get_history_method

BYTES = {"fp32": 4, "fp16": 2}


def parameters(cfg: ExperimentConfig) -> int:
    return sum(p.numel() for p in model_from_config(cfg.model).parameters())


def history_bytes(cfg: ExperimentConfig, weights: int, every: int, dtype: str) -> int:
    """Rounds kept x (the round's fp32 global model + every site's update in ``dtype``)."""
    kept = len(range(1, cfg.federation.rounds + 1, every))
    return kept * weights * (BYTES["fp32"] + len(cfg.sites) * BYTES[dtype])


def method_projection(cfg: ExperimentConfig, name: str, weights: int, history: int) -> dict[str, Any]:
    fed, retain = cfg.federation, len(cfg.retain_sites)
    plan = get_history_method(name, cfg.unlearning).plan(fed, retain)
    site_steps = sum(sites * steps for sites, steps in plan)
    messages = sum(sites for sites, _ in plan)
    oracle_steps = fed.rounds * fed.local_steps * retain
    return {"site_steps": site_steps, "of_retraining": site_steps / oracle_steps, "messages": messages,
            "bytes": messages * 2 * BYTES["fp32"] * weights, "history_bytes": history if name in HISTORY_EVERY else 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="paper-brain-knee")
    parser.add_argument("--name", default="", help="result name (default: history_projection_<experiment>)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    # Nothing is read: a data folder is named only because a real-data experiment requires one.
    placeholder = [] if any(o.startswith("data.root=") for o in args.overrides) else ["data.root=/not/read"]
    cfg = load_experiment(args.experiment, [*placeholder, *args.overrides])
    fed = cfg.federation
    weights = parameters(cfg)
    storage = {f"every {every}, {dtype}": history_bytes(cfg, weights, every, dtype)
               for every in (1, 2) for dtype in ("fp32", "fp16")}
    kept = storage["every 1, fp32"]
    methods = {name: method_projection(cfg, name, weights, kept) for name in HISTORY_REGISTRY}
    training = {"rounds": fed.rounds, "sites": len(cfg.sites), "messages": fed.rounds * len(cfg.sites),
                "bytes": fed.rounds * len(cfg.sites) * 2 * BYTES["fp32"] * weights}
    payload = {"experiment": args.experiment, "overrides": args.overrides, "parameters": weights,
               "model_mb": weights * BYTES["fp32"] / 1e6, "rounds": fed.rounds, "local_steps": fed.local_steps,
               "sites": len(cfg.sites), "history_bytes": storage, "training": training, "methods": methods,
               "knobs": {name: _knobs(cfg, name) for name in HISTORY_REGISTRY}}
    write_result(args.name or f"history_projection_{args.experiment}", payload,
                 f"{weights:,} weights ({weights * 4 / 1e6:.1f} MB); history every round {kept / 1e9:.1f} GB fp32, "
                 f"{storage['every 1, fp16'] / 1e9:.1f} GB fp16; FedAvg training moves "
                 f"{training['bytes'] / 1e9:.1f} GB")


def _knobs(cfg: ExperimentConfig, name: str) -> dict[str, Any]:
    section = getattr(cfg.unlearning, name, None)
    return dict(vars(section)) if section is not None else {}


if __name__ == "__main__":
    main()
