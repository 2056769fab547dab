"""The smoke experiment through a real Flower simulation: what the run folder must hold."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from run_helpers import CompletedRun, fedforget_report, fedforget_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedforget.configs import load_experiment
from fedforget.configs.cache import from_plain
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.sites import site_folders
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.examples import site_example
from fedforget.learning.training import model_from_config
from fedforget.reporting.examples import read_example
from fedforget.reporting.rerender import saved_experiment

pytestmark = pytest.mark.slow

MODEL_KEYS = {"wall_seconds", "steps", "retain_fraction", "bytes_communicated", "sites"}
SITE_KEYS = {"anatomy", "role", "poisoned", "train_slices", "test_slices"}
METRICS = {"psnr", "ssim", "nmse"}


def test_results_json_has_every_contract_key(smoke_run: CompletedRun) -> None:
    results = smoke_run.results
    assert results["schema"] == 1 and results["experiment"] == "smoke" and results["forget_site"] == "knee-0"
    assert set(results["sites"]) == {"brain-0", "knee-0"}
    for site in results["sites"].values():
        assert SITE_KEYS <= set(site)
        assert site["train_slices"] > 0 and site["test_slices"] > 0
    assert results["sites"]["knee-0"]["role"] == "forget" and results["sites"]["brain-0"]["role"] == "retain"
    assert set(results["models"]) == {"zero_filled", "original", "oracle", "ft", "nl_ft"}
    for name, model in results["models"].items():
        assert MODEL_KEYS <= set(model), name
        assert set(model["sites"]) == {"brain-0", "knee-0"}
        for site, scores in model["sites"].items():
            assert METRICS | {"gain_over_zero_filled", "psnr_volumes"} <= set(scores["test"]), (name, site)
            assert all(math.isfinite(v) for v in scores["test"].values() if not isinstance(v, list))
            volumes = scores["test"]["psnr_volumes"]
            assert len(volumes) == results["sites"][site]["test_volumes"]
            assert scores["test"]["psnr"] == pytest.approx(sum(volumes) / len(volumes))
            zero_filled = results["models"]["zero_filled"]["sites"][site]["test"]["psnr"]
            assert scores["test"]["gain_over_zero_filled"] == pytest.approx(scores["test"]["psnr"] - zero_filled)
        if name != "zero_filled":
            assert model["steps"] > 0 and model["wall_seconds"] > 0 and model["bytes_communicated"] > 0
        assert METRICS <= set(model["sites"]["knee-0"]["train"]), "the forget site's train split is required"
    assert results["models"]["ft"]["retain_fraction"] == 0.5
    zero_filled = results["models"]["zero_filled"]
    assert zero_filled["steps"] == 0 and zero_filled["bytes_communicated"] == 0 and zero_filled["trained_on"] == []
    assert results["summary"]["zero_filled"]["RTE"] is None


def test_results_json_holds_intervals_and_the_calibrated_audit(smoke_run: CompletedRun) -> None:
    results = smoke_run.results
    for name, summary in results["summary"].items():
        for part in ("BTA", "KTA", "UA"):
            low, high = summary[part]["psnr_ci"]
            assert low <= summary[part]["psnr"] <= high, (name, part)
        audit = results["models"][name]["audit"]
        assert 0 <= audit["mia_auc_ci"][0] <= audit["mia_auc_calibrated"] <= audit["mia_auc_ci"][1] <= 1, name
        assert audit["mia_auc_uncalibrated_ci"][0] <= audit["mia_auc"] <= audit["mia_auc_uncalibrated_ci"][1]
    oracle = results["models"]["oracle"]["audit"]
    assert oracle["mia_auc_calibrated"] == 0.5 and oracle["mia_auc_ci"] == [0.5, 0.5], "the reference scores 0.5"
    ft = results["summary"]["ft"]
    assert ft["vs_oracle"]["KTA"]["psnr"] == pytest.approx(ft["KTA"]["psnr"] - results["summary"]["oracle"]["KTA"]["psnr"])
    low, high = ft["vs_original"]["BTA"]["psnr_ci"]
    assert low <= ft["vs_original"]["BTA"]["psnr"] <= high
    assert "## Compared with the oracle and the original" in (smoke_run.folder / "report.md").read_text()
    oracle_seconds = results["models"]["oracle"]["wall_seconds"]
    for name, summary in results["summary"].items():
        assert {"BTA", "KTA", "UA", "RTE"} <= set(summary)
        model = results["models"][name]
        assert summary["KTA"]["psnr"] == model["sites"]["knee-0"]["test"]["psnr"]
        assert summary["UA"]["ssim"] == model["sites"]["knee-0"]["train"]["ssim"]
        assert summary["BTA"]["psnr"] == model["sites"]["brain-0"]["test"]["psnr"], "one retain site: BTA is its test"
        if name != "zero_filled":
            assert summary["RTE"] == pytest.approx(oracle_seconds / model["wall_seconds"]), name


def test_run_folder_layout(smoke_run: CompletedRun) -> None:
    folder = smoke_run.folder
    for name in ("config.yaml", "results.json", "report.md", "audit.json"):
        assert (folder / name).is_file(), name
    for model in ("original", "oracle", "ft", "nl_ft"):
        assert (folder / "checkpoints" / f"{model}.pt").is_file(), model
    assert smoke_run.status["status"] == "completed"
    report = (folder / "report.md").read_text()
    assert "knee-0" in report and "| oracle |" in report
    audit = json.loads((folder / "audit.json").read_text())
    assert audit["forget_site"] == "knee-0" and audit["methods"] == ["ft", "nl_ft"]
    assert audit["model_sha256_before"] != audit["model_sha256_after"]["ft"]


def test_the_run_config_carries_the_experiment_the_run_wrote(smoke_run: CompletedRun) -> None:
    run_config = tomllib.loads((smoke_run.folder / "run-config.toml").read_text())
    rebuilt = from_plain(ExperimentConfig, json.loads(run_config["resolved-config"]))
    assert rebuilt == saved_experiment(smoke_run.folder), "every process rebuilt the experiment config.yaml holds"


def test_fedforget_run_prints_the_run_folder_and_a_table(smoke_run: CompletedRun) -> None:
    assert str(smoke_run.folder) in smoke_run.output
    assert "knee-0" in smoke_run.output and "nl_ft" in smoke_run.output and "PSNR" in smoke_run.output
    assert "zero_filled" in smoke_run.output and "vs ZF" in smoke_run.output
    for warning in smoke_run.results["warnings"]:
        assert f"WARNING: {warning}" in smoke_run.output
    report = (smoke_run.folder / "report.md").read_text()
    assert "Did the federation learn every site?" in report
    assert all(warning in report for warning in smoke_run.results["warnings"])


def test_report_re_renders_from_a_copied_run_folder_without_the_sites_data(smoke_run: CompletedRun,
                                                                           tmp_path: Path) -> None:
    copied = shutil.copytree(smoke_run.folder, tmp_path / "copied-run")
    config = yaml.safe_load((copied / "config.yaml").read_text())
    config["data"]["root"] = str(tmp_path / "no-site-data-here")  # any read of a site's file would fail
    (copied / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (copied / "report.md").unlink()
    for figure in (copied / "figures").glob("*.png"):
        figure.unlink()
    done = fedforget_report(copied)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| ft |" in (copied / "report.md").read_text() and (copied / "figures" / "methods.png").is_file()
    for site in ("brain-0", "knee-0"):
        assert (copied / "figures" / f"recon_{site}.png").is_file()


def test_the_kept_examples_are_each_models_reconstruction_of_the_sites_display_slice(
        smoke_run: CompletedRun) -> None:
    folder = smoke_run.folder
    cfg = saved_experiment(folder)
    states = {name: load_checkpoint(folder / "checkpoints" / f"{name}.pt")[0]
              for name in ("original", "oracle", "ft", "nl_ft")}
    for site in ("brain-0", "knee-0"):
        kept = read_example(folder, site)
        assert list(kept.reconstructions) == list(states), "every model with weights, in results.json's order"
        again = site_example(cfg, site, states, model_from_config(cfg.model))  # Flower-free, from the checkpoints
        np.testing.assert_array_equal(kept.ground_truth, again.ground_truth)
        np.testing.assert_array_equal(kept.zero_filled, again.zero_filled)
        for name in states:
            np.testing.assert_allclose(kept.reconstructions[name], again.reconstructions[name], atol=1e-5)
        assert not np.allclose(kept.reconstructions["original"], kept.reconstructions["oracle"])


def test_report_adds_the_zero_filled_row_to_an_older_run_folder(smoke_run: CompletedRun, tmp_path: Path) -> None:
    older = tmp_path / "older-run"
    shutil.copytree(smoke_run.folder, older)
    results = json.loads((older / "results.json").read_text())
    computed_at_sites = results["models"].pop("zero_filled")
    results["summary"].pop("zero_filled")
    for record in results["models"].values():
        for splits in record["sites"].values():
            for metrics in splits.values():
                metrics.pop("gain_over_zero_filled")
    (older / "results.json").write_text(json.dumps(results))
    done = fedforget_report(older)
    assert done.returncode == 0, done.stderr[-2000:]
    rebuilt = json.loads((older / "results.json").read_text())
    for site, splits in computed_at_sites["sites"].items():
        for split, metrics in splits.items():
            assert rebuilt["models"]["zero_filled"]["sites"][site][split]["psnr"] == pytest.approx(metrics["psnr"])
    for part in ("BTA", "KTA", "UA"):
        assert rebuilt["summary"]["zero_filled"][part]["psnr"] == pytest.approx(
            smoke_run.results["summary"]["zero_filled"][part]["psnr"])
    assert "gain_over_zero_filled" in rebuilt["models"]["ft"]["sites"]["knee-0"]["test"]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_has_one_folder_per_site_with_finite_curves(smoke_run: CompletedRun) -> None:
    board = smoke_run.folder / "tensorboard"
    assert {p.name for p in board.iterdir()} == {"brain-0", "knee-0", "server", "hparams"}
    for site in ("brain-0", "knee-0"):
        scalars = _scalars(board / site)
        for phase in ("federated", "oracle", "unlearn/ft", "unlearn/nl_ft"):
            for metric in ("psnr", "ssim", "nmse", "loss"):
                values = scalars[f"{phase}/{metric}"]
                assert values and all(math.isfinite(v) for _, v in values), (site, phase, metric)
        assert [step for step, _ in scalars["federated/psnr"]] == [0, 1, 2], "round 0 plus every round"


def test_trained_on_is_who_sent_training_updates_and_the_oracle_never_saw_the_forget_site(
        smoke_run: CompletedRun) -> None:
    results = smoke_run.results
    assert not [e for e in results["events"] if e["kind"] == "loaded"], "the smoke run trains its own models"
    ledger = json.loads((smoke_run.folder / "ledger.json").read_text())
    for name, phase in (("original", "federated"), ("oracle", "oracle"), ("ft", "unlearn/ft"),
                        ("nl_ft", "unlearn/nl_ft")):
        senders = sorted({e["site"] for e in ledger if e["phase"] == phase and e["message_type"].startswith("train")
                          and e["status"] == "ok" and e["shapes_up"]})
        assert results["models"][name]["trained_on"] == senders, name
    assert "knee-0" not in results["models"]["oracle"]["trained_on"]
    oracle_training = [e for e in ledger if e["phase"] == "oracle"]
    assert oracle_training and {e["site"] for e in oracle_training} == {"brain-0"}
    assert all(e["message_type"] == "train" for e in oracle_training)


def test_audit_records_every_file_each_site_used_and_the_model_cache_keys(smoke_run: CompletedRun) -> None:
    audit = json.loads((smoke_run.folder / "audit.json").read_text())
    config = yaml.safe_load((smoke_run.folder / "config.yaml").read_text())
    experiment = load_experiment("smoke", [f"data.root={config['data']['root']}"])
    for site in ("brain-0", "knee-0"):
        for split, folder in site_folders(experiment, site).items():
            record = audit["data"]["sites"][site][split]
            on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
            assert {f["name"]: f["sha256"] for f in record["files"]} == on_disk, (site, split)
            assert record["folder"] == str(folder)
    assert audit["data"]["server_retain"] is None, "retain_access=sites: the server held no retain data"
    for model in ("original", "oracle"):
        _, meta = load_checkpoint(smoke_run.folder / "checkpoints" / f"{model}.pt")
        assert audit["model_cache_keys"][model] == meta["fingerprint"], model


def test_failed_run_is_reported_with_the_reason(tmp_path: Path, data_root: Path, smoke_run: CompletedRun) -> None:
    broken_root = tmp_path / "data"
    shutil.copytree(data_root, broken_root)
    knee_test = site_folders(load_experiment("smoke", [f"data.root={broken_root}"]), "knee-0")["test"]
    (knee_test / "notes.h5").write_text("not an HDF5 file")
    run = fedforget_run(["experiment=smoke", f"data.root={broken_root}"], tmp_path / "run")
    assert run.returncode == 3, "unusable data exits 3"
    assert "run FAILED" in run.output and "notes.h5" in run.output and "knee-0" in run.output
    assert "not an HDF5 file" in run.output
    assert not (run.folder / "results.json").exists(), "a failed run writes no results.json"


def test_config_error_stops_before_anything_runs(tmp_path: Path, data_root: Path) -> None:
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", "unlearning.forget_site=liver-0"],
                        tmp_path / "run")
    assert run.returncode == 2
    assert "liver-0" in run.output and "expected one of ['brain-0', 'knee-0']" in run.output
    assert not run.folder.exists()
