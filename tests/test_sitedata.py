"""Site data: batch streams, the validation memo, synthetic folders per spec, the model cache's data identity."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
from run_helpers import REPO

import fedforget.data.datasets as datasets
from fedforget.clients.site import SiteRuntime, resolve_site
from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource, subset_indices
from fedforget.data.datasets import open_split
from fedforget.data.preparation import check_synthetic_data
from fedforget.data.sites import site_folders
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.recon.hdf5io import validate_volume
from fedforget.recon.masks import make_mask_func
from fedforget.recon.poison import MANIFEST_FILE
from fedforget.recon.synth import SynthSpec, write_synthetic_site
from fedforget.server.training import training_data, training_fingerprint
from fedforget.strategies.directory import SiteInfo


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    write_synthetic_site(folder, SynthSpec("knee", 2, 1, 3, 32, 2, 0.01, 9))
    return folder


def test_batch_k_depends_only_on_k_and_the_seed(site: Path) -> None:
    dataset = open_split(site / "train", make_mask_func("equispaced_fraction", 4, 0.08), cache=True)
    first, second = BatchSource(dataset, 2, 5), BatchSource(dataset, 2, 5)
    assert [first.batch_indices(k) for k in (7, 0, 3)] == [second.batch_indices(k) for k in (7, 0, 3)]
    epoch = [i for k in range(first.batches_per_pass) for i in first.batch_indices(k)]
    assert sorted(epoch) == list(range(len(dataset))), "one pass visits every slice once"
    assert BatchSource(dataset, 2, 6).batch_indices(0) != first.batch_indices(0) or len(dataset) <= 2


def test_subset_is_reproducible_and_never_empty() -> None:
    assert subset_indices(100, 0.1, 3) == subset_indices(100, 0.1, 3) and len(subset_indices(100, 0.1, 3)) == 10
    assert len(subset_indices(5, 0.01, 3)) == 1


def test_validation_memo_skips_unchanged_files_and_rechecks_changed_ones(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFORGET_CACHE", str(tmp_path / "cache"))
    calls = []
    real = datasets.validate_folder
    monkeypatch.setattr(datasets, "validate_folder", lambda *a: calls.append(a) or real(*a))
    mask = make_mask_func("equispaced_fraction", 4, 0.08)
    first = open_split(site / "train", mask, cache=False)
    again = open_split(site / "train", mask, cache=False)
    assert len(calls) == 1 and len(again) == len(first), "the second process reuses the memo"
    touched = next((site / "train").iterdir())
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1_000_000))
    open_split(site / "train", mask, cache=False)
    assert len(calls) == 2, "a changed file is validated again"
    open_split(site / "train", mask, cache=False, scan_kspace=False)
    assert len(calls) == 2, "a full scan also covers the structural check"


def test_each_synthetic_spec_has_its_own_folder_and_another_spec_never_rewrites_it(tmp_path: Path) -> None:
    smoke = load_experiment("smoke", [f"data.root={tmp_path}"])
    smaller = load_experiment("smoke", [f"data.root={tmp_path}", "data.size=16"])
    prepare_synthetic_data(smoke)
    files = [p for site in smoke.sites for folder in site_folders(smoke, site).values() for p in folder.iterdir()]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    prepare_synthetic_data(smaller)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before, "the other spec rewrote a site"
    for site in smoke.sites:
        assert site_folders(smaller, site)["train"] != site_folders(smoke, site)["train"]
        assert site_folders(smoke, site)["train"].parent.name.startswith(f"{site}-")
        shapes = {validate_volume(p).recon_shape for p in site_folders(smaller, site)["train"].iterdir()}
        assert shapes == {(16, 16)}, "each folder holds its own spec"


_WRITER = """
import sys, time
from pathlib import Path
from fedforget.configs import load_experiment
from fedforget.data.synthetic import prepare_synthetic_data
cfg = load_experiment("smoke", [f"data.root={sys.argv[1]}", "data.size=64", "data.slices_per_volume=6"])
go = Path(sys.argv[2])
Path(f"{go}.ready-{sys.argv[3]}").touch()
while not go.exists():
    time.sleep(0.01)
prepare_synthetic_data(cfg, log=print)
"""


def test_concurrent_writers_of_one_spec_write_each_site_once(tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "data"), str(go), str(n)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both start writing at once
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outputs
    cfg = load_experiment("smoke", [f"data.root={tmp_path / 'data'}", "data.size=64", "data.slices_per_volume=6"])
    written = [line for out in outputs for line in out.splitlines() if "wrote synthetic" in line]
    assert sorted(written) == sorted(f"fedforget: wrote synthetic {cfg.sites[s].anatomy} site {s} to "
                                     f"{site_folders(cfg, s)['train'].parent}" for s in cfg.sites), outputs
    check_synthetic_data(cfg)
    assert not [p for p in (tmp_path / "data").iterdir() if ".build-" in p.name or ".old-" in p.name]


def _cache_key(cfg: ExperimentConfig) -> str:
    """The original model's cache key from what each site reports about its data (as in the site query)."""
    infos = {}
    for index, site in enumerate(cfg.site_names):
        runtime = SiteRuntime(cfg, resolve_site({"partition-id": index}, cfg), simulated=False)
        infos[site] = SiteInfo(site, index, cfg.sites[site].anatomy, "cpu", 0, 0, 0, 0, True,
                               runtime.data_description())
    return training_fingerprint(cfg, cfg.site_names, training_data(infos, cfg.site_names))


def test_a_site_reports_the_seconds_it_spent_reading_its_slices_as_a_number(tmp_path: Path) -> None:
    """The trace's handler_end event carries it (bench/deployment.py reads it as data_read)."""
    cfg = load_experiment("smoke", [f"data.root={tmp_path}"])
    prepare_synthetic_data(cfg)
    runtime = SiteRuntime(cfg, resolve_site({"partition-id": 0}, cfg), simulated=False)
    assert runtime.read_seconds == 0.0
    train = runtime.split("train")
    for index in range(len(train)):
        train[index]
    assert isinstance(runtime.read_seconds, float) and runtime.read_seconds > 0.0


def test_model_cache_key_changes_with_the_training_data_not_with_a_touch(tmp_path: Path) -> None:
    cfg = load_experiment("smoke", [f"data.root={tmp_path}"])
    prepare_synthetic_data(cfg)
    train = site_folders(cfg, "brain-0")["train"]
    volume = sorted(train.iterdir())[0]
    first = _cache_key(cfg)
    os.utime(volume)  # a new mtime, the same bytes: the same data
    assert _cache_key(cfg) == first
    with h5py.File(volume, "r+") as handle:  # a corrected (or corrupted) target at the same path
        handle["reconstruction_rss"][0, 0, 0] += 0.5
    corrected = _cache_key(cfg)
    assert corrected != first, "a changed training file must retrain the model"
    shutil.copy(volume, train / "brain_extra_train_999.h5")
    grown = _cache_key(cfg)
    assert grown not in (first, corrected), "a new volume must retrain the model"
    (train.parent / MANIFEST_FILE).write_text("{}")
    described = SiteRuntime(cfg, resolve_site({"partition-id": 0}, cfg), simulated=False).data_description()
    assert described["poison_manifest_sha256"] == hashlib.sha256(b"{}").hexdigest()
    assert _cache_key(cfg) != grown, "another poison manifest must retrain the model"
def test_slice_metadata_memo_gives_the_same_samples_and_rereads_a_changed_file(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastmri.data import SliceDataset

    monkeypatch.setenv("FEDFORGET_CACHE", str(tmp_path / "cache"))
    headers = []
    real = SliceDataset._retrieve_metadata
    monkeypatch.setattr(SliceDataset, "_retrieve_metadata", lambda self, f: headers.append(f.name) or real(self, f))
    mask = make_mask_func("equispaced_fraction", 4, 0.08)
    first = open_split(site / "train", mask, cache=False)
    assert len(headers) == 2, "the first process reads both volumes' headers"
    again = open_split(site / "train", mask, cache=False)  # as a fresh process would
    assert len(headers) == 2, "a second opening reads no header"
    assert [(s.fname, s.slice_ind) for s in again.raw_samples] == [(s.fname, s.slice_ind) for s in first.raw_samples]
    for i in range(len(first)):
        mine, theirs = first[i], again[i]
        assert torch.equal(mine.masked_kspace, theirs.masked_kspace) and torch.equal(mine.target, theirs.target)
        assert mine.crop_size == theirs.crop_size and float(mine.max_value) == float(theirs.max_value)
    touched = sorted((site / "train").iterdir())[1]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1_000_000))
    open_split(site / "train", mask, cache=False)
    assert headers[2:] == [touched.name], "only the changed volume's header is read again"
