"""``fedforget report`` on a multirun folder: intervals over seeds and the sweep, from results.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedforget.learning.intervals import mean_interval
from fedforget.reporting.multirun import aggregate_multirun, load_jobs, sweep_points


def _results(bta: float, fraction: float) -> dict:
    parts = lambda psnr: {part: {"psnr": psnr, "ssim": 0.5} for part in ("BTA", "KTA", "UA")}  # noqa: E731
    summary = {"zero_filled": {**parts(20.0), "RTE": None}, "original": {**parts(25.0), "RTE": 0.5},
               "oracle": {**parts(26.0), "RTE": 1.0}, "ft": {**parts(bta), "RTE": 4.0}}
    models = {"zero_filled": {"retain_fraction": None, "wall_seconds": 0.0},
              "original": {"retain_fraction": None, "wall_seconds": 2.0},
              "oracle": {"retain_fraction": None, "wall_seconds": 1.0},
              "ft": {"retain_fraction": fraction, "wall_seconds": 0.25}}
    return {"summary": summary, "models": models}


def _multirun(folder: Path, jobs: list[tuple[list[str], dict]]) -> Path:
    entries = []
    for number, (overrides, results) in enumerate(jobs):
        run = folder / str(number)
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results))
        entries.append({"job": number, "overrides": overrides, "run": str(run)})
    (folder / "multirun.json").write_text(json.dumps(entries))
    return folder


def test_seeds_are_summarised_with_a_t_interval_and_zero_filled_has_no_rte(tmp_path: Path) -> None:
    bta = [24.0, 24.5, 25.5]
    folder = _multirun(tmp_path, [([f"seed={s}"], _results(b, 0.5)) for s, b in enumerate(bta)])
    aggregate_multirun(folder)
    groups = json.loads((folder / "summary.json").read_text())["groups"]
    ft = groups["(all jobs)"]["ft"]["BTA_psnr"]
    assert ft["mean"] == pytest.approx(sum(bta) / 3) and ft["n"] == 3
    assert ft["ci"] == pytest.approx(list(mean_interval(bta)))
    assert groups["(all jobs)"]["zero_filled"]["RTE"]["mean"] is None
    assert "| zero_filled |" in (folder / "summary.md").read_text()


def test_a_retain_fraction_sweep_draws_the_references_and_only_the_methods_as_points(tmp_path: Path) -> None:
    folder = _multirun(tmp_path, [(["unlearning.retain_fraction=0.5"], _results(24.0, 0.5)),
                                  (["unlearning.retain_fraction=1.0"], _results(25.0, 1.0))])
    points, references = sweep_points(load_jobs(folder))
    assert [(p["method"], p["retain_fraction"]) for p in points] == [("ft", 0.5), ("ft", 1.0)]
    assert references == {"zero_filled": 20.0, "original": 25.0, "oracle": 26.0}
    aggregate_multirun(folder)
    assert (folder / "figures" / "sweep.png").is_file()


def test_each_sites_psnr_and_gain_over_zero_filled_are_summarised_over_seeds(tmp_path: Path) -> None:
    knee = [21.0, 22.5, 23.0]
    jobs = []
    for seed, psnr in enumerate(knee):
        results = _results(25.0, 0.5)
        results["models"]["original"]["sites"] = {
            "knee-0": {"test": {"psnr": psnr, "gain_over_zero_filled": psnr - 18.0}},
            "brain-0": {"test": {"psnr": 25.0, "gain_over_zero_filled": 5.0}}}
        jobs.append(([f"seed={seed}"], results))
    folder = _multirun(tmp_path, jobs)
    aggregate_multirun(folder)
    sites = json.loads((folder / "summary.json").read_text())["sites"]["(all jobs)"]["original"]
    gain = sites["knee-0"]["gain_over_zero_filled"]
    assert gain["mean"] == pytest.approx(sum(knee) / 3 - 18.0) and gain["n"] == 3
    assert gain["ci"] == pytest.approx(list(mean_interval([p - 18.0 for p in knee])))
    assert sites["brain-0"]["psnr"]["std"] == 0.0
    text = (folder / "summary.md").read_text()
    assert "test PSNR per site (gain over zero-filled)" in text and "| original | 25.00 ± 0.00 (5.00 ± 0.00) |" in text


def test_a_poisoned_federations_paired_artifact_difference_is_summarised_over_seeds(tmp_path: Path) -> None:
    differences = [0.20, 0.25, 0.31]
    jobs = []
    for seed, difference in enumerate(differences):
        results = _results(25.0, 0.5)
        for model in ("original", "oracle", "ft"):
            results["summary"][model]["artifact"] = 0.05 + (difference if model == "original" else 0.0)
        results["summary"]["original"]["vs_oracle"] = {"artifact": {"value": difference, "ci": [0.1, 0.4]}}
        jobs.append(([f"seed={seed}"], results))
    folder = _multirun(tmp_path, jobs)
    aggregate_multirun(folder)
    original = json.loads((folder / "summary.json").read_text())["groups"]["(all jobs)"]["original"]
    assert original["artifact_minus_oracle"]["mean"] == pytest.approx(sum(differences) / 3)
    assert original["artifact_minus_oracle"]["ci"] == pytest.approx(list(mean_interval(differences)))
    assert "artifact - oracle" in (folder / "summary.md").read_text()


def _history_results(kta: float, control_bta: float, seed_steps: int) -> dict:
    """A run with FedEraser and its retraining control: costs, paired differences and the oracle's compute."""
    results = _results(24.0, 0.1)
    for name, steps, bta in (("federaser", seed_steps, 25.0), ("retrain_budget@federaser", seed_steps, control_bta)):
        results["summary"][name] = {part: {"psnr": bta if part == "BTA" else kta, "ssim": 0.5}
                                    for part in ("BTA", "KTA", "UA")} | {"RTE": 3.0}
        results["models"][name] = {"retain_fraction": None, "wall_seconds": 0.3, "family": "history",
                                   "cost": {"site_steps": steps, "server_seconds": 0.1, "messages": 4, "bytes": 10**6,
                                            "history_bytes": 2 * 10**6}}
    results["models"]["oracle"]["cost"] = {"site_steps": 100, "server_seconds": 0.0, "messages": 30, "bytes": 10**7,
                                           "history_bytes": 0}
    oracle = results["summary"]["oracle"]
    for name in ("federaser", "retrain_budget@federaser"):
        s = results["summary"][name]
        s["vs_oracle"] = {p: {"psnr": s[p]["psnr"] - oracle[p]["psnr"], "psnr_ci": [-1.0, 1.0]} for p in ("BTA", "KTA")}
    fed = results["summary"]["federaser"]
    fed["vs_retrain_budget"] = {"model": "retrain_budget@federaser",
                                "BTA": {"psnr": 25.0 - control_bta, "psnr_ci": [0.1, 0.9]}}
    return results


def test_costs_and_the_difference_to_retraining_are_summarised_with_a_frontier(tmp_path: Path) -> None:
    controls = [24.0, 24.5, 24.2]
    folder = _multirun(tmp_path, [([f"seed={s}"], _history_results(26.0, c, 20 + s)) for s, c in enumerate(controls)])
    aggregate_multirun(folder)
    federaser = json.loads((folder / "summary.json").read_text())["groups"]["(all jobs)"]["federaser"]
    assert federaser["compute"]["mean"] == pytest.approx(0.21) and federaser["history_MB"]["mean"] == 2.0
    differences = [25.0 - c for c in controls]
    assert federaser["BTA_minus_retrain_budget"]["ci"] == pytest.approx(list(mean_interval(differences)))
    assert (folder / "figures" / "frontier.png").is_file()
    assert "retrain_budget@model" in (folder / "summary.md").read_text()


def test_a_multirun_that_varies_a_knob_draws_its_tradeoff_curve(tmp_path: Path) -> None:
    jobs = []
    for temperature, bta, kta in ((0.5, -0.5, 2.0), (0.01, -2.0, 0.2)):
        results = _results(24.0, 0.1)
        versus = {"BTA": {"psnr": bta}, "KTA": {"psnr": kta}}
        results["summary"]["soft_relabel"] = {**results["summary"]["ft"], "vs_oracle": versus}
        results["summary"]["original"]["vs_oracle"] = {"BTA": {"psnr": -1.0}, "KTA": {"psnr": 3.0}}
        results["models"]["soft_relabel"] = results["models"]["ft"]
        jobs.append(([f"unlearning.soft_relabel.temperature={temperature}"], results))
    folder = _multirun(tmp_path, jobs)
    for number, (temperature, *_) in enumerate(((0.5,), (0.01,))):
        (folder / str(number) / "config.yaml").write_text(
            f"unlearning:\n  soft_relabel:\n    temperature: {temperature}\n")
    aggregate_multirun(folder)
    curve = json.loads((folder / "summary.json").read_text())["tradeoff"]["soft_relabel"]
    assert [(p["value"], p["bta"], p["kta"]) for p in curve] == [(0.01, -2.0, 0.2), (0.5, -0.5, 2.0)]
    assert (folder / "figures" / "tradeoff.png").is_file()
    assert "### soft_relabel (`unlearning.soft_relabel.temperature`)" in (folder / "summary.md").read_text()
