"""Synthetic sites: layout, caching, determinism and validity."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from fedforget.recon.acquisition import ifft2c
from fedforget.recon.hdf5io import validate_folder, validate_volume
from fedforget.recon.phantoms import CONTRASTS
from fedforget.recon.synth import (
    DEFAULT_CONTRASTS,
    SynthSpec,
    ensure_synthetic_site,
    write_synthetic_site,
)

SPEC = SynthSpec(
    anatomy="knee",
    train_volumes=2,
    test_volumes=1,
    slices_per_volume=3,
    size=32,
    coils=2,
    noise_std=0.01,
    seed=5,
)


def test_fingerprint_is_stable():
    assert SPEC.fingerprint() == dataclasses.replace(SPEC).fingerprint()
    assert len(SPEC.fingerprint()) == 16
    # Pinned so that an accidental change of the hashing shows up here.
    assert SPEC.fingerprint() == "4cf63824071a19a1"  # generator version 3
    fingerprints = {SPEC.fingerprint()}
    for field, value in [
        ("anatomy", "brain"),
        ("train_volumes", 3),
        ("test_volumes", 2),
        ("slices_per_volume", 4),
        ("size", 48),
        ("coils", 3),
        ("noise_std", 0.02),
        ("seed", 6),
        ("contrasts", ("CORPDFS_FBK",)),
        ("contrasts", ("CORPDFS_FBK", "CORPD_FBK")),
    ]:
        fingerprints.add(dataclasses.replace(SPEC, **{field: value}).fingerprint())
    assert len(fingerprints) == 11
    # Spelling out the default mix is the same spec.
    explicit = dataclasses.replace(SPEC, contrasts=DEFAULT_CONTRASTS["knee"])
    assert explicit.fingerprint() == SPEC.fingerprint()


def test_ensure_writes_once_then_reuses(tmp_path):
    site = tmp_path / "knee-0"
    assert ensure_synthetic_site(site, SPEC) is True
    assert sorted(p.name for p in (site / "train").iterdir()) == [
        "knee_5_train_000.h5",
        "knee_5_train_001.h5",
    ]
    assert sorted(p.name for p in (site / "test").iterdir()) == ["knee_5_test_000.h5"]
    record = json.loads((site / "synth.json").read_text())
    assert record["fingerprint"] == SPEC.fingerprint()
    assert record["spec"] == SPEC.to_dict()
    stamp = (site / "train" / "knee_5_train_000.h5").stat().st_mtime_ns
    assert ensure_synthetic_site(site, SPEC) is False
    assert (site / "train" / "knee_5_train_000.h5").stat().st_mtime_ns == stamp
    # No temporary build folders are left beside the site.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knee-0"]


def test_changed_spec_regenerates(tmp_path):
    site = tmp_path / "site"
    ensure_synthetic_site(site, SPEC)
    bigger = dataclasses.replace(SPEC, train_volumes=3, noise_std=0.02)
    assert ensure_synthetic_site(site, bigger) is True
    assert len(list((site / "train").iterdir())) == 3
    assert (
        json.loads((site / "synth.json").read_text())["fingerprint"]
        == bigger.fingerprint()
    )
    smaller = dataclasses.replace(SPEC, train_volumes=1)
    assert ensure_synthetic_site(site, smaller) is True
    assert len(list((site / "train").iterdir())) == 1  # old files are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_missing_file_regenerates(tmp_path):
    site = tmp_path / "site"
    ensure_synthetic_site(site, SPEC)
    (site / "test" / "knee_5_test_000.h5").unlink()
    assert ensure_synthetic_site(site, SPEC) is True
    assert (site / "test" / "knee_5_test_000.h5").is_file()


def test_every_file_is_valid_and_subjects_are_distinct(tmp_path):
    site = tmp_path / "site"
    spec = dataclasses.replace(SPEC, anatomy="brain", train_volumes=3, test_volumes=2)
    write_synthetic_site(site, spec)
    infos = validate_folder(site / "train") + validate_folder(site / "test")
    assert len(infos) == 5
    targets, patients, acquisitions = [], set(), []
    for info in infos:
        assert validate_volume(info.path) == info
        assert (info.num_slices, info.num_coils, info.kspace_shape) == (3, 2, (32, 32))
        with h5py.File(info.path) as hf:
            targets.append(hf["reconstruction_rss"][()])
            patients.add(hf.attrs["patient_id"])
            acquisitions.append(hf.attrs["acquisition"])
    assert len(patients) == 5
    # The default brain mix, dealt from its first entry in each split.
    assert acquisitions == ["AXT2", "AXT1POST", "AXT2", "AXT2", "AXT1POST"]
    for i in range(len(targets)):
        for j in range(i + 1, len(targets)):
            assert np.abs(targets[i] - targets[j]).mean() > 0.02


def test_deterministic(tmp_path):
    write_synthetic_site(tmp_path / "a", SPEC)
    write_synthetic_site(tmp_path / "b", SPEC)
    for split, name in [
        ("train", "knee_5_train_001.h5"),
        ("test", "knee_5_test_000.h5"),
    ]:
        with (
            h5py.File(tmp_path / "a" / split / name) as fa,
            h5py.File(tmp_path / "b" / split / name) as fb,
        ):
            np.testing.assert_array_equal(fa["kspace"][()], fb["kspace"][()])


def _acquisitions(folder) -> list[str]:
    names = sorted(p.name for p in folder.iterdir())
    acquisitions = []
    for name in names:
        with h5py.File(folder / name) as hf:
            acquisitions.append(str(hf.attrs["acquisition"]))
    return acquisitions


def test_contrasts_dealt_round_robin_per_split(tmp_path):
    spec = dataclasses.replace(
        SPEC,
        train_volumes=5,
        test_volumes=2,
        slices_per_volume=1,
        contrasts=["CORPDFS_FBK", "CORPD_FBK", "CORPD_FBK"],
    )
    assert spec.contrasts == ("CORPDFS_FBK", "CORPD_FBK", "CORPD_FBK")
    hash(spec)  # a list given for contrasts is stored as a tuple
    write_synthetic_site(tmp_path / "site", spec)
    train = ["CORPDFS_FBK", "CORPD_FBK", "CORPD_FBK", "CORPDFS_FBK", "CORPD_FBK"]
    assert _acquisitions(tmp_path / "site" / "train") == train
    assert _acquisitions(tmp_path / "site" / "test") == train[:2]
    assert [spec.contrast_of("train", i) for i in range(5)] == train
    assert [spec.contrast_of("test", i) for i in range(2)] == train[:2]
    record = json.loads((tmp_path / "site" / "synth.json").read_text())
    assert record["spec"]["contrasts"] == list(spec.contrasts)
    assert SynthSpec(**record["spec"]) == spec


def test_contrast_changes_the_images_not_the_subject(tmp_path):
    # Same seeds, one contrast each: the fat-suppressed site holds the same
    # subjects and coils (the coil images have the same phase), with other
    # intensities.
    pd = dataclasses.replace(SPEC, noise_std=0.0, contrasts=("CORPD_FBK",))
    fs = dataclasses.replace(pd, contrasts=("CORPDFS_FBK",))
    write_synthetic_site(tmp_path / "pd", pd)
    write_synthetic_site(tmp_path / "fs", fs)
    name = "knee_5_train_000.h5"
    with h5py.File(tmp_path / "pd" / "train" / name) as a, h5py.File(
        tmp_path / "fs" / "train" / name
    ) as b:
        assert (a.attrs["acquisition"], b.attrs["acquisition"]) == (
            "CORPD_FBK",
            "CORPDFS_FBK",
        )
        ta, tb = a["reconstruction_rss"][()], b["reconstruction_rss"][()]
        ca, cb = ifft2c(a["kspace"][()]), ifft2c(b["kspace"][()])
    assert np.abs(ta - tb).mean() > 0.05
    both = (np.abs(ca) > 1e-2) & (np.abs(cb) > 1e-2)
    assert both.mean() > 0.2
    np.testing.assert_allclose(np.angle(ca[both] * np.conj(cb[both])), 0.0, atol=1e-3)


def test_default_mixes():
    assert set(DEFAULT_CONTRASTS) == set(CONTRASTS)
    brain = DEFAULT_CONTRASTS["brain"]
    assert set(brain) == set(CONTRASTS["brain"])
    assert brain[0] == "AXT2" and brain.count("AXT2") > len(brain) / 3
    assert set(DEFAULT_CONTRASTS["knee"]) == set(CONTRASTS["knee"])
    assert SPEC.contrasts == () and SPEC.contrast_mix == DEFAULT_CONTRASTS["knee"]
    brain_spec = dataclasses.replace(SPEC, anatomy="brain")
    assert brain_spec.contrast_mix == brain
    assert brain_spec.to_dict()["contrasts"] == list(brain)


def test_contrast_of_checks_split_and_index():
    assert SPEC.contrast_of("train", 1) == "CORPDFS_FBK"
    for split, index in [("val", 0), ("train", 2), ("test", 1), ("train", -1)]:
        with pytest.raises(ValueError, match="split|index"):
            SPEC.contrast_of(split, index)


@pytest.mark.parametrize(
    "anatomy,contrasts,shown",
    [
        ("knee", ("AXT2",), ["'AXT2'", "a brain contrast", "CORPD_FBK", "CORPDFS_FBK"]),
        ("brain", ("AXT2", "CORPD_FBK"), ["'CORPD_FBK'", "a knee contrast", "AXFLAIR"]),
        ("brain", ("T1",), ["'T1'", "AXT1", "AXT1POST", "AXT2", "AXFLAIR"]),
        ("knee", "CORPD_FBK", ["tuple of contrast names", "'CORPD_FBK'"]),
        ("knee", None, ["tuple of contrast names"]),
    ],
)
def test_bad_contrasts_name_the_value_and_the_valid_ones(anatomy, contrasts, shown):
    with pytest.raises(ValueError, match="contrasts") as err:
        dataclasses.replace(SPEC, anatomy=anatomy, contrasts=contrasts)
    for text in shown:
        assert text in str(err.value)


def test_unknown_anatomy_lists_valid():
    with pytest.raises(ValueError) as err:
        dataclasses.replace(SPEC, anatomy="liver")
    assert (
        "'liver'" in str(err.value)
        and "brain" in str(err.value)
        and "knee" in str(err.value)
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("train_volumes", 0),
        ("test_volumes", 0),
        ("slices_per_volume", 0),
        ("size", 8),
        ("coils", 0),
        ("noise_std", -0.1),
        ("seed", -1),
        ("contrasts", ("AXT2",)),
        ("skull_stripped_share", 0.5),  # a knee has no skull to strip
    ],
)
def test_bad_spec(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SPEC, **{field: value})


BRAIN = dataclasses.replace(SPEC, anatomy="brain", train_volumes=12, test_volumes=4)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_skull_stripped_share_outside_0_1_is_refused(share):
    with pytest.raises(ValueError, match=r"skull_stripped_share must be in \[0, 1\]"):
        dataclasses.replace(BRAIN, skull_stripped_share=share)


def test_without_stripped_volumes_a_spec_keeps_its_fingerprint():
    assert "skull_stripped_share" not in BRAIN.to_dict()
    assert dataclasses.replace(BRAIN, skull_stripped_share=0.0).fingerprint() == BRAIN.fingerprint()
    assert dataclasses.replace(BRAIN, skull_stripped_share=0.3).fingerprint() != BRAIN.fingerprint()


def test_stripped_volumes_are_drawn_per_volume_at_the_share():
    half = dataclasses.replace(BRAIN, train_volumes=400, skull_stripped_share=0.5)
    drawn = [half.is_skull_stripped("train", i) for i in range(400)]
    assert 160 < sum(drawn) < 240
    assert drawn == [half.is_skull_stripped("train", i) for i in range(400)]
    every = dataclasses.replace(BRAIN, skull_stripped_share=1.0)
    assert all(every.is_skull_stripped(split, i) for split in ("train", "test") for i in range(4))
    assert not any(BRAIN.is_skull_stripped("train", i) for i in range(12))


def test_a_stripped_volume_is_the_same_brain_on_an_empty_background(tmp_path):
    spec = dataclasses.replace(BRAIN, train_volumes=1, test_volumes=1, size=64, noise_std=0.0)
    write_synthetic_site(tmp_path / "skull", spec)
    write_synthetic_site(tmp_path / "stripped", dataclasses.replace(spec, skull_stripped_share=1.0))
    record = json.loads((tmp_path / "stripped" / "synth.json").read_text())
    assert record["skull_stripped"] == record["files"]
    assert "skull_stripped" not in json.loads((tmp_path / "skull" / "synth.json").read_text())
    name = spec.file_name("test", 0)
    with h5py.File(tmp_path / "skull" / "test" / name) as f, h5py.File(tmp_path / "stripped" / "test" / name) as g:
        skull, stripped = f["reconstruction_rss"][()], g["reconstruction_rss"][()]
    brain = stripped > 0.05 * stripped.max()
    cube = np.ones((1, 3, 3))
    # Outside the brain the same subject's scalp and skull were bright; stripped, nothing is left there.
    outside = ~binary_dilation(brain, iterations=2, structure=cube)
    scalp = outside & (skull > 0.3 * skull.max())
    assert scalp.sum() > 100 and stripped[outside].max() < 0.02 * skull.max()
    # Inside, away from the edge the blur mixes, the brain is unchanged.
    inside = binary_erosion(brain, iterations=3, structure=cube)
    assert inside.sum() > 500
    np.testing.assert_allclose(stripped[inside], skull[inside], rtol=1e-4, atol=1e-5)
