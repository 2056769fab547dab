"""Evaluation against independent references: zero-filled through numpy + fastmri.evaluate, and the results maths."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastmri import evaluate as fastmri_evaluate

from fedforget.data.datasets import open_split
from fedforget.learning.evaluation import evaluate_zero_filled
from fedforget.recon.acquisition import ifft2c, rss
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.synth import SynthSpec, write_synthetic_site
from fedforget.reporting.console import summary_lines
from fedforget.reporting.report import render_report
from fedforget.reporting.results import complete, not_learned


@pytest.fixture(scope="module")
def knee_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zf-site")
    write_synthetic_site(folder, SynthSpec("knee", 1, 2, 3, 32, 2, 0.01, 5))
    return folder / "test"


def _reference_zero_filled(path: Path, mask_func) -> tuple[np.ndarray, np.ndarray]:
    """RSS of the masked k-space, computed with numpy from the file itself (fastMRI's per-file mask seed)."""
    with h5py.File(path, "r") as hf:
        kspace, target = hf["kspace"][()], hf["reconstruction_rss"][()]
    _, _, rows, cols = kspace.shape
    mask, _ = mask_func((1, rows, cols, 2), None, tuple(map(ord, path.name)))
    columns = mask.numpy().reshape(-1).astype(bool)
    masked = kspace * columns[None, None, None, :]
    image = rss(ifft2c(masked), axis=1)
    top, left = (rows - target.shape[1]) // 2, (cols - target.shape[2]) // 2
    return target, image[:, top:top + target.shape[1], left:left + target.shape[2]].astype(np.float32)


def test_zero_filled_equals_fastmri_evaluate_on_the_masked_kspace(knee_site: Path) -> None:
    mask_func = make_mask_func("equispaced_fraction", 4, 0.08)
    result = evaluate_zero_filled(open_split(knee_site, mask_func, cache=False), ReconLoss())
    files = sorted(knee_site.iterdir())
    assert result.volume_names == [f.name for f in files]
    for path, measured in zip(files, result.per_volume):
        target, zero_filled = _reference_zero_filled(path, mask_func)
        assert measured.psnr == pytest.approx(fastmri_evaluate.psnr(target, zero_filled), abs=1e-3)
        assert measured.ssim == pytest.approx(fastmri_evaluate.ssim(target, zero_filled), abs=1e-4)
        assert measured.nmse == pytest.approx(fastmri_evaluate.nmse(target, zero_filled), rel=1e-3)
    assert result.metrics.psnr == pytest.approx(np.mean([m.psnr for m in result.per_volume]))
    assert result.metrics.psnr < 35, "zero-filled at 4x must be visibly worse than the fully sampled target"


def _results(original_gain: dict[str, float]) -> dict:
    """A minimal results.json: zero-filled at 20 dB everywhere, the original ``original_gain`` above it."""
    sites = {"brain-0": {"role": "retain"}, "knee-0": {"role": "forget"}}

    def scores(gain: dict[str, float]) -> dict:
        return {site: {split: {"psnr": 20.0 + gain[site], "ssim": 0.5, "nmse": 0.1}
                       for split in (("test", "train") if site == "knee-0" else ("test",))} for site in sites}

    models = {"zero_filled": {"wall_seconds": 0.0, "steps": 0, "sites": scores({s: 0.0 for s in sites})},
              "original": {"wall_seconds": 10.0, "steps": 5, "sites": scores(original_gain)},
              "oracle": {"wall_seconds": 8.0, "steps": 5, "sites": scores({"brain-0": 6.0, "knee-0": 1.0})}}
    for record in models.values():
        record.update({"retain_fraction": None, "bytes_communicated": 0, "audit": {}})
    return {"experiment": "t", "forget_site": "knee-0", "models": models,
            "sites": {n: {**s, "anatomy": "brain", "poisoned": False, "train_slices": 4, "test_slices": 2}
                      for n, s in sites.items()}}


def test_gains_and_summary_follow_from_the_scores() -> None:
    results = complete(_results({"brain-0": 6.0, "knee-0": 4.5}))
    original = results["models"]["original"]["sites"]
    assert original["knee-0"]["test"]["gain_over_zero_filled"] == pytest.approx(4.5)
    assert original["knee-0"]["train"]["gain_over_zero_filled"] == pytest.approx(4.5)
    assert results["models"]["zero_filled"]["sites"]["brain-0"]["test"]["gain_over_zero_filled"] == 0.0
    assert results["summary"]["zero_filled"]["KTA"]["psnr"] == 20.0
    assert results["summary"]["zero_filled"]["RTE"] is None
    assert results["summary"]["original"]["RTE"] == pytest.approx(0.8)
    assert results["warnings"] == []


def test_an_unlearned_site_is_named_in_results_report_and_console() -> None:
    results = complete(_results({"brain-0": 6.0, "knee-0": 0.04}))
    expected = "site knee-0 was not learned: +0.0 dB over zero-filled"
    assert not_learned(results) == [expected] == results["warnings"]
    assert expected in render_report(results)
    assert "+0.04" in "\n".join(summary_lines(results))
    learned = complete(copy.deepcopy(_results({"brain-0": 6.0, "knee-0": 2.5})))
    assert learned["warnings"] == [] and "was not learned" not in render_report(learned)
