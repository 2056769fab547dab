"""Federations of many sites: seconds per round, peak memory of all processes, and time to write the sites.

One generated site list per size (``sites=generated``, a quarter of the sites knee, the rest brain,
smoke settings, ``federation.rounds=3``), each in its own scratch folder, measured in one process
one after the other so the sizes compare like with like:

- ``write_seconds``: ``fedforget synth`` of the site list (the run then finds the sites written);
- ``round_seconds``: the original's federated rounds, from its progress checkpoint (first round apart:
  it starts the ClientApp processes);
- ``run_seconds``: the whole ``fedforget run`` (training, oracle, one unlearning method, evaluation of
  every model at every site, report);
- ``peak_memory_mb``: the peak over the run of the summed proportional set size (PSS, shared pages
  split between their users) of ``fedforget run`` and every process below it (SuperLink, Ray, ClientApps).

Usage::

    python -m bench.site_scaling [--sites 4 16 64 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import write_result
from fedforget.configs.schema import ORIGINAL
from fedforget.launch.flower import descendants
from fedforget.learning.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def site_list(sites: int) -> list[str]:
    """Overrides for ``sites`` generated hospitals: a quarter knee (at least one), the rest brain."""
    knee = max(1, sites // 4)
    return ["sites=generated", f"generated_sites.brain={sites - knee}", f"generated_sites.knee={knee}"]


def pss_mb(pid: int) -> float:
    """Proportional set size of one process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemory:
    """Samples the summed PSS of a process and all its descendants every ``period`` seconds; keeps the peak."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid, self.period = pid, period
        self.peak_mb, self.peak_processes = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            tree = [self.pid, *descendants(self.pid)]
            total = sum(pss_mb(pid) for pid in tree)
            if total > self.peak_mb:
                self.peak_mb, self.peak_processes = total, len(tree)


def measure(sites: int, rounds: int, scratch: Path) -> dict[str, Any]:
    """One federation size: write its sites, run it, read its rounds."""
    overrides = ["experiment=smoke", *site_list(sites), f"federation.rounds={rounds}", "unlearning.methods=[ft]",
                 "unlearning.steps=1", "report.figures=false", f"data.root={scratch / 'data'}",
                 f"cache_dir={scratch / 'cache'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedforget.cli", "synth", *overrides], cwd=REPO, env=env, check=True,
                   capture_output=True)
    write_seconds = time.perf_counter() - started
    output = scratch / "run"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "fedforget.cli", "run", *overrides, "--output-dir", str(output)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeMemory(process.pid) as memory:
        log, _ = process.communicate()
    run_seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"fedforget run with {sites} sites failed:\n{log[-4000:]}")
    _, meta = load_checkpoint(output / "checkpoints" / "progress" / f"{ORIGINAL}.pt")
    round_seconds = [entry["seconds"] for entry in meta["history"]]
    later = round_seconds[1:] or round_seconds
    return {"sites": sites, "write_seconds": round(write_seconds, 2), "round_seconds": round_seconds,
            "mean_round_seconds": round(sum(later) / len(later), 3),
            "site_round_ms": round(1000 * sum(later) / len(later) / sites, 1),
            "run_seconds": round(run_seconds, 1), "peak_memory_mb": round(memory.peak_mb, 1),
            "peak_processes": memory.peak_processes}


def growth(rows: list[dict[str, Any]], key: str) -> float:
    """The exponent b of ``key ~ sites^b`` between the smallest and largest size (1 = linear)."""
    import math

    first, last = rows[0], rows[-1]
    return round(math.log(last[key] / first[key]) / math.log(last["sites"] / first["sites"]), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[4, 16, 64, 128])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="site_scaling")
    args = parser.parse_args(argv)
    rows = []
    for sites in sorted(args.sites):
        with tempfile.TemporaryDirectory(prefix=f"fedforget-scaling-{sites}-") as scratch:
            rows.append(measure(sites, args.rounds, Path(scratch)))
            print(rows[-1], flush=True)
    exponents = {key: growth(rows, key) for key in ("write_seconds", "mean_round_seconds", "run_seconds",
                                                      "peak_memory_mb")}
    command = f"python -m bench.site_scaling --sites {' '.join(map(str, args.sites))} --rounds {args.rounds}"
    largest = rows[-1]
    write_result(args.name, {"command": command, "rows": rows, "growth_exponent": exponents},
                 f"{largest['sites']} sites: {largest['mean_round_seconds']} s per round "
                 f"({largest['site_round_ms']} ms per site-round), run {largest['run_seconds']} s, peak "
                 f"{largest['peak_memory_mb']} MB; growth exponents {exponents}")


if __name__ == "__main__":
    main()
