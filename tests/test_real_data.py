"""Real-data experiments (fastMRI / M4Raw layout): they start, and fail clearly on bad folders."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from run_helpers import fedforget_run

from fedforget.configs import load_experiment
from fedforget.data.preparation import prepare_data
from fedforget.data.sites import site_folders
from fedforget.recon.poison import load_manifest
from fedforget.recon.synth import SynthSpec, write_synthetic_site

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
    assert run.returncode == 1
    assert "site brain-0 (train split)" in run.output and "folder does not exist" in run.output
    assert "Successfully started run" not in run.output


def test_paper_config_fails_naming_a_malformed_file(tmp_path: Path, fastmri_root: Path) -> None:
    broken = tmp_path / "fastmri"
    shutil.copytree(fastmri_root, broken)
    (broken / "brain" / "multicoil_val" / "README.txt").write_text("notes")
    run = fedforget_run(["experiment=paper-poisoned", f"data.root={broken}", *SMALL], tmp_path / "run")
    assert run.returncode == 1 and "README.txt" in run.output and "not an HDF5 file" in run.output


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
