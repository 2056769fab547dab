"""Watching a submitted run: follow ``<run>/progress.jsonl`` and filter Flower's log for the console.

``flwr run --stream`` relays Flower's log (an ``aggregate_train: Received ...`` line per
round); it all goes to ``<run>/flwr.log``. The console shows fedforget's own progress
(``reporting.progress_view``), Flower's error records (an ``ERROR`` line and the
traceback under it), and everything with ``--verbose``.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedforget.reporting.progress import PROGRESS_FILE, read_events
from fedforget.reporting.progress_view import ProgressView, make_view, plain

# Flower's log records start with their level ("INFO :", "ERROR :"); lines without one continue the record above.
_LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*:")
_ERROR_LEVELS = ("ERROR", "CRITICAL")


class ProgressFollower:
    """A thread that hands every new event of a progress file to a view (polls every ``interval`` s)."""

    def __init__(self, path: Path, view: ProgressView, interval: float = 0.25) -> None:
        self.path, self.view, self.interval = Path(path), view, interval
        # A resumed run appends to the file: show only what this attempt writes.
        self.offset = self.path.stat().st_size if self.path.is_file() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="fedforget-progress", daemon=True)

    def start(self) -> ProgressFollower:
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        events, self.offset = read_events(self.path, self.offset)
        for event in events:
            self.view.handle(event)

    def finish(self) -> None:
        """Stop following, after showing whatever the run wrote last."""
        self._stop.set()
        self._thread.join()
        self.poll()


class FlowerConsole:
    """A sink for ``flwr run``'s lines: passes on error records (all lines with ``verbose``) to the view.

    Hidden lines are kept (the last ``keep``) so that a ``flwr run`` that fails before the
    run starts (a bad connection, a packaging error) can still say why.
    """

    def __init__(self, view: ProgressView, verbose: bool, keep: int = 8) -> None:
        self.view, self.verbose = view, verbose
        self.in_error = False
        self.hidden: deque[str] = deque(maxlen=keep)

    def write(self, line: str) -> None:
        text = plain(line).rstrip("\n")
        level = _LEVEL.match(text)
        if level:
            self.in_error = level.group(1) in _ERROR_LEVELS
        if self.verbose or self.in_error:
            self.view.echo(line, error=self.in_error)
        elif text.strip(" \u2502\u256d\u256e\u2570\u256f\u2500"):
            self.hidden.append(text)

    def flush(self) -> None:
        pass

    def explain_early_exit(self, exit_code: int, run_id: str | None) -> None:
        """When ``flwr run`` failed before any run started, show the hidden lines that say why."""
        if exit_code != 0 and run_id is None and not self.verbose:
            for text in self.hidden:
                self.view.echo(text, error=True)


@contextmanager
def watched_run(output_dir: Path, verbose: bool = False, view: ProgressView | None = None) -> Iterator[FlowerConsole]:
    """Show a run's progress while the block submits it; yields the sink for Flower's lines.

    Args:
        output_dir: The run folder (its ``progress.jsonl`` is followed).
        verbose: Also show every line of Flower's log.
        view: Where to show it (default: rich bars on a terminal, plain lines otherwise).
    """
    view = view or make_view()
    follower = ProgressFollower(Path(output_dir) / PROGRESS_FILE, view).start()
    try:
        yield FlowerConsole(view, verbose)
    finally:
        follower.finish()
        view.close()
