"""Stopping a run from outside: SIGINT and SIGTERM become an exception, so every ``finally`` runs.

Python's default SIGTERM ends the process at once, without unwinding: the SuperLink, the
simulation, Ray and the site processes a run started would go on as orphans (a scheduler's
time limit sends SIGTERM). :func:`stop_on_signals` turns either signal into
:class:`Interrupted`, raised in the main thread, so the context managers that started those
processes stop them by PID on the way out; the command then exits 128 + the signal number.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by a signal (a BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT / SIGTERM raises :class:`Interrupted`; later ones wait for the cleanup."""
    raised = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if raised:
            print(f"fedforget: {signal.Signals(signum).name} again: still stopping the run's processes",
                  file=sys.stderr, flush=True)
            return
        raised.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
