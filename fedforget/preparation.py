"""Before a run starts: synthetic sites are written (and poisoned), real site folders are checked.

A missing or malformed real-data folder must stop the run here, with a message that
names the site and the file, not minutes later inside a Flower node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedforget.clients.site import site_folders
from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import ExperimentConfig
from fedforget.recon.hdf5io import DataFileError, validate_folder
from fedforget.server.checkpoints import load_checkpoint
from fedforget.synthetic import prepare_synthetic_data


class DataError(ValueError):
    """A site's data cannot be used; the message names the site, the file and what is wrong."""


def check_real_data(cfg: ExperimentConfig) -> dict[str, dict[str, int]]:
    """Validate every site's folders (structure, headers, targets) and the volume ranges it uses."""
    counts = {}
    for name, site in cfg.sites.items():
        counts[name] = {}
        for split, folder in site_folders(cfg, name).items():
            try:
                volumes = validate_folder(folder, scan_kspace=False)
            except DataFileError as err:
                raise DataError(f"site {name} ({split} split): {err}") from err
            first = site.volumes_from if split == "train" else site.test_volumes_from
            wanted = site.train_volumes if split == "train" else site.test_volumes
            if first >= len(volumes):
                raise DataError(f"site {name} ({split} split): {folder} holds {len(volumes)} volumes, but the site "
                                f"starts at volume {first}: expected fewer skipped volumes or more data")
            counts[name][split] = min(len(volumes) - first, wanted or len(volumes))
    return counts


def check_checkpoint(cfg: ExperimentConfig) -> None:
    """A removal request on a trained federation needs a readable original checkpoint."""
    if cfg.unlearning.from_checkpoint:
        try:
            load_checkpoint(Path(cfg.unlearning.from_checkpoint))
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"unlearning.from_checkpoint: {err}") from err


def check_synthetic_data(cfg: ExperimentConfig) -> None:
    """Every synthetic site folder holds only valid volumes (a stray file would crash fastMRI's reader)."""
    for name in cfg.sites:
        for split, folder in site_folders(cfg, name).items():
            try:
                validate_folder(folder)
            except DataFileError as err:
                raise DataError(f"site {name} ({split} split): {err}") from err


def prepare_data(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> None:
    """Make the experiment's data ready, or raise DataError / ConfigError saying why it cannot be."""
    check_checkpoint(cfg)
    if cfg.data.kind == "synthetic":
        prepare_synthetic_data(cfg, log)
        check_synthetic_data(cfg)
        return
    if cfg.poison.active:
        raise ConfigError("poison on real data needs a poisoned copy of the site's files, which fedforget does "
                          "not write into a user's dataset: prepare it with fedforget.recon.poison.poison_site on a "
                          "copy and point the site's train_dir at it (see README, 'Poisoned real data')")
    for name, splits in check_real_data(cfg).items():
        log(f"fedforget: site {name}: {splits['train']} training and {splits['test']} test volumes checked "
            f"under {Path(cfg.data.root)}")
