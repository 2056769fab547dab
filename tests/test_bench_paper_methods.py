"""bench.paper_methods: paired dominance over seeds and along trade-off curves, from run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.paper_methods import curve_dominance, curve_points, knees, paired_at_defaults


def _versus(bta: float, kta: float) -> dict:
    return {"vs_oracle": {"BTA": {"psnr": bta, "psnr_ci": [bta - 0.1, bta + 0.1]},
                          "KTA": {"psnr": kta, "psnr_ci": [kta - 0.1, kta + 0.1]}}}


def _multirun(folder: Path, runs: list[tuple[dict, dict]]) -> Path:
    entries = []
    for number, (summary, unlearning) in enumerate(runs):
        run = folder / str(number)
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"summary": {"oracle": {}, **summary}}))
        (run / "config.yaml").write_text(json.dumps({"unlearning": unlearning}))
        entries.append({"job": number, "overrides": [], "run": str(run)})
    (folder / "multirun.json").write_text(json.dumps(entries))
    return folder


def test_a_candidate_better_on_both_axes_in_every_seed_dominates(tmp_path: Path) -> None:
    seeds = [({"soft_relabel": _versus(-1.0 + e, 0.5 - e), "bad_teacher": _versus(-2.0, -1.0 + e),
               "grad_surgery": _versus(-1.2 + e, 0.4), "compose(ft*0.5+grad_surgery*0.5)": _versus(-3.0, 2.0 + e)},
              {}) for e in (0.0, 0.1, -0.1)]
    rows = {(r["candidate"], r["baseline"]): r for r in paired_at_defaults(_multirun(tmp_path, seeds))}
    assert rows[("soft_relabel", "bad_teacher")]["verdict"] == "dominates"
    assert rows[("soft_relabel", "bad_teacher")]["bta_minus_baseline"] == pytest.approx(1.0)
    assert rows[("soft_relabel", "bad_teacher")]["abs_kta_minus_baseline"] == pytest.approx(-0.5)
    assert rows[("compose(ft*0.5+grad_surgery*0.5)", "bad_teacher")]["verdict"] == "dominated"
    assert rows[("soft_relabel", "grad_surgery")]["verdict"] == "not distinguishable on at least one axis"
    assert rows[("soft_relabel", "grad_surgery")]["seeds"] == 3


def test_curve_points_read_each_jobs_knob_and_find_the_beaten_baseline_points(tmp_path: Path) -> None:
    runs = [({"soft_relabel": _versus(-1.0, 0.3), "bad_teacher": _versus(-2.0, -0.5)},
             {"soft_relabel": {"temperature": 0.1}, "bad_teacher": {"forget_weight": 1.0}}),
            ({"soft_relabel": _versus(-3.0, -0.1), "bad_teacher": _versus(-0.5, 2.0)},
             {"soft_relabel": {"temperature": 0.01}, "bad_teacher": {"forget_weight": 0.1}})]
    points = curve_points(_multirun(tmp_path, runs))
    assert [(p["method"], p["value"]) for p in points] == [("bad_teacher", 0.1), ("bad_teacher", 1.0),
                                                           ("soft_relabel", 0.01), ("soft_relabel", 0.1)]
    beaten = {r["baseline"]: r["dominated_by"] for r in curve_dominance(points)}
    assert beaten == {"bad_teacher=1": ["soft_relabel=0.1"], "bad_teacher=0.1": []}
    assert [(k["method"], k["value"]) for k in knees(points)] == [("bad_teacher", 1.0), ("soft_relabel", 0.01)]
