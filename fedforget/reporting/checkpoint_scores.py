"""What ``fedforget evaluate`` prints and writes: the table, the JSON file, the reconstruction grid."""

from __future__ import annotations

from pathlib import Path

from fedforget.learning.evaluation import Evaluation
from fedforget.learning.scoring import CheckpointScore, ExampleSlice
from fedforget.recon.atomic import atomic_write_json
from fedforget.reporting.figures import reconstruction_grid

_HEADER = f"{'volume':<28} {'model':<14} {'PSNR':>7} {'SSIM':>7} {'NMSE':>8}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _row(volume: str, model: str, psnr: float, ssim: float, nmse: float) -> str:
    return f"{volume:<28} {model:<14} {psnr:7.2f} {ssim:7.4f} {nmse:8.4f}"


def _heading(score: CheckpointScore) -> list[str]:
    shape, mask = score.shape, score.mask
    return [f"checkpoint {score.checkpoint} ({score.model_name}: VarNet {shape.num_cascades} cascades, chans "
            f"{shape.chans}, pools {shape.pools}, sens_chans {shape.sens_chans}, sens_pools {shape.sens_pools})",
            f"folder {score.folder}: {_count(score.model.volumes, 'volume')}, {_count(score.model.slices, 'slice')}; "
            f"mask {mask.mask_type} {mask.acceleration}x, center fraction {mask.center_fraction:g} (seeded per file)"]


def score_lines(score: CheckpointScore) -> list[str]:
    """The mean over volumes for the model and zero-filled, then both per volume."""
    rows: dict[str, Evaluation] = {score.model_name: score.model, "zero-filled": score.zero_filled}
    lines = [*_heading(score), "fastMRI metrics, mean over volumes:", "  " + _HEADER]
    lines += ["  " + _row("all", name, *e.metrics) for name, e in rows.items()]
    lines += ["per volume:", "  " + _HEADER]
    for index, volume in enumerate(score.model.volume_names):
        lines += ["  " + _row(volume, name, *e.per_volume[index]) for name, e in rows.items()]
    gain = score.model.metrics.psnr - score.zero_filled.metrics.psnr
    lines.append(f"{score.model_name} is {gain:+.2f} dB PSNR over zero-filled")
    return lines


def write_score_json(path: Path, score: CheckpointScore) -> Path:
    """``score.to_json()`` written atomically (mean and per-volume PSNR / SSIM / NMSE of both)."""
    atomic_write_json(Path(path), score.to_json())
    return path


def score_figure(path: Path, score: CheckpointScore, example: ExampleSlice) -> Path:
    """Ground truth, zero-filled and the model on one slice, with error maps (``reconstruction_grid``)."""
    title = (f"{score.model_name} on {score.folder.parent.name}/{score.folder.name}: {example.volume} "
             f"slice {example.slice_index} ({score.mask.acceleration}x)")
    return reconstruction_grid(Path(path), title, example.ground_truth, example.zero_filled,
                               {score.model_name: example.recon})
