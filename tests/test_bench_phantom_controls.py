"""bench.phantom_controls: the same held-out subjects with and without skull, scored by a run's models."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from bench import phantom_controls
from fedforget.configs import load_experiment
from fedforget.configs.compose import to_plain
from fedforget.configs.schema import ORACLE, ORIGINAL
from fedforget.learning.checkpoints import save_checkpoint
from fedforget.learning.training import initial_state
from fedforget.recon.phantoms import CONTRASTS


def _targets(folder: Path) -> np.ndarray:
    stack = []
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as f:
            stack.append(f["reconstruction_rss"][()])
    return np.stack(stack)


def test_each_contrast_holds_the_same_subjects_with_and_without_their_skull(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phantom_controls, "SUBJECTS", 2)
    cfg = load_experiment("smoke", [])
    folders = phantom_controls.write_controls(cfg, tmp_path)
    assert sorted(folders) == sorted(f"{c} {p}" for c in CONTRASTS["brain"] for p in phantom_controls.PREPARATIONS)
    for contrast in CONTRASTS["brain"]:
        skull, stripped = (_targets(folders[f"{contrast} {p}"]) for p in phantom_controls.PREPARATIONS)
        assert skull.shape == stripped.shape == (2, cfg.data.slices_per_volume, cfg.data.size, cfg.data.size)
        # Bright scalp where the stripped image of the same subject is background.
        scalp = (skull > 0.3 * skull.max()) & (stripped < 0.05 * stripped.max())
        assert scalp.mean() > 0.05, contrast


def test_the_summary_is_each_models_gain_and_the_stripping_effect_per_run() -> None:
    def run(shift: float) -> dict:
        gains = {f"{c} {p}": (1.0 if p == "with skull" else 0.25) + shift
                 for c in CONTRASTS["brain"] for p in phantom_controls.PREPARATIONS}
        return {"gains": {ORIGINAL: gains, ORACLE: gains}}

    summary = phantom_controls.summarise([run(0.0), run(0.5)])
    row = summary[ORIGINAL]["AXT1 stripped - with skull"]
    assert row["values"] == [-0.75, -0.75] and row["mean"] == pytest.approx(-0.75)
    assert summary[ORACLE]["AXT2 with skull"]["values"] == [1.0, 1.5]
    assert summary[ORACLE]["AXT2 with skull"]["ci"][0] < 1.25 < summary[ORACLE]["AXT2 with skull"]["ci"][1]


def test_a_run_folders_models_are_scored_against_zero_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phantom_controls, "SUBJECTS", 1)
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(phantom_controls, "RESULTS", results)
    monkeypatch.setattr(phantom_controls, "write_result",
                        lambda name, payload, summary: (tmp_path / f"{name}.json").write_text(json.dumps(payload)))
    cfg = load_experiment("smoke", ["model=tiny"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_plain(cfg)))
    for seed, model in enumerate((ORIGINAL, ORACLE)):
        save_checkpoint(run / "checkpoints" / f"{model}.pt", initial_state(cfg.model, seed), {"model": model})
    phantom_controls.main([str(run), "--name", "probe"])
    record = json.loads((tmp_path / "probe.json").read_text())
    gains = record["runs"][0]["gains"]
    assert len(gains[ORIGINAL]) == 2 * len(CONTRASTS["brain"])
    # Two untrained models: their own scores, not one copied into the other.
    assert gains[ORIGINAL] != gains[ORACLE]
    assert all(np.isfinite(v) for v in gains[ORIGINAL].values())
    assert [Path(f).name for f in record["figures"]] == ["phantom_controls-axt1-with-skull.png",
                                                        "phantom_controls-axt1-skull-stripped.png"]
    assert all((tmp_path / f).stat().st_size > 10_000 for f in record["figures"])


def test_the_matched_ratio_divides_each_real_gain_by_the_same_runs_phantom_gain() -> None:
    def controls(run: str, t1: float) -> dict:
        gains = {f"{c} {p}": 4.0 for c in CONTRASTS["brain"] for p in phantom_controls.PREPARATIONS}
        gains["AXT1 skull-stripped"] = t1
        return {"run": run, "gains": {ORIGINAL: gains, ORACLE: gains}}

    def scored(run: str, gain: float) -> dict:
        return {"run": run, "scores": {"mni152-t1": {ORIGINAL: {"gain": gain}, ORACLE: {"gain": gain}}}}

    per_run = [controls("/runs/a", 2.0), controls("/runs/b", 3.0)]
    real = {"runs": [scored("/runs/b", 1.5), scored("/runs/a", 2.0)]}  # paired by run folder, not by order
    assert phantom_controls.same_runs(per_run, real)
    ratios = phantom_controls.matched_ratios(per_run, real)["mni152-t1"][ORIGINAL]
    assert ratios["skull-stripped"]["values"] == [1.0, 0.5]
    assert ratios["with skull"]["values"] == [0.5, 0.375]
    assert ratios["skull-stripped"]["contrast"] == "AXT1"
    assert not phantom_controls.same_runs(per_run, {"runs": [scored("/runs/a", 2.0)]})
