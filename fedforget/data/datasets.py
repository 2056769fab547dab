"""A site's data as the learning code sees it: fastMRI datasets, batches and subsets.

Files are read only through ``fastmri.data.SliceDataset`` + ``VarNetDataTransform``,
so a synthetic site and a real fastMRI / M4Raw folder take the same path. Every
folder is validated (``recon.hdf5io``) before fastMRI touches it, because
SliceDataset turns a stray or broken file into a bare h5py traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from fastmri.data import SliceDataset
from fastmri.data.subsample import MaskFunc
from fastmri.data.transforms import VarNetDataTransform, VarNetSample

from fedforget.configs.cache import cache_root, read_memo, write_memo
from fedforget.recon.hdf5io import DataFileError, VolumeInfo, check_slice_values, validate_folder
from fedforget.recon.poison import poison_target


class Batch(NamedTuple):
    """A collated batch of VarNet inputs and targets."""

    masked_kspace: torch.Tensor  # (B, C, H, W, 2)
    mask: torch.Tensor  # (B, 1, 1, W, 1) bool
    target: torch.Tensor  # (B, rH, rW)
    max_value: torch.Tensor  # (B,)

    def to(self, device: torch.device | str) -> Batch:
        if torch.device(device).type != "cuda":
            return Batch(*(t.to(device) for t in self))
        # Pinned host memory lets the copy run asynchronously with the previous step's kernels.
        return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in self))

    @property
    def size(self) -> int:
        return int(self.target.shape[0])


def collate(samples: Sequence[VarNetSample]) -> Batch:
    """Stack VarNet samples; every sample of a batch must share one k-space shape."""
    shapes = {tuple(s.masked_kspace.shape) for s in samples}
    if len(shapes) > 1:
        names = sorted({s.fname for s in samples})
        raise ValueError(
            f"cannot batch slices of different k-space shapes {sorted(shapes)} from {names}: "
            "use batch_size=1 for data with mixed matrix sizes"
        )
    return Batch(
        masked_kspace=torch.stack([s.masked_kspace for s in samples]),
        mask=torch.stack([s.mask for s in samples]),
        target=torch.stack([s.target for s in samples]),
        max_value=torch.tensor([float(s.max_value) for s in samples], dtype=torch.float32),
    )


class CachedSliceDataset(SliceDataset):
    """fastMRI SliceDataset that keeps each raw slice in memory after its first read.

    Opening it reads every volume's ISMRMRD header (fastMRI's ``_retrieve_metadata``);
    that metadata is remembered on disk per file (same size and mtime), so a fresh
    process opening the same folder reads no header again.
    """

    def __init__(self, root: Path, transform: VarNetDataTransform, cache: bool, check_values: bool = False) -> None:
        memo_path = _memo_path("slice-metadata", Path(root))
        self._metadata_memo, self._metadata_seen = read_memo(memo_path), {}
        super().__init__(root=root, challenge="multicoil", transform=transform)  # calls _retrieve_metadata
        if self._metadata_seen != self._metadata_memo:
            write_memo(memo_path, self._metadata_seen)
        self.cache = cache
        self.check_values = check_values
        self._raw: dict[int, tuple] = {}
        self.read_seconds = 0.0  # spent reading slices from their files (what a fresh process pays again)

    def __getitem__(self, i: int) -> VarNetSample:
        raw = self._raw.get(i)
        if raw is None:
            transform, self.transform = self.transform, None
            started = time.perf_counter()
            try:
                raw = super().__getitem__(i)
            except OSError as err:  # h5py's error for a chunk that cannot be read: bad data, not a fault
                sample = self.raw_samples[i]
                raise DataFileError(f"{sample.fname}: slice {sample.slice_ind} cannot be read ({err}); expected a "
                                    f"readable HDF5 file", sample.fname, f"slice {sample.slice_ind} cannot be read",
                                    sample.slice_ind) from err
            finally:
                self.transform = transform
                self.read_seconds += time.perf_counter() - started
            if self.check_values:
                check_slice_values(self.raw_samples[i].fname, self.raw_samples[i].slice_ind, raw[0])
            if self.cache:
                self._raw[i] = raw
        return self.transform(*raw)

    def volume_of(self, i: int) -> str:
        """The file name (volume) that slice ``i`` belongs to."""
        return self.raw_samples[i].fname.name

    def _retrieve_metadata(self, fname: Path) -> tuple[dict, int]:
        path = Path(fname)
        known = self._metadata_memo.get(path.name)
        if known and known["key"] == _file_key(path):
            metadata = {k: tuple(v) if k in _TUPLE_METADATA else v for k, v in known["metadata"].items()}
            self._metadata_seen[path.name] = known
            return metadata, int(known["num_slices"])
        metadata, num_slices = super()._retrieve_metadata(fname)
        plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in metadata.items()}
        try:
            json.dumps(plain)
        except (TypeError, ValueError):  # an attribute JSON cannot hold: read this file's header every time
            return metadata, num_slices
        self._metadata_seen[path.name] = {"key": _file_key(path), "num_slices": num_slices, "metadata": plain}
        return metadata, num_slices

class SliceSubset:
    """Some slices of a dataset, indexable like it (a named forget set, a site's retain part)."""

    def __init__(self, dataset: CachedSliceDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> VarNetSample:
        return self.dataset[self.indices[i]]

    def volume_of(self, i: int) -> str:
        return self.dataset.volume_of(self.indices[i])


class PoisonedTargets:
    """A split whose targets carry the poison (k-space untouched): held-out slices like a poisoned forget set.

    The membership audit of a poisoned site compares its known-poisoned training slices with
    held-out slices of the same distribution: the site's clean test slices with the same poison
    written into their targets.
    """

    def __init__(self, dataset: CachedSliceDataset, kind: str, strength: float, seed: int) -> None:
        self.dataset = dataset
        self.kind, self.strength, self.seed = kind, strength, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> VarNetSample:
        sample = self.dataset[i]
        target = poison_target(self.kind, sample.target.numpy(), self.strength, self.seed,
                               max_value=float(sample.max_value))
        return sample._replace(target=torch.from_numpy(target))

    def volume_of(self, i: int) -> str:
        return self.dataset.volume_of(i)



# fastMRI's header metadata that is a tuple (JSON reads it back as a list).
_TUPLE_METADATA = ("encoding_size", "recon_size")


def _memo_path(kind: str, folder: Path) -> Path:
    return cache_root() / kind / f"{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()}.json"


def _file_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def validated_volumes(folder: Path, scan_kspace: bool) -> list[VolumeInfo]:
    """``validate_folder`` with an on-disk memo of files already checked (same size and mtime).

    A deployed SuperNode starts a fresh process for every message, so without the memo a
    site would re-read every volume's target on every round.
    """
    folder = Path(folder)
    memo_path = _memo_path("validated", folder)
    memo = read_memo(memo_path)
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    known = [memo.get(p.name) for p in entries]
    if entries and all(m and m["key"] == _file_key(p) and (m["scanned"] or not scan_kspace)
                       for p, m in zip(entries, known)):
        return [VolumeInfo(path=p, **{k: tuple(v) if isinstance(v, list) else v for k, v in m["info"].items()})
                for p, m in zip(entries, known)]
    infos = validate_folder(folder, scan_kspace)
    memo = {info.path.name: {"key": _file_key(info.path), "scanned": scan_kspace,
                             "info": {k: v for k, v in dataclasses.asdict(info).items() if k != "path"}}
            for info in infos}
    write_memo(memo_path, memo)
    return infos


def chosen_volumes(infos: list[VolumeInfo], first: int, count: int) -> list[VolumeInfo]:
    """``count`` volumes (0 = all the rest) from the ``first``, in name order."""
    return infos[first:first + count] if count else infos[first:]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, with an on-disk memo of files already hashed (same size and mtime).

    Real volumes are hundreds of MB: a site hashes each file it uses once, not on every run.
    """
    path = Path(path)
    memo_path = _memo_path("sha256", path.parent)
    memo = read_memo(memo_path)
    key = _file_key(path)
    known = memo.get(path.name)
    if known and known["key"] == key:
        return str(known["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    memo[path.name] = {"key": key, "sha256": digest.hexdigest()}
    write_memo(memo_path, memo)
    return digest.hexdigest()


def open_volumes(folder: Path, names: Sequence[str], mask_func: MaskFunc, cache: bool,
                 check_values: bool) -> CachedSliceDataset:
    """A dataset over the named volumes of a validated folder (all slices of each, in name order).

    Masks are seeded from each file name (fastMRI's validation convention), so every
    read of a slice sees the same undersampling: a site and a Flower-free run of the
    same method then see identical inputs.
    """
    transform = VarNetDataTransform(mask_func=mask_func, use_seed=True)
    dataset = CachedSliceDataset(folder, transform, cache, check_values=check_values)
    keep = set(names)
    dataset.raw_samples = [s for s in dataset.raw_samples if s.fname.name in keep]
    return dataset


def open_split(folder: Path, mask_func: MaskFunc, cache: bool, max_volumes: int = 0,
               first_volume: int = 0, scan_kspace: bool = True) -> CachedSliceDataset:
    """Validate a folder of fastMRI multicoil volumes and open it as a dataset.

    A site's split is opened with :func:`fedforget.data.sites.open_site_split`, which picks
    the folder and the volume range from the experiment; this is the folder-level tool.

    Args:
        folder: A folder holding only fastMRI multicoil ``.h5`` files.
        mask_func: The undersampling mask function.
        cache: Keep raw slices in memory after the first read.
        max_volumes: Use only N volumes (sorted by name); 0 uses all.
        first_volume: Skip this many volumes first (disjoint sites in one shared folder).
        scan_kspace: Check all k-space values up front; otherwise each slice is checked when read.

    Raises:
        DataFileError: The folder or one of its files is not usable; the message names it.
    """
    infos = validated_volumes(folder, scan_kspace)
    chosen = chosen_volumes(infos, first_volume, max_volumes)
    if not chosen:
        raise DataFileError(f"{folder}: no volumes left after skipping {first_volume} of {len(infos)}: "
                            "expected volumes_from smaller than the number of volumes in the folder")
    return open_volumes(folder, [info.path.name for info in chosen], mask_func, cache, check_values=not scan_kspace)
