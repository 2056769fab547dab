"""Synthetic sites for an experiment: phantom volumes in fastMRI format, written once and cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedforget.configs.schema import ExperimentConfig
from fedforget.recon.poison import PoisonSpec, poison_site

if TYPE_CHECKING:  # the phantom writer (and scipy) only when data is written, not when a site's folder is named
    from fedforget.recon.synth import SynthSpec


def site_spec(cfg: ExperimentConfig, name: str) -> SynthSpec:
    from fedforget.recon.synth import SynthSpec

    site, data = cfg.sites[name], cfg.data
    return SynthSpec(anatomy=site.anatomy, train_volumes=site.train_volumes, test_volumes=site.test_volumes,
                     slices_per_volume=data.slices_per_volume, size=data.size, coils=data.coils,
                     noise_std=data.noise_std, seed=site.seed)


def poison_spec(cfg: ExperimentConfig) -> PoisonSpec:
    p = cfg.poison
    return PoisonSpec(kind=p.kind, fraction=p.fraction, known_fraction=p.known_fraction, strength=p.strength,
                      seed=p.seed)


def synthetic_site_dir(cfg: ExperimentConfig, name: str) -> Path:
    """A synthetic site's folder; a poisoned site gets its own, so clean data is never corrupted in place."""
    root = Path(cfg.data.root)
    if cfg.is_poisoned(name):
        return root / f"{name}.poisoned-{cfg.poison.kind}-{poison_spec(cfg).fingerprint()}"
    return root / name


def prepare_synthetic_data(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write every site's phantom volumes under ``data.root/<site>`` unless an identical set is there,
    then corrupt the poisoned site's training targets (idempotent: done once per spec)."""
    if cfg.data.kind != "synthetic":
        raise ValueError(f"data.kind={cfg.data.kind!r}: synthetic data is only written for kind 'synthetic'")
    from fedforget.recon.synth import ensure_synthetic_site

    folders = []
    for name in cfg.site_names:
        folder = synthetic_site_dir(cfg, name)
        spec = site_spec(cfg, name)
        if ensure_synthetic_site(folder, spec):
            log(f"fedforget: wrote synthetic {spec.anatomy} site {name} to {folder}")
        if cfg.is_poisoned(name):
            manifest = poison_site(folder, poison_spec(cfg))
            log(f"fedforget: site {name} has {manifest.num_poisoned} {cfg.poison.kind}-poisoned training slices "
                f"({manifest.num_known} known)")
        folders.append(folder)
    return folders
