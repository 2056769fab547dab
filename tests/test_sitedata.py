"""Site datasets: reproducible batch streams, subsets, and the validation memo for fresh processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import fedforget.data.datasets as datasets
from fedforget.data.batches import BatchSource, subset_indices
from fedforget.data.datasets import open_split
from fedforget.recon.masks import make_mask_func
from fedforget.recon.synth import SynthSpec, write_synthetic_site


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
