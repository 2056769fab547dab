"""The evaluation phase's pictures: each site's example reconstructions, kept in the run folder.

Examples need a slice of each site's test data at the server. The server reads it only where
that moves no hospital's data: in a simulation on synthetic data, or when
``report.server_reads_site_data=true`` says the coordinator may read the sites' test files.
Otherwise (every deployment, a simulation of real data) no example is kept, and the index says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedforget.configs.schema import SYNTHETIC, ExperimentConfig
from fedforget.learning.checkpoints import State
from fedforget.learning.examples import SiteExample, finite, site_example
from fedforget.learning.training import model_from_config
from fedforget.recon.hdf5io import DataFileError
from fedforget.reporting.examples import read_index, write_examples


def server_may_read_site_data(cfg: ExperimentConfig, mode: str) -> bool:
    """Whether the server may read the sites' test files for pictures (see the module docstring)."""
    return (mode == "simulation" and cfg.data.kind == SYNTHETIC) or cfg.report.server_reads_site_data


def keep_examples(cfg: ExperimentConfig, run_dir: Path, sites: list[str], states: Mapping[str, State],
                  mode: str) -> None:
    """Reconstruct each site's display slice with every model whose weights are finite; keep them with notes."""
    diverged = [name for name, state in states.items() if not finite(state)]
    notes = [f"left out of the pictures, their weights are not finite (the method diverged): {', '.join(diverged)}"
             ] if diverged else []
    if not server_may_read_site_data(cfg, mode):
        notes.append(f"no reconstruction grids: the server reads no site's data in a {mode} on {cfg.data.kind} "
                     f"data (set report.server_reads_site_data=true where the coordinator may read the sites' "
                     f"test files)")
        write_examples(run_dir, {}, notes)
        return
    drawable = {name: state for name, state in states.items() if name not in diverged}
    model = model_from_config(cfg.model)
    examples: dict[str, SiteExample] = {}
    for site in sites:
        try:
            examples[site] = site_example(cfg, site, drawable, model)
        except (OSError, DataFileError) as err:
            notes.append(f"no reconstruction grid for {site}: its test data is not readable from the server ({err})")
    write_examples(run_dir, examples, notes)


def example_reconstructions(cfg: ExperimentConfig, run_dir: Path, name: str, state: State
                            ) -> dict[str, dict[str, Any]]:
    """One more model's (a composition's) reconstructions of the display slices a run kept: site -> {name: image}.

    Raises:
        DataFileError / OSError: a site's test data is not readable here.
    """
    if not finite(state):
        return {}
    model = model_from_config(cfg.model)
    return {site: site_example(cfg, site, {name: state}, model).reconstructions
            for site in read_index(run_dir)["sites"]}
