"""Where a machine's CPU time went during a time window: per process, per role, and idle.

A background thread samples ``/proc`` (Linux): the machine's idle time from
``/proc/stat`` and every process's user + system time. ``usage`` then charges the
CPU seconds spent between two wall-clock times to each process of a process tree
(labelled by a caller's function), to every other process on the machine, and to
idle. On a machine whose cores training should fill, that says whether a slower
run lost its time to other processes (its own helpers or strangers) or to waiting.

The sampler is itself a process on those cores, and its cost grows with the number
of processes it reads (a Flower run has ~30, a plain loop 1), so it reads each
process's command line only when the process is new or every ``refresh_seconds``
(Ray retitles its workers), and reports its own CPU seconds (``sampler_seconds``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """One reading: wall-clock time, the machine's idle CPU seconds, each process's reading.

    A process's reading is ``(parent, command, CPU seconds, start tick)``; the start tick tells a
    reused pid from the process read before (the command does not: Ray retitles its workers per task).
    """

    t: float
    idle: float
    processes: dict[int, tuple[int, str, float, int]]


Commands = dict[tuple[int, int], str]


def read_sample(known: Commands | None = None) -> Sample:
    """The machine's idle time and every readable process's CPU time, now.

    ``known`` maps ``(pid, start tick)`` to a command already read; new processes are added to it.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = (int(fields[3]) + int(fields[4])) / TICK  # idle + iowait
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            rest = stat[stat.rindex(")") + 2:].split()
            key = (int(entry), int(rest[19]))
            name = None if known is None else known.get(key)
            if name is None:
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                name = command.strip() or stat[stat.index("(") + 1:stat.rindex(")")]
                if known is not None:
                    known[key] = name
        except OSError:  # the process ended while being read
            continue
        processes[int(entry)] = (int(rest[1]), name, (int(rest[11]) + int(rest[12])) / TICK, int(rest[19]))
    return Sample(time.time(), idle, processes)


@dataclass
class CpuSampler:
    """Samples ``/proc`` every ``interval`` seconds in a daemon thread while running (a context manager).

    ``sampler_seconds`` is the CPU time the sampling thread used.
    """

    interval: float = 0.25
    refresh_seconds: float = 2.0
    samples: list[Sample] = field(default_factory=list)
    sampler_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CpuSampler:
        self.samples.append(read_sample())
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(read_sample())

    def _loop(self) -> None:
        known: Commands = {}
        refreshed = time.monotonic()
        while not self._stop.wait(self.interval):
            if time.monotonic() - refreshed >= self.refresh_seconds:
                known, refreshed = {}, time.monotonic()
            self.samples.append(read_sample(known))
        self.sampler_seconds = time.thread_time()

    def usage(self, windows: list[tuple[float, float]], root: int, label: Callable[[int, str], str]
              ) -> dict[str, Any]:
        """CPU seconds spent inside the ``(start, end)`` wall-clock windows, summed.

        Counters are interpolated linearly between samples at each window's ends. Processes
        in ``root``'s tree (``root`` included) are charged to ``label(pid, command)``; every
        other process to ``"other processes"``; the machine's idle time to ``idle_seconds``.
        """
        spent: dict[str, float] = defaultdict(float)
        idle = length = 0.0
        for start, end in windows:
            if not self.samples or start < self.samples[0].t or end > self.samples[-1].t:
                raise ValueError(f"window {start:.2f}..{end:.2f} lies outside the sampled time")
            (idle_start, before), (idle_end, after) = self._at(start), self._at(end)
            tree = _descendants(root, {pid: reading[0] for pid, reading in after.items()})
            for pid, (_, command, cpu, started) in after.items():
                used = cpu - _cpu_of_same_process(before.get(pid), started)
                if used > 0:
                    spent[label(pid, command) if pid in tree else "other processes"] += used
            idle += idle_end - idle_start
            length += end - start
        cores = len(os.sched_getaffinity(0))
        return {"windows": len(windows), "window_seconds": length, "cores": cores, "core_seconds": length * cores,
                "idle_seconds": idle, "by_role": dict(sorted(spent.items(), key=lambda item: -item[1])),
                "sampler_seconds_whole_run": self.sampler_seconds}

    def _at(self, when: float) -> tuple[float, dict[int, tuple[int, str, float, int]]]:
        """Idle seconds and each process's reading at ``when``, interpolated between the bracketing samples."""
        later = next(i for i, sample in enumerate(self.samples) if sample.t >= when)
        b = self.samples[later]
        a = self.samples[max(0, later - 1)]
        share = 0.0 if b.t == a.t else (when - a.t) / (b.t - a.t)
        processes = {}
        for pid, (parent, command, cpu, started) in b.processes.items():
            base = _cpu_of_same_process(a.processes.get(pid), started)
            processes[pid] = (parent, command, base + share * (cpu - base), started)
        return a.idle + share * (b.idle - a.idle), processes


def _cpu_of_same_process(earlier: tuple[int, str, float, int] | None, started: int) -> float:
    """CPU seconds of an earlier reading of the pid, if it is the same process (same start tick), else 0."""
    return earlier[2] if earlier is not None and earlier[3] == started else 0.0


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def process_role(command: str) -> str:
    """A short name for a process of a Flower run: its Ray role, or its program's name."""
    if command.startswith("ray::"):
        return command.split()[0].split(".")[0]
    words = command.split()
    programs = [w for w in words[:3] if not w.startswith("-")]
    for word in programs[1:] if programs and Path(programs[0]).name.startswith("python") else programs:
        return Path(word).name
    return Path(words[0]).name if words else "?"
