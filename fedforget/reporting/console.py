"""The table ``fedforget run`` prints at the end: per site and model, PSNR / SSIM / NMSE."""

from __future__ import annotations

import json
from pathlib import Path


def summary_lines(results: dict) -> list[str]:
    models = list(results["models"])
    width = max(14, *(len(model) for model in models))  # retrain_budget@<method> names run long
    lines = [f"{'site':<10} {'role':<7} {'model':<{width}} {'PSNR':>7} {'vs ZF':>7} {'SSIM':>7} {'NMSE':>8}"]
    for site, info in results["sites"].items():
        for model in models:
            m = results["models"][model]["sites"][site]["test"]
            gain = m.get("gain_over_zero_filled")
            gain_text = f"{gain:+7.2f}" if gain is not None else f"{'-':>7}"
            lines.append(f"{site:<10} {info['role']:<7} {model:<{width}} {m['psnr']:7.2f} {gain_text} {m['ssim']:7.4f} "
                         f"{m['nmse']:8.4f}")
    return lines


def print_summary(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    print(f"\nfedforget: run folder {run_dir}")
    print("test split, fastMRI metrics (mean over volumes); vs ZF = PSNR gain over zero-filled (dB):")
    for line in summary_lines(results):
        print("  " + line)
    for warning in results.get("warnings", []):
        print(f"fedforget: WARNING: {warning}")
