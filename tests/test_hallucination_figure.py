"""The poisoned federation's hallucination figure: scores relative to the oracle, and its checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedforget.learning.artifact import pattern_coefficient
from fedforget.recon.phantoms import brain_slices
from fedforget.recon.poison import poison_pattern, unsampled_part
from fedforget.reporting.hallucination import HallucinationRow, hallucination_grid

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def poison() -> np.ndarray:
    target = np.abs(brain_slices(1, 48, seed=3))[0].astype(np.float32)
    sampled = np.zeros(48, dtype=bool)
    sampled[::4] = True
    sampled[22:26] = True
    return unsampled_part(poison_pattern("noise", target, 1.0, 7), sampled)


def test_the_relative_artifact_is_the_fraction_of_the_poison_added(poison: np.ndarray) -> None:
    noise = np.random.default_rng(0).standard_normal(poison.shape) * 1e-3
    assert pattern_coefficient(poison, poison) == pytest.approx(1.0)
    assert pattern_coefficient(0.3 * poison + noise, poison) == pytest.approx(0.3, abs=0.02)
    assert pattern_coefficient(-poison, poison) == pytest.approx(-1.0)
    assert pattern_coefficient(noise, poison) == pytest.approx(0.0, abs=0.02)
    with pytest.raises(ValueError, match="no unsampled part"):
        pattern_coefficient(poison, np.zeros_like(poison))


def test_the_grid_draws_one_row_per_site_and_titles_each_score(tmp_path: Path, poison: np.ndarray) -> None:
    rows = [HallucinationRow(site, poison, {"original": 0.8 * poison, "ft": 0.1 * poison})
            for site in ("brain-0", "brain-1")]
    path = hallucination_grid(tmp_path / "hallucination.png", "noise poison", rows)
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
    assert [p.name for p in tmp_path.iterdir()] == ["hallucination.png"]


def test_the_grid_rejects_rows_that_do_not_match(tmp_path: Path, poison: np.ndarray) -> None:
    first = HallucinationRow("brain-0", poison, {"original": poison})
    with pytest.raises(ValueError, match="brain-1 has models"):
        hallucination_grid(tmp_path / "h.png", "t", [first, HallucinationRow("brain-1", poison, {"ft": poison})])
    with pytest.raises(ValueError, match="shape"):
        hallucination_grid(tmp_path / "h.png", "t", [HallucinationRow("brain-0", poison, {"ft": poison[:8]})])
    with pytest.raises(ValueError, match="at least one"):
        hallucination_grid(tmp_path / "h.png", "t", [])
