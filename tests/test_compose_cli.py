"""``fedforget compose``: the weighted sum of changes, its scores at every site, and refusals that write nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from run_helpers import CompletedRun

from fedforget.cli import main, parse_arguments
from fedforget.learning.checkpoints import load_checkpoint, state_sha256
from fedforget.learning.composition import (
    CompositionError,
    compose_states,
    composition_file_stem,
    composition_name,
)


def _states() -> tuple[dict, dict, dict]:
    """An original and two models, with float tensors and an int buffer: ``a`` far from the original (its weights
    100 times smaller, so ``original + (a - original)`` in float32 is not ``a``), ``b`` a small step from it."""
    generator = torch.Generator().manual_seed(0)
    original = {"conv.weight": 100 * torch.randn(4, 3, 3, 3, generator=generator),
                "conv.bias": 100 * torch.randn(4, generator=generator),
                "steps": torch.tensor(7, dtype=torch.int64)}
    a = {k: (torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone())
         for k, v in original.items()}
    b = {k: (v - 0.3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone())
         for k, v in original.items()}
    return original, a, b


def test_weights_one_and_zero_give_the_first_model_bit_for_bit() -> None:
    original, a, b = _states()
    composed = compose_states(original, [a, b], [1.0, 0.0])
    assert list(composed) == list(original)
    for key in original:
        assert torch.equal(composed[key], a[key]), key
        assert composed[key].dtype == a[key].dtype
    assert state_sha256(composed) == state_sha256(a)
    assert all(torch.equal(compose_states(original, [a, b], [0, 1])[k], b[k]) for k in original)


def test_half_and_half_is_the_original_plus_the_mean_change() -> None:
    original, a, b = _states()
    composed = compose_states(original, [a, b], [0.5, 0.5])
    for key in ("conv.weight", "conv.bias"):
        base = original[key].double()
        expected = base + ((a[key].double() - base) + (b[key].double() - base)) / 2
        assert torch.allclose(composed[key].double(), expected, rtol=1e-6, atol=1e-6), key
        assert not torch.equal(composed[key], a[key]) and not torch.equal(composed[key], b[key])
    assert torch.equal(composed["steps"], original["steps"])


def test_weights_may_extrapolate_and_subtract() -> None:
    original, a, _ = _states()
    composed = compose_states(original, [a], [-1.0])  # undo the change: the original mirrored through itself
    expected = 2 * original["conv.bias"].double() - a["conv.bias"].double()
    assert torch.allclose(composed["conv.bias"].double(), expected, rtol=1e-6, atol=1e-6)


def test_models_that_cannot_be_composed_are_refused_by_name() -> None:
    original, a, b = _states()
    b["steps"] = torch.tensor(8)
    with pytest.raises(CompositionError, match="nl_ft: tensor steps"):
        compose_states(original, [a, b], [0.5, 0.5], names=["ft", "nl_ft"])
    with pytest.raises(CompositionError, match="2 models but 1 weights"):
        compose_states(original, [a, a], [1.0])
    with pytest.raises(CompositionError, match="does not have the original's tensors"):
        compose_states(original, [{k: v for k, v in a.items() if k != "conv.bias"}], [1.0])
    with pytest.raises(CompositionError, match=r"tensor conv.bias is \(5,\)"):
        compose_states(original, [{**a, "conv.bias": torch.zeros(5)}], [1.0])
    with pytest.raises(CompositionError, match="finite"):
        compose_states(original, [a], [float("nan")])


def test_the_name_says_what_was_merged_and_the_file_stem_is_portable() -> None:
    assert composition_name(["ft", "nl_ft"], [0.5, 0.5]) == "compose(ft*0.5+nl_ft*0.5)"
    assert composition_name(["ssd", "retrain_budget@sifu"], [1.0, -0.25]) == \
        "compose(ssd*1+retrain_budget@sifu*-0.25)"
    stem = composition_file_stem(["ft", "nl_ft"], [0.5, 0.5])
    assert stem == "compose+ft_x0.5+nl_ft_x0.5"
    odd = composition_file_stem(["a b/c*", "x"], [1e-5, 2])
    assert all(c.isalnum() or c in "._@+-" for c in odd) and odd != stem
    long = composition_file_stem([f"method_{i}" for i in range(40)], [0.025] * 40)
    assert len(long) <= 150 and long != composition_file_stem([f"method_{i}" for i in range(40)], [0.0251] * 40)


def test_compose_reads_its_options() -> None:
    args = parse_arguments(["compose", "--weights", "1,0", "run", "--models", "ft,nl_ft"])
    assert (args.command, args.run_dir, args.models, args.weights) == ("compose", Path("run"), "ft,nl_ft", "1,0")
    assert parse_arguments(["compose", "run", "--models", "ft", "--weights=-1"]).weights == "-1"


# --- on a real run folder ------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: a file's SHA-256, a folder's marker."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def composed_run(smoke_run: CompletedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's smoke run (other tests read the original) after ``compose ft,nl_ft 1,0``."""
    folder = tmp_path_factory.mktemp("compose") / "run"
    shutil.copytree(smoke_run.folder, folder)
    assert main(["compose", str(folder), "--models", "ft,nl_ft", "--weights", "1,0"]) == 0
    return folder


def test_composing_one_and_zero_scores_exactly_as_the_run_scored_the_first(composed_run: Path) -> None:
    """The in-process evaluation is the run's: the composed model (model A's weights) gets A's recorded scores."""
    results = json.loads((composed_run / "results.json").read_text())
    entry, ft = results["models"]["compose(ft*1+nl_ft*0)"], results["models"]["ft"]
    assert entry["sha256"] == ft["sha256"]  # the weights are ft's, bit for bit
    assert set(entry["sites"]) == set(results["sites"])
    for site, splits in ft["sites"].items():
        assert set(entry["sites"][site]) == set(splits)
        for split, recorded in splits.items():
            scores = entry["sites"][site][split]
            for metric in ("psnr", "ssim", "nmse", "gain_over_zero_filled"):
                assert scores[metric] == pytest.approx(recorded[metric], rel=1e-7, abs=1e-9), (site, split, metric)
            assert scores["psnr_volumes"] == pytest.approx(recorded["psnr_volumes"], rel=1e-7, abs=1e-9)
            assert scores["ssim_volumes"] == pytest.approx(recorded["ssim_volumes"], rel=1e-7, abs=1e-9)
    assert entry["audit"].keys() == ft["audit"].keys()
    for key, value in ft["audit"].items():
        assert entry["audit"][key] == pytest.approx(value), key


def test_the_entry_records_what_was_merged_and_that_nothing_moved(composed_run: Path) -> None:
    results = json.loads((composed_run / "results.json").read_text())
    name = "compose(ft*1+nl_ft*0)"
    entry = results["models"][name]
    assert entry["family"] == "composition"
    assert entry["composed_from"] == {"ft": 1.0, "nl_ft": 0.0}
    assert (entry["models"], entry["weights"]) == (["ft", "nl_ft"], [1.0, 0.0])
    own = entry["own_cost"]
    assert own["messages"] == own["bytes"] == own["site_steps"] == 0, "the composition step itself moves nothing"
    for key in ("site_steps", "messages", "bytes"):  # ... but the models it merges had to be produced first
        assert entry["cost"][key] == sum(results["models"][m]["cost"][key] for m in ("ft", "nl_ft")) > 0, key
    assert entry["wall_seconds"] > results["models"]["ft"]["wall_seconds"] + results["models"]["nl_ft"]["wall_seconds"]
    assert entry["bytes_communicated"] == entry["cost"]["bytes"] and entry["trained_on"] == []
    assert entry["inputs_sha256"]["ft"] == results["models"]["ft"]["sha256"]
    assert entry["inputs_sha256"]["original"] == results["models"]["original"]["sha256"]
    checkpoint = composed_run / entry["checkpoint"]
    assert checkpoint == composed_run / "checkpoints" / "compose+ft_x1+nl_ft_x0.pt" and checkpoint.is_file()
    state, meta = load_checkpoint(checkpoint)
    assert state_sha256(state) == entry["sha256"] == meta["sha256"]
    summary = results["summary"][name]
    assert {"BTA", "KTA", "UA", "vs_oracle", "vs_original"} <= set(summary) and "psnr_ci" in summary["KTA"]
    assert not list((composed_run / "checkpoints").glob(".*tmp*"))  # atomic writes leave no temporary file
    report = (composed_run / "report.md").read_text()
    assert report.count(name) >= 4  # summary, comparisons, cost and per-site tables


def test_half_and_half_writes_the_composed_weights(composed_run: Path) -> None:
    assert main(["compose", str(composed_run), "--models", "ft,nl_ft", "--weights", "0.5,0.5"]) == 0
    results = json.loads((composed_run / "results.json").read_text())
    entry = results["models"]["compose(ft*0.5+nl_ft*0.5)"]
    assert "compose(ft*1+nl_ft*0)" in results["models"]  # the first composition is kept
    checkpoints = composed_run / "checkpoints"
    original, ft, nl_ft = (load_checkpoint(checkpoints / f"{m}.pt")[0] for m in ("original", "ft", "nl_ft"))
    state = load_checkpoint(composed_run / entry["checkpoint"])[0]
    for key, base in original.items():
        expected = base.double() + ((ft[key].double() - base.double()) + (nl_ft[key].double() - base.double())) / 2
        assert torch.allclose(state[key].double(), expected, rtol=0, atol=1e-6), key
    for site in results["sites"]:
        assert entry["sites"][site]["test"]["psnr"] > 0


def _copy_without(source: Path, target: Path, *missing: str) -> Path:
    shutil.copytree(source, target)
    for relative in missing:
        path = target / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return target


BAD_REQUESTS = {
    "unknown model": (["ft,ssd", "0.5,0.5"], ["'ssd'", "ft, nl_ft"]),
    "weight count": (["ft,nl_ft", "1"], ["2 models", "1 weights", "one weight per model"]),
    "weight not a number": (["ft,nl_ft", "0.5,half"], ["'half'", "finite number"]),
    "weight not finite": (["ft,nl_ft", "nan,1"], ["'nan'", "finite number"]),
    "original": (["original,ft", "0.5,0.5"], ["'original'", "cannot be composed", "ft, nl_ft"]),
    "oracle": (["oracle", "1"], ["'oracle'", "cannot be composed"]),
    "zero_filled": (["ft,zero_filled", "1,1"], ["'zero_filled'", "cannot be composed"]),
    "twice": (["ft,ft", "0.5,0.5"], ["'ft'", "twice"]),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_exits_2_with_one_line_and_writes_nothing(case: str, composed_run: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (models, weights), expected = BAD_REQUESTS[case]
    capsys.readouterr()
    before = _snapshot(composed_run)
    assert main(["compose", str(composed_run), "--models", models, "--weights", weights]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for words in expected:
        assert words in err, err
    assert _snapshot(composed_run) == before


@pytest.mark.parametrize("missing,expected", [("results.json", "results.json does not exist"),
                                              ("checkpoints", "has no checkpoints/ folder"),
                                              ("checkpoints/original.pt", "original.pt does not exist"),
                                              ("config.yaml", "config.yaml does not exist")])
def test_an_incomplete_run_folder_exits_2_and_writes_nothing(missing: str, expected: str, smoke_run: CompletedRun,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy_without(smoke_run.folder, tmp_path / "run", missing)
    before = _snapshot(folder)
    assert main(["compose", str(folder), "--models", "ft,nl_ft", "--weights", "0.5,0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err and str(folder) in err, err
    assert _snapshot(folder) == before


def test_a_site_whose_data_changed_since_the_run_is_refused(smoke_run: CompletedRun, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Scores on other files than the run's would not be the run's scores: exit 1, nothing written."""
    folder = _copy_without(smoke_run.folder, tmp_path / "run")
    audit = json.loads((folder / "audit.json").read_text())
    test = audit["data"]["sites"]["brain-0"]["test"]
    moved = tmp_path / "brain-test"
    shutil.copytree(test["folder"], moved)
    changed = moved / test["files"][0]["name"]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\x01")  # same size, another hash
    test["folder"] = str(moved)
    (folder / "audit.json").write_text(json.dumps(audit))
    before = _snapshot(folder)
    assert main(["compose", str(folder), "--models", "ft", "--weights", "1"]) == 1
    err = capsys.readouterr().err
    assert "brain-0" in err and "differ from the ones the run used" in err and changed.name in err, err
    assert _snapshot(folder) == before


def test_a_run_folder_held_by_another_writer_is_left_alone(composed_run: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The writes hold the run folder's writer lock, as fedforget run does; a held lock means exit 1, no write."""
    from fedforget.launch.run_lock import RunLock

    with RunLock(composed_run):
        before = _snapshot(composed_run)
        assert main(["compose", str(composed_run), "--models", "nl_ft", "--weights", "1"]) == 1
        assert _snapshot(composed_run) == before
    err = capsys.readouterr().err
    assert "is being written by PID" in err and len(err.strip().splitlines()) == 1, err
