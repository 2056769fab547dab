"""``fedforget check``: every problem of a user's fastMRI folders, not only the first.

A run validates fail-fast (the first bad file stops it); a user preparing data
wants the whole list. Each file is checked with the same validator the runs use
(``recon.hdf5io.validate_entry``), with every k-space value scanned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py

from fedforget.recon.hdf5io import DataFileError, VolumeInfo, folder_entries, validate_entry


@dataclass(frozen=True)
class FileCheck:
    """One entry of a folder: its summary when usable, else the validator's message."""

    path: Path
    info: VolumeInfo | None
    acquisition: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class FolderCheck:
    """A folder's files, or the reason it cannot be read at all (missing, not a folder, empty)."""

    folder: Path
    files: list[FileCheck]
    problem: str | None = None

    @property
    def volumes(self) -> list[VolumeInfo]:
        return [f.info for f in self.files if f.info is not None]

    @property
    def slices(self) -> int:
        return sum(v.num_slices for v in self.volumes)

    @property
    def coils(self) -> list[int]:
        return sorted({v.num_coils for v in self.volumes})

    @property
    def kspace_sizes(self) -> list[tuple[int, int]]:
        return sorted({v.kspace_shape for v in self.volumes})

    @property
    def recon_sizes(self) -> list[tuple[int, int]]:
        return sorted({v.recon_shape for v in self.volumes})

    @property
    def acquisitions(self) -> list[str]:
        return sorted({f.acquisition for f in self.files if f.ok and f.acquisition})

    @property
    def problems(self) -> list[str]:
        """One message per problem file (or the folder's own problem), each naming the path."""
        found = [self.problem] if self.problem else []
        return found + [f.problem for f in self.files if f.problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def acquisition_of(path: Path) -> str | None:
    """The ``acquisition`` attribute (e.g. AXT2, CORPD_FBK) of a validated file, if it has one."""
    with h5py.File(path, "r") as hf:
        value = hf.attrs.get("acquisition")
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def check_file(entry: Path) -> FileCheck:
    """Validate one folder entry with every k-space value scanned; never raises for bad data."""
    try:
        info = validate_entry(entry, scan_kspace=True)
    except DataFileError as err:
        return FileCheck(entry, None, problem=str(err))
    return FileCheck(entry, info, acquisition_of(entry))


def check_folder(folder: Path) -> FolderCheck:
    """Validate every entry of ``folder`` (a missing, non-folder or empty one is a problem too)."""
    folder = Path(folder)
    try:
        entries = folder_entries(folder)
    except DataFileError as err:
        return FolderCheck(folder, [], problem=str(err))
    return FolderCheck(folder, [check_file(entry) for entry in entries])


def check_folders(folders: Iterable[Path]) -> list[FolderCheck]:
    return [check_folder(folder) for folder in folders]
