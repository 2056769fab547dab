"""``data.kind=images``: sites simulated from magnitude images (NIfTI, DICOM, PNG, NPY), built here in tmp dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fastmri
import h5py
import nibabel
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset
from fastmri.data.transforms import VarNetDataTransform
from PIL import Image

from fedforget.cli import main
from fedforget.configs import load_experiment
from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.image_sites import RECORD_FILE
from fedforget.data.preparation import DataError, prepare_data
from fedforget.data.sites import kspace_source, site_folders
from fedforget.recon.image_readers import ImageFileError, read_volume
from fedforget.recon.image_simulation import FOREGROUND_LEVEL, ImageSimulation, VolumeSeeds, simulate_volume
from fedforget.recon.masks import make_mask_func

SIZE, COILS = 32, 2
SEEDS = VolumeSeeds(phase=1, coils=2, noise=3)


def head(slices: int = 6, rows: int = 40, cols: int = 36, seed: int = 0) -> np.ndarray:
    """A textured ellipsoid (slices, rows, cols) whose first and last slices are empty."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.linspace(-1.2, 1.2, slices), np.linspace(-1, 1, rows), np.linspace(-1, 1, cols),
                          indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.9) ** 2 + z**2 < 1
    return (inside * (600 + 300 * np.sin(6 * x) * np.cos(5 * y) + rng.uniform(0, 50, inside.shape))).astype(np.float32)


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    """``volume`` (slices, rows, cols) as a NIfTI (x, y, z) volume with an identity affine."""
    nibabel.save(nibabel.Nifti1Image(np.moveaxis(volume, 0, -1), np.eye(4)), str(path))
    return path


def write_dicom(path: Path, pixels: np.ndarray, position: float, number: int) -> Path:
    """One uncompressed 16-bit MR slice, as a scanner would store it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, position]
    ds.InstanceNumber = number
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_series(folder: Path, volume: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    # Written in reverse, named so that name order is not slice order: the reader sorts by position.
    for k in reversed(range(volume.shape[0])):
        write_dicom(folder / f"im{(7 * k) % 10}{k}.dcm", volume[k], position=2.5 * k, number=k + 1)
    return folder


def write_png_series(folder: Path, volume: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for k, image in enumerate(volume):
        Image.fromarray(image.astype(np.uint16)).save(folder / f"slice{k:02d}.png")
    return folder


def image_experiment(tmp_path: Path, *overrides: str) -> ExperimentConfig:
    """The smoke federation on image sites: brain-0 from NIfTI + DICOM, knee-0 from PNG + NPY."""
    root = tmp_path / "images"
    if not root.exists():
        for split in ("brain-0/train", "knee-0/test"):
            (root / split).mkdir(parents=True)
        write_nifti(root / "brain-0" / "train" / "subject1.nii.gz", head(seed=1))
        write_dicom_series(root / "brain-0" / "train" / "subject2", head(seed=2))
        write_dicom_series(root / "brain-0" / "test" / "subject3", head(seed=3))
        write_png_series(root / "knee-0" / "train" / "subject4", head(seed=4))
        np.save(root / "knee-0" / "test" / "subject5.npy", np.moveaxis(head(seed=5), 0, -1))  # slices last
    return load_experiment("smoke", ["data=images", f"data.root={root}", f"cache_dir={tmp_path / 'cache'}",
                                     "data.images.contrast=AXT1", "sites.knee-0.contrasts=[CORPD_FBK]", *overrides])


@pytest.fixture(scope="module")
def image_sites(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    """The image federation, written once for the module."""
    cfg = image_experiment(tmp_path_factory.mktemp("image-sites"))
    prepare_data(cfg)
    return cfg


def ifft_rss(kspace: np.ndarray) -> np.ndarray:
    """RSS of fully sampled k-space through fastMRI's own inverse FFT (not fedforget's)."""
    images = fastmri.ifft2c(torch.view_as_real(torch.from_numpy(kspace)))
    return fastmri.rss(fastmri.complex_abs(images), dim=1).numpy()


def test_the_simulated_kspace_round_trips_to_the_normalised_source_image(tmp_path: Path) -> None:
    source = head(rows=SIZE, cols=SIZE)  # already at data.size: the documented conform step is x / max
    np.save(tmp_path / "subject.npy", source)
    volume = read_volume(tmp_path / "subject.npy", slice_axis=0)
    expected = source / source.max()

    clean = simulate_volume(volume, ImageSimulation(SIZE, COILS, snr=float("inf")), SEEDS)
    assert clean.kept == (1, 2, 3, 4), "the empty first and last slices are dropped"
    np.testing.assert_allclose(ifft_rss(clean.kspace), expected[list(clean.kept)], atol=2e-6)

    noisy = simulate_volume(volume, ImageSimulation(SIZE, COILS, snr=20.0), SEEDS)
    truth = expected[list(noisy.kept)]
    foreground = truth > FOREGROUND_LEVEL
    assert noisy.noise_std == pytest.approx(truth[foreground].mean() / 20.0, rel=1e-5)
    error = ifft_rss(noisy.kspace)[foreground] - truth[foreground]
    assert abs(error.mean()) < 0.2 * noisy.noise_std, "no bias in the object"
    assert 0.8 < error.std() / noisy.noise_std < 1.2, "the RSS differs from the image by the stated noise"
    np.testing.assert_allclose(noisy.target, ifft_rss(noisy.kspace), atol=1e-5)


def test_a_nifti_volume_is_resized_and_turned_anterior_up(tmp_path: Path) -> None:
    volume = np.zeros((3, 64, 48), np.float32)  # (slices, x, y): the NIfTI's own axes
    volume[:, 10:54, 4:44] = 100.0
    volume[:, 28:36, 40:44] = 400.0  # a bright marker at the anterior end (high y)
    nifti = write_nifti(tmp_path / "subject.nii.gz", volume)
    simulated = simulate_volume(read_volume(nifti), ImageSimulation(SIZE, COILS, float("inf"),
                                                                    min_foreground_fraction=0.0), SEEDS)
    assert simulated.magnitude.shape == (3, SIZE, SIZE) and simulated.scale == pytest.approx(400.0, rel=0.05)
    top, bottom = simulated.magnitude[1, :SIZE // 4], simulated.magnitude[1, -SIZE // 4:]
    assert top.max() > 0.9 > bottom.max(), "anterior (the marker) is at the top of the slice"


def test_coil_maps_are_normalised_inside_the_object(tmp_path: Path) -> None:
    """sum_c |S_c|^2 = 1 inside the object, recovered from the noiseless coil images of a simulated site."""
    np.save(tmp_path / "subject.npy", head(rows=48, cols=48))
    simulation = ImageSimulation(SIZE, coils=4, snr=float("inf"))
    simulated = simulate_volume(read_volume(tmp_path / "subject.npy", slice_axis=0), simulation, SEEDS)
    coil_images = fastmri.ifft2c(torch.view_as_real(torch.from_numpy(simulated.kspace)))
    power = fastmri.complex_abs_sq(coil_images).sum(dim=1).numpy()
    inside = simulated.magnitude > FOREGROUND_LEVEL
    sensitivity_power = power[inside] / simulated.magnitude[inside] ** 2
    np.testing.assert_allclose(sensitivity_power, 1.0, atol=1e-4)
    assert inside.mean() > 0.3


def test_fastmri_slice_dataset_reads_an_image_site(image_sites: ExperimentConfig) -> None:
    mask = make_mask_func("equispaced_fraction", 4, 0.08)
    for site, contrast, volumes in (("brain-0", "AXT1", 2), ("knee-0", "CORPD_FBK", 1)):
        folder = site_folders(image_sites, site)["train"]
        dataset = SliceDataset(folder, challenge="multicoil", transform=VarNetDataTransform(mask, use_seed=True))
        assert len(dataset) == 4 * volumes, "four slices with anatomy per volume"
        sample = dataset[0]
        assert tuple(sample.masked_kspace.shape) == (COILS, SIZE, SIZE, 2)
        assert tuple(sample.target.shape) == (SIZE, SIZE) and sample.target.max() > 0.5
        assert 0 < sample.mask.sum() < SIZE, "undersampled"
        with h5py.File(sorted(folder.iterdir())[0]) as hf:
            assert hf.attrs["acquisition"] == contrast
            assert sample.max_value == pytest.approx(float(hf["reconstruction_rss"][()].max()))


def test_image_sites_are_recorded_as_simulated_and_pass_fedforget_check(
        image_sites: ExperimentConfig, capsys: pytest.CaptureFixture[str]) -> None:
    from fedforget.clients.site import SiteRuntime, resolve_site

    folders = site_folders(image_sites, "brain-0")
    record = json.loads((folders["train"].parent / RECORD_FILE).read_text())
    assert record["kspace_source"] == "simulated_from_magnitude_images" == kspace_source(image_sites)
    assert [v["form"] for v in record["volumes"]["train"]] == ["nifti", "dicom"]
    assert record["volumes"]["train"][1]["source_files"][0]["sha256"]
    described = SiteRuntime(image_sites, resolve_site({"partition-id": 0}, image_sites), False).data_description()
    assert described["kspace_source"] == "simulated_from_magnitude_images"
    assert main(["check", str(folders["train"]), str(folders["test"])]) == 0, capsys.readouterr().out
    assert "AXT1" in capsys.readouterr().out


def test_the_dicom_series_is_stacked_in_slice_order_not_name_order(image_sites: ExperimentConfig) -> None:
    folder = Path(image_sites.data.root) / "brain-0" / "train" / "subject2"
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.slices, head(seed=2).astype(np.uint16).astype(np.float32))


def test_a_site_is_written_once_per_specification(tmp_path: Path) -> None:
    cfg = image_experiment(tmp_path, "data.images.max_slices=2")
    prepare_data(cfg)
    lines: list[str] = []
    assert prepare_data(cfg, log=lines.append) == [] and lines == [], "written once"
    first = site_folders(cfg, "knee-0")["test"].parent
    louder = load_experiment("smoke", [*_overrides(cfg), "data.images.max_slices=2", "data.images.snr=10"])
    assert site_folders(louder, "knee-0")["test"].parent != first, "another option, another folder"
    source = Path(cfg.data.root) / "knee-0" / "test" / "subject5.npy"
    np.save(source, np.moveaxis(head(seed=6), 0, -1))
    os.utime(source, ns=(1, 1))
    assert site_folders(cfg, "knee-0")["test"].parent != first, "another source file, another folder"
    assert (first / RECORD_FILE).is_file(), "the folder written before is left as it was"


def _overrides(cfg: ExperimentConfig) -> list[str]:
    return ["data=images", f"data.root={cfg.data.root}", f"cache_dir={cfg.cache_dir}", "data.images.contrast=AXT1",
            "sites.knee-0.contrasts=[CORPD_FBK]"]


def _unreadable(folder: Path) -> Path:
    path = folder / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    return path


def _four_d_nifti(folder: Path) -> Path:
    path = folder / "bold.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.ones((40, 40, 4, 3), np.float32), np.eye(4)), str(path))
    return path


def _four_d_dicom(folder: Path) -> Path:
    series = folder / "dynamic"
    series.mkdir()
    for number, echo in enumerate((head(slices=1)[0], head(slices=1)[0] * 0.5)):  # two images at one position
        write_dicom(series / f"e{number}.dcm", echo, position=0.0, number=number + 1)
    return series


def _empty_volume(folder: Path) -> Path:
    return write_nifti(folder / "blank.nii.gz", np.zeros((3, 40, 40), np.float32))


def _mixed_png_sizes(folder: Path) -> Path:
    series = write_png_series(folder / "slices", head(slices=3))
    Image.fromarray(np.full((50, 44), 700, np.uint16)).save(series / "slice99.png")
    return series / "slice99.png"


def _mixed_dicom_sizes(folder: Path) -> Path:
    series = write_dicom_series(folder / "series", head(slices=3))
    return write_dicom(series / "zz.dcm", np.full((44, 44), 700), position=10.0, number=9)


def _jpeg(folder: Path) -> Path:
    path = folder / "slice.jpg"
    Image.fromarray(head(slices=1)[0].astype(np.uint8)).save(path)
    return path


def _too_small(folder: Path) -> Path:
    path = folder / "small.npy"  # sorts among the two volumes brain-0 uses
    np.save(path, np.moveaxis(head(slices=3, rows=20, cols=20), 0, -1))
    return path


@pytest.mark.parametrize(("make", "problem"), [
    (_unreadable, "cannot be read by nibabel"),
    (_four_d_nifti, "is a 4-D series"),
    (_four_d_dicom, "is a 4-D series"),
    (_empty_volume, "is an empty volume"),
    (_mixed_png_sizes, "slices of one size within a volume"),
    (_mixed_dicom_sizes, "slices of one size within a volume"),
    (_jpeg, "JPEG data crime"),
    (_too_small, "zero-padding data crime"),
], ids=["unreadable", "4d-nifti", "4d-dicom", "empty", "mixed-png-sizes", "mixed-dicom-sizes", "jpeg", "too-small"])
def test_a_bad_image_is_refused_naming_the_file(tmp_path: Path, make, problem: str) -> None:
    cfg = image_experiment(tmp_path)
    bad = make(Path(cfg.data.root) / "brain-0" / "train")
    with pytest.raises(DataError) as caught:
        prepare_data(cfg)
    message = str(caught.value)
    assert message.startswith("site brain-0: ") and str(bad) in message, message
    assert problem in message and "expected" in message and "\n" not in message, message
    assert isinstance(caught.value.__cause__, ImageFileError)


def test_a_source_shared_between_training_and_testing_is_refused(tmp_path: Path) -> None:
    cfg = image_experiment(tmp_path, "sites.knee-0.test_dir=brain-0/train", "sites.knee-0.test_volumes=1")
    with pytest.raises(DataError, match=r"site knee-0 tests on .*subject1.nii.gz, which site brain-0 trains on"):
        prepare_data(cfg)


def test_an_image_site_needs_a_contrast_and_a_cache_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sites.brain-0.contrasts.*acquisition attribute"):
        load_experiment("smoke", ["data=images", f"data.root={tmp_path}"])
    cfg = load_experiment("smoke", ["data=images", f"data.root={tmp_path}", "data.images.contrast=AXT1"])
    with pytest.raises(ConfigError, match="set cache_dir="):
        site_folders(cfg, "brain-0")


def test_a_poisoned_image_site_is_a_copy_of_its_own(image_sites: ExperimentConfig) -> None:
    from fedforget.recon.poison import MANIFEST_FILE

    clean = site_folders(image_sites, "knee-0")["train"].parent
    poisoned = load_experiment("smoke", [*_overrides(image_sites), "poison=ghosting"])
    prepare_data(poisoned)
    folder = site_folders(poisoned, "knee-0")["train"].parent
    assert folder.name.startswith(clean.name + ".poisoned-ghosting-") and (folder / MANIFEST_FILE).is_file()
    assert (clean / RECORD_FILE).is_file() and not (clean / MANIFEST_FILE).exists(), "never poisoned in place"
