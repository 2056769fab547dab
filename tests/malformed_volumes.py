"""Malformed fastMRI multicoil files: one way to break a good volume per problem the validator knows.

Shared by the validator's own tests (tests/recon) and ``fedforget check``'s tests.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from fedforget.recon.acquisition import Acquisition, acquire
from fedforget.recon.coils import coil_sensitivities
from fedforget.recon.hdf5io import ISMRMRD_NAMESPACE, write_multicoil_volume
from fedforget.recon.phantoms import brain_slices


def small_acquisition() -> Acquisition:
    """A 3-slice, 4-coil, 32 x 32 noisy brain acquisition (kspace, target)."""
    images = brain_slices(3, 32, seed=11)
    maps = coil_sensitivities(4, (32, 32), seed=12)
    return acquire(images, maps, noise_std=0.01, seed=13)


def write_good_volume(path: Path, acquisition: Acquisition | None = None) -> Path:
    """A valid multicoil volume (acquisition attribute AXT2)."""
    kspace, target = acquisition or small_acquisition()
    return write_multicoil_volume(path, kspace, target, patient_id="p000", acquisition="AXT2")


def header_xml(
    enc: tuple[int, int],
    rec: tuple[int, int],
    center: int,
    maximum: int,
    extra: str = "",
) -> bytes:
    """An ISMRMRD header with the fields fastMRI reads (plus optional extras)."""
    return (
        f'<?xml version="1.0"?><ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">{extra}'
        "<encoding><encodedSpace>"
        f"<matrixSize><x>{enc[0]}</x><y>{enc[1]}</y><z>1</z></matrixSize></encodedSpace>"
        f"<reconSpace><matrixSize><x>{rec[0]}</x><y>{rec[1]}</y><z>1</z></matrixSize></reconSpace>"
        "<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"
    ).encode()


def _replace(hf: h5py.File, name: str, data) -> None:
    del hf[name]
    hf.create_dataset(name, data=data)


def _header_for(hf: h5py.File, **changes) -> bytes:
    _, _, rows, cols = hf["kspace"].shape
    rec = hf["reconstruction_rss"].shape[1:]
    args = {"enc": (rows, cols), "rec": rec, "center": cols // 2, "maximum": cols - 1}
    args.update(changes)
    return header_xml(**args)


def _break_not_hdf5(path: Path) -> None:
    path.write_text("this is not an HDF5 file\n")


def _edit(fn):
    def breaker(path: Path) -> None:
        with h5py.File(path, "r+") as hf:
            fn(hf)

    return breaker


def _nan_kspace(hf):
    k = hf["kspace"][()]
    k[1, 2, 3, 4] = np.nan
    _replace(hf, "kspace", k)


def _inf_target(hf):
    t = hf["reconstruction_rss"][()]
    t[0, 5, 5] = np.inf
    _replace(hf, "reconstruction_rss", t)


BREAKS = {
    "not_hdf5": (_break_not_hdf5, "is not an HDF5 file"),
    "missing_kspace": (
        _edit(lambda hf: hf.__delitem__("kspace")),
        "missing dataset 'kspace'",
    ),
    "missing_recon": (
        _edit(lambda hf: hf.__delitem__("reconstruction_rss")),
        "missing dataset 'reconstruction_rss'",
    ),
    "missing_header": (
        _edit(lambda hf: hf.__delitem__("ismrmrd_header")),
        "missing dataset 'ismrmrd_header'",
    ),
    "missing_max": (
        _edit(lambda hf: hf.attrs.__delitem__("max")),
        "missing attribute 'max'",
    ),
    "kspace_float": (
        _edit(lambda hf: _replace(hf, "kspace", np.abs(hf["kspace"][()]))),
        "dataset 'kspace' has dtype float32; expected complex64",
    ),
    "kspace_rank3": (
        _edit(lambda hf: _replace(hf, "kspace", hf["kspace"][:, 0])),
        "dataset 'kspace' has shape (3, 32, 32) (rank 3)",
    ),
    "recon_complex": (
        _edit(
            lambda hf: _replace(
                hf,
                "reconstruction_rss",
                hf["reconstruction_rss"][()].astype(np.complex64),
            )
        ),
        "dataset 'reconstruction_rss' has dtype complex64",
    ),
    "recon_rank4": (
        _edit(
            lambda hf: _replace(
                hf, "reconstruction_rss", hf["reconstruction_rss"][()][:, None]
            )
        ),
        "dataset 'reconstruction_rss' has shape (3, 1, 32, 32) (rank 4)",
    ),
    "slice_mismatch": (
        _edit(
            lambda hf: _replace(hf, "reconstruction_rss", hf["reconstruction_rss"][:2])
        ),
        "slice counts disagree: kspace has 3, reconstruction_rss has 2",
    ),
    "header_not_xml": (
        _edit(
            lambda hf: _replace(
                hf, "ismrmrd_header", np.bytes_(b"<ismrmrdHeader><oops")
            )
        ),
        "'ismrmrd_header' is not parseable XML",
    ),
    "header_missing_element": (
        _edit(
            lambda hf: _replace(
                hf,
                "ismrmrd_header",
                np.bytes_(_header_for(hf).replace(b"<center>16</center>", b"")),
            )
        ),
        "lacks element encoding/encodingLimits/kspace_encoding_step_1/center",
    ),
    "header_size_mismatch": (
        _edit(
            lambda hf: _replace(
                hf, "ismrmrd_header", np.bytes_(_header_for(hf, enc=(34, 32)))
            )
        ),
        "encodedSpace matrixSize (x=34, y=32) disagrees with kspace rows x cols 32 x 32",
    ),
    "header_recon_mismatch": (
        _edit(
            lambda hf: _replace(
                hf, "ismrmrd_header", np.bytes_(_header_for(hf, rec=(32, 30)))
            )
        ),
        "reconSpace matrixSize (x=32, y=30) disagrees with reconstruction_rss",
    ),
    "recon_taller_than_kspace": (
        _edit(
            lambda hf: (
                _replace(hf, "reconstruction_rss", np.ones((3, 40, 32), np.float32)),
                _replace(
                    hf, "ismrmrd_header", np.bytes_(_header_for(hf, rec=(40, 32)))
                ),
            )
        ),
        "reconstruction_rss has 40 rows but kspace only 32",
    ),
    "nan_kspace": (_edit(_nan_kspace), "dataset 'kspace' contains NaN or inf"),
    "inf_target": (
        _edit(_inf_target),
        "dataset 'reconstruction_rss' contains NaN or inf",
    ),
    "max_not_positive": (
        _edit(lambda hf: hf.attrs.__setitem__("max", 0.0)),
        "attribute 'max' is 0.0",
    ),
    "max_mismatch": (
        _edit(lambda hf: hf.attrs.__setitem__("max", 2.0 * float(hf.attrs["max"]))),
        "disagrees with reconstruction_rss.max()",
    ),
}
