"""Unlearning cost vs retraining: every registered method next to the oracle (the paper's RTE axis).

Runs the experiment once with every method (original and oracle come from the model
cache when present) and reports, per method: wall time, optimizer steps, passes over
the forget data, bytes moved between sites, and quality (forget- and retain-site
PSNR) next to the oracle's retraining.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import write_result
from fedforget.configs.schema import ORACLE, ORIGINAL

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "bench-unlearning-cost")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "fedforget.cli", "run", f"experiment={args.experiment}",
               "unlearning.methods=[all]", *args.overrides, "--output-dir", str(args.output_dir), "--fresh"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    results = json.loads((args.output_dir / "results.json").read_text())
    oracle = results["models"][ORACLE]
    rows = {}
    for name, record in results["models"].items():
        summary = results["summary"][name]
        rows[name] = {"wall_seconds": record["wall_seconds"], "steps": record["steps"],
                      "forget_passes": record.get("passes", {}).get("forget"),
                      "bytes_communicated": record["bytes_communicated"], "RTE": summary["RTE"],
                      "BTA_psnr": summary["BTA"]["psnr"], "KTA_psnr": summary["KTA"]["psnr"],
                      "UA_psnr": summary["UA"]["psnr"],
                      "KTA_minus_oracle": summary["KTA"]["psnr"] - results["summary"][ORACLE]["KTA"]["psnr"],
                      "BTA_minus_oracle": summary["BTA"]["psnr"] - results["summary"][ORACLE]["BTA"]["psnr"]}
    methods = [m for m in rows if m not in (ORIGINAL, ORACLE)]
    fastest = min(methods, key=lambda m: rows[m]["wall_seconds"])
    write_result("unlearning_cost", {"experiment": args.experiment, "run": str(args.output_dir),
                                     "run_wall_seconds": time.perf_counter() - started,
                                     "oracle_retraining_seconds": oracle["wall_seconds"], "methods": rows},
                 f"oracle retraining {oracle['wall_seconds']:.0f} s; {len(methods)} methods from "
                 f"{min(rows[m]['wall_seconds'] for m in methods):.1f} s ({fastest}) to "
                 f"{max(rows[m]['wall_seconds'] for m in methods):.1f} s")


if __name__ == "__main__":
    main()
