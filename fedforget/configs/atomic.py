"""Atomic file writes (temporary file + rename): a reader sees the old file or the complete new one.

The one implementation of the pattern for the whole package. Every writer builds its file under a
temporary name in the destination folder (so the rename never crosses a file system) and renames
it over the destination with ``os.replace``; if anything fails before the rename, the temporary
file is removed and the destination is untouched.

It lives in ``configs``, the bottom layer, because every layer writes files this way, ``configs``
included (the composed-experiment memo of :mod:`fedforget.configs.cache`), and a package may only
import the packages below it. It imports the standard library only (``torch`` lazily, for
:func:`atomic_torch_save`), so importing it costs nothing. ``fedforget.recon.atomic`` re-exports
it under its older import path.

The temporary name is a pattern of the destination's ``{name}`` and the writer's ``{pid}``
(:data:`TEMP`, ``.<name>.tmp-<pid>``, unless a writer passes its own): a process id in it keeps
concurrent writers of one file apart; a writer that must recognise its own leftovers (the
poisoning's stale-file sweep) passes a fixed pattern. ``fsync=True`` flushes the new file's bytes
to disk before the rename (the run folder's JSON files), so a power cut cannot leave a complete
name over incomplete bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP",
    "temp_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "stage",
    "commit",
    "swap_dir",
]

# The default temporary name beside the destination: hidden, and distinct per process.
TEMP = ".{name}.tmp-{pid}"


def temp_path(path: Path, temp: str = TEMP) -> Path:
    """Where a write of ``path`` puts its bytes first: ``temp`` (see :data:`TEMP`) in the same folder."""
    path = Path(path)
    return path.with_name(temp.format(name=path.name, pid=os.getpid()))


def atomic_write(path: Path, write: Callable[[Path], None], *, temp: str = TEMP, fsync: bool = False) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it over ``path``.

    ``write`` receives the temporary path (for writers that open files themselves: ``savefig``,
    ``h5py``, ``torch.save``). The parent folder is created if need be. :func:`stage` then
    :func:`commit`.

    Returns:
        ``path``.

    Raises:
        Whatever ``write`` or the file system raises; the temporary file is removed first.
    """
    tmp = stage(path, write, temp=temp, fsync=fsync)
    try:
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Path(path)


def atomic_write_bytes(path: Path, data: bytes, *, temp: str = TEMP, fsync: bool = True) -> Path:
    """Write ``data`` so that ``path`` is either the old file or the complete new one (synced by default)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), temp=temp, fsync=fsync)


def atomic_write_text(path: Path, text: str, *, temp: str = TEMP, fsync: bool = False) -> Path:
    """``text`` as UTF-8, atomically (not synced by default: caches and records a rerun rewrites)."""
    return atomic_write_bytes(path, text.encode(), temp=temp, fsync=fsync)


def atomic_write_json(path: Path, payload: Any) -> Path:
    """``payload`` as indented JSON with a final newline, atomically and synced (the run folder's records).

    NumPy and torch scalars are written as numbers, paths as strings.
    """
    return atomic_write_bytes(
        path, (json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any, *, temp: str = TEMP) -> Path:
    """``torch.save(obj)`` to ``path``, atomically (checkpoints, round histories)."""
    import torch  # here: the JSON writers must not import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), temp=temp)


def stage(path: Path, write: Callable[[Path], None], *, temp: str = TEMP, fsync: bool = False) -> Path:
    """The first half of :func:`atomic_write`: ``write`` fills the temporary file of ``path``, which is returned.

    For transactions over several files that prepare every file first and :func:`commit` them only
    once a record of the change is on disk (the poisoning of a site's files). If ``write`` fails,
    the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, temp)
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """The second half of :func:`atomic_write`: rename a staged temporary file over ``path``."""
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def swap_dir(build: Path, folder: Path) -> None:
    """Put the finished folder ``build`` at ``folder``, replacing what is there.

    A directory cannot be renamed over a non-empty one, so the old folder is moved aside first (into
    a hidden temporary folder beside it), the new one renamed in, and the old one deleted: a reader
    sees the old folder or the new one, never a mix.
    """
    import shutil
    import tempfile

    build, folder = Path(build), Path(folder)
    old = None
    if folder.exists() or folder.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(build, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
