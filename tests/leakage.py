"""What may leave a site: the check every Flower run's ledger is held to."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from run_helpers import CompletedRun

from fedforget.recon.models import PRESETS, build_varnet

# Every record a site sends may hold only these metrics, each a single number.
SITE_METRICS = re.compile(r"num-examples|loss|mia-auc(-calibrated)?(-ci-(low|high))?|"
                          r"(train|test)-(slices|volumes|psnr|ssim|nmse|loss|artifact_score)")
# ... and these lists, one value per volume of the split (the volume bootstrap's input), never per slice.
VOLUME_METRICS = re.compile(r"(train|test)-(psnr|ssim|artifact_score)-volumes")


def replies(run: CompletedRun) -> list[dict]:
    """Every answer a site sent (the ledger records each one's arrays by shape and records by key)."""
    ledger = json.loads((run.folder / "ledger.json").read_text())
    return [e for e in ledger if e["records_up"]]


def model_shapes() -> set[tuple[int, ...]]:
    return {tuple(p.shape) for p in build_varnet(PRESETS["tiny"]).parameters()}


def assert_only_parameters_and_numbers_leave(run: CompletedRun, methods: Iterable[str]) -> None:
    """Every record any site sent, in every phase and in each of ``methods``: parameter-shaped arrays, single
    numbers from a fixed list, per-volume scores, and file lists only in the site query."""
    answers = replies(run)
    phases = {e["phase"] for e in answers}
    assert {f"unlearn/{m}" for m in methods} <= phases and {"discover", "evaluate/final/original"} <= phases
    shapes, sites = model_shapes(), run.results["sites"]
    assert {e["site"] for e in answers if e["phase"] == "discover"} == set(sites), "every site answered the query"
    for entry in answers:
        where = (entry["phase"], entry["step"], entry["site"])
        assert set(map(tuple, entry["shapes_up"])) <= shapes, f"a non-parameter array left a site: {where}"
        for name, record in entry["records_up"].items():
            if record["kind"] == "ArrayRecord":
                continue
            for key, (kind, length) in record["keys"].items():
                if record["kind"] == "MetricRecord" and VOLUME_METRICS.fullmatch(key):
                    split = key.split("-", 1)[0]
                    assert kind == "list[float]" and length == sites[entry["site"]][f"{split}_volumes"], (where, key)
                elif record["kind"] == "MetricRecord":
                    assert SITE_METRICS.fullmatch(key) and kind in ("int", "float") and length == 1, (where, key)
                elif kind.startswith("list"):
                    # Lists travel only in the site query: one entry per file the site uses (audit.json).
                    split = key.split("-", 1)[0]
                    assert entry["phase"] == "discover" and name == "data", (where, name, key)
                    assert kind != "list[float]" and length == sites[entry["site"]][f"{split}_volumes"], (where, key)
