"""The server's round history: each kept round's starting global model and every site's update.

What FedAvg's server receives anyway (each site's weights after its local training) is kept,
round by round, so that history-based unlearning methods can replay, roll back or subtract it.
A history is a folder next to the model it belongs to (``checkpoints/original-history/`` in the
run folder, and the same under the model cache's key)::

    index.json        {"fingerprint", "every", "dtype", "rounds": [...], "examples": {round: {site: n}}}
    round-0001.pt     {"start": State (fp32), "updates": {site: State (the history's dtype)}}

A round file is written atomically before the index names it, and the index is rewritten
atomically after it, so a reader (or a resumed run) sees only complete rounds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedforget.learning.checkpoints import State
from fedforget.recon.atomic import atomic_torch_save, atomic_write_json, swap_dir

INDEX = "index.json"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class HistoryError(ValueError):
    """A history folder that cannot serve: missing, for another model, or lacking a round a method needs."""


@dataclass(frozen=True)
class RoundEntry:
    """One kept round: the global model it started from, and each site's update with its example count."""

    round: int
    start: State
    updates: dict[str, State]
    examples: dict[str, int]

    def site_state(self, site: str) -> State:
        """A site's weights after its local training in this round (start + update, in fp32)."""
        return {k: self.start[k] + self.updates[site][k].float() for k in self.start}


def _round_file(server_round: int) -> str:
    return f"round-{server_round:04d}.pt"


class RoundHistory:
    """A round history on disk: :meth:`create` one to write it, :meth:`open` one to read it."""

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self._index = index

    @classmethod
    def create(cls, folder: Path, every: int, dtype: str, fingerprint: str,
               extra_rounds: Iterable[int] = ()) -> RoundHistory:
        """A new, empty history for the model with ``fingerprint`` (keeping rounds 1, 1 + every, ...,
        and ``extra_rounds``); an existing history for the same model and settings is continued."""
        if every < 1 or dtype not in DTYPES:
            raise ValueError(f"a history keeps every N >= 1 rounds in one of {sorted(DTYPES)}; got {every}, {dtype}")
        folder = Path(folder)
        settings = {"fingerprint": fingerprint, "every": every, "dtype": dtype, "extra_rounds": sorted(extra_rounds)}
        existing = _read_index(folder)
        if existing is not None and all(existing.get(k) == v for k, v in settings.items()):
            return cls(folder, existing)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        history = cls(folder, {**settings, "rounds": [], "examples": {}})
        history._write_index()
        return history

    @classmethod
    def open(cls, folder: Path, fingerprint: str | None = None) -> RoundHistory:
        """An existing history.

        Raises:
            HistoryError: no history at ``folder``, or one written for another model.
        """
        index = _read_index(Path(folder))
        if index is None:
            raise HistoryError(f"no round history at {folder}: train the original with federation.history.every "
                               "set to N >= 1 (it keeps every N-th round)")
        if fingerprint is not None and index["fingerprint"] != fingerprint:
            raise HistoryError(f"the round history at {folder} belongs to another model "
                               f"(fingerprint {index['fingerprint']}, expected {fingerprint})")
        return cls(Path(folder), index)

    @property
    def every(self) -> int:
        return int(self._index["every"])

    @property
    def dtype(self) -> str:
        return str(self._index["dtype"])

    @property
    def fingerprint(self) -> str:
        return str(self._index["fingerprint"])

    @property
    def rounds(self) -> list[int]:
        """The kept rounds, in order."""
        return list(self._index["rounds"])

    def keeps(self, server_round: int) -> bool:
        """Whether this history keeps round ``server_round`` (1-based) when it is trained."""
        return (server_round - 1) % self.every == 0 or server_round in self._index["extra_rounds"]

    def examples(self, server_round: int) -> dict[str, int]:
        return {site: int(n) for site, n in self._index["examples"][str(server_round)].items()}

    def add(self, server_round: int, start: State, site_states: Mapping[str, tuple[State, int]]) -> bool:
        """Keep round ``server_round`` if the history keeps it: its start and each site's update.

        Returns whether it was kept. A round that is already kept is written again (a resumed run
        retrains the rounds after its last checkpoint and gets the same values).
        """
        if not self.keeps(server_round):
            return False
        storage = DTYPES[self.dtype]
        updates = {site: {k: (v.detach().cpu().float() - start[k].detach().cpu().float()).to(storage)
                          for k, v in state.items()}
                   for site, (state, _) in site_states.items()}
        payload = {"start": {k: v.detach().cpu().float().clone() for k, v in start.items()}, "updates": updates}
        path = self.folder / _round_file(server_round)
        atomic_torch_save(path, payload)
        self._index["rounds"] = sorted(set(self._index["rounds"]) | {server_round})
        self._index["examples"][str(server_round)] = {site: int(n) for site, (_, n) in site_states.items()}
        self._write_index()
        return True

    def entry(self, server_round: int) -> RoundEntry:
        """One kept round, as it was stored.

        Raises:
            HistoryError: the round is not kept (the message names the kept rounds and the option).
        """
        if server_round not in self._index["rounds"]:
            raise HistoryError(f"round {server_round} is not in the round history at {self.folder} (it keeps "
                               f"rounds {_spans(self.rounds)}; federation.history.every={self.every})")
        payload = torch.load(self.folder / _round_file(server_round), map_location="cpu", weights_only=True)
        return RoundEntry(server_round, payload["start"], payload["updates"], self.examples(server_round))

    def truncate(self, last_round: int) -> None:
        """Forget the rounds after ``last_round`` (a resumed run retrains them)."""
        for server_round in [r for r in self.rounds if r > last_round]:
            (self.folder / _round_file(server_round)).unlink(missing_ok=True)
            self._index["examples"].pop(str(server_round), None)
        self._index["rounds"] = [r for r in self.rounds if r <= last_round]
        self._write_index()

    @property
    def bytes(self) -> int:
        """Bytes the history occupies on disk (round files and index)."""
        return sum(path.stat().st_size for path in self.folder.iterdir() if not path.name.startswith("."))

    def describe(self) -> dict[str, Any]:
        """What results.json and audit.json record about it."""
        return {"rounds_kept": len(self.rounds), "every": self.every, "dtype": self.dtype, "bytes": self.bytes}

    def copy_to(self, folder: Path) -> RoundHistory:
        """The same history at ``folder``, replaced atomically (files hard-linked where the disk allows)."""
        folder = Path(folder)
        if folder.resolve() == self.folder.resolve():
            return self
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for server_round in self.rounds:
            source, target = self.folder / _round_file(server_round), tmp / _round_file(server_round)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        atomic_write_json(tmp / INDEX, self._index)
        swap_dir(tmp, folder)
        return RoundHistory(folder, dict(self._index))

    def _write_index(self) -> None:
        atomic_write_json(self.folder / INDEX, self._index)


def _read_index(folder: Path) -> dict[str, Any] | None:
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _spans(rounds: list[int]) -> str:
    if not rounds:
        return "none"
    return ", ".join(str(r) for r in rounds) if len(rounds) <= 6 else f"{rounds[0]}, {rounds[1]}, ..., {rounds[-1]}"


def history_folder(checkpoint: Path) -> Path:
    """Where the history of the model saved at ``checkpoint`` lives (``original.pt`` -> ``original-history``)."""
    return checkpoint.with_name(f"{checkpoint.stem}-history")
