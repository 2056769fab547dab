"""Before a run starts: synthetic and image sites are written (and poisoned), real site folders are checked.

A missing or malformed real-data folder must stop the run here, with a message that
names the site and the file, not minutes later inside a Flower node.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fedforget.configs.compose import ConfigError, fingerprint, to_plain
from fedforget.configs.schema import FASTMRI, SYNTHETIC, ExperimentConfig
from fedforget.data.image_sites import image_site_spec, image_sites_written, prepare_image_sites
from fedforget.data.poisoning import poison_site
from fedforget.data.sites import SPLITS, SiteSplit, site_split
from fedforget.data.synthetic import poison_spec, prepare_synthetic_data, synthetic_sites_written
from fedforget.recon.hdf5io import DataFileError


class DataError(ValueError):
    """A site's data cannot be used; the message names the site, the file and what is wrong."""


def checked_split(cfg: ExperimentConfig, site: str, split: str, scan_kspace: bool | None = None) -> SiteSplit:
    """A site's split through the one opener, with errors naming the site and split."""
    try:
        return site_split(cfg, site, split, scan_kspace=scan_kspace)
    except DataFileError as err:
        raise DataError(f"site {site} ({split} split): {err}") from err


def check_real_data(cfg: ExperimentConfig) -> dict[str, dict[str, int]]:
    """Validate every site's folders (structure, headers, targets; every k-space value with
    ``data.scan_values``), the volume ranges, and that no two sites train on the same file."""
    counts: dict[str, dict[str, int]] = {}
    owners: dict[Path, str] = {}
    for name in cfg.sites:
        splits = {split: checked_split(cfg, name, split) for split in SPLITS}
        counts[name] = {split: len(chosen.volumes) for split, chosen in splits.items()}
        for info in splits["train"].volumes:
            path = info.path.resolve()
            if path in owners:
                raise DataError(f"sites {owners[path]} and {name} both train on {path}: expected disjoint "
                                f"training volumes (check volumes_from / train_volumes); a file two sites "
                                f"share stays in the oracle and the retain data when one of them is removed")
            owners[path] = name
    return counts


def check_synthetic_data(cfg: ExperimentConfig) -> None:
    """Every site folder fedforget wrote (synthetic or image sites) holds only valid volumes (a stray file
    would crash fastMRI's reader)."""
    for name in cfg.sites:
        for split in SPLITS:
            checked_split(cfg, name, split, scan_kspace=True)


def check_image_sources(cfg: ExperimentConfig) -> None:
    """No two image sites train on one source volume, and no site tests on a volume any site trains on.

    Raises:
        DataError: a source volume is shared (the message names it and the sites), or a source folder is
            not usable.
    """
    trained: dict[Path, str] = {}
    tested: list[tuple[Path, str]] = []
    for name in cfg.sites:
        try:
            sources = image_site_spec(cfg, name).sources
        except DataFileError as err:
            raise DataError(f"site {name}: {err}") from err
        for entry in sources["train"]:
            if entry in trained:
                raise DataError(f"sites {trained[entry]} and {name} both train on {entry}: expected disjoint "
                                "training images (check volumes_from / train_volumes)")
            trained[entry] = name
        tested += [(entry, name) for entry in sources["test"]]
    for entry, name in tested:
        if entry in trained:
            raise DataError(f"site {name} tests on {entry}, which site {trained[entry]} trains on: expected test "
                            "images no site trains on (a model scored on its own training subjects)")


def prepare_written_sites(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write the synthetic or image sites fedforget makes (unless written), then check every volume.

    Raises:
        DataError: an image site's source images are not usable (the message names the site and the file).
    """
    if cfg.data.kind == SYNTHETIC:
        folders = prepare_synthetic_data(cfg, log)
    else:
        check_image_sources(cfg)
        folders = []
        for name in cfg.site_names:
            try:
                folders += prepare_image_sites(cfg, log, names=[name])
            except DataFileError as err:
                raise DataError(f"site {name}: {err}") from err
    check_synthetic_data(cfg)
    return folders


def poisoned_real_copy(cfg: ExperimentConfig, log: Callable[[str], None]) -> list[str]:
    """A poisoned working copy of the poisoned site's volumes; returns the overrides that point the site at it.

    The user's files are never written: the copy under ``cache_dir/poisoned/`` links to the
    site's chosen volumes, and ``poison_site`` replaces only the links of the files it
    poisons by corrupted copies (so the disk cost is the poisoned volumes).
    """
    if not cfg.cache_dir:
        raise ConfigError("poison on real data writes a poisoned copy under cache_dir: set cache_dir=/some/folder")
    name = cfg.poison.site
    spec = poison_spec(cfg)
    copy = Path(cfg.cache_dir) / "poisoned" / f"{name}-{spec.fingerprint()}-{fingerprint(to_plain(cfg)['sites'][name])}"
    for split in SPLITS:
        target = copy / split
        target.mkdir(parents=True, exist_ok=True)
        for info in checked_split(cfg, name, split).volumes:
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
    if cfg.data.kind != FASTMRI:
        prepare_written_sites(cfg, log)
        return []
    for name, splits in check_real_data(cfg).items():
        log(f"fedforget: site {name}: {splits['train']} training and {splits['test']} test volumes checked "
            f"under {Path(cfg.data.root)}")
    return poisoned_real_copy(cfg, log) if cfg.poison.active else []


def _write_in_fresh_process(cfg: ExperimentConfig, log: Callable[[str], None]) -> None:
    """Write and check the synthetic or image sites in a fresh (spawned) process.

    Inside Flower's simulation process (Ray, gRPC and Flower threads running) writing the demo's
    sites stopped with every thread waiting on a lock, and the SuperLink failed the run after
    60 s without a heartbeat; the same writer in a process of its own takes 13 s.
    """
    written = synthetic_sites_written if cfg.data.kind == SYNTHETIC else image_sites_written
    if written(cfg):
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for folder in pool.submit(prepare_written_sites, cfg).result():
            log(f"fedforget: {cfg.data.kind} site ready at {folder}")


def prepare_inside_run(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None) -> None:
    """What the ServerApp makes ready itself, for a run started by plain ``flwr run .`` (``fedforget run``
    has done it already, so this finds everything in place): the synthetic or image sites are written when
    missing.

    Raises:
        ConfigError: poison on real data, which needs a poisoned copy that only ``fedforget run`` can
            point every site at (the copy's folders are overrides of the run config).
    """
    if cfg.data.kind != FASTMRI:
        _write_in_fresh_process(cfg, log)
        return
    if cfg.poison.active and cfg.cache_dir and Path(cfg.cache_dir) / "poisoned" not in \
            Path(cfg.sites[cfg.poison.site].train_dir).parents:
        raise ConfigError(f"poison.kind={cfg.poison.kind} on real data needs a poisoned copy of site "
                          f"{cfg.poison.site}'s files, and the sites must be pointed at it before the run starts: "
                          f"start it with `fedforget run`, not `flwr run`")
