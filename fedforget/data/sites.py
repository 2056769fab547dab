"""Where a site's data lives, and the one way to open it: folder + volume range -> chosen files -> dataset.

Everything that reads a site's files goes through :func:`site_split` (the files) or
:func:`open_site_split` (the dataset): the sites themselves, the server's retain pool,
the pictures, the pre-run checks and the poisoned copy. So a site's ``volumes_from`` /
``train_volumes`` can never be honoured by one reader and ignored by another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedforget.configs.schema import FASTMRI, IMAGES, KSPACE_SOURCES, SYNTHETIC, ExperimentConfig
from fedforget.data.datasets import CachedSliceDataset, chosen_volumes, file_sha256, open_volumes, validated_volumes
from fedforget.data.image_sites import image_site_dir
from fedforget.data.synthetic import synthetic_site_dir
from fedforget.recon.hdf5io import DataFileError, VolumeInfo
from fedforget.recon.masks import make_mask_func
from fedforget.recon.poison import MANIFEST_FILE, PoisonManifest

SPLITS = ("train", "test")


def site_folders(cfg: ExperimentConfig, name: str, data_path: Path | None = None) -> dict[str, Path]:
    """The train/test folders of a site: under its node's data path, or under ``data.root``; an image site's
    are the simulated ones (its ``train_dir`` / ``test_dir`` name its source images).

    Raises:
        DataFileError: an image site's source folder cannot be listed (the message names it).
        ConfigError: an image site without ``cache_dir``.
    """
    site = cfg.sites[name]
    if data_path is None and cfg.data.kind == IMAGES:
        folder = image_site_dir(cfg, name)
        return {split: (folder / split).resolve() for split in SPLITS}
    if data_path is not None:
        base, default = data_path, {"train": "train", "test": "test"}
    elif cfg.data.kind == SYNTHETIC:
        base, default = synthetic_site_dir(cfg, name), {"train": "train", "test": "test"}
    else:
        base, default = Path(cfg.data.root), {"train": f"{name}/train", "test": f"{name}/test"}
    chosen = {"train": site.train_dir or default["train"], "test": site.test_dir or default["test"]}
    return {split: (base / chosen[split]).expanduser().resolve() for split in SPLITS}


@dataclass(frozen=True)
class SiteSplit:
    """The files one site uses for one split: its folder, its volume range and the volumes chosen by it.

    Attributes:
        site: The site.
        split: ``train`` or ``test``.
        folder: The split's folder.
        first: Volumes skipped at the start of the folder (sorted by name).
        count: Volumes used from there (0 = all the rest).
        volumes: The chosen volumes, validated.
        scanned: Whether every k-space value was checked up front (else slice by slice when read).
    """

    site: str
    split: str
    folder: Path
    first: int
    count: int
    volumes: tuple[VolumeInfo, ...]
    scanned: bool

    @property
    def names(self) -> list[str]:
        return [info.path.name for info in self.volumes]

    def describe(self) -> dict[str, Any]:
        """Which files, with their size and SHA-256, and the volume range (the audit's record)."""
        return {"folder": str(self.folder), "volumes_from": self.first, "volumes": self.count,
                "files": [{"name": info.path.name, "bytes": info.path.stat().st_size,
                           "sha256": file_sha256(info.path)} for info in self.volumes]}


def kspace_source(cfg: ExperimentConfig) -> str:
    """What the experiment's k-space is: ``measured``, or simulated from phantoms or from magnitude images."""
    return KSPACE_SOURCES[cfg.data.kind]


def scans_values_up_front(cfg: ExperimentConfig) -> bool:
    """Synthetic and image sites are scanned when written; real data only with ``data.scan_values=true``."""
    return cfg.data.kind != FASTMRI or cfg.data.scan_values


def site_split(cfg: ExperimentConfig, site: str, split: str, folder: Path | None = None,
               scan_kspace: bool | None = None) -> SiteSplit:
    """The files a site uses for a split.

    Real data (``data.kind=fastmri``) honours ``volumes_from`` / ``train_volumes`` (and the test
    equivalents) in whichever folder holds the split (the configured one, a deployed node's
    data path, or the server's deposit); a synthetic or image site's folder holds exactly its volumes.

    Args:
        cfg: The experiment.
        site: A site of the experiment.
        split: ``train`` or ``test``.
        folder: The split's folder when it is not the configured one.
        scan_kspace: Check every k-space value now (default: :func:`scans_values_up_front`).

    Raises:
        DataFileError: The folder or a file in it is not usable, or the range leaves no volume.
    """
    folder = Path(folder) if folder is not None else site_folders(cfg, site)[split]
    scan = scans_values_up_front(cfg) if scan_kspace is None else scan_kspace
    first, count = cfg.sites[site].volume_range(split) if cfg.data.kind == FASTMRI else (0, 0)
    infos = validated_volumes(folder, scan)
    chosen = chosen_volumes(infos, first, count)
    if not chosen:
        raise DataFileError(f"{folder}: holds {len(infos)} volumes, but site {site} starts at volume {first}: "
                            f"expected fewer skipped volumes or more data")
    return SiteSplit(site, split, folder, first, count, tuple(chosen), scan)


def open_site_split(cfg: ExperimentConfig, site: str, split: str, folder: Path | None = None) -> CachedSliceDataset:
    """The one way to open a site's split as a dataset: :func:`site_split`'s files, the experiment's mask.

    Values not scanned up front are checked slice by slice as they are read.

    Raises:
        DataFileError: The folder or a file in it is not usable; the message names it.
    """
    chosen = site_split(cfg, site, split, folder)
    mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    return open_volumes(chosen.folder, chosen.names, mask, cfg.data.cache_slices, check_values=not chosen.scanned)


def poison_manifest_sha256(train_folder: Path) -> str:
    """SHA-256 of the poison manifest beside a site's train folder ("" for a clean site)."""
    manifest = Path(train_folder).parent / MANIFEST_FILE
    return file_sha256(manifest) if manifest.is_file() else ""


def marked_slices(train: CachedSliceDataset, manifest: PoisonManifest, keep: str) -> list[int]:
    """Indices of a poisoned site's training slices that are clean (``keep="clean"``) or known-poisoned
    (``keep="known"``, the forget set given to unlearning)."""
    test = manifest.is_known if keep == "known" else (lambda f, s: not manifest.is_poisoned(f, s))
    return [i for i, raw in enumerate(train.raw_samples) if test(raw.fname.name, raw.slice_ind)]
