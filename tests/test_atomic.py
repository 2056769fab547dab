"""The one atomic-write helper: the new file or the old one, never a half-written one, and no leftovers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fedforget.configs import atomic
from fedforget.recon import atomic as recon_atomic


def test_every_variant_writes_its_bytes_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "folder"  # created on demand
    atomic.atomic_write_bytes(folder / "a.bin", b"\x00\x01")
    atomic.atomic_write_text(folder / "b.txt", "text\n")
    atomic.atomic_write_json(folder / "c.json", {"path": Path("/x"), "n": torch.tensor(2.5)})
    atomic.atomic_torch_save(folder / "d.pt", {"w": torch.ones(2)})
    atomic.atomic_write(folder / "e.txt", lambda tmp: tmp.write_text("callback"), temp=".{name}.tmp")
    assert (folder / "a.bin").read_bytes() == b"\x00\x01"
    assert (folder / "b.txt").read_text() == "text\n"
    assert (folder / "c.json").read_text() == json.dumps({"path": "/x", "n": 2.5}, indent=2) + "\n"
    assert torch.equal(torch.load(folder / "d.pt")["w"], torch.ones(2))
    assert (folder / "e.txt").read_text() == "callback"
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.txt", "c.json", "d.pt", "e.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_temporary_name_is_a_pattern_of_the_name_and_the_process(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    assert atomic.temp_path(path) == tmp_path / f".x.h5.tmp-{os.getpid()}"
    assert atomic.temp_path(path, "{name}.tmp") == tmp_path / "x.h5.tmp"
    seen = []
    atomic.atomic_write(path, lambda tmp: seen.append(tmp) or tmp.write_bytes(b""), temp=".{name}.{pid}")
    assert seen == [tmp_path / f".x.h5.{os.getpid()}"]


def test_recon_re_exports_the_same_functions() -> None:
    for name in atomic.__all__:
        assert getattr(recon_atomic, name) is getattr(atomic, name)


def test_a_staged_file_replaces_the_destination_only_when_committed(tmp_path: Path) -> None:
    path = tmp_path / "volume.h5"
    path.write_text("clean")
    tmp = atomic.stage(path, lambda t: t.write_text("poisoned"), temp=".{name}.poison.tmp")
    assert tmp == tmp_path / ".volume.h5.poison.tmp" and path.read_text() == "clean"
    atomic.commit(tmp, path)
    assert path.read_text() == "poisoned" and not tmp.exists()
