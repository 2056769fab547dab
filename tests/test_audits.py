"""Audits and intervals: the calibrated membership attack on a toy pair, bootstrap coverage, report marks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedforget.configs.schema import ModelConfig
from fedforget.data.batches import BatchSource
from fedforget.data.datasets import SliceSubset, open_split
from fedforget.learning.audits import membership_auc, membership_audit
from fedforget.learning.evaluation import evaluate
from fedforget.learning.intervals import bootstrap_interval, mean_interval
from fedforget.learning.training import LocalTraining, model_from_config, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.synth import SynthSpec, write_synthetic_site
from fedforget.reporting.comparisons import NOT_DISTINGUISHABLE, UNCHANGED, add_intervals, verdicts
from fedforget.reporting.report import render_report
from fedforget.reporting.results import complete


def test_rank_auc_equals_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    members, heldout = rng.normal(0, 1, 37).round(1), rng.normal(0.5, 1, 23).round(1)  # rounding makes ties
    pairwise = np.mean((members[:, None] < heldout[None]) + 0.5 * (members[:, None] == heldout[None]))
    assert membership_auc(members, heldout) == pytest.approx(pairwise)


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A reference VarNet, and the same network fine-tuned on a member set until it memorises it."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("toy-pair")
    write_synthetic_site(folder, SynthSpec("knee", 4, 3, 4, 32, 2, 0.05, 21))
    mask = make_mask_func("equispaced_fraction", 4, 0.08)
    train, heldout = open_split(folder / "train", mask, True), open_split(folder / "test", mask, True)
    loss, cpu = ReconLoss(), torch.device("cpu")
    reference = model_from_config(ModelConfig())
    train_steps(reference, BatchSource(SliceSubset(train, range(8, 16)), 4, 1), 0, 40, LocalTraining(3e-3), loss, cpu)
    members = SliceSubset(train, range(8))  # the reference never saw these two volumes
    model = copy.deepcopy(reference)
    train_steps(model, BatchSource(members, 4, 2), 0, 120, LocalTraining(3e-3), loss, cpu)
    score = {name: {"members": evaluate(net, members, loss, cpu), "heldout": evaluate(net, heldout, loss, cpu)}
             for name, net in (("model", model), ("reference", reference))}
    return score


def test_calibrated_audit_finds_the_members_of_a_model_trained_on_them(toy_pair: dict) -> None:
    model, reference = toy_pair["model"], toy_pair["reference"]
    audit = membership_audit(model["members"], model["heldout"], reference["members"], reference["heldout"], seed=3)
    assert audit.calibrated_auc > 0.9
    assert audit.calibrated_ci[0] <= audit.calibrated_auc <= audit.calibrated_ci[1]


def test_calibrated_audit_of_the_reference_itself_is_one_half(toy_pair: dict) -> None:
    reference = toy_pair["reference"]
    audit = membership_audit(reference["members"], reference["heldout"], reference["members"], reference["heldout"])
    assert audit.calibrated_auc == pytest.approx(0.5, abs=0.05)


def test_volume_bootstrap_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    covered, trials = 0, 200
    for trial in range(trials):
        volume_means = rng.normal(30.0, 2.0, size=25)  # 25 volumes of 4 correlated slices each
        slices = np.repeat(volume_means, 4) + rng.normal(0, 0.3, size=100)
        groups = np.repeat(np.arange(25), 4)
        low, high = bootstrap_interval(np.mean, [(slices, groups)], seed=trial, replicates=400)
        covered += low <= 30.0 <= high
    assert 0.88 <= covered / trials <= 0.99, covered / trials


def test_t_interval_over_seeds_matches_the_textbook_value() -> None:
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    assert mean_interval([1.0]) is None


def _results_with_volumes(method_shift: float) -> dict:
    """Results whose method differs from the oracle by ``method_shift`` dB on every volume of every site."""
    rng = np.random.default_rng(1)
    base = {site: rng.normal(25, 2, 12) for site in ("brain-0", "brain-1", "knee-0")}
    shifts = {"zero_filled": -6.0, "original": 1.5, "oracle": 0.0, "m": method_shift}

    def record(shift: float) -> dict:
        sites = {}
        for site, values in base.items():
            noisy = values + shift + rng.normal(0, 0.05, values.shape)
            entry = {"psnr": float(noisy.mean()), "ssim": 0.8, "nmse": 0.05, "psnr_volumes": noisy.tolist()}
            sites[site] = {"test": entry, "train": dict(entry)} if site == "knee-0" else {"test": entry}
        return {"wall_seconds": 1.0, "steps": 1, "retain_fraction": None, "bytes_communicated": 0, "sites": sites,
                "audit": {}}

    return {"experiment": "t", "forget_site": "knee-0", "models": {m: record(s) for m, s in shifts.items()},
            "sites": {s: {"role": "forget" if s == "knee-0" else "retain", "anatomy": "brain", "poisoned": False,
                          "train_slices": 12, "test_slices": 12} for s in base}}


def test_paired_intervals_mark_what_cannot_be_told_apart() -> None:
    close = complete(_results_with_volumes(0.01))
    assert NOT_DISTINGUISHABLE in verdicts(close["summary"]["m"], "KTA")
    assert UNCHANGED not in verdicts(close["summary"]["m"], "KTA")
    assert NOT_DISTINGUISHABLE in render_report(close)
    far = complete(_results_with_volumes(0.8))
    assert verdicts(far["summary"]["m"], "KTA") == []
    low, high = far["summary"]["m"]["vs_oracle"]["KTA"]["psnr_ci"]
    assert 0.7 < low < 0.8 < high < 0.9, "paired differences cancel the volumes' shared difficulty"
    unchanged = complete(_results_with_volumes(1.5))
    assert UNCHANGED in verdicts(unchanged["summary"]["m"], "BTA")


def test_intervals_use_the_same_volumes_for_every_model() -> None:
    results = complete(_results_with_volumes(0.3))
    again = _results_with_volumes(0.3)
    again["summary"] = results["summary"]
    add_intervals(again, seed=0)
    assert again["summary"]["m"]["vs_oracle"] == results["summary"]["m"]["vs_oracle"]


def test_average_ranks_equal_scipys_with_ties() -> None:
    from scipy.stats import rankdata

    from fedforget.learning.audits import average_ranks

    values = np.random.default_rng(3).integers(0, 6, size=40).astype(float)
    assert np.array_equal(average_ranks(values), rankdata(values))
