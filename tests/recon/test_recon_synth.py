"""Synthetic sites: layout, caching, determinism and validity."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from fedforget.recon.hdf5io import validate_folder, validate_volume
from fedforget.recon.synth import SynthSpec, ensure_synthetic_site, write_synthetic_site

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
    assert SPEC.fingerprint() == "222f0e4443251866"  # generator version 3
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
    ]:
        fingerprints.add(dataclasses.replace(SPEC, **{field: value}).fingerprint())
    assert len(fingerprints) == 9


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
    targets, patients = [], set()
    for info in infos:
        assert validate_volume(info.path) == info
        assert (info.num_slices, info.num_coils, info.kspace_shape) == (3, 2, (32, 32))
        with h5py.File(info.path) as hf:
            targets.append(hf["reconstruction_rss"][()])
            patients.add(hf.attrs["patient_id"])
            assert hf.attrs["acquisition"] == "AXT2"
    assert len(patients) == 5
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
    ],
)
def test_bad_spec(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SPEC, **{field: value})
