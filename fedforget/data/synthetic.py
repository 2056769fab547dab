"""Synthetic sites for an experiment: phantom volumes in fastMRI format, written once per specification.

Each site folder is named by its specification's fingerprint (``<site>-<fingerprint>``), so
experiments that give a site another size, coil count or volume count never rewrite each
other's files, and two runs of different experiments can share ``data.root`` at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import SYNTHETIC, ExperimentConfig
from fedforget.data.locks import exclusive
from fedforget.data.poisoning import poison_site
from fedforget.recon.poison import MANIFEST_FILE, PoisonSpec

if TYPE_CHECKING:  # the phantom writer (and scipy) only when data is written, not when a site's folder is named
    from fedforget.recon.synth import SynthSpec


def site_spec(cfg: ExperimentConfig, name: str) -> SynthSpec:
    """A synthetic site's specification.

    Raises:
        ConfigError: the site's contrasts are not ones its anatomy has (the message names them).
    """
    from fedforget.recon.synth import SynthSpec

    site, data = cfg.sites[name], cfg.data
    try:
        return SynthSpec(anatomy=site.anatomy, train_volumes=site.train_volumes, test_volumes=site.test_volumes,
                         slices_per_volume=data.slices_per_volume, size=data.size, coils=data.coils,
                         noise_std=data.noise_std, seed=site.seed, contrasts=tuple(site.contrasts),
                         skull_stripped_share=data.skull_stripped_share if site.anatomy == "brain" else 0.0)
    except ValueError as err:
        raise ConfigError(f"config value sites.{name}: {err}") from err


def poison_spec(cfg: ExperimentConfig) -> PoisonSpec:
    p = cfg.poison
    return PoisonSpec(kind=p.kind, fraction=p.fraction, known_fraction=p.known_fraction, strength=p.strength,
                      seed=p.seed)


def synthetic_site_dir(cfg: ExperimentConfig, name: str) -> Path:
    """A synthetic site's folder, keyed by its specification; a poisoned site gets its own, so clean
    data is never corrupted in place."""
    folder = Path(cfg.data.root) / f"{name}-{site_spec(cfg, name).fingerprint()}"
    if cfg.is_poisoned(name):
        return folder.with_name(f"{folder.name}.poisoned-{cfg.poison.kind}-{poison_spec(cfg).fingerprint()}")
    return folder


@contextlib.contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """One writer per site folder at a time (an exclusive ``flock`` beside it); others wait, then find it done."""
    with exclusive(folder.parent / f".{folder.name}.lock"):
        yield


def synthetic_sites_written(cfg: ExperimentConfig) -> bool:
    """Whether every site is written as specified and the poisoned one poisoned (spec files only, no volume read)."""
    from fedforget.recon.synth import is_current

    for name in cfg.site_names:
        folder = synthetic_site_dir(cfg, name)
        if not is_current(folder, site_spec(cfg, name)):
            return False
        if cfg.is_poisoned(name) and not (folder / MANIFEST_FILE).is_file():
            return False
    return True


def prepare_synthetic_data(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None,
                           names: Sequence[str] | None = None) -> list[Path]:
    """Write every site's phantom volumes under ``data.root/<site>-<fingerprint>`` unless they are there,
    then corrupt the poisoned site's training targets (idempotent: done once per spec).

    A site is built in a temporary folder and renamed into place (``recon.synth``); concurrent
    writers of the same specification take turns, so the second finds the site written.
    """
    if cfg.data.kind != SYNTHETIC:
        raise ValueError(f"data.kind={cfg.data.kind!r}: synthetic data is only written for kind {SYNTHETIC!r}")
    from fedforget.recon.synth import ensure_synthetic_site

    folders = []
    for name in cfg.site_names if names is None else names:
        folder = synthetic_site_dir(cfg, name)
        spec = site_spec(cfg, name)
        with _writer_lock(folder):
            written = ensure_synthetic_site(folder, spec)
        if written:
            log(f"fedforget: wrote synthetic {spec.anatomy} site {name} to {folder}")
        poison_if_chosen(cfg, name, folder, log)
        folders.append(folder)
    return folders


def poison_if_chosen(cfg: ExperimentConfig, name: str, folder: Path, log: Callable[[str], None]) -> None:
    """Corrupt the site's training targets when it is the experiment's poisoned site (idempotent)."""
    if cfg.is_poisoned(name):
        manifest = poison_site(folder, poison_spec(cfg))
        log(f"fedforget: site {name} has {manifest.num_poisoned} {cfg.poison.kind}-poisoned training slices "
            f"({manifest.num_known} known)")
