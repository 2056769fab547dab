"""Image sites (``data.kind=images``): fastMRI files simulated from a site's magnitude images, once per specification.

A site's sources are the volume entries of ``data.root/<train_dir>`` and ``data.root/<test_dir>``
(default ``<site>/train``, ``<site>/test``), chosen by its volume range like real fastMRI folders. The
simulated site is written under ``cache_dir/image-sites/<site>-<fingerprint>``::

    <site>-<fingerprint>/
        images.json         the specification, its fingerprint, and per volume its sources (name, bytes,
                            SHA-256), the slices kept, the noise std, the scale and whether it was upsampled
        train/000_<source>.h5
        test/000_<source>.h5

The fingerprint covers every option that shapes the files and each source file's name, size and
modification time: a changed source file or option gives a new folder, and sites written before are
left as they were. Writers of one folder take turns (an exclusive lock beside it); a site is built in a
temporary folder and swapped into place (``configs.atomic.swap_dir``), so a crash never leaves a
half-written site that looks complete. The simulation itself is :mod:`fedforget.recon.image_simulation`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fedforget.configs.atomic import swap_dir
from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import IMAGES, KSPACE_SOURCES, ExperimentConfig
from fedforget.data.locks import exclusive
from fedforget.data.synthetic import poison_if_chosen, poison_spec
from fedforget.recon.hdf5io import write_multicoil_volume
from fedforget.recon.image_readers import ImageFileError, entry_files, read_volume, volume_entries
from fedforget.recon.image_simulation import ImageSimulation, SimulatedVolume, VolumeSeeds, simulate_volume
from fedforget.recon.poison import MANIFEST_FILE

__all__ = ["ImageSiteSpec", "RECORD_FILE", "SITES_FOLDER", "image_site_spec", "image_site_dir", "source_folders",
           "image_sites_written", "prepare_image_sites", "ensure_image_site", "source_digests"]

SPLITS = ("train", "test")
RECORD_FILE = "images.json"
SITES_FOLDER = "image-sites"
# Part of every fingerprint: bump it whenever reading or simulation change what a specification produces.
GENERATOR_VERSION = 1
_STREAMS = {"phase": 0, "coils": 1, "noise": 2}


class ImageSiteSpec(NamedTuple):
    """What one image site is made of and how.

    Attributes:
        sources: Per split, the chosen volume entries (files or series folders), sorted by name.
        simulation: Size, coils, SNR and slice selection.
        slice_axis: The axis along which 3-D arrays are sliced.
        contrast: Written to every file's ``acquisition`` attribute.
        seed: The site's seed; each volume's phase, coils and noise are drawn from it.
    """

    sources: dict[str, tuple[Path, ...]]
    simulation: ImageSimulation
    slice_axis: int
    contrast: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (the sources are recorded per volume)."""
        return {**self.simulation._asdict(), "slice_axis": self.slice_axis, "contrast": self.contrast,
                "seed": self.seed}

    def fingerprint(self) -> str:
        """16 hex digits over the options, the generator version and each source file's name, size and mtime."""
        sources = {split: [[entry.name, [_stat(path) for path in entry_files(entry)]] for entry in entries]
                   for split, entries in self.sources.items()}
        payload = json.dumps({"spec": self.to_dict(), "sources": sources, "generator_version": GENERATOR_VERSION},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def file_name(self, index: int, entry: Path) -> str:
        """The written volume's name: its index (keeps the sources' order) and the source's name."""
        stem = re.sub(r"(\.nii\.gz|\.nii|\.npy|\.png|\.dcm)$", "", entry.name, flags=re.IGNORECASE)
        return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]', '_', stem)}.h5"

    def volume_seeds(self, split: str, index: int) -> VolumeSeeds:
        """Seeds of one volume's phase, coils and noise (distinct per split and volume)."""
        def seed(stream: str) -> int:
            sequence = np.random.SeedSequence(self.seed, spawn_key=(SPLITS.index(split), index, _STREAMS[stream]))
            return int(sequence.generate_state(1, dtype=np.uint64)[0])

        return VolumeSeeds(seed("phase"), seed("coils"), seed("noise"))


def _stat(path: Path) -> list[Any]:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def source_folders(cfg: ExperimentConfig, name: str) -> dict[str, Path]:
    """An image site's source folders: ``train_dir`` / ``test_dir`` under ``data.root`` (default ``<site>/<split>``)."""
    site = cfg.sites[name]
    chosen = {"train": site.train_dir or f"{name}/train", "test": site.test_dir or f"{name}/test"}
    return {split: (Path(cfg.data.root) / chosen[split]).expanduser().resolve() for split in SPLITS}


def _chosen_entries(cfg: ExperimentConfig, name: str, split: str, folder: Path) -> tuple[Path, ...]:
    first, count = cfg.sites[name].volume_range(split)
    entries = volume_entries(folder)
    chosen = entries[first:first + count] if count else entries[first:]
    if not chosen:
        raise ImageFileError(f"{folder}: holds {len(entries)} image volumes, but site {name} starts at volume "
                             f"{first}: expected fewer skipped volumes or more images", folder)
    return tuple(chosen)


def image_site_spec(cfg: ExperimentConfig, name: str) -> ImageSiteSpec:
    """An image site's specification: its chosen source volumes and the experiment's simulation options.

    Raises:
        ImageFileError: a source folder is missing or empty, holds an entry of no known form, or the
            volume range leaves nothing (the message names the folder or entry).
    """
    data, folders = cfg.data, source_folders(cfg, name)
    simulation = ImageSimulation(size=data.size, coils=data.coils, snr=float(data.images.snr),
                                 min_foreground_fraction=data.images.min_foreground_fraction,
                                 max_slices=data.images.max_slices, allow_upsampling=data.images.allow_upsampling)
    sources = {split: _chosen_entries(cfg, name, split, folders[split]) for split in SPLITS}
    return ImageSiteSpec(sources, simulation, data.images.slice_axis, cfg.image_contrast(name), cfg.sites[name].seed)


def image_site_dir(cfg: ExperimentConfig, name: str, spec: ImageSiteSpec | None = None) -> Path:
    """Where an image site is written: ``cache_dir/image-sites/<site>-<fingerprint>`` (a poisoned site gets
    its own folder, so the clean one is never corrupted in place).

    Raises:
        ConfigError: ``cache_dir`` is not set.
        ImageFileError: as :func:`image_site_spec`.
    """
    if not cfg.cache_dir:
        raise ConfigError("data.kind=images writes the simulated sites under cache_dir: set cache_dir=/some/folder "
                          "(`fedforget run` sets it to the workspace's outputs/.cache)")
    spec = spec or image_site_spec(cfg, name)
    folder = Path(cfg.cache_dir) / SITES_FOLDER / f"{name}-{spec.fingerprint()}"
    if cfg.is_poisoned(name):
        return folder.with_name(f"{folder.name}.poisoned-{cfg.poison.kind}-{poison_spec(cfg).fingerprint()}")
    return folder


def _file_list(spec: ImageSiteSpec) -> dict[str, list[str]]:
    return {split: [spec.file_name(i, entry) for i, entry in enumerate(entries)]
            for split, entries in spec.sources.items()}


def is_current(folder: Path, spec: ImageSiteSpec) -> bool:
    """Whether ``folder`` holds ``spec``'s site: its record's fingerprint and every file (no volume is read)."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("fingerprint") != spec.fingerprint():
        return False
    return all((folder / split / name).is_file() for split, names in _file_list(spec).items() for name in names)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _volume_record(name: str, entry: Path, form: str, simulated: SimulatedVolume, shape: tuple[int, ...]) \
        -> dict[str, Any]:
    return {"file": name, "source": str(entry), "form": form, "source_shape": list(shape),
            "source_files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
                             for p in entry_files(entry)],
            "slices_kept": list(simulated.kept), "noise_std": simulated.noise_std, "scale": simulated.scale,
            "upsampled": simulated.upsampled}


def _write_volumes(build: Path, spec: ImageSiteSpec) -> dict[str, list[dict[str, Any]]]:
    """Simulate and write every chosen volume; returns each split's volume records."""
    records: dict[str, list[dict[str, Any]]] = {}
    for split, entries in spec.sources.items():
        (build / split).mkdir(parents=True)
        records[split] = []
        for index, entry in enumerate(entries):
            volume = read_volume(entry, spec.slice_axis)
            simulated = simulate_volume(volume, spec.simulation, spec.volume_seeds(split, index))
            name = spec.file_name(index, entry)
            write_multicoil_volume(build / split / name, simulated.kspace, simulated.target,
                                   patient_id=entry.name, acquisition=spec.contrast)
            records[split].append(_volume_record(name, entry, volume.form, simulated, volume.slices.shape))
    return records


def write_image_site(folder: Path, spec: ImageSiteSpec) -> None:
    """(Re)write an image site at ``folder``: built beside it, then swapped into place.

    Raises:
        ImageFileError: a source volume cannot be used (the message names it); nothing is left behind.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{folder.name}.build-", dir=folder.parent))
    try:
        volumes = _write_volumes(build, spec)
        record = {"kspace_source": KSPACE_SOURCES[IMAGES], "spec": spec.to_dict(),
                  "fingerprint": spec.fingerprint(), "generator_version": GENERATOR_VERSION,
                  "files": _file_list(spec), "volumes": volumes}
        (build / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        swap_dir(build, folder)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def ensure_image_site(folder: Path, spec: ImageSiteSpec) -> bool:
    """Write the site unless it is current; True if it was (re)written. One writer per folder at a time."""
    with exclusive(folder.parent / f".{folder.name}.lock"):
        if is_current(folder, spec):
            return False
        write_image_site(folder, spec)
        return True


def source_digests(split_folder: Path) -> list[str]:
    """SHA-256 of every source file behind an image site's split (its ``images.json``): the subjects it holds,
    so that a benchmark can prove it never scores a model on a subject the model trained on."""
    split = Path(split_folder).name
    record = json.loads((Path(split_folder).parent / RECORD_FILE).read_text())
    return sorted({f["sha256"] for volume in record["volumes"].get(split, []) for f in volume["source_files"]})


def image_sites_written(cfg: ExperimentConfig) -> bool:
    """Whether every site is written as specified and the poisoned one poisoned (records only, no volume read)."""
    for name in cfg.site_names:
        spec = image_site_spec(cfg, name)
        folder = image_site_dir(cfg, name, spec)
        if not is_current(folder, spec) or (cfg.is_poisoned(name) and not (folder / MANIFEST_FILE).is_file()):
            return False
    return True


def prepare_image_sites(cfg: ExperimentConfig, log: Callable[[str], None] = lambda _: None,
                        names: Sequence[str] | None = None) -> list[Path]:
    """Simulate every image site that is not written yet, then poison the poisoned one (idempotent).

    Raises:
        ConfigError: ``cache_dir`` is not set.
        ImageFileError: a source image cannot be used (the message names the file and the expected form).
    """
    if cfg.data.kind != IMAGES:
        raise ValueError(f"data.kind={cfg.data.kind!r}: image sites are only written for kind {IMAGES!r}")
    folders = []
    for name in cfg.site_names if names is None else names:
        spec = image_site_spec(cfg, name)
        folder = image_site_dir(cfg, name, spec)
        if ensure_image_site(folder, spec):
            log(f"fedforget: simulated image site {name} ({spec.contrast}, SNR {spec.simulation.snr:g}) at {folder}")
        poison_if_chosen(cfg, name, folder, log)
        folders.append(folder)
    return folders
