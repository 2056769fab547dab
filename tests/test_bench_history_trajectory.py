"""bench.history_trajectory: a model against the oracle's learning curve at the model's site compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.history_trajectory import oracle_curve, seed_rows, summarise

RETAIN, FORGET = ["brain-0", "brain-1"], "knee-0"


def _write_run(folder: Path, method_steps: int, method_psnr: dict[str, float]) -> Path:
    """A run folder with an oracle evaluated at rounds 0, 2 and 4 of 4 (720 site steps) and one method."""
    folder.mkdir(parents=True)
    events = [{"event": "phase_started", "phase": "oracle"},
              {"event": "evaluation", "phase": "oracle", "step": 0,
               "psnr": {"brain-0": 18.0, "brain-1": 20.0, "knee-0": 17.0}},
              {"event": "step", "phase": "oracle", "done": 1, "total": 4},
              {"event": "step", "phase": "oracle", "done": 2, "total": 4,
               "psnr": {"brain-0": 22.0, "brain-1": 24.0, "knee-0": 19.0}},
              {"event": "step", "phase": "federated", "done": 2, "total": 4,
               "psnr": {"brain-0": 99.0, "brain-1": 99.0, "knee-0": 99.0}},
              {"event": "step", "phase": "oracle", "done": 4, "total": 4,
               "psnr": {"brain-0": 24.0, "brain-1": 26.0, "knee-0": 20.0}}]
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    def record(steps: int, psnr: dict[str, float]) -> dict:
        return {"cost": {"site_steps": steps}, "sites": {s: {"test": {"psnr": v}} for s, v in psnr.items()}}

    results = {"forget_site": FORGET, "sites": {s: {} for s in [*RETAIN, FORGET]},
               "models": {"oracle": record(720, {"brain-0": 24.0, "brain-1": 26.0, "knee-0": 20.0}),
                          "method": record(method_steps, method_psnr)}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_the_oracle_curve_is_read_from_the_oracle_phase_only_as_fractions_of_its_rounds(tmp_path: Path) -> None:
    folder = _write_run(tmp_path / "0", 180, {"brain-0": 20.0, "brain-1": 22.0, "knee-0": 18.0})
    curve = oracle_curve(folder / "progress.jsonl", RETAIN, FORGET)
    assert curve == [(0.0, 19.0, 17.0), (0.5, 23.0, 19.0), (1.0, 25.0, 20.0)]


def test_a_model_is_compared_with_the_curve_interpolated_at_its_compute(tmp_path: Path) -> None:
    # 180 of 720 steps = 25 %: halfway between round 0 (BTA 19, KTA 17) and round 2 (BTA 23, KTA 19).
    folder = _write_run(tmp_path / "0", 180, {"brain-0": 20.0, "brain-1": 22.0, "knee-0": 18.5})
    row = seed_rows(folder)["method"]
    assert row["compute"] == pytest.approx(0.25)
    assert (row["curve_BTA"], row["curve_KTA"]) == pytest.approx((21.0, 18.0))
    assert (row["BTA_minus_curve"], row["KTA_minus_curve"]) == pytest.approx((0.0, 0.5))


def test_the_summary_over_seeds_is_the_mean_with_a_t_interval(tmp_path: Path) -> None:
    rows = {str(i): seed_rows(_write_run(tmp_path / str(i), 360, {"brain-0": b, "brain-1": b, "knee-0": 19.0}))
            for i, b in enumerate((22.0, 23.0, 24.0))}
    summary = summarise(rows)["method"]["BTA_minus_curve"]
    assert summary["mean"] == pytest.approx(0.0) and summary["n"] == 3
    low, high = summary["ci"]
    assert low < -0.9 and high > 0.9, "a 1 dB spread over 3 seeds has a t-interval wider than the spread"


def test_a_run_whose_oracle_came_from_the_cache_is_an_error_that_says_so(tmp_path: Path) -> None:
    folder = _write_run(tmp_path / "0", 180, {"brain-0": 20.0, "brain-1": 22.0, "knee-0": 18.0})
    (folder / "progress.jsonl").write_text(json.dumps({"event": "phase_started", "phase": "evaluation"}) + "\n")
    with pytest.raises(ValueError, match="no oracle evaluations"):
        seed_rows(folder)
