"""fastMRI multicoil HDF5 files: writing and validation.

The layout is what ``fastmri.data.SliceDataset(challenge="multicoil")`` and
``fastmri.data.transforms.VarNetDataTransform`` read:

* dataset ``kspace``: complex64 (slices, coils, rows, cols);
* dataset ``reconstruction_rss``: float32 (slices, recon_rows, recon_cols);
* dataset ``ismrmrd_header``: ISMRMRD XML (namespace
  ``http://www.ismrm.org/ISMRMRD``) with ``encoding/encodedSpace/matrixSize``,
  ``encoding/reconSpace/matrixSize`` and
  ``encoding/encodingLimits/kspace_encoding_step_1/{center,maximum}``;
* attributes ``max`` (required by ``VarNetDataTransform`` whenever a target
  exists), ``norm``, ``acquisition`` and ``patient_id``.

``validate_volume`` turns every way a file can break fastMRI's loaders (or
silently corrupt training) into a ``DataFileError`` naming the file, what is
wrong and the expected form, instead of a bare h5py / ElementTree traceback
in the middle of a federated round. It accepts real fastMRI and M4Raw files,
which carry extra datasets and attributes and may have k-space larger than
the reconstruction (e.g. 640 x 368 k-space, 320 x 320 target).
"""

from __future__ import annotations

import xml.etree.ElementTree as etree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fedforget.recon.atomic import atomic_write

__all__ = [
    "ISMRMRD_NAMESPACE",
    "DataFileError",
    "VolumeInfo",
    "write_multicoil_volume",
    "validate_volume",
    "validate_entry",
    "folder_entries",
    "validate_folder",
    "check_slice_values",
]

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"

_KSPACE_FORM = "complex64 with shape (slices, coils, rows, cols)"
_RECON_FORM = "float32 with shape (slices, recon_rows, recon_cols)"
_HEADER_FORM = f"ISMRMRD XML bytes (namespace {ISMRMRD_NAMESPACE})"
_FOLDER_FORM = "a folder holding only fastMRI multicoil .h5 files"
# Relative tolerance between the 'max' attribute and reconstruction_rss.max().
# fastMRI computes 'max' (and 'norm') from the stored reconstruction_rss
# volume, so they agree to float32 rounding; a larger gap means the
# attribute belongs to other data, and SSIM would use the wrong data range.
_MAX_RTOL = 1e-3

_HEADER_ELEMENTS: tuple[tuple[str, ...], ...] = (
    ("encoding", "encodedSpace", "matrixSize", "x"),
    ("encoding", "encodedSpace", "matrixSize", "y"),
    ("encoding", "encodedSpace", "matrixSize", "z"),
    ("encoding", "reconSpace", "matrixSize", "x"),
    ("encoding", "reconSpace", "matrixSize", "y"),
    ("encoding", "reconSpace", "matrixSize", "z"),
    ("encoding", "encodingLimits", "kspace_encoding_step_1", "center"),
    ("encoding", "encodingLimits", "kspace_encoding_step_1", "maximum"),
)


class DataFileError(ValueError):
    """A data file or folder that fastMRI's loaders cannot use.

    The message always names the file or folder, says what is wrong and
    what was expected; ``path``, ``problem`` and ``slice_index`` (when one
    slice is at fault) carry the same facts for status records.
    """

    def __init__(self, message: str, path: Path | None = None, problem: str = "",
                 slice_index: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.problem = problem
        self.slice_index = slice_index


@dataclass(frozen=True)
class VolumeInfo:
    """Summary of a validated multicoil volume.

    Attributes:
        path: The file.
        num_slices: Number of slices.
        num_coils: Number of receive coils.
        kspace_shape: k-space ``(rows, cols)``.
        recon_shape: ``reconstruction_rss`` ``(rows, cols)``.
        max_value: The ``max`` attribute (SSIM / PSNR data range).
    """

    path: Path
    num_slices: int
    num_coils: int
    kspace_shape: tuple[int, int]
    recon_shape: tuple[int, int]
    max_value: float


def _header_xml(kspace_shape: tuple[int, int], recon_shape: tuple[int, int]) -> bytes:
    """Minimal ISMRMRD header that fastMRI's SliceDataset can read."""
    rows, cols = kspace_shape
    recon_rows, recon_cols = recon_shape
    # fastMRI derives padding_left = cols // 2 - center and
    # padding_right = padding_left + maximum + 1; center = cols // 2 and
    # maximum = cols - 1 mark every column as acquired (no zero padding).
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">'
        "<encoding>"
        "<encodedSpace>"
        f"<matrixSize><x>{rows}</x><y>{cols}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{float(rows)}</x><y>{float(cols)}</y><z>1.0</z></fieldOfView_mm>"
        "</encodedSpace>"
        "<reconSpace>"
        f"<matrixSize><x>{recon_rows}</x><y>{recon_cols}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{float(recon_rows)}</x><y>{float(recon_cols)}</y><z>1.0</z></fieldOfView_mm>"
        "</reconSpace>"
        "<trajectory>cartesian</trajectory>"
        "<encodingLimits>"
        "<kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{cols - 1}</maximum><center>{cols // 2}</center>"
        "</kspace_encoding_step_1>"
        "</encodingLimits>"
        "</encoding>"
        "</ismrmrdHeader>"
    ).encode()


def write_multicoil_volume(
    path: Path,
    kspace: np.ndarray,
    target: np.ndarray,
    *,
    patient_id: str,
    acquisition: str,
) -> Path:
    """Writes one fastMRI multicoil volume, atomically.

    The file is written as ``<name>.tmp`` in the destination folder and then
    renamed over ``path``, so readers never see a half-written file.

    Args:
        path: Destination ``.h5`` file.
        kspace: Complex k-space of shape (slices, coils, rows, cols).
        target: Real RSS target of shape (slices, recon_rows, recon_cols).
        patient_id: Stored as the ``patient_id`` attribute.
        acquisition: Stored as the ``acquisition`` attribute (fastMRI uses
            e.g. ``"AXT2"`` for brain and ``"CORPD_FBK"`` for knee).

    Returns:
        ``path``.

    Raises:
        ValueError: If the arrays do not have the shapes and types above,
            disagree on the slice count, contain non-finite values, or the
            target is not positive somewhere.
    """
    path = Path(path)
    target, max_value = _checked_volume(kspace, target)
    header = _header_xml(
        (kspace.shape[2], kspace.shape[3]), (target.shape[1], target.shape[2])
    )

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset("kspace", data=np.asarray(kspace, dtype=np.complex64))
            hf.create_dataset("reconstruction_rss", data=target)
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
            hf.attrs["max"] = max_value
            hf.attrs["norm"] = float(np.linalg.norm(target))
            hf.attrs["acquisition"] = acquisition
            hf.attrs["patient_id"] = patient_id

    atomic_write(path, write, temp="{name}.tmp")
    return path


def _checked_volume(kspace: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """The target as float32 and its maximum, after checking both arrays (see write_multicoil_volume)."""
    if not np.iscomplexobj(kspace) or kspace.ndim != 4:
        raise ValueError(
            f"kspace must be complex with shape (slices, coils, rows, cols); "
            f"got dtype {kspace.dtype} and shape {kspace.shape}"
        )
    if np.iscomplexobj(target) or target.ndim != 3:
        raise ValueError(
            f"target must be real with shape (slices, rows, cols); "
            f"got dtype {target.dtype} and shape {target.shape}"
        )
    if kspace.shape[0] != target.shape[0]:
        raise ValueError(
            f"kspace has {kspace.shape[0]} slices but target has {target.shape[0]}"
        )
    if not (np.isfinite(kspace).all() and np.isfinite(target).all()):
        raise ValueError("kspace and target must be finite")
    target = np.asarray(target, dtype=np.float32)
    max_value = float(target.max())
    if max_value <= 0:
        raise ValueError(f"target max must be > 0, got {max_value}")
    return target, max_value


def _fail(path: Path, problem: str, expected: str, slice_index: int | None = None) -> DataFileError:
    return DataFileError(f"{path}: {problem}; expected {expected}", path, problem, slice_index)


def _header_query(root: etree.Element, names: Sequence[str]) -> etree.Element | None:
    # Same nested descendant query as fastmri.data.mri_data.et_query, so an
    # element found here is found there too.
    query = "." + "".join(f"//ismrmrd:{name}" for name in names)
    return root.find(query, {"ismrmrd": ISMRMRD_NAMESPACE})


def _read_header(path: Path, dataset: Any) -> dict[str, int]:
    """Parses the ISMRMRD header; returns the required elements as ints."""
    raw = dataset[()]
    if isinstance(raw, np.ndarray) and raw.shape == (1,):
        raw = raw[0]
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, np.bytes_)):
        raise _fail(
            path,
            f"dataset 'ismrmrd_header' holds {type(raw).__name__} "
            f"(dtype {dataset.dtype}, shape {dataset.shape})",
            _HEADER_FORM,
        )
    try:
        root = etree.fromstring(bytes(raw))
    except etree.ParseError as err:
        raise _fail(
            path, f"dataset 'ismrmrd_header' is not parseable XML ({err})", _HEADER_FORM
        ) from err

    values: dict[str, int] = {}
    for names in _HEADER_ELEMENTS:
        element_path = "/".join(names)
        element = _header_query(root, names)
        if element is None:
            raise _fail(
                path,
                f"ismrmrd_header lacks element {element_path}",
                f"{_HEADER_FORM} containing {element_path}",
            )
        try:
            values[element_path] = int(str(element.text).strip())
        except ValueError as err:
            raise _fail(
                path,
                f"ismrmrd_header element {element_path} is {element.text!r}",
                "an integer",
            ) from err
    return values


def _check_all_finite(path: Path, dataset: Any) -> None:
    # One slice at a time: a real fastMRI knee volume is ~1 GB of k-space.
    for i in range(dataset.shape[0]):
        check_slice_values(path, i, dataset[i])


def validate_volume(path: Path, scan_kspace: bool = True) -> VolumeInfo:
    """Checks that a file is a usable fastMRI multicoil volume.

    Args:
        path: The ``.h5`` file.
        scan_kspace: Also check every k-space value is finite. Real fastMRI volumes
            hold ~100 MB of k-space each; callers reading them lazily skip this scan
            and check each slice as it is read (``check_slice_values``).

    Returns:
        A summary of the volume.

    Raises:
        DataFileError: On the first problem found, with a message naming the
            file, the problem and the expected form. Checked in order: the
            file exists and is HDF5; datasets ``kspace``,
            ``reconstruction_rss`` and ``ismrmrd_header`` exist; attribute
            ``max`` exists; dtypes and ranks; slice counts agree; the header
            parses and has the required elements; header sizes match the
            datasets; the reconstruction is not taller than the k-space;
            values are finite; ``max`` is finite, positive and equal to the
            volume maximum of ``reconstruction_rss``.
    """
    path = Path(path)
    with _open_volume(path) as hf:
        _check_datasets(path, hf)
        kspace, recon = hf["kspace"], hf["reconstruction_rss"]
        num_slices, num_coils, rows, cols = _check_shapes(path, kspace, recon)
        _check_header_sizes(path, _read_header(path, hf["ismrmrd_header"]), (rows, cols), recon.shape[1:])
        if scan_kspace:
            _check_all_finite(path, kspace)
        recon_volume = recon[()]
        if not np.isfinite(recon_volume).all():
            raise _fail(path, "dataset 'reconstruction_rss' contains NaN or inf", "finite reconstruction values")
        max_value = _check_max(path, hf.attrs["max"], float(recon_volume.max()))
    return VolumeInfo(path=path, num_slices=int(num_slices), num_coils=int(num_coils), kspace_shape=(rows, cols),
                      recon_shape=(int(recon_volume.shape[1]), int(recon_volume.shape[2])), max_value=max_value)


def _open_volume(path: Path) -> h5py.File:
    """The file opened for reading, or a DataFileError saying why it is not an HDF5 file."""
    if not path.exists():
        raise _fail(path, "file does not exist", "a fastMRI multicoil .h5 file")
    if not path.is_file():
        raise _fail(path, "is not a regular file", "a fastMRI multicoil .h5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise _fail(path, f"is not an HDF5 file (h5py cannot open it: {err})", "a fastMRI multicoil .h5 file") from err


def _check_datasets(path: Path, hf: h5py.File) -> None:
    """The three datasets and the ``max`` attribute fastMRI's multicoil reader needs are there."""
    for name, form in (("kspace", _KSPACE_FORM), ("reconstruction_rss", _RECON_FORM),
                       ("ismrmrd_header", _HEADER_FORM)):
        if name not in hf:
            raise _fail(path, f"missing dataset '{name}'", f"a dataset '{name}': {form}")
        if not isinstance(hf[name], h5py.Dataset):
            raise _fail(path, f"'{name}' is a group, not a dataset", form)
    if "max" not in hf.attrs:
        raise _fail(path, "missing attribute 'max'",
                    "attribute 'max' = reconstruction_rss.max() (VarNetDataTransform needs it)")


def _check_shapes(path: Path, kspace: h5py.Dataset, recon: h5py.Dataset) -> tuple[int, int, int, int]:
    """Dtypes, ranks and slice counts; returns k-space (slices, coils, rows, cols)."""
    if kspace.dtype not in (np.complex64, np.complex128):
        raise _fail(path, f"dataset 'kspace' has dtype {kspace.dtype}", _KSPACE_FORM)
    if kspace.ndim != 4:
        raise _fail(path, f"dataset 'kspace' has shape {kspace.shape} (rank {kspace.ndim})", _KSPACE_FORM)
    if recon.dtype not in (np.float32, np.float64):
        raise _fail(path, f"dataset 'reconstruction_rss' has dtype {recon.dtype}", _RECON_FORM)
    if recon.ndim != 3:
        raise _fail(path, f"dataset 'reconstruction_rss' has shape {recon.shape} (rank {recon.ndim})", _RECON_FORM)
    num_slices, num_coils, rows, cols = (int(n) for n in kspace.shape)
    if recon.shape[0] != num_slices:
        raise _fail(path, f"slice counts disagree: kspace has {num_slices}, reconstruction_rss has {recon.shape[0]}",
                    "one reconstruction_rss slice per kspace slice")
    if num_slices < 1 or num_coils < 1:
        raise _fail(path, f"dataset 'kspace' has shape {kspace.shape}", f"{_KSPACE_FORM}, non-empty")
    # Only rows are compared: fastMRI brain FLAIR volumes have k-space narrower than their 320-column
    # target and fastMRI handles them (VarNetModule's "FLAIR 203" case), but a target taller than the
    # k-space makes its center_crop fail.
    if recon.shape[1] > rows:
        raise _fail(path, f"reconstruction_rss has {recon.shape[1]} rows but kspace only {rows}",
                    "reconstruction no taller than the k-space (it is a centre crop)")
    return num_slices, num_coils, rows, cols


def _check_header_sizes(path: Path, header: dict[str, int], kspace_shape: tuple[int, int],
                        recon_shape: tuple[int, int]) -> None:
    """The header's encoded and reconstruction matrix sizes match the datasets."""
    encoded = (header["encoding/encodedSpace/matrixSize/x"], header["encoding/encodedSpace/matrixSize/y"])
    recon = (header["encoding/reconSpace/matrixSize/x"], header["encoding/reconSpace/matrixSize/y"])
    if encoded != tuple(kspace_shape):
        raise _fail(path, f"header encodedSpace matrixSize (x={encoded[0]}, y={encoded[1]}) disagrees with kspace "
                          f"rows x cols {kspace_shape[0]} x {kspace_shape[1]}",
                    "encodedSpace x = kspace rows, y = kspace cols")
    if recon != tuple(recon_shape):
        raise _fail(path, f"header reconSpace matrixSize (x={recon[0]}, y={recon[1]}) disagrees with "
                          f"reconstruction_rss rows x cols {recon_shape[0]} x {recon_shape[1]}",
                    "reconSpace x = reconstruction_rss rows, y = reconstruction_rss cols")


def _check_max(path: Path, raw_max: Any, volume_max: float) -> float:
    """The ``max`` attribute: a finite positive number equal to the volume maximum; returns it."""
    try:
        max_value = float(np.asarray(raw_max).reshape(-1)[0] if np.ndim(raw_max) else raw_max)
    except (TypeError, ValueError) as err:
        raise _fail(path, f"attribute 'max' is {raw_max!r}", "a positive number") from err
    if not np.isfinite(max_value) or max_value <= 0:
        raise _fail(path, f"attribute 'max' is {max_value}", "a finite number > 0")
    if abs(max_value - volume_max) > _MAX_RTOL * abs(volume_max):
        raise _fail(path, f"attribute 'max' = {max_value:.6g} disagrees with reconstruction_rss.max() = "
                          f"{volume_max:.6g}",
                    f"'max' equal to the volume maximum of reconstruction_rss (relative tolerance {_MAX_RTOL:g})")
    return max_value


def check_slice_values(path: Path, slice_index: int, kspace: np.ndarray) -> None:
    """Raise DataFileError if one slice's k-space holds NaN or inf (the lazy form of the scan)."""
    if not np.isfinite(kspace).all():
        raise _fail(Path(path), f"dataset 'kspace' contains NaN or inf in slice {slice_index}",
                    "finite k-space values", slice_index)


def folder_entries(folder: Path) -> list[Path]:
    """The entries of a folder that ``fastmri.data.SliceDataset`` will read, sorted by name.

    Args:
        folder: Folder of fastMRI multicoil ``.h5`` files.

    Returns:
        Every entry of the folder (files and anything else), sorted.

    Raises:
        DataFileError: If the folder is missing, not a directory, or empty.
    """
    folder = Path(folder)
    if not folder.exists():
        raise _fail(folder, "folder does not exist", _FOLDER_FORM)
    if not folder.is_dir():
        raise _fail(folder, "is not a directory", _FOLDER_FORM)
    entries = sorted(folder.iterdir())
    if not entries:
        raise _fail(folder, "folder is empty", "fastMRI multicoil .h5 files in it")
    return entries


def validate_entry(entry: Path, scan_kspace: bool = True) -> VolumeInfo:
    """Checks one entry of a data folder: a regular HDF5 file that is a usable multicoil volume.

    SliceDataset opens *every* entry of its folder as HDF5, so a stray
    README, a hidden file or a subdirectory crashes it; they are rejected
    here with a message naming the entry.

    Args:
        entry: A path inside a data folder.
        scan_kspace: Passed to :func:`validate_volume`.

    Returns:
        The volume's summary.

    Raises:
        DataFileError: If the entry is a subdirectory, not HDF5, or not a valid volume.
    """
    if entry.is_dir():
        raise _fail(
            entry,
            "is a subdirectory (fastMRI's SliceDataset reads every entry "
            "of the folder and would crash on it)",
            _FOLDER_FORM,
        )
    if not h5py.is_hdf5(entry):
        raise _fail(
            entry,
            "is not an HDF5 file (fastMRI's SliceDataset reads every "
            "entry of the folder and would crash on it)",
            _FOLDER_FORM,
        )
    return validate_volume(entry, scan_kspace)


def validate_folder(folder: Path, scan_kspace: bool = True) -> list[VolumeInfo]:
    """Checks a folder that ``fastmri.data.SliceDataset`` will read (stops at the first problem).

    Args:
        folder: Folder of fastMRI multicoil ``.h5`` files.
        scan_kspace: Passed to :func:`validate_volume`.

    Returns:
        One summary per volume, sorted by path.

    Raises:
        DataFileError: If the folder is missing, not a directory, empty, or
            holds an entry that is not a valid multicoil volume.
    """
    return [validate_entry(entry, scan_kspace) for entry in folder_entries(folder)]
