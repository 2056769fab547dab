"""Trade-off curves of a multirun: each method's (BTA - oracle, KTA - oracle) at every value of its knob.

A method's knob is the config key its class names (``Method.tradeoff_knob``); a job's value is read
from the job's own ``config.yaml``, so any multirun that varies a knob draws its curve, not only
``experiment=tradeoff``. Differences to the oracle are each seed's paired ones (results.json
``summary.<model>.vs_oracle``), averaged over seeds with a 95 % t-interval; a single seed keeps its run's
paired volume-bootstrap interval.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from fedforget.learning.intervals import mean_interval
from fedforget.unlearning import REGISTRY


class TradeoffPoint(NamedTuple):
    """One knob value of one method, over seeds."""

    method: str
    knob: str
    value: float
    bta: float  # BTA - oracle, PSNR dB (mean over seeds)
    kta: float  # KTA - oracle
    bta_ci: tuple[float, float] | None
    kta_ci: tuple[float, float] | None
    seeds: int


def knob_value(config: dict[str, Any], knob: str) -> float:
    """The value of ``unlearning.<knob>`` in a run's saved config."""
    node: Any = config["unlearning"]
    for part in knob.split("."):
        node = node[part]
    return float(node)


def tradeoff_points(jobs: list[dict[str, Any]]) -> dict[str, list[TradeoffPoint]]:
    """method -> its points sorted by knob value, for methods whose knob took at least two values."""
    samples: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        config = None
        for model, summary in job["results"]["summary"].items():
            method = REGISTRY.get(model)
            versus = summary.get("vs_oracle", {})
            if method is None or method.tradeoff_knob is None or "BTA" not in versus:
                continue
            config = config or yaml.safe_load((Path(job["run"]) / "config.yaml").read_text())
            sample = samples[(model, knob_value(config, method.tradeoff_knob))]
            for axis, part in (("bta", "BTA"), ("kta", "KTA")):
                sample[axis].append(versus[part]["psnr"])
                sample[f"{axis}_ci"].append(versus[part].get("psnr_ci"))
    curves: dict[str, list[TradeoffPoint]] = defaultdict(list)
    for (model, value), sample in sorted(samples.items()):
        curves[model].append(TradeoffPoint(
            model, str(REGISTRY[model].tradeoff_knob), value, _mean(sample["bta"]), _mean(sample["kta"]),
            _interval(sample["bta"], sample["bta_ci"]), _interval(sample["kta"], sample["kta_ci"]),
            len(sample["bta"])))
    return {model: points for model, points in curves.items() if len(points) > 1}


def _interval(values: list[float], bootstraps: list[list[float] | None]) -> tuple[float, float] | None:
    """Over seeds, the t-interval of the mean; from one seed, that run's paired volume-bootstrap interval."""
    if len(values) == 1 and bootstraps[0] is not None:
        return float(bootstraps[0][0]), float(bootstraps[0][1])
    return mean_interval(values)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def tradeoff_markdown(curves: dict[str, list[TradeoffPoint]]) -> list[str]:
    """A table per method: knob value, BTA - oracle and KTA - oracle with their intervals."""
    lines = ["## Trade-off curves (PSNR dB; the oracle is at 0, 0)", "",
             "Intervals: 95 % Student-t over seeds; with one seed, that run's paired volume bootstrap.", ""]
    for model, points in curves.items():
        lines += [f"### {model} (`unlearning.{points[0].knob}`)", "",
                  "| value | BTA - oracle | KTA - oracle | seeds |", "|---|---|---|---|"]
        lines += [f"| {p.value:g} | {_cell(p.bta, p.bta_ci)} | {_cell(p.kta, p.kta_ci)} | {p.seeds} |"
                  for p in points]
        lines.append("")
    return lines


def _cell(mean: float, interval: tuple[float, float] | None) -> str:
    return f"{mean:+.2f}" if interval is None else f"{mean:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]"
