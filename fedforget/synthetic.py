"""Synthetic sites for an experiment: phantom volumes in fastMRI format, written once and cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedforget.configs.schema import ExperimentConfig
from fedforget.recon.synth import SynthSpec, ensure_synthetic_site


def site_spec(cfg: ExperimentConfig, name: str) -> SynthSpec:
    site, data = cfg.sites[name], cfg.data
    return SynthSpec(anatomy=site.anatomy, train_volumes=site.train_volumes, test_volumes=site.test_volumes,
                     slices_per_volume=data.slices_per_volume, size=data.size, coils=data.coils,
                     noise_std=data.noise_std, seed=site.seed)


def prepare_synthetic_data(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write every site's phantom volumes under ``data.root/<site>`` unless an identical set is there."""
    if cfg.data.kind != "synthetic":
        raise ValueError(f"data.kind={cfg.data.kind!r}: synthetic data is only written for kind 'synthetic'")
    folders = []
    for name in cfg.site_names:
        folder = Path(cfg.data.root) / name
        spec = site_spec(cfg, name)
        if ensure_synthetic_site(folder, spec):
            log(f"fedforget: wrote synthetic {spec.anatomy} site {name} to {folder}")
        folders.append(folder)
    return folders
