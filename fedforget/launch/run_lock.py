"""One writer per run folder: a lock file holding the writer's PID.

Rerunning a command resumes its unfinished run folder; if the first process is still
alive (say, a run whose terminal was closed), two writers would interleave checkpoints
and results. The lock is an exclusive ``flock`` on ``<run>/.writer.lock``: the kernel
releases it when the writer dies, however it dies, so a stale file never blocks a resume.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

LOCK_FILE = ".writer.lock"


class RunFolderBusy(RuntimeError):
    """Another live process writes the run folder; the message names its PID."""


class RunLock:
    """Hold ``<folder>/.writer.lock`` for the duration of a ``with`` block."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._handle: IO[str] | None = None
        self._info: dict[str, Any] = {}

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _parse(handle.read())
            handle.close()
            raise RunFolderBusy(f"run folder {self.path.parent} is being written by PID {holder.get('pid', '?')} "
                                f"(started {holder.get('started', '?')}): wait for it to finish, or stop it "
                                f"with kill -TERM {holder.get('pid', 'PID')} and run the command again to resume")
        self._handle = handle
        self.note(pid=os.getpid(), started=_now())
        return self

    def note(self, **info: Any) -> None:
        """Add facts about the writer to the lock file (its PID, its Flower home), for people and tools."""
        assert self._handle is not None, "note() needs the lock held"
        self._info.update({k: str(v) if isinstance(v, Path) else v for k, v in info.items()})
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps(self._info))
        self._handle.flush()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _parse(text: str) -> dict[str, Any]:
    try:
        return dict(json.loads(text))
    except ValueError:
        return {}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
