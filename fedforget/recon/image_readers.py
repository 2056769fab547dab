"""Magnitude images from files: NIfTI volumes, DICOM series, PNG and NPY slices, as one float32 slice stack.

A split's source folder holds one *volume entry* per subject:

* a NIfTI file (``.nii``, ``.nii.gz``): a 3-D volume (a 2-D one is one slice);
* an ``.npy`` file: a 2-D slice or a 3-D volume;
* a ``.png`` file: one slice;
* a ``.dcm`` file: one slice, or a multi-frame volume;
* a folder: one series, either ``.dcm`` files (one slice each, ordered by position along the
  slice normal, else by ``InstanceNumber``) or 2-D ``.png`` / ``.npy`` slices ordered by name.

Every reader returns ``(slices, rows, cols)``. 3-D arrays (NIfTI, ``.npy``, multi-frame DICOM
excepted) are sliced along ``slice_axis``; NIfTI volumes are first turned to the closest RAS
orientation and each slice rotated by 90 degrees, so that an axial slice shows anterior at the top and
the phase-encoding (column) direction runs left-right, as in fastMRI's brain data.

Whatever makes a file unusable (unreadable, 4-D, colour, complex, negative, empty, mixed sizes, lossy
JPEG compression) raises :class:`ImageFileError`, a :class:`~fedforget.recon.hdf5io.DataFileError`
naming the file and the expected form, never a bare nibabel / pydicom / PIL traceback. The readers
(``nibabel``, ``pydicom``, ``PIL``) are imported when a file of theirs is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fedforget.recon.hdf5io import DataFileError

__all__ = ["ImageFileError", "ImageVolume", "VOLUME_FORMS", "volume_entries", "entry_files", "read_volume"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SLICE_SUFFIXES = (".png", ".npy")
DICOM_SUFFIX = ".dcm"
# Lossy formats are refused, not converted: their block artefacts are the JPEG data crime (docs/image-sites.md).
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jp2", ".j2k", ".jpx", ".webp", ".gif")
VOLUME_FORMS = ("a NIfTI volume (.nii, .nii.gz), an .npy array (2-D slice or 3-D volume), a .png slice, a .dcm "
                "file, or a folder holding one series (.dcm files, or 2-D .png / .npy slices of one size)")
MAGNITUDE_FORM = "a real, non-negative magnitude image"
# Undershoot of resampled templates (a few per mille of the maximum) is clipped to 0; more negative
# values mean the file is not a magnitude image (a phase map, CT numbers, z-scored intensities).
NEGATIVE_TOLERANCE = 0.01


class ImageFileError(DataFileError):
    """A source image that cannot become a simulated site; the message names the file and the expected form."""


class ImageVolume(NamedTuple):
    """One subject's magnitude slices.

    Attributes:
        entry: The volume entry (a file, or the folder of a series).
        slices: Float32 array (slices, rows, cols), finite and >= 0.
        form: What it was read from (``nifti``, ``npy``, ``png``, ``dicom``).
    """

    entry: Path
    slices: np.ndarray
    form: str


def _fail(path: Path, problem: str, expected: str = VOLUME_FORMS) -> ImageFileError:
    return ImageFileError(f"{path}: {problem}; expected {expected}", path, problem)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _visible(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, editor files) are never images; the fastMRI folders refuse them only
    # because SliceDataset would open them, which never happens to a source folder.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def volume_entries(folder: Path) -> list[Path]:
    """The volume entries of a source folder, sorted by name (hidden entries skipped).

    Raises:
        ImageFileError: the folder is missing or empty, or an entry is of no known form (the message
            names it; a JPEG is refused as lossy).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _fail(folder, "folder does not exist" if not folder.exists() else "is not a folder",
                    f"a folder of image volumes: each entry {VOLUME_FORMS}")
    entries = _visible(folder)
    if not entries:
        raise _fail(folder, "folder holds no images", f"image volumes in it: each entry {VOLUME_FORMS}")
    for entry in entries:
        _check_form(entry)
    return entries


def _check_form(entry: Path) -> None:
    suffix = _suffix(entry)
    if entry.is_dir() or suffix in NIFTI_SUFFIXES + SLICE_SUFFIXES + (DICOM_SUFFIX,):
        return
    if suffix in LOSSY_SUFFIXES:
        raise _fail(entry, f"is a lossily compressed {suffix} image (its compression artefacts would be "
                           "learned as anatomy: the JPEG data crime)", f"lossless images: {VOLUME_FORMS}")
    raise _fail(entry, f"is not an image file fedforget reads (suffix {suffix or 'none'!r})")


def entry_files(entry: Path) -> list[Path]:
    """The files a volume entry consists of: the file itself, or a series folder's visible files."""
    return _visible(entry) if entry.is_dir() else [entry]


def read_volume(entry: Path, slice_axis: int = 2) -> ImageVolume:
    """One volume entry as magnitude slices (see the module docstring for the forms and orientation).

    Args:
        entry: A file or series folder, as :func:`volume_entries` lists them.
        slice_axis: The axis of a 3-D array along which it is sliced (0, 1 or 2).

    Raises:
        ImageFileError: the entry cannot be read, is 4-D, colour, complex, negative, holds NaN / inf,
            is empty (no voxel or no signal), or its slices differ in size.
    """
    entry = Path(entry)
    _check_form(entry)
    if entry.is_dir():
        slices, form = _read_series(entry), _series_form(entry)
    else:
        form = {".nii": "nifti", ".nii.gz": "nifti", ".npy": "npy", ".png": "png", DICOM_SUFFIX: "dicom"}[
            _suffix(entry)]
        slices = _READERS[form](entry, slice_axis)
    return ImageVolume(entry, _checked_magnitude(entry, slices), form)


def _guarded(path: Path, library: str, read: Callable[[], Any]) -> Any:
    """``read()``, with any exception from the reading library turned into an ImageFileError naming the file.

    The libraries raise dozens of exception types for a damaged or foreign file (zlib, struct, their own
    hierarchies); the user needs the file's name and what fedforget expects, whatever the cause.
    """
    try:
        return read()
    except ImageFileError:
        raise
    except Exception as err:  # noqa: BLE001 (see the docstring)
        raise _fail(path, f"cannot be read by {library} ({type(err).__name__}: {err})") from err


def _as_slices(path: Path, array: np.ndarray, slice_axis: int) -> np.ndarray:
    """A 2-D or 3-D array (a 4-D one with one volume) as (slices, rows, cols)."""
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim >= 4:
        raise _series_error(path, array.shape)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise _fail(path, f"has shape {array.shape}", "a 2-D slice or a 3-D volume")
    return np.moveaxis(array, slice_axis, 0)


def _series_error(path: Path, shape: tuple[int, ...]) -> ImageFileError:
    return _fail(path, f"is a {len(shape)}-D series (shape {shape}): several volumes (time points, echoes, "
                       "diffusion directions) in one file",
                 "one 2-D slice or 3-D volume per file (split the series into volumes first)")


def _read_nifti(path: Path, slice_axis: int) -> np.ndarray:
    import nibabel

    def load() -> np.ndarray:
        image = nibabel.load(str(path))
        if len(image.shape) >= 4 and any(n > 1 for n in image.shape[3:]):
            raise _series_error(path, tuple(image.shape))  # before any voxel is read
        if np.issubdtype(image.get_data_dtype(), np.complexfloating):
            raise _fail(path, f"holds complex values (dtype {image.get_data_dtype()})", MAGNITUDE_FORM)
        return np.asarray(nibabel.as_closest_canonical(image).get_fdata(dtype=np.float32))

    # Slices are rotated so that an axial RAS slice shows anterior at the top (the radiological view).
    return np.rot90(_as_slices(path, _guarded(path, "nibabel", load), slice_axis), axes=(1, 2))


def _read_npy(path: Path, slice_axis: int) -> np.ndarray:
    array = _guarded(path, "numpy", lambda: np.load(path, allow_pickle=False))
    if np.iscomplexobj(array) or array.dtype.kind not in "biuf":
        raise _fail(path, f"holds dtype {array.dtype}", MAGNITUDE_FORM)
    return _as_slices(path, array.astype(np.float32), slice_axis)


def _read_png(path: Path, slice_axis: int = 2) -> np.ndarray:
    from PIL import Image

    def load() -> np.ndarray:
        with Image.open(path) as image:
            image.load()
            return _grey(path, np.asarray(image), image.mode)

    return _guarded(path, "PIL", load)[None].astype(np.float32)


def _grey(path: Path, pixels: np.ndarray, mode: str) -> np.ndarray:
    """A PNG's grey values: grey modes as they are, RGB(A) only when its three channels are equal."""
    if pixels.ndim == 2 and mode != "P":
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] in (2, 3, 4):
        colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
        if (colour == colour[..., :1]).all():
            return colour[..., 0]
    raise _fail(path, f"is a colour image (mode {mode})", "a greyscale magnitude image")


def _read_dicom(path: Path, slice_axis: int = 2) -> np.ndarray:
    """One DICOM file: a slice, or a multi-frame volume (frames are its slices)."""
    dataset = _dicom_dataset(path)
    pixels = _dicom_pixels(path, dataset)
    return pixels if pixels.ndim == 3 else pixels[None]


def _dicom_dataset(path: Path) -> Any:
    import pydicom

    dataset = _guarded(path, "pydicom", lambda: pydicom.dcmread(path))
    _check_lossless(path, dataset)
    return dataset


def _check_lossless(path: Path, dataset: Any) -> None:
    """Refuse lossy-compressed pixel data (the JPEG data crime), whether its transfer syntax says so or
    an earlier lossy step was recorded (``LossyImageCompression = 01``)."""
    import pydicom.uid

    lossy_names = ("JPEGBaseline8Bit", "JPEGExtended12Bit", "JPEG2000", "JPEG2000MC", "JPEGLSNearLossless",
                   "HTJ2K", "MPEG2MPML", "MPEG4HP41", "HEVCMP51")
    lossy = {getattr(pydicom.uid, name) for name in lossy_names if hasattr(pydicom.uid, name)}
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax in lossy or str(dataset.get("LossyImageCompression", "00")).strip() == "01":
        raise _fail(path, f"holds lossily compressed pixel data (transfer syntax {syntax}; its artefacts would "
                          "be learned as anatomy: the JPEG data crime)", "uncompressed or losslessly compressed DICOM")


def _dicom_pixels(path: Path, dataset: Any) -> np.ndarray:
    """The stored values with the modality rescale (slope, intercept) applied; grey images only."""
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise _fail(path, f"is a colour image ({dataset.get('PhotometricInterpretation', '?')})",
                    "a greyscale magnitude image")
    pixels = _guarded(path, "pydicom", lambda: dataset.pixel_array).astype(np.float32)
    slope, intercept = float(dataset.get("RescaleSlope", 1) or 1), float(dataset.get("RescaleIntercept", 0) or 0)
    return pixels * slope + intercept


def _series_form(folder: Path) -> str:
    suffixes = {_suffix(p) for p in _visible(folder)}
    if not suffixes:
        raise _fail(folder, "series folder holds no images", "a folder of .dcm files or of 2-D .png / .npy slices")
    if len(suffixes) > 1 or not suffixes <= {DICOM_SUFFIX, *SLICE_SUFFIXES}:
        raise _fail(folder, f"series folder mixes or holds other files ({', '.join(sorted(suffixes))})",
                    "a folder of .dcm files only, or of .png or .npy slices only")
    return {DICOM_SUFFIX: "dicom", ".png": "png", ".npy": "npy"}[suffixes.pop()]


def _read_series(folder: Path) -> np.ndarray:
    files = _visible(folder)
    if _series_form(folder) == "dicom":
        return _dicom_series(folder, files)
    reader = _read_png if files[0].suffix.lower() == ".png" else _read_npy
    slices = []
    for path in files:
        stack = reader(path, 2)
        if stack.shape[0] != 1:
            raise _fail(path, f"is a {stack.ndim}-D array of {stack.shape[0]} slices inside a series folder",
                        "one 2-D slice per file in a series folder")
        slices.append(stack[0])
    return _stacked(folder, files, slices)


def _stacked(folder: Path, files: list[Path], slices: list[np.ndarray]) -> np.ndarray:
    """The slices as one array, or an error naming the first file whose size differs from the first's."""
    for path, image in zip(files, slices):
        if image.shape != slices[0].shape:
            raise _fail(path, f"is {image.shape[0]} x {image.shape[1]} pixels but {files[0].name} in the same "
                              f"series ({folder}) is {slices[0].shape[0]} x {slices[0].shape[1]}",
                        "slices of one size within a volume")
    return np.stack(slices)


def _dicom_series(folder: Path, files: list[Path]) -> np.ndarray:
    """A folder of single-frame DICOM slices, ordered along the slice normal (else by InstanceNumber)."""
    datasets = [_dicom_dataset(path) for path in files]
    positions = [_slice_position(ds) for ds in datasets]
    if all(p is not None for p in positions):
        if len(set(positions)) < len(positions):
            raise _fail(folder, f"is a 4-D series: {len(positions)} images at only {len(set(positions))} distinct "
                                "slice position(s) (several time points, echoes or diffusion directions)",
                        "one image per slice position (split the series into volumes first)")
        keys: list[Any] = positions
    else:
        keys = [int(ds.get("InstanceNumber", i) or i) for i, ds in enumerate(datasets)]
    order = sorted(range(len(files)), key=lambda i: (keys[i], files[i].name))
    slices = []
    for i in order:
        pixels = _dicom_pixels(files[i], datasets[i])
        if pixels.ndim != 2:
            raise _fail(files[i], f"holds {pixels.shape[0]} frames inside a series folder",
                        "one single-frame slice per file in a series folder")
        slices.append(pixels)
    return _stacked(folder, [files[i] for i in order], slices)


def _slice_position(dataset: Any) -> float | None:
    """Where a slice lies along its normal (ImagePositionPatient on the orientation's cross product)."""
    position, orientation = dataset.get("ImagePositionPatient"), dataset.get("ImageOrientationPatient")
    if position is None or orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return round(float(np.dot(normal, np.asarray(position, float))), 4)


def _checked_magnitude(entry: Path, slices: np.ndarray) -> np.ndarray:
    """Finite, non-negative, non-empty float32 slices (small resampling undershoot clipped to 0)."""
    if slices.size == 0 or min(slices.shape) == 0:
        raise _fail(entry, f"is an empty volume (shape {slices.shape})", f"{MAGNITUDE_FORM} with pixels")
    if not np.isfinite(slices).all():
        raise _fail(entry, "holds NaN or inf values", f"{MAGNITUDE_FORM} with finite values")
    peak, low = float(slices.max()), float(slices.min())
    if peak <= 0:
        raise _fail(entry, "is an empty volume (no pixel above 0)", f"{MAGNITUDE_FORM} with signal")
    if low < -NEGATIVE_TOLERANCE * peak:
        raise _fail(entry, f"holds negative values (min {low:.4g}, max {peak:.4g}): not a magnitude image",
                    MAGNITUDE_FORM)
    return np.ascontiguousarray(np.clip(slices, 0.0, None), dtype=np.float32)


_READERS: dict[str, Callable[[Path, int], np.ndarray]] = {
    "nifti": _read_nifti, "npy": _read_npy, "png": _read_png, "dicom": _read_dicom}
