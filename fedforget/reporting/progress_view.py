"""Showing a run's progress events (``progress.jsonl``): rich bars on a terminal, plain lines elsewhere.

Both views print one line per evaluation with each site's PSNR. The plain view writes
nothing but printable text and newlines (CI logs, files); the rich view draws one bar
per phase (federated rounds with ETA, oracle, each method's steps, final evaluation).
Flower's own log lines reach a view through :meth:`echo` (everything with ``--verbose``,
else only its error records).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any, Protocol

from fedforget.configs.schema import FEDERATED, is_unlearn_phase
from fedforget.reporting.progress import (
    EVALUATION,
    FINAL_EVALUATION,
    PHASE_FINISHED,
    PHASE_STARTED,
    RUN_FAILED,
    RUN_FINISHED,
    RUN_STARTED,
    STEP,
    STOPPED,
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences or other control characters (tabs kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def phase_label(phase: str) -> str:
    """How a phase tag reads on the console."""
    if phase == FEDERATED:
        return "federated training"
    if is_unlearn_phase(phase):
        return f"unlearning {phase.split('/', 1)[1]}"
    if phase == FINAL_EVALUATION:
        return "final evaluation"
    return phase


def psnr_text(psnr: Mapping[str, float]) -> str:
    return "PSNR " + ", ".join(f"{site} {value:.2f} dB" for site, value in psnr.items())


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _position(event: Mapping[str, Any], unit: str) -> str:
    """``round 3/30``, ``step 2/4``, or for the final evaluation ``original (1/4)``."""
    if event["event"] == EVALUATION:
        return f"{unit} {event['step']}"
    total = event.get("total")
    count = f"{event['done']}/{total}" if total else str(event["done"])
    return f"{event['model']} ({count})" if event.get("model") else f"{unit} {count}"


def evaluation_line(event: Mapping[str, Any], unit: str) -> str:
    """The line an evaluated step (or a standalone evaluation) prints."""
    return f"{phase_label(event['phase'])} {_position(event, unit)}: {psnr_text(event['psnr'])}"


def run_started_line(event: Mapping[str, Any]) -> str:
    methods = ", ".join(event.get("methods", [])) or "none"
    return (f"run started: experiment {event['experiment']}, sites {', '.join(event['sites'])} "
            f"(removing {event['forget_site']}), methods {methods}")


class ProgressView(Protocol):
    """Something that shows progress events and Flower's lines."""

    def handle(self, event: Mapping[str, Any]) -> None: ...

    def echo(self, line: str, error: bool = False) -> None: ...

    def close(self) -> None: ...


class _PhaseClock:
    """When each phase started and how far it was then, for the plain view's ETA."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[float, int]] = {}
        self.units: dict[str, str] = {}

    def start(self, event: Mapping[str, Any]) -> None:
        self.started[event["phase"]] = (float(event["time"]), int(event.get("done", 0)))
        self.units[event["phase"]] = event.get("unit", "step")

    def eta(self, event: Mapping[str, Any]) -> float | None:
        began, first = self.started.get(event["phase"], (None, 0))
        done, total = int(event["done"]), event.get("total")
        if began is None or not total or done <= first or done >= total:
            return None
        return (float(event["time"]) - began) / (done - first) * (total - done)


class PlainView:
    """Plain lines: phase starts and ends, every training round, every evaluation, the outcome."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.clock = _PhaseClock()
        self.lock = threading.Lock()

    def _print(self, text: str, error: bool = False) -> None:
        stream = self.err if error else self.out
        stream.write(plain(text) + "\n")
        stream.flush()

    def handle(self, event: Mapping[str, Any]) -> None:
        with self.lock:
            line = self._line(event)
            if line:
                self._print(f"fedforget: {line}", error=event["event"] == RUN_FAILED)

    def _line(self, event: Mapping[str, Any]) -> str | None:
        kind = event["event"]
        if kind == RUN_STARTED:
            return run_started_line(event)
        if kind == PHASE_STARTED:
            return self._started(event)
        unit = self.clock.units.get(event.get("phase", ""), "step")
        if kind == EVALUATION:
            return evaluation_line(event, unit)
        if kind == STEP:
            return self._step(event, unit)
        if kind == PHASE_FINISHED:
            return self._finished(event)
        if kind == RUN_FINISHED:
            return "run finished: completed"
        if kind == RUN_FAILED:
            return f"run failed: {event.get('reason', '')}"
        return None

    def _started(self, event: Mapping[str, Any]) -> str | None:
        self.clock.start(event)
        label, total, unit = phase_label(event["phase"]), event["total"], event["unit"]
        if event.get("loaded_from"):
            return None  # the finished line says where it came from
        resumed = f", resuming after {unit} {event['done']}" if event.get("done") else ""
        return f"{label}: {total} {unit}{'s' if total != 1 else ''}{resumed}"

    def _step(self, event: Mapping[str, Any], unit: str) -> str | None:
        if unit != "round" and not event.get("psnr"):
            return None  # method steps take ~1 s each: their evaluations and the phase end are enough
        timing = []
        if unit == "round" and "seconds" in event:
            timing.append(duration(event["seconds"]))
        eta = self.clock.eta(event) if unit == "round" else None
        if eta is not None:
            timing.append(f"ETA {duration(eta)}")
        text = f"{phase_label(event['phase'])} {_position(event, unit)}"
        text += f" ({', '.join(timing)})" if timing else ""
        return text + (f": {psnr_text(event['psnr'])}" if event.get("psnr") else "")

    def _finished(self, event: Mapping[str, Any]) -> str:
        label = phase_label(event["phase"])
        if event.get("loaded_from"):
            return f"{label}: loaded from {event['loaded_from']}"
        if event.get("status") == STOPPED:
            return f"{label}: STOPPED: {event.get('reason', '')}"
        took = f" in {duration(event['seconds'])}" if "seconds" in event else ""
        return f"{label}: done{took}"

    def echo(self, line: str, error: bool = False) -> None:
        with self.lock:
            self._print(line.rstrip("\n"), error)

    def close(self) -> None:
        pass


class RichView:
    """One rich progress bar per phase, evaluations and Flower's lines printed above the bars."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console()
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}s"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[note]}"), console=self.console)
        self.tasks: dict[str, Any] = {}
        self.units: dict[str, str] = {}
        self.totals: dict[str, int] = {}
        self.lock = threading.Lock()
        self.progress.start()

    def handle(self, event: Mapping[str, Any]) -> None:
        with self.lock:
            self._handle(event)

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind, phase = event["event"], event.get("phase", "")
        if kind == RUN_STARTED:
            self._say(run_started_line(event))
        elif kind == PHASE_STARTED:
            self.units[phase], self.totals[phase] = event["unit"], event["total"]
            self.tasks[phase] = self.progress.add_task(phase_label(phase), total=event["total"],
                                                       completed=event.get("done", 0), unit=event["unit"], note="")
        elif kind == STEP and phase in self.tasks:
            self.progress.update(self.tasks[phase], completed=event["done"])
            if event.get("psnr"):
                self._say(evaluation_line(event, self.units[phase]))
        elif kind == EVALUATION:
            self._say(evaluation_line(event, self.units.get(phase, "step")))
        elif kind == PHASE_FINISHED and phase in self.tasks:
            self._finish(self.tasks[phase], event)
        elif kind == RUN_FINISHED:
            self._say("run finished: completed")
        elif kind == RUN_FAILED:
            self._say(f"[bold red]run failed:[/] {event.get('reason', '')}", markup=True)

    def _finish(self, task: Any, event: Mapping[str, Any]) -> None:
        if event.get("status") == STOPPED:
            self.progress.update(task, note=f"stopped: {event.get('reason', '')}"[:80])
            self.progress.stop_task(task)
            return
        note = "loaded" if event.get("loaded_from") else ""
        self.progress.update(task, completed=self.totals[event["phase"]], note=note)
        self.progress.stop_task(task)

    def _say(self, text: str, markup: bool = False) -> None:
        self.progress.console.print(text, markup=markup, highlight=False)

    def echo(self, line: str, error: bool = False) -> None:
        from rich.text import Text

        with self.lock:
            text = Text.from_ansi(line.rstrip("\n"))
            if error:
                text.stylize("red")
            self.progress.console.print(text, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_view(out: IO[str] | None = None) -> ProgressView:
    """Rich bars when ``out`` (default stdout) is a terminal, plain lines otherwise."""
    out = out or sys.stdout
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return RichView()
    return PlainView(out)
