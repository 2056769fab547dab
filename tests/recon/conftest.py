"""Shared fixtures for the MRI-core tests: small fastMRI-format volumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import malformed_volumes
import numpy as np
import pytest

from fedforget.recon.hdf5io import write_multicoil_volume


@pytest.fixture(scope="session")
def small_acquisition():
    """A 3-slice, 4-coil, 32 x 32 noisy brain acquisition (kspace, target)."""
    return malformed_volumes.small_acquisition()


@pytest.fixture
def good_volume(tmp_path: Path, small_acquisition) -> Path:
    """A valid multicoil volume alone in its own folder."""
    folder = tmp_path / "site"
    folder.mkdir()
    return write_multicoil_volume(
        folder / "vol000.h5",
        small_acquisition.kspace,
        small_acquisition.target,
        patient_id="p000",
        acquisition="AXT2",
    )


@pytest.fixture
def write_raw() -> Callable[..., Path]:
    """Writes an arbitrary fastMRI-like file (to imitate real datasets)."""

    def write(
        path: Path,
        kspace: np.ndarray,
        recon: np.ndarray,
        header: bytes,
        attrs: dict,
        extra_datasets: dict | None = None,
    ) -> Path:
        with h5py.File(path, "w") as hf:
            hf.create_dataset("kspace", data=kspace)
            hf.create_dataset("reconstruction_rss", data=recon)
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
            for name, value in (extra_datasets or {}).items():
                hf.create_dataset(name, data=value)
            for name, value in attrs.items():
                hf.attrs[name] = value
        return path

    return write
