"""Real-data experiments (fastMRI / M4Raw layout): they start, and fail clearly on bad folders."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from run_helpers import fedforget_run

from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.preparation import DataError, prepare_data
from fedforget.data.sites import site_folders
from fedforget.learning.training import initial_state
from fedforget.recon.hdf5io import validate_volume
from fedforget.recon.poison import load_manifest
from fedforget.recon.synth import SynthSpec, write_synthetic_site
from fedforget.reporting.pictures import render_figures
from fedforget.server.examples import keep_examples
from fedforget.server.retain_pool import server_retain_files, server_retain_source

SMALL = [f"sites.brain-{i}.{key}={value}" for i in range(4)
         for key, value in (("train_volumes", 1), ("volumes_from", i), ("test_volumes", 1), ("test_volumes_from", i))]


@pytest.fixture(scope="module")
def fastmri_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """brain/multicoil_train (4 volumes) and brain/multicoil_val (4 volumes), as fastMRI lays them out."""
    root = tmp_path_factory.mktemp("fastmri")
    scratch = tmp_path_factory.mktemp("scratch") / "site"
    write_synthetic_site(scratch, SynthSpec("brain", 4, 4, 2, 32, 2, 0.01, 3))
    for source, target in (("train", "multicoil_train"), ("test", "multicoil_val")):
        shutil.copytree(scratch / source, root / "brain" / target)
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_paper_config_fails_naming_a_missing_folder(tmp_path: Path) -> None:
    run = fedforget_run(["experiment=paper-brain-knee", f"data.root={tmp_path / 'nothing'}"], tmp_path / "run")
    assert run.returncode == 3, "unusable data exits 3"
    assert "site brain-0 (train split)" in run.output and "folder does not exist" in run.output
    assert "Successfully started run" not in run.output


def test_paper_config_fails_naming_a_malformed_file(tmp_path: Path, fastmri_root: Path) -> None:
    broken = tmp_path / "fastmri"
    shutil.copytree(fastmri_root, broken)
    (broken / "brain" / "multicoil_val" / "README.txt").write_text("notes")
    run = fedforget_run(["experiment=paper-poisoned", f"data.root={broken}", *SMALL], tmp_path / "run")
    assert run.returncode == 3 and "README.txt" in run.output and "not an HDF5 file" in run.output


def test_paper_config_without_data_root_says_what_to_pass(tmp_path: Path) -> None:
    run = fedforget_run(["experiment=paper-brain-knee"], tmp_path / "run")
    assert run.returncode == 2 and "data.root=/path/to/fastmri" in run.output


def test_poisoned_copy_of_real_data_never_writes_the_users_files(tmp_path: Path, fastmri_root: Path) -> None:
    before = {split: _digests(fastmri_root / "brain" / split) for split in ("multicoil_train", "multicoil_val")}
    overrides = [f"data.root={fastmri_root}", f"cache_dir={tmp_path / 'cache'}", *SMALL]
    extra = prepare_data(load_experiment("paper-poisoned", overrides))
    cfg = load_experiment("paper-poisoned", [*overrides, *extra])
    after = {split: _digests(fastmri_root / "brain" / split) for split in ("multicoil_train", "multicoil_val")}
    assert after == before, "the user's dataset changed"

    folders = site_folders(cfg, "brain-3")
    copy = folders["train"].parent
    assert copy.is_relative_to(tmp_path / "cache")
    manifest = load_manifest(copy)
    assert manifest is not None and manifest.num_poisoned >= 1 and manifest.num_known >= 1
    train_files = list(folders["train"].iterdir())
    assert [p.name for p in train_files] == [sorted(before["multicoil_train"])[3]], "brain-3 holds volume 3 only"
    poisoned = {name for name, slices in manifest.poisoned.items() if slices}
    for path in train_files:
        assert path.is_symlink() == (path.name not in poisoned), "only poisoned files are real copies"
    assert site_folders(cfg, "brain-0")["train"] == fastmri_root / "brain" / "multicoil_train"
    assert prepare_data(load_experiment("paper-poisoned", overrides)) == extra, "preparing again reuses the copy"


def _layout_of_fastmri(root: Path, experiment: str = "paper-poisoned", *extra: str) -> ExperimentConfig:
    return load_experiment(experiment, [f"data.root={root}", *SMALL, *extra])


def test_server_retain_pool_holds_exactly_the_retain_sites_volumes_each_once(fastmri_root: Path) -> None:
    """brain-0..3 share one folder (one volume each); brain-3 is removed: the server pools volumes 0-2 once."""
    cfg = _layout_of_fastmri(fastmri_root, "paper-poisoned", "poison=none", "unlearning.retain_access=server",
                             "unlearning.retain_fraction=1.0")
    source = server_retain_source(cfg)
    pooled = [(dataset.raw_samples[i].fname.name, dataset.raw_samples[i].slice_ind)
              for dataset, i in source.dataset.items]
    volumes = sorted(p.name for p in (fastmri_root / "brain" / "multicoil_train").iterdir())
    slices = {name: validate_volume(fastmri_root / "brain" / "multicoil_train" / name).num_slices for name in volumes}
    expected = [(name, s) for name in volumes[:3] for s in range(slices[name])]
    assert sorted(pooled) == expected, "each retain site's own volume, every slice once, no forget-site volume"
    files = server_retain_files(cfg)
    assert {site: [f["name"] for f in record["files"]] for site, record in files.items()} == \
        {f"brain-{i}": [volumes[i]] for i in range(3)}
    assert files["brain-1"]["volumes_from"] == 1 and files["brain-1"]["volumes"] == 1
    digest = hashlib.sha256((fastmri_root / "brain" / "multicoil_train" / volumes[1]).read_bytes()).hexdigest()
    assert files["brain-1"]["files"][0]["sha256"] == digest


def test_sites_that_share_a_training_file_are_refused_naming_both(fastmri_root: Path) -> None:
    cfg = _layout_of_fastmri(fastmri_root, "paper-poisoned", "poison=none", "sites.brain-1.volumes_from=3")
    with pytest.raises(DataError, match=r"sites brain-1 and brain-3 both train on .*multicoil_train"):
        prepare_data(cfg)


def test_pictures_read_no_site_data_in_a_simulation_of_real_data_unless_allowed(
        fastmri_root: Path, tmp_path: Path) -> None:
    cfg = _layout_of_fastmri(fastmri_root, "paper-poisoned", "poison=none", "model=tiny")
    scores = {"psnr": 20.0, "ssim": 0.5}
    results = {"mode": "simulation", "sites": {s: {"role": "retain", "anatomy": "brain"} for s in cfg.sites},
               "summary": {"original": {"BTA": scores, "KTA": scores, "UA": scores, "RTE": 1.0}}}
    states = {"original": initial_state(cfg.model, 0)}
    plain = tmp_path / "plain"
    keep_examples(cfg, plain, list(cfg.sites), states, "simulation")
    notes = render_figures(cfg, plain, results)
    assert not list((plain / "figures").glob("recon_*.png")) and (plain / "figures" / "methods.png").is_file()
    assert not list((plain / "examples").glob("*.npz"))
    assert "server_reads_site_data" in " ".join(notes)
    copy = shutil.copytree(fastmri_root, tmp_path / "fastmri")
    allowed = _layout_of_fastmri(copy, "paper-poisoned", "poison=none", "model=tiny",
                                 "report.server_reads_site_data=true")
    kept = tmp_path / "allowed"
    keep_examples(allowed, kept, list(allowed.sites), states, "simulation")
    # The figures are drawn from the run folder alone: the sites' data is gone when they are drawn.
    shutil.rmtree(copy)
    assert render_figures(allowed, kept, results) == []
    assert sorted(p.name for p in (kept / "figures").glob("recon_*.png")) == \
        [f"recon_brain-{i}.png" for i in range(4)]


@pytest.fixture
def real_smoke_root(tmp_path: Path, data_root: Path) -> Path:
    """The smoke sites as a real-data layout (``<root>/<site>/{train,test}``), read with data.kind=fastmri."""
    synthetic = load_experiment("smoke", [f"data.root={data_root}"])
    prepare_data(synthetic)
    root = tmp_path / "real"
    for site in synthetic.sites:
        shutil.copytree(site_folders(synthetic, site)["train"].parent, root / site,
                        ignore=shutil.ignore_patterns("*.json"))
    return root


@pytest.mark.slow
def test_a_nan_in_one_slice_stops_the_run_naming_the_file_and_slice(real_smoke_root: Path, tmp_path: Path) -> None:
    """Bad data is not a site fault: the run stops at its first read (exit 3), or before it starts with
    data.scan_values=true; it never trains on without the site."""
    bad = sorted((real_smoke_root / "brain-0" / "train").iterdir())[0]
    with h5py.File(bad, "r+") as handle:
        handle["kspace"][1, 0, 0, 0] = np.nan
    args = ["experiment=smoke", "data.kind=fastmri", f"data.root={real_smoke_root}", f"cache_dir={tmp_path / 'c'}"]

    scanned = fedforget_run([*args, "data.scan_values=true"], tmp_path / "scanned")
    assert scanned.returncode == 3, scanned.output[-3000:]
    assert "Successfully started run" not in scanned.output
    assert f"site brain-0 (train split): {bad}: dataset 'kspace' contains NaN or inf in slice 1" in scanned.output

    run = fedforget_run(args, tmp_path / "run")
    assert run.returncode == 3, run.output[-3000:]
    assert str(bad) in run.output and "NaN or inf in slice 1" in run.output
    status = run.status
    assert status["status"] == "failed" and status["error_kind"] == "data" and status["site"] == "brain-0"
    assert (status["file"], status["slice"]) == (str(bad), 1) and "NaN" in status["problem"]
    assert not [e for e in status["events"] if e["kind"] in ("site_failed", "method_stopped")]
    assert not (run.folder / "checkpoints" / "progress" / "original.pt").exists(), "no round completed without it"
