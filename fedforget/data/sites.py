"""Where a site's data lives: its train/test folders under a node's data path or the experiment's data root."""

from __future__ import annotations

from pathlib import Path

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.datasets import CachedSliceDataset, open_split
from fedforget.data.synthetic import synthetic_site_dir
from fedforget.recon.masks import make_mask_func

SPLITS = ("train", "test")


def site_folders(cfg: ExperimentConfig, name: str, data_path: Path | None = None) -> dict[str, Path]:
    """The train/test folders of a site: under its node's data path, or under ``data.root``."""
    site = cfg.sites[name]
    if data_path is not None:
        base, default = data_path, {"train": "train", "test": "test"}
    elif cfg.data.kind == "synthetic":
        base, default = synthetic_site_dir(cfg, name), {"train": "train", "test": "test"}
    else:
        base, default = Path(cfg.data.root), {"train": f"{name}/train", "test": f"{name}/test"}
    chosen = {"train": site.train_dir or default["train"], "test": site.test_dir or default["test"]}
    return {split: (base / chosen[split]).expanduser().resolve() for split in SPLITS}


def open_site_split(cfg: ExperimentConfig, site: str, split: str, folder: Path | None = None) -> CachedSliceDataset:
    """The one way to open a site's split: its folder, the volume range it uses, the experiment's mask.

    Real data (``data.kind=fastmri``) honours ``volumes_from`` / ``train_volumes`` (and the test
    equivalents) and checks k-space values as slices are read; a synthetic site's folder holds
    exactly its volumes and is scanned up front.

    Args:
        cfg: The experiment.
        site: A site of the experiment.
        split: ``train`` or ``test``.
        folder: The split's folder when it is not the configured one (a deployed node's data path).

    Raises:
        DataFileError: The folder or a file in it is not usable; the message names it.
    """
    real = cfg.data.kind == "fastmri"
    first, limit = cfg.sites[site].volume_range(split) if real else (0, 0)
    mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    return open_split(folder or site_folders(cfg, site)[split], mask, cfg.data.cache_slices, limit, first,
                      scan_kspace=not real)
