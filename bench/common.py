"""Shared benchmark plumbing: machine facts and the JSON record every benchmark writes."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from fedforget.learning.intervals import mean_interval

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def write_result(name: str, payload: dict[str, Any], summary: str) -> Path:
    """Write ``bench/results/<name>.json`` and print the one-line summary."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), **payload, "summary": summary}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: {summary}  ->  {path}")
    return path


def spread(values: list[float]) -> dict[str, Any]:
    """Values over runs (seeds) with their mean and 95 % t-interval (None for fewer than two)."""
    interval = mean_interval(values)
    return {"mean": statistics.fmean(values), "ci": list(interval) if interval else None, "values": list(values)}
