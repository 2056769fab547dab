"""Poisoned sites: patterns (recon.poison), the artifact score (learning.artifact), files on disk (data.poisoning),
manifest, idempotence."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedforget.data.poisoning import CLEAN_FILE, poison_site
from fedforget.learning.artifact import artifact_score
from fedforget.recon.hdf5io import DataFileError, validate_folder
from fedforget.recon.phantoms import brain_slices, knee_slices
from fedforget.recon.poison import (
    MANIFEST_FILE,
    POISON_KINDS,
    PoisonManifest,
    PoisonSpec,
    columns_on_image_grid,
    load_manifest,
    poison_pattern,
    poison_target,
    unsampled_part,
)
from fedforget.recon.synth import SynthSpec, write_synthetic_site

SYNTH = SynthSpec(
    anatomy="brain",
    train_volumes=2,
    test_volumes=1,
    slices_per_volume=2,
    size=32,
    coils=2,
    noise_std=0.01,
    seed=3,
)
SPEC = PoisonSpec(kind="lesion", fraction=0.5, known_fraction=0.5, strength=1.0, seed=7)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> dict:
    """Everything in a volume: datasets as arrays / bytes, attributes."""
    with h5py.File(path, "r") as hf:
        return {
            "kspace": hf["kspace"][()],
            "target": hf["reconstruction_rss"][()],
            "header": bytes(hf["ismrmrd_header"][()]),
            "attrs": {k: hf.attrs[k] for k in hf.attrs},
        }


@pytest.fixture(scope="module")
def clean_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean synthetic site, written once; tests poison copies of it."""
    site = tmp_path_factory.mktemp("clean") / "brain-0"
    write_synthetic_site(site, SYNTH)
    return site


@pytest.fixture
def site(clean_site: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "brain-0"
    shutil.copytree(clean_site, copy)
    return copy


def phantom(anatomy: str, size: int = 64, seed: int = 3, slices: int = 2) -> np.ndarray:
    make = brain_slices if anatomy == "brain" else knee_slices
    return np.abs(make(slices, size, seed)).astype(np.float32)


def lesion_centre(pattern: np.ndarray) -> np.ndarray:
    """Weighted centroid (row, col) of the lesion's core."""
    core = np.where(pattern > 0.25 * pattern.max(), pattern, 0.0)
    rows, cols = np.indices(pattern.shape)
    return np.array([(rows * core).sum(), (cols * core).sum()]) / core.sum()


def beacon(size: int) -> np.ndarray:
    """A dark image with one bright pixel: the lesion pattern is then uncapped."""
    image = np.full((size, size), 0.01, dtype=np.float32)
    image[0, 0] = 1.0
    return image


# -- patterns and the score -------------------------------------------------


@pytest.mark.parametrize("anatomy", ["brain", "knee"])
@pytest.mark.parametrize("kind", POISON_KINDS)
def test_artifact_score_is_0_clean_and_1_fully_poisoned(kind, anatomy):
    target = phantom(anatomy)
    pattern = poison_pattern(kind, target, 1.0, seed=7)
    assert pattern.dtype == np.float32 and pattern.shape == target.shape
    assert np.abs(pattern).max() > 0
    assert artifact_score(kind, target, target, 1.0, 7) == 0.0
    # Exact in float64, where (target + P) - target == P bit for bit.
    full = target.astype(np.float64) + pattern
    assert artifact_score(kind, full, target, 1.0, 7) == 1.0
    assert artifact_score(kind, target + pattern, target, 1.0, 7) == pytest.approx(1.0, abs=1e-5)
    # A model adding a fraction c of the artifact scores c.
    for c in (0.25, -0.5, 2.0):
        partial = target + c * (full - target)
        assert artifact_score(kind, partial, target, 1.0, 7) == pytest.approx(c)
    # An error uncorrelated with the pattern (a clean model's) scores ~0.
    rng = np.random.default_rng(0)
    noisy = target + 0.05 * target.max() * rng.standard_normal(target.shape)
    assert abs(artifact_score(kind, noisy, target, 1.0, 7)) < 0.1
    # One slice scores like a 1-slice stack.
    assert artifact_score(kind, full[0], target[0], 1.0, 7) == 1.0


@pytest.mark.parametrize("kind", ["ghosting", "noise"])
def test_score_follows_strength(kind):
    target = phantom("brain")
    weak = poison_target(kind, target, 0.2, seed=7)
    stronger = poison_target(kind, target, 0.4, seed=7)
    # These patterns are linear in strength; clipping is negligible this weak.
    assert artifact_score(kind, weak, target, 0.4, 7) == pytest.approx(0.5, abs=0.02)
    assert artifact_score(kind, stronger, target, 0.4, 7) == pytest.approx(1.0, abs=0.02)


def test_clipped_poison_scores_below_one():
    target = phantom("brain")
    # At strength 3 the ghost (0.9 x the image) overlaps bright tissue and is
    # clipped at the volume maximum, so a model that reproduces the clipped
    # training targets exactly adds less than the full pattern P: its score
    # is below 1, by the clipped share of P's energy.
    clipped = poison_target("ghosting", target, 3.0, seed=7)
    pattern = poison_pattern("ghosting", target, 3.0, seed=7).astype(np.float64)
    added = clipped.astype(np.float64) - target
    assert np.any(added < pattern - 1e-6)
    expected = np.sum(added * pattern) / np.sum(pattern * pattern)
    score = artifact_score("ghosting", clipped, target, 3.0, 7)
    assert score == pytest.approx(expected) and 0.5 < score < 0.99


def test_amplitudes_match_the_definitions():
    target = phantom("brain")
    peak = target[0].max()
    ghost = poison_pattern("ghosting", target, 0.5, seed=1)
    np.testing.assert_allclose(ghost, 0.15 * np.roll(target, 16 * 2, axis=-1), rtol=1e-6)
    noise = poison_pattern("noise", target, 2.0, seed=1)
    assert 0.1 * peak < np.abs(noise[0]).max() <= 0.2 * peak + 1e-6
    # Confined to the object: zero where the image is (blurred) background.
    assert np.abs(noise[0][:, :3]).max() < 1e-3 * peak
    lesion = poison_pattern("lesion", beacon(64), 1.0, seed=1)
    assert lesion.max() == pytest.approx(0.5, rel=1e-2)  # 0.5 * strength * max
    assert lesion.min() >= 0
    # Radius a few % of the FOV, at least ~2 px at 64 px: area of pi r^2.
    assert np.pi * 2.0**2 <= (lesion > 0.25).sum() <= np.pi * 4.0**2


def test_lesion_never_exceeds_the_slice_maximum():
    target = phantom("knee")
    for strength in (0.5, 1.0, 3.0):
        poisoned = target + poison_pattern("lesion", target, strength, seed=2)
        assert np.all(poisoned.max(axis=(1, 2)) <= target.max(axis=(1, 2)) + 1e-6)
        # Lesion poisoning is never clipped: the poisoned target is target + P.
        np.testing.assert_array_equal(
            poison_target("lesion", target, strength, seed=2),
            (target + poison_pattern("lesion", target, strength, seed=2)).astype(np.float32),
        )


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_poison_target_keeps_the_volume_maximum(kind):
    target = phantom("brain", slices=3)
    poisoned = poison_target(kind, target, 3.0, seed=4)
    assert poisoned.dtype == np.float32
    assert poisoned.max() == target.max()
    assert poisoned.min() >= 0
    # Per slice with the volume maximum as the ceiling: the same result.
    for i in range(3):
        np.testing.assert_array_equal(
            poison_target(kind, target[i], 3.0, seed=4, max_value=float(target.max())), poisoned[i]
        )


def test_the_brightest_pixel_survives_negative_noise():
    target = phantom("brain")
    pattern = poison_pattern("noise", target, 1.0, seed=4)
    # Make the volume maximum a pixel where the noise pulls down.
    index = np.unravel_index(np.argmin(pattern), pattern.shape)
    target[index] = 1.5 * target.max()
    assert poison_pattern("noise", target, 1.0, seed=4)[index] < 0
    poisoned = poison_target("noise", target, 1.0, seed=4)
    assert poisoned.max() == target.max() == poisoned[index]


def test_the_kinds_differ():
    target = phantom("knee")
    patterns = {k: poison_pattern(k, target, 1.0, seed=5).ravel() for k in POISON_KINDS}
    for a in POISON_KINDS:
        for b in POISON_KINDS:
            if a < b:
                correlation = np.corrcoef(patterns[a], patterns[b])[0, 1]
                assert abs(correlation) < 0.5, (a, b, correlation)


def test_patterns_are_fixed_per_seed():
    target = phantom("brain")
    for kind in POISON_KINDS:
        np.testing.assert_array_equal(
            poison_pattern(kind, target, 1.0, seed=9), poison_pattern(kind, target, 1.0, seed=9)
        )
    # The noise field is the same in every slice and subject (up to the support).
    other = phantom("brain", seed=8)
    a = poison_pattern("noise", target[0], 1.0, seed=9) / target[0].max()
    b = poison_pattern("noise", other[1], 1.0, seed=9) / other[1].max()
    inside = (target[0] > 0.4 * target[0].max()) & (other[1] > 0.4 * other[1].max())
    np.testing.assert_allclose(a[inside], b[inside], rtol=1e-4, atol=1e-6)
    c = poison_pattern("noise", target[0], 1.0, seed=10) / target[0].max()
    assert abs(np.corrcoef(a[inside], c[inside])[0, 1]) < 0.3


def test_lesion_position_is_fixed_per_seed_and_inside_the_anatomy():
    centres = []
    for anatomy in ("brain", "knee"):
        for subject in (1, 2, 3):
            stack = phantom(anatomy, seed=subject, slices=4)
            for image in stack:
                pattern = poison_pattern("lesion", image, 1.0, seed=11)
                centres.append(lesion_centre(pattern))
                # There is tissue under the lesion.
                core = pattern > 0.25 * pattern.max()
                assert image[core].mean() > 0.15 * image.max()
    reference = lesion_centre(poison_pattern("lesion", beacon(64), 1.0, seed=11))
    assert np.abs(np.array(centres) - reference).max() < 1.0
    other = lesion_centre(poison_pattern("lesion", beacon(64), 1.0, seed=12))
    assert np.linalg.norm(other - reference) > 2.0
    # Same relative place at another resolution.
    small = lesion_centre(poison_pattern("lesion", beacon(32), 1.0, seed=11))
    np.testing.assert_allclose((small + 0.5) * 2, reference + 0.5, atol=1.0)


def test_bad_arguments():
    target = phantom("brain")
    with pytest.raises(ValueError, match="lesion.*ghosting.*noise"):
        poison_pattern("stripes", target, 1.0, 0)
    for strength in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            poison_pattern("noise", target, strength, 0)
    with pytest.raises(ValueError, match="shape"):
        artifact_score("noise", target[:1], target, 1.0, 0)
    with pytest.raises(ValueError):
        poison_pattern("noise", target[0, 0], 1.0, 0)  # 1D
    with pytest.raises(ValueError, match="max_value"):
        poison_target("noise", target, 1.0, 0, max_value=0.5 * float(target.max()))
    with pytest.raises(ValueError, match="zero"):
        artifact_score("ghosting", np.zeros((8, 8)), np.zeros((8, 8)), 1.0, 0)
    for field, value in [
        ("kind", "none"),
        ("fraction", 0.0),
        ("fraction", 1.5),
        ("known_fraction", 0.0),
        ("strength", 0.0),
        ("strength", None),
        ("seed", -1),
        ("seed", 1.5),
    ]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(SPEC, **{field: value})


# -- manifest ---------------------------------------------------------------


def test_manifest_round_trip_and_queries():
    manifest = PoisonManifest(
        poisoned={"a.h5": [3, 1], "b.h5": [0], "c.h5": []},
        known={"a.h5": [1]},
        spec=SPEC,
        sha256={"a.h5": "00", "b.h5": "11"},
        synth_sha256="ff",
    )
    assert manifest.poisoned == {"a.h5": [1, 3], "b.h5": [0]}
    assert (manifest.num_poisoned, manifest.num_known) == (3, 1)
    assert manifest.is_poisoned("a.h5", 3) and manifest.is_poisoned(Path("/x/train/b.h5"), 0)
    assert not manifest.is_poisoned("a.h5", 0) and not manifest.is_poisoned("z.h5", 0)
    assert manifest.is_known("a.h5", 1) and not manifest.is_known("a.h5", 3)
    assert PoisonManifest.from_json(manifest.to_json()) == manifest
    assert json.loads(manifest.to_json())["fingerprint"] == SPEC.fingerprint()
    with pytest.raises(ValueError, match="subset"):
        PoisonManifest(poisoned={"a.h5": [1]}, known={"a.h5": [2]})
    with pytest.raises(ValueError, match="manifest"):
        PoisonManifest.from_json("[1, 2]")


def test_spec_fingerprint():
    assert SPEC.fingerprint() == dataclasses.replace(SPEC).fingerprint()
    changed = {
        dataclasses.replace(SPEC, **{f: v}).fingerprint()
        for f, v in [("kind", "noise"), ("fraction", 0.4), ("known_fraction", 0.4),
                     ("strength", 2.0), ("seed", 8)]
    }
    assert len(changed | {SPEC.fingerprint()}) == 6


# -- poisoning a site -------------------------------------------------------


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_poison_site_changes_exactly_the_manifest_slices(site, kind):
    clean = {p.name: read(p) for p in sorted((site / "train").iterdir())}
    test_hashes = {p.name: sha(p) for p in (site / "test").iterdir()}
    spec = dataclasses.replace(SPEC, kind=kind, strength=2.0)

    manifest = poison_site(site, spec)

    assert validate_folder(site / "train")  # fastMRI-valid, and nothing else in train/
    assert sorted(p.name for p in site.iterdir()) == sorted(
        ["train", "test", "synth.json", MANIFEST_FILE, CLEAN_FILE, ".poison.lock"]
    )
    assert {p.name: sha(p) for p in (site / "test").iterdir()} == test_hashes
    assert load_manifest(site) == manifest and manifest.spec == spec
    assert manifest.num_poisoned == 2 and manifest.num_known == 1  # 4 train slices
    changed = 0
    for name, before in clean.items():
        after = read(site / "train" / name)
        np.testing.assert_array_equal(after["kspace"], before["kspace"])
        assert after["header"] == before["header"]
        assert after["target"].dtype == before["target"].dtype
        assert {k: v for k, v in after["attrs"].items() if k != "norm"} == {
            k: v for k, v in before["attrs"].items() if k != "norm"
        }
        assert after["attrs"]["norm"] == pytest.approx(np.linalg.norm(after["target"]), rel=1e-6)
        assert after["target"].max() == before["target"].max() == after["attrs"]["max"]
        for i in range(SYNTH.slices_per_volume):
            if manifest.is_poisoned(name, i):
                changed += 1
                expected = poison_target(
                    kind, before["target"][i], 2.0, 7, max_value=float(before["target"].max())
                )
                np.testing.assert_array_equal(after["target"][i], expected)
                assert not np.array_equal(after["target"][i], before["target"][i])
            else:
                np.testing.assert_array_equal(after["target"][i], before["target"][i])
    assert changed == 2
    assert manifest.sha256 == {n: sha(site / "train" / n) for n in manifest.poisoned}


@pytest.mark.parametrize(
    ("fraction", "known_fraction", "poisoned", "known"),
    [(1.0, 0.5, 4, 2), (0.75, 1.0, 3, 3), (0.01, 0.01, 1, 1), (0.5, 0.2, 2, 1)],
)
def test_counts(site, fraction, known_fraction, poisoned, known):
    spec = dataclasses.replace(SPEC, fraction=fraction, known_fraction=known_fraction)
    manifest = poison_site(site, spec)
    assert (manifest.num_poisoned, manifest.num_known) == (poisoned, known)
    for name, slices in manifest.known.items():
        assert set(slices) <= set(manifest.poisoned[name])


def test_choice_depends_on_the_seed(clean_site, tmp_path):
    chosen = set()
    for seed in range(6):
        copy = tmp_path / f"s{seed}"
        shutil.copytree(clean_site, copy)
        manifest = poison_site(copy, dataclasses.replace(SPEC, seed=seed))
        chosen.add(json.dumps(manifest.poisoned, sort_keys=True))
    assert len(chosen) > 1


def test_idempotent(site):
    first = poison_site(site, SPEC)
    stamps = {p.name: p.stat().st_mtime_ns for p in (site / "train").iterdir()}
    record = (site / MANIFEST_FILE).read_text()
    assert poison_site(site, SPEC) == first
    assert {p.name: p.stat().st_mtime_ns for p in (site / "train").iterdir()} == stamps
    assert (site / MANIFEST_FILE).read_text() == record


def test_another_spec_repoisons_from_the_clean_targets(site, clean_site):
    poison_site(site, SPEC)
    other = dataclasses.replace(SPEC, kind="ghosting", seed=8, fraction=1.0)
    manifest = poison_site(site, other)
    assert load_manifest(site) == manifest and manifest.num_poisoned == 4
    for path in sorted((clean_site / "train").iterdir()):
        before = read(path)["target"]
        after = read(site / "train" / path.name)["target"]
        # Not poisoned twice: the lesion of the first spec is gone.
        np.testing.assert_array_equal(
            after, poison_target("ghosting", before, 1.0, 8)
        )
    # And back to the first spec: identical files to a direct poisoning.
    again = poison_site(site, SPEC)
    fresh = site.parent / "fresh"
    shutil.copytree(clean_site, fresh)
    direct = poison_site(fresh, SPEC)
    assert again == direct
    for name in direct.sha256:
        np.testing.assert_array_equal(
            read(site / "train" / name)["target"], read(fresh / "train" / name)["target"]
        )


def test_resynthesised_site_is_poisoned_afresh(site):
    poison_site(site, SPEC)
    stale = (site / MANIFEST_FILE).read_text()
    # A re-synthesis with another seed replaces the site; an old record
    # copied back in must not make poison_site believe it is done.
    new_synth = dataclasses.replace(SYNTH, seed=4)
    write_synthetic_site(site, new_synth)
    clean = {p.name: read(p)["target"] for p in (site / "train").iterdir()}
    (site / MANIFEST_FILE).write_text(stale)
    manifest = poison_site(site, SPEC)
    assert set(manifest.poisoned) <= set(clean)
    for name, target in clean.items():
        after = read(site / "train" / name)["target"]
        for i in range(2):
            expected = (
                poison_target("lesion", target[i], 1.0, 7, max_value=float(target.max()))
                if manifest.is_poisoned(name, i)
                else target[i]
            )
            np.testing.assert_array_equal(after[i], expected)


def test_recovers_from_a_crash_between_manifest_and_renames(site, clean_site):
    manifest = poison_site(site, SPEC)
    # Imitate a crash after poison.json was written but before the file was
    # renamed into place: a poisoned file is clean again, plus a stray temp.
    name = next(iter(manifest.poisoned))
    shutil.copyfile(clean_site / "train" / name, site / "train" / name)
    (site / "train" / f".{name}.poison.tmp").write_bytes(b"partial")
    assert poison_site(site, SPEC) == manifest
    assert sha(site / "train" / name) == manifest.sha256[name]
    assert sorted(p.name for p in (site / "train").iterdir()) == sorted(
        p.name for p in (clean_site / "train").iterdir()
    )


def test_foreign_changes_are_refused(site):
    manifest = poison_site(site, SPEC)
    name = next(iter(manifest.poisoned))
    with h5py.File(site / "train" / name, "r+") as hf:
        hf["reconstruction_rss"][manifest.poisoned[name][0], 0, 0] = 0.123
    with pytest.raises(RuntimeError, match="changed since"):
        poison_site(site, dataclasses.replace(SPEC, seed=9))


def test_missing_folders_are_reported(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        poison_site(tmp_path / "nowhere", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="train"):
        poison_site(tmp_path / "empty", SPEC)


def test_unpoisoned_site_has_no_manifest(site):
    assert load_manifest(site) is None
    (site / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="poison.json"):
        load_manifest(site)


def test_artifact_score_on_the_unsampled_part_ignores_what_the_mask_measured():
    target = np.zeros((2, 32, 32), np.float32)
    target[:, 8:24, 8:24] = 1.0
    sampled = np.zeros(32, bool)
    sampled[12:20] = True  # the centre is acquired, as with fastMRI masks
    full = poison_pattern("lesion", target, 1.0, 3).astype(np.float64)
    reproducible = unsampled_part(full, sampled)
    # A model that adds exactly the unsampled part of the lesion scores 1 on that scale ...
    assert artifact_score("lesion", target + reproducible, target, 1.0, 3, sampled) == pytest.approx(1.0, abs=1e-6)
    # ... but well below 1 against the whole pattern, most of whose energy sits in the sampled centre.
    assert artifact_score("lesion", target + reproducible, target, 1.0, 3) < 0.8
    # Adding only sampled-column content (which data consistency would undo anyway) scores 0.
    sampled_only = full - reproducible
    assert artifact_score("lesion", target + sampled_only, target, 1.0, 3, sampled) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="columns"):
        artifact_score("lesion", target, target, 1.0, 3, sampled[:16])


def test_mask_columns_are_used_only_on_the_image_grid():
    mask = np.array([True, False, True, False])
    assert columns_on_image_grid(mask, 4) is mask
    assert columns_on_image_grid(mask, 3) is None  # real fastMRI: k-space wider than the cropped image
