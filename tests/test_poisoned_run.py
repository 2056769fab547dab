"""A poisoned federation through a real Flower simulation: who trains the oracle, and the artifact score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from run_helpers import fedforget_run

from fedforget.recon.poison import poisoned_count

pytestmark = pytest.mark.slow


def test_poisoned_count_never_leaves_a_poison_empty() -> None:
    assert poisoned_count(1.0, 8) == 8
    assert poisoned_count(0.5, 8) == 4
    assert poisoned_count(0.01, 8) == 1
    assert poisoned_count(0.99, 8) == 8


@pytest.mark.parametrize(("fraction", "oracle_sites"), [(1.0, ["brain-0"]), (0.5, ["brain-0", "knee-0"])])
def test_oracle_uses_only_clean_slices_and_every_model_gets_an_artifact_score(
        tmp_path: Path, data_root: Path, cache_root: Path, fraction: float, oracle_sites: list[str]) -> None:
    run = fedforget_run(["experiment=smoke", "poison=lesion", f"poison.fraction={fraction}",
                         "unlearning.methods=[ft,ssd]", f"data.root={data_root}", f"cache_dir={cache_root}"],
                        tmp_path / "run")
    assert run.returncode == 0, run.output[-4000:]
    results = run.results
    assert results["sites"]["knee-0"]["poisoned"] and not results["sites"]["brain-0"]["poisoned"]
    assert results["models"]["oracle"]["trained_on"] == oracle_sites
    # A wholly poisoned site is left out of the oracle, not asked and failed every round.
    assert not [e for e in results.get("events", []) if e["kind"] == "site_failed"]
    ledger = json.loads((run.folder / "ledger.json").read_text())
    assert {e["site"] for e in ledger if e["phase"] == "oracle"} == set(oracle_sites)
    assert (run.folder / "figures" / "hallucination.png").is_file()
    assert "hallucination.png" in (run.folder / "report.md").read_text()
    for model in ("original", "oracle", "ft", "ssd"):
        assert math.isfinite(results["summary"][model]["artifact"])
        for site, scores in results["models"][model]["sites"].items():
            assert math.isfinite(scores["test"]["artifact_score"]), (model, site)
