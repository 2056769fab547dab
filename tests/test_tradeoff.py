"""Trade-off curves: the level configs move every knob, and a multirun's jobs become one curve per method."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedforget.configs import load_experiment
from fedforget.reporting.tradeoff import knob_value, tradeoff_markdown, tradeoff_points
from fedforget.unlearning import REGISTRY

LEVELS = [f"level-{n}" for n in range(1, 5)]


def _knob(cfg, knob: str) -> float:
    section, key = knob.split(".")
    return float(getattr(getattr(cfg.unlearning, section), key))


def test_every_level_sets_each_swept_method_to_its_own_value() -> None:
    configs = [load_experiment("tradeoff", [f"+tradeoff={level}"]) for level in LEVELS]
    methods = configs[0].unlearning.methods
    assert methods and all(REGISTRY[m].tradeoff_knob for m in methods), "every swept method has a knob"
    for method in methods:
        values = [_knob(cfg, REGISTRY[method].tradeoff_knob) for cfg in configs]
        assert len(set(values)) == len(LEVELS), (method, values)
    assert all(cfg.unlearning.eval_every > 10 ** 2 for cfg in configs)


def _job(tmp_path: Path, number: int, values: dict[str, float], differences: dict[str, tuple[float, float]]) -> dict:
    run = tmp_path / str(number)
    run.mkdir()
    unlearning = {}
    for method, value in values.items():
        if REGISTRY[method].tradeoff_knob is None:
            continue
        section, key = REGISTRY[method].tradeoff_knob.split(".")
        unlearning[section] = {key: value}
    (run / "config.yaml").write_text(yaml.safe_dump({"unlearning": unlearning}))
    summary = {m: {"vs_oracle": {"BTA": {"psnr": b, "psnr_ci": [b - 0.25, b + 0.25]}, "KTA": {"psnr": k}}}
               for m, (b, k) in differences.items()}
    summary["oracle"] = {}
    return {"run": str(run), "results": {"summary": summary}}


def test_jobs_become_curves_ordered_by_knob_with_seed_means(tmp_path: Path) -> None:
    jobs = [_job(tmp_path, 0, {"soft_relabel": 0.5, "ft": 0.0}, {"soft_relabel": (-1.0, 2.0), "ft": (0.0, 0.0)}),
            _job(tmp_path, 1, {"soft_relabel": 0.01}, {"soft_relabel": (-3.0, 0.5)}),
            _job(tmp_path, 2, {"soft_relabel": 0.01}, {"soft_relabel": (-2.0, 1.5)}),
            _job(tmp_path, 3, {"bad_teacher": 1.0}, {"bad_teacher": (-2.0, 0.0)})]
    curves = tradeoff_points(jobs)
    assert list(curves) == ["soft_relabel"], "ft has no knob; one value of bad_teacher is no curve"
    low, high = curves["soft_relabel"]
    assert (low.value, high.value) == (0.01, 0.5)
    assert low.bta == pytest.approx(-2.5) and low.kta == pytest.approx(1.0) and low.seeds == 2
    assert low.bta_ci[0] < -2.5 < low.bta_ci[1] and low.bta_ci != (-2.75, -2.25), "two seeds: a t-interval"
    assert high.bta_ci == (-1.25, -0.75) and high.kta_ci is None, "one seed: its run's bootstrap interval"
    text = "\n".join(tradeoff_markdown(curves))
    assert "unlearning.soft_relabel.temperature" in text and "| 0.01 | -2.50 [" in text


def test_knob_value_reads_nested_keys() -> None:
    assert knob_value({"unlearning": {"a": {"b": 3}}}, "a.b") == 3.0
    with pytest.raises(KeyError):
        knob_value({"unlearning": {"a": {}}}, "a.b")
