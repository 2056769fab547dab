"""fastMRI multicoil HDF5 files: round trip through fastMRI and validation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset
from fastmri.data.transforms import VarNetDataTransform, to_tensor
from malformed_volumes import BREAKS, header_xml

from fedforget.recon.hdf5io import (
    DataFileError,
    VolumeInfo,
    validate_folder,
    validate_volume,
    write_multicoil_volume,
)
from fedforget.recon.masks import make_mask_func


def test_round_trip_raw(good_volume, small_acquisition):
    kspace, target = small_acquisition
    dataset = SliceDataset(good_volume.parent, challenge="multicoil", transform=None)
    assert len(dataset) == kspace.shape[0]
    for i in range(len(dataset)):
        k, mask, t, attrs, fname, slice_num = dataset[i]
        assert fname == good_volume.name and slice_num == i
        assert mask is None
        np.testing.assert_array_equal(k, kspace[i])
        np.testing.assert_array_equal(t, target[i])
        assert attrs["max"] == pytest.approx(float(target.max()))
        assert attrs["norm"] == pytest.approx(float(np.linalg.norm(target)), rel=1e-5)
        assert attrs["acquisition"] == "AXT2" and attrs["patient_id"] == "p000"
        assert attrs["encoding_size"] == (32, 32, 1)
        assert attrs["recon_size"] == (32, 32, 1)
        # Every column counts as acquired.
        assert (attrs["padding_left"], attrs["padding_right"]) == (0, 32)


def test_round_trip_varnet_transform(good_volume, small_acquisition):
    kspace, target = small_acquisition
    mask_func = make_mask_func("equispaced_fraction", 8, 0.04)
    dataset = SliceDataset(
        good_volume.parent,
        challenge="multicoil",
        transform=VarNetDataTransform(mask_func=mask_func),
    )
    # VarNetDataTransform seeds the mask from the file name.
    expected_mask, _ = make_mask_func("equispaced_fraction", 8, 0.04)(
        (1, 32, 32, 2), seed=tuple(map(ord, good_volume.name))
    )
    for i in range(len(dataset)):
        sample = dataset[i]
        mask = sample.mask.to(torch.float32)
        assert mask.shape == (1, 1, 32, 1)
        expected = to_tensor(kspace[i]) * mask + 0.0
        torch.testing.assert_close(sample.masked_kspace, expected)
        np.testing.assert_array_equal(sample.target.numpy(), target[i])
        assert sample.max_value == pytest.approx(float(target.max()))
        assert tuple(sample.crop_size) == (32, 32)
        assert int(mask.sum()) == int(expected_mask.sum())
        assert 32 / 8 - 2 <= int(mask.sum()) <= 32 / 8 + 3
        assert sample.num_low_frequencies == round(32 * 0.04)


def test_validate_good_volume(good_volume, small_acquisition):
    info = validate_volume(good_volume)
    assert info == VolumeInfo(
        path=good_volume,
        num_slices=3,
        num_coils=4,
        kspace_shape=(32, 32),
        recon_shape=(32, 32),
        max_value=pytest.approx(float(small_acquisition.target.max())),
    )


def test_write_is_atomic_and_checks_inputs(tmp_path, small_acquisition):
    kspace, target = small_acquisition
    path = write_multicoil_volume(
        tmp_path / "a.h5", kspace, target, patient_id="x", acquisition="AXT2"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
    assert path == tmp_path / "a.h5"
    with pytest.raises(ValueError, match="slices"):
        write_multicoil_volume(
            tmp_path / "b.h5", kspace, target[:2], patient_id="x", acquisition="AXT2"
        )
    with pytest.raises(ValueError, match="complex"):
        write_multicoil_volume(
            tmp_path / "b.h5", kspace.real, target, patient_id="x", acquisition="AXT2"
        )
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / "b.h5.tmp").exists()


# --- validator error cases -------------------------------------------------


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_validator_reports_each_problem(case, good_volume):
    breaker, message = BREAKS[case]
    validate_volume(good_volume)  # fine before breaking it
    breaker(good_volume)
    with pytest.raises(DataFileError) as err:
        validate_volume(good_volume)
    text = str(err.value)
    assert text.startswith(f"{good_volume}: ")
    assert "vol000.h5" in text
    assert message in text
    assert "expected" in text


def test_validator_messages_are_distinct(tmp_path, small_acquisition):
    messages = set()
    for case, (breaker, _) in BREAKS.items():
        path = tmp_path / f"{case}.h5"
        write_multicoil_volume(
            path, *small_acquisition, patient_id="p", acquisition="AXT2"
        )
        breaker(path)
        with pytest.raises(DataFileError) as err:
            validate_volume(path)
        messages.add(str(err.value).replace(str(path), "<file>"))
    assert len(messages) == len(BREAKS)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="nope.h5: file does not exist"):
        validate_volume(tmp_path / "nope.h5")


def test_a_file_that_is_not_hdf5_is_refused_by_name_as_a_value_error(tmp_path):
    """Callers that catch ValueError (the config and CLI layers) catch a bad data file too."""
    path = tmp_path / "notes.h5"
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(ValueError, match="notes.h5") as err:
        validate_volume(path)
    assert isinstance(err.value, DataFileError)


# --- real-dataset layouts must pass ----------------------------------------


def test_accepts_fastmri_knee_layout(tmp_path, write_raw):
    # Like fastMRI knee: k-space wider and taller than the 2x-oversampled
    # centre-cropped target, zero-padded edge columns (padding_left > 0),
    # extra header elements, extra attributes, string-valued labels.
    rng = np.random.default_rng(0)
    kspace = (
        rng.standard_normal((2, 3, 64, 37)) + 1j * rng.standard_normal((2, 3, 64, 37))
    ).astype(np.complex64)
    recon = rng.uniform(0, 1e-4, size=(2, 32, 32)).astype(np.float32)
    header = header_xml(
        (64, 37), (32, 32), center=17, maximum=34, extra="<version>1</version>"
    )
    attrs = {
        "max": float(recon.max()),
        "norm": float(np.linalg.norm(recon)),
        "acquisition": "CORPD_FBK",
        "patient_id": "abc",
    }
    path = write_raw(tmp_path / "file1000001.h5", kspace, recon, header, attrs)
    info = validate_volume(path)
    assert info.kspace_shape == (64, 37) and info.recon_shape == (32, 32)
    # And fastMRI itself reads it.
    dataset = SliceDataset(tmp_path, challenge="multicoil", transform=None)
    assert len(dataset) == 2


def test_accepts_m4raw_layout(tmp_path, write_raw):
    # M4Raw: 4 coils, 256 x 256 k-space and target (here 32 x 32), float64 max.
    rng = np.random.default_rng(1)
    kspace = (
        rng.standard_normal((3, 4, 32, 32)) + 1j * rng.standard_normal((3, 4, 32, 32))
    ).astype(np.complex64)
    recon = rng.uniform(0, 1, size=(3, 32, 32)).astype(np.float32)
    attrs = {
        "max": np.float64(recon.max()),
        "norm": np.float64(np.linalg.norm(recon)),
        "acquisition": "AXT2",
    }
    path = write_raw(
        tmp_path / "m4raw.h5",
        kspace,
        recon,
        header_xml((32, 32), (32, 32), 16, 31),
        attrs,
    )
    assert validate_volume(path).num_coils == 4


def test_accepts_narrow_flair_kspace(tmp_path, write_raw):
    # fastMRI brain "FLAIR 203": k-space narrower than the 320-column target.
    rng = np.random.default_rng(2)
    kspace = (rng.standard_normal((2, 2, 64, 20)) + 0j).astype(np.complex64)
    recon = rng.uniform(0, 1, size=(2, 32, 32)).astype(np.float32)
    path = write_raw(
        tmp_path / "flair.h5",
        kspace,
        recon,
        header_xml((64, 20), (32, 32), 10, 19),
        {"max": float(recon.max())},
        extra_datasets={"mask": np.ones(20, np.float32)},
    )
    assert validate_volume(path).recon_shape == (32, 32)


# --- folders ---------------------------------------------------------------


def test_validate_folder_ok(good_volume, small_acquisition):
    write_multicoil_volume(
        good_volume.parent / "vol001.h5",
        *small_acquisition,
        patient_id="p",
        acquisition="AXT2",
    )
    infos = validate_folder(good_volume.parent)
    assert [i.path.name for i in infos] == ["vol000.h5", "vol001.h5"]


def test_folder_missing(tmp_path):
    with pytest.raises(DataFileError, match="absent: folder does not exist"):
        validate_folder(tmp_path / "absent")


def test_folder_is_a_file(good_volume):
    with pytest.raises(DataFileError, match="vol000.h5: is not a directory"):
        validate_folder(good_volume)


def test_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError) as err:
        validate_folder(tmp_path / "empty")
    assert "empty: folder is empty" in str(err.value)
    assert "fastMRI multicoil .h5 files" in str(err.value)


def test_folder_stray_file(good_volume):
    (good_volume.parent / "README.txt").write_text("notes")
    with pytest.raises(DataFileError) as err:
        validate_folder(good_volume.parent)
    assert "README.txt: is not an HDF5 file" in str(err.value)
    # This is exactly what would crash fastMRI's loader.
    with pytest.raises(OSError):
        SliceDataset(good_volume.parent, challenge="multicoil")


def test_folder_subdirectory(good_volume):
    (good_volume.parent / "nested").mkdir()
    with pytest.raises(DataFileError, match="nested: is a subdirectory"):
        validate_folder(good_volume.parent)


def test_folder_with_broken_volume(good_volume, small_acquisition):
    bad = write_multicoil_volume(
        good_volume.parent / "vol001.h5",
        *small_acquisition,
        patient_id="p",
        acquisition="AXT2",
    )
    with h5py.File(bad, "r+") as hf:
        del hf["ismrmrd_header"]
    with pytest.raises(
        DataFileError, match="vol001.h5: missing dataset 'ismrmrd_header'"
    ):
        validate_folder(good_volume.parent)
