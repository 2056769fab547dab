"""Before a run starts: synthetic sites are written (and poisoned), real site folders are checked.

A missing or malformed real-data folder must stop the run here, with a message that
names the site and the file, not minutes later inside a Flower node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedforget.configs.compose import ConfigError, fingerprint, to_plain
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.datasets import chosen_volumes, validated_volumes
from fedforget.data.sites import site_folders
from fedforget.data.synthetic import poison_spec, prepare_synthetic_data
from fedforget.recon.hdf5io import DataFileError
from fedforget.recon.poison import poison_site


class DataError(ValueError):
    """A site's data cannot be used; the message names the site, the file and what is wrong."""


def check_real_data(cfg: ExperimentConfig) -> dict[str, dict[str, int]]:
    """Validate every site's folders (structure, headers, targets) and the volume ranges it uses."""
    counts = {}
    for name, site in cfg.sites.items():
        counts[name] = {}
        for split, folder in site_folders(cfg, name).items():
            try:
                volumes = validated_volumes(folder, scan_kspace=False)
            except DataFileError as err:
                raise DataError(f"site {name} ({split} split): {err}") from err
            first, wanted = site.volume_range(split)
            if first >= len(volumes):
                raise DataError(f"site {name} ({split} split): {folder} holds {len(volumes)} volumes, but the site "
                                f"starts at volume {first}: expected fewer skipped volumes or more data")
            counts[name][split] = min(len(volumes) - first, wanted or len(volumes))
    return counts


def check_synthetic_data(cfg: ExperimentConfig) -> None:
    """Every synthetic site folder holds only valid volumes (a stray file would crash fastMRI's reader)."""
    for name in cfg.sites:
        for split, folder in site_folders(cfg, name).items():
            try:
                validated_volumes(folder, scan_kspace=True)
            except DataFileError as err:
                raise DataError(f"site {name} ({split} split): {err}") from err


def poisoned_real_copy(cfg: ExperimentConfig, log: Callable[[str], None]) -> list[str]:
    """A poisoned working copy of the poisoned site's volumes; returns the overrides that point the site at it.

    The user's files are never written: the copy under ``cache_dir/poisoned/`` links to the
    site's chosen volumes, and ``poison_site`` replaces only the links of the files it
    poisons by corrupted copies (so the disk cost is the poisoned volumes).
    """
    if not cfg.cache_dir:
        raise ConfigError("poison on real data writes a poisoned copy under cache_dir: set cache_dir=/some/folder")
    name, site = cfg.poison.site, cfg.sites[cfg.poison.site]
    spec = poison_spec(cfg)
    copy = Path(cfg.cache_dir) / "poisoned" / f"{name}-{spec.fingerprint()}-{fingerprint(to_plain(cfg)['sites'][name])}"
    for split, folder in site_folders(cfg, name).items():
        chosen = chosen_volumes(validated_volumes(folder, scan_kspace=False), *site.volume_range(split))
        target = copy / split
        target.mkdir(parents=True, exist_ok=True)
        for info in chosen:
            link = target / info.path.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(info.path.resolve())
    manifest = poison_site(copy, spec)
    log(f"fedforget: poisoned copy of site {name} at {copy}: {manifest.num_poisoned} {spec.kind}-poisoned "
        f"training slices ({manifest.num_known} known)")
    return [f"sites.{name}.train_dir={copy / 'train'}", f"sites.{name}.test_dir={copy / 'test'}",
            f"sites.{name}.volumes_from=0", f"sites.{name}.test_volumes_from=0"]


def prepare_data(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> list[str]:
    """Make the experiment's data ready (or raise DataError / ConfigError saying why it cannot be).

    Returns overrides the run needs on top of its own (the poisoned copy of real data).
    """
    if cfg.data.kind == "synthetic":
        prepare_synthetic_data(cfg, log)
        check_synthetic_data(cfg)
        return []
    for name, splits in check_real_data(cfg).items():
        log(f"fedforget: site {name}: {splits['train']} training and {splits['test']} test volumes checked "
            f"under {Path(cfg.data.root)}")
    return poisoned_real_copy(cfg, log) if cfg.poison.active else []
