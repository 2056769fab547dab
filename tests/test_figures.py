"""Run figures: each writes a readable PNG of plausible size, for every input shape they accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedforget.recon.phantoms import brain_slices
from fedforget.reporting.figures import (
    method_comparison_chart,
    reconstruction_grid,
    retain_trajectory,
    sweep_curve,
)

# matplotlib warnings (a log axis without data, a layout that does not fit)
# mean an unreadable figure: fail on them.
pytestmark = pytest.mark.filterwarnings("error")


def load(path: Path) -> np.ndarray:
    assert path.is_file()
    # Written atomically: nothing but the PNG is left in the folder.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def red_pixels(image: np.ndarray) -> int:
    """Pure-red pixels: only the region outline is drawn in red."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 0.9) & (g < 0.15) & (b < 0.15)).sum())


@pytest.fixture(scope="module")
def slices():
    gt = np.abs(brain_slices(1, 48, seed=2))[0].astype(np.float32)
    rng = np.random.default_rng(0)
    zero_filled = np.abs(gt + 0.2 * rng.standard_normal(gt.shape)).astype(np.float32)
    recon = lambda noise: np.abs(gt + noise * rng.standard_normal(gt.shape))  # noqa: E731
    return gt, zero_filled, {"original": recon(0.05), "oracle": recon(0.02), "ft": recon(0.03),
                             "nl_ft": recon(0.03), "ssd": recon(0.04)}


def summary(models, artifact=True, std=False):
    out = {}
    for i, model in enumerate(models):
        entry = {
            split: {"psnr": 30.0 + i - k, "ssim": 0.9 - 0.01 * (i + k)}
            for k, split in enumerate(("BTA", "KTA", "UA"))
        }
        if std:
            entry["BTA"]["psnr_std"] = 0.5
            entry["KTA"]["ssim_std"] = 0.01
        entry["RTE"] = None if model == "original" else 1.0 + 2 * i
        if artifact:
            entry["artifact"] = 0.9 - 0.1 * i
        out[model] = entry
    return out


def test_reconstruction_grid(slices, tmp_path):
    gt, zero_filled, recons = slices
    one = load(reconstruction_grid(tmp_path / "a" / "one.png", "brain-0 slice 0", gt, zero_filled,
                                   {"original": recons["original"]}))
    many = load(reconstruction_grid(tmp_path / "b" / "many.png", "brain-0 slice 0", gt, zero_filled,
                                    recons, region=(10, 12, 20, 24)))
    assert 400 <= one.shape[0] <= 1200 and 400 <= one.shape[1] <= 1600
    # One column per model: wider, same height.
    assert many.shape[1] > one.shape[1] + 3 * 200
    assert abs(many.shape[0] - one.shape[0]) < 50
    # The region is outlined (in pure red, used for nothing else) on all 13
    # panels: 7 images and 6 error maps.
    assert red_pixels(one) == 0
    assert red_pixels(many) > 13 * 40


def test_region_touching_the_border_without_models(slices, tmp_path):
    gt, zero_filled, _ = slices
    # Ground truth and zero-filled only; the region runs past the image edge.
    image = load(reconstruction_grid(tmp_path / "none.png", "t", gt, zero_filled, {},
                                     region=(0, 40, 48, 60)))
    assert red_pixels(image) > 3 * 40


def test_reconstruction_grid_rejects_bad_input(slices, tmp_path):
    gt, zero_filled, recons = slices
    with pytest.raises(ValueError, match="shape"):
        reconstruction_grid(tmp_path / "x.png", "t", gt, zero_filled[:-1], recons)
    with pytest.raises(ValueError, match="ft"):
        reconstruction_grid(tmp_path / "x.png", "t", gt, zero_filled, {"ft": gt[None]})
    with pytest.raises(ValueError, match="empty"):
        reconstruction_grid(tmp_path / "x.png", "t", gt, zero_filled, recons, region=(5, 5, 5, 9))
    assert not any(tmp_path.iterdir())


def partial(data: dict) -> dict:
    """Entries with gaps: no artifact, RTE as mean/std, no UA split, a lone std."""
    data["ft"]["artifact"] = None
    data["ft"]["RTE"] = {"mean": 4.0, "std": 1.0}
    del data["ft"]["UA"]
    data["original"]["artifact_std"] = 0.05
    return data


@pytest.mark.parametrize(
    "case",
    [
        summary(["original", "oracle", "ft", "ga", "ga_l1", "ga_l1_ft", "nl", "nl_ft", "ssd"],
                artifact=True, std=True),
        partial(summary(["original", "oracle", "ft"], artifact=True)),
        summary(["ft"], artifact=True),  # one model, no oracle to compare with
        summary(["original"], artifact=False, std=True),  # no artifact, RTE all None
    ],
    ids=["all-methods", "partial", "one-model", "no-artifact-no-rte"],
)
def test_method_comparison_chart(tmp_path, case):
    image = load(method_comparison_chart(tmp_path / "m.png", case))
    assert 600 <= image.shape[0] <= 1400 and 1000 <= image.shape[1] <= 2600
    assert colour_share(image, BTA_BLUE) > 0.005  # the BTA bars are drawn, not only axes and labels


BTA_BLUE = (0.122, 0.467, 0.706)  # matplotlib's tab:blue, the BTA bars


def ink(image: np.ndarray) -> float:
    """Fraction of the pixels that are not the white background."""
    return float((image[..., :3] < 0.95).any(axis=-1).mean())


def colour_share(image: np.ndarray, rgb: tuple[float, float, float]) -> float:
    """Fraction of the pixels within 0.03 of ``rgb`` in every channel."""
    return float((np.abs(image[..., :3] - np.asarray(rgb)) < 0.03).all(axis=-1).mean())


def test_the_chart_grows_with_the_models_it_compares(tmp_path):
    few = load(method_comparison_chart(tmp_path / "a" / "m.png", summary(["ft"], artifact=True)))
    many = load(method_comparison_chart(tmp_path / "b" / "m.png", summary(
        ["original", "oracle", "ft", "ga", "ga_l1", "ga_l1_ft", "nl", "nl_ft", "ssd"], artifact=True, std=True)))
    assert many.shape[1] > few.shape[1]  # one group of bars per model, each as wide as before


def test_method_comparison_chart_needs_a_model(tmp_path):
    with pytest.raises(ValueError, match="no models"):
        method_comparison_chart(tmp_path / "e.png", {})


def sweep_points(methods=("ft", "nl_ft"), fractions=(0.01, 0.1, 0.5, 1.0), seeds=3):
    rng = np.random.default_rng(1)
    return [
        {"method": m, "retain_fraction": p, "seed": s, "seconds": 2 + 30 * p + rng.uniform(),
         "bta_psnr": 32 - (np.log10(p) + 1) ** 2 + 0.2 * rng.standard_normal(), "kta_psnr": 28.0}
        for m in methods for p in fractions for s in range(seeds)
    ]


def test_sweep_curve(tmp_path):
    image = load(sweep_curve(tmp_path / "a" / "s.png", sweep_points(),
                             reference={"original": 31.0, "oracle": 32.5}))
    assert 400 <= image.shape[0] <= 900 and 1000 <= image.shape[1] <= 1800
    bare = load(sweep_curve(tmp_path / "c" / "s.png", sweep_points(), reference={}))
    assert ink(image) > ink(bare) > 0.02  # the curves, and the reference lines on top of them
    # One method, one fraction, one seed: a single point, still a figure.
    load(sweep_curve(tmp_path / "b" / "s.png", sweep_points(("ft",), (0.1,), 1)))
    # Two fractions, one seed each; reference with only the oracle.
    load(sweep_curve(tmp_path / "c" / "s.png", sweep_points(("ssd",), (0.05, 0.2), 1),
                     reference={"oracle": 32.0}))


def test_retain_trajectory_orders_by_fraction_and_averages_seeds():
    fractions = np.array([0.5, 0.01, 0.5, 0.1, 0.01])
    seconds = np.array([14.0, 12.0, 16.0, 11.0, 10.0])
    bta = np.array([24.0, 22.0, 23.0, 23.5, 21.0])
    trajectory = retain_trajectory(fractions, seconds, bta)
    np.testing.assert_allclose(trajectory.fractions, [0.01, 0.1, 0.5])
    np.testing.assert_allclose(trajectory.mean_seconds, [11.0, 11.0, 15.0])
    np.testing.assert_allclose(trajectory.mean_bta, [21.5, 23.5, 23.5])
    np.testing.assert_allclose(trajectory.std_bta, [0.5, 0.0, 0.5])


def test_sweep_curve_rejects_bad_points(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        sweep_curve(tmp_path / "s.png", [])
    with pytest.raises(ValueError, match="seconds"):
        sweep_curve(tmp_path / "s.png", [{"method": "ft", "retain_fraction": 0.1, "seed": 0,
                                          "bta_psnr": 30.0}])
    bad = sweep_points(("ft",), (0.1,), 1)
    bad[0]["retain_fraction"] = 0.0
    with pytest.raises(ValueError, match="retain_fraction"):
        sweep_curve(tmp_path / "s.png", bad)
