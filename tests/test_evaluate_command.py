"""``fedforget evaluate CHECKPOINT DIR``: a saved model on a fastMRI folder, next to zero-filled."""

from __future__ import annotations

import json
from pathlib import Path

import fastmri
import h5py
import numpy as np
import pytest
import torch
from fastmri import evaluate as fastmri_evaluate
from fastmri.data.subsample import EquispacedMaskFractionFunc
from fastmri.data.transforms import apply_mask, center_crop, to_tensor
from malformed_volumes import write_good_volume
from run_helpers import CompletedRun

from fedforget.cli import main
from fedforget.configs import load_experiment
from fedforget.data.sites import site_folders
from fedforget.learning.checkpoints import CheckpointError, save_checkpoint, varnet_shape_of
from fedforget.recon.models import PRESETS, build_varnet


def _evaluate(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_varnet_shape_is_read_from_the_weights(preset: str) -> None:
    torch.manual_seed(0)
    state = build_varnet(PRESETS[preset]).state_dict()
    assert varnet_shape_of(Path(f"{preset}.pt"), state) == PRESETS[preset]


def test_weights_of_another_model_are_not_a_varnet() -> None:
    state = torch.nn.Linear(3, 2).state_dict()
    with pytest.raises(CheckpointError, match="other.pt does not hold an E2E-VarNet"):
        varnet_shape_of(Path("other.pt"), state)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_varnet(PRESETS["tiny"]).state_dict(), {"model": "original"})
    return path


@pytest.fixture
def volume_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write_good_volume(folder / "vol000.h5")
    return folder


def test_a_checkpoint_of_another_shape_is_refused(tiny_checkpoint: Path, volume_folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _evaluate(capsys, tiny_checkpoint, volume_folder, "--model", "small")
    assert code == 1 and out == ""
    assert str(tiny_checkpoint) in err and "num_cascades=4" in err and "'small'" in err and "num_cascades=6" in err
    assert "Traceback" not in err


def test_a_file_that_is_not_a_fedforget_checkpoint_is_refused(tmp_path: Path, volume_folder: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save(build_varnet(PRESETS["tiny"]).state_dict(), foreign)  # weights without fedforget's wrapper
    code, _, err = _evaluate(capsys, foreign, volume_folder)
    assert code == 1 and f"{foreign} is not a fedforget checkpoint" in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    code, _, err = _evaluate(capsys, garbage, volume_folder)
    assert code == 1 and f"checkpoint {garbage} cannot be read" in err


def test_missing_inputs_are_named(tmp_path: Path, tiny_checkpoint: Path, volume_folder: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _evaluate(capsys, tiny_checkpoint, tmp_path / "absent")
    assert code == 1 and f"{tmp_path / 'absent'}: folder does not exist" in err
    code, _, err = _evaluate(capsys, tmp_path / "none.pt", volume_folder)
    assert code == 1 and f"checkpoint {tmp_path / 'none.pt'} does not exist" in err
    code, _, err = _evaluate(capsys, tiny_checkpoint, volume_folder, "--center-fraction", "0.2")
    assert code == 1 and "center_fraction 0.2" in err


def _zero_filled_reference(folder: Path, acceleration: int = 8, center_fraction: float = 0.04) -> dict[str, dict]:
    """fastMRI's own functions on the raw files: masks seeded by file name, RSS of the inverse FFT."""
    mask_func = EquispacedMaskFractionFunc([center_fraction], [acceleration])
    scores = {}
    for path in sorted(folder.iterdir()):
        with h5py.File(path, "r") as hf:
            kspace, target = hf["kspace"][()], hf["reconstruction_rss"][()]
        seed = tuple(map(ord, path.name))
        images = []
        for k in kspace:
            masked, _, _ = apply_mask(to_tensor(k), mask_func, seed=seed)
            image = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(masked)), dim=0)
            images.append(center_crop(image, target.shape[-2:]).numpy())
        recon = np.stack(images)
        scores[path.name] = {"psnr": fastmri_evaluate.psnr(target, recon), "ssim": fastmri_evaluate.ssim(target, recon),
                             "nmse": fastmri_evaluate.nmse(target, recon)}
    return scores


@pytest.mark.slow
def test_the_smoke_runs_checkpoint_scores_as_the_run_did(smoke_run: CompletedRun, data_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = site_folders(load_experiment("smoke", [f"data.root={data_root}"]), "knee-0")["test"]
    out_json, figure = tmp_path / "scores.json", tmp_path / "grid.png"
    code, out, err = _evaluate(capsys, smoke_run.folder / "checkpoints" / "original.pt", folder,
                               "--json", out_json, "--figure", figure)
    assert code == 0, err
    scores = json.loads(out_json.read_text())
    assert scores["model"] == "original" and scores["shape"] == PRESETS["tiny"].__dict__

    reference = _zero_filled_reference(folder)
    zero_filled = scores["scores"]["zero_filled"]
    assert set(zero_filled["volumes"]) == set(reference)
    for volume, expected in reference.items():
        for metric, value in expected.items():
            assert zero_filled["volumes"][volume][metric] == pytest.approx(value, rel=1e-4), (volume, metric)
    for metric in ("psnr", "ssim", "nmse"):
        assert zero_filled["mean"][metric] == pytest.approx(np.mean([r[metric] for r in reference.values()]),
                                                            rel=1e-4)
    # The same folder, model and masks as the run's final evaluation of the forget site's test split.
    in_run = smoke_run.results["models"]["original"]["sites"]["knee-0"]["test"]
    for metric in ("psnr", "ssim", "nmse"):
        assert scores["scores"]["original"]["mean"][metric] == pytest.approx(in_run[metric], rel=1e-4, abs=1e-6)

    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mean_rows = [line.split() for line in out.splitlines() if line.strip().startswith("all ")]
    assert [row[1] for row in mean_rows] == ["original", "zero-filled"]
    assert float(mean_rows[0][2]) == pytest.approx(in_run["psnr"], abs=0.006)
    for volume in reference:
        rows = [line.split() for line in out.splitlines() if line.strip().startswith(volume)]
        assert [row[1] for row in rows] == ["original", "zero-filled"], volume
