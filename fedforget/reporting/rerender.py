"""``fedforget report RUN_DIR``: re-render report.md and figures from a finished run's files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from fedforget.configs.compose import to_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.reporting.pictures import render_figures
from fedforget.reporting.report import write_report


def saved_experiment(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run wrote (config.yaml), validated again."""
    merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig),
                             OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text())))
    return to_experiment(merged)


def rerender(run_dir: Path) -> Path:
    """Rewrite figures (when checkpoints and data are reachable) and report.md of one run folder."""
    run_dir = run_dir.resolve()
    results = json.loads((run_dir / "results.json").read_text())
    cfg = saved_experiment(run_dir)
    states = {name: load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")[0] for name in results["models"]
              if (run_dir / "checkpoints" / f"{name}.pt").is_file()}
    if cfg.report.figures and states:
        results["figure_notes"] = render_figures(cfg, run_dir / "figures", results, states)
    return write_report(run_dir, cfg, results)
