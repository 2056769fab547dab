"""Real training: does a model trained on a real subject carry more to another real subject than phantoms do?

The question behind the transfer ratio of :mod:`bench.real_anatomy` is whether the phantoms are what limits
the demo's gain on real anatomy. This benchmark trains the run's own model the run's own way (architecture,
learning rate and schedule, local steps and the same number of site-steps as the run's FedAvg) on real
images instead, with the plain FedAvg loop over two image sites of one real subject, and scores it beside the
run's phantom-trained original on the same files of *another* real subject. Two directions, both from the
pinned packages of ``make anatomy-sources``:

* ``mni-to-colin``: the MNI152 T1 template (skull-stripped) trains; Colin27 with and without its skull is scored;
* ``colin-to-mni``: Colin27 with its skull and without it trains; the MNI152 template is scored.

Each scored source is the site :mod:`bench.real_anatomy` scores, so the original's numbers are the same.

Each direction's noise is matched to its first scored subject (``bench.real_anatomy.matched_snr``), for
training and scoring alike. The record lists every trained and scored subject by SHA-256, and a direction that would
score a subject it trained on is refused.

    make anatomy-sources
    python -m bench.real_training outputs/demo-seed0 outputs/demo-seed1 outputs/demo-seed2
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from bench.common import spread, write_result
from bench.phantom_transfer import real_scores
from bench.real_anatomy import (
    DEFAULT_SOURCES,
    DRAWS,
    SOURCES,
    build_site,
    check_disjoint,
    extract,
    file_sha256,
    matched_snr,
    source_named,
)
from fedforget.configs import load_experiment
from fedforget.configs.schema import ORIGINAL, ExperimentConfig
from fedforget.data.image_sites import prepare_image_sites
from fedforget.learning.plain_loop import plain_fedavg
from fedforget.learning.scoring import load_varnet
from fedforget.reporting.rerender import saved_experiment

NAME = "real_training"
SITES = ("brain-0", "knee-0")  # the brain1_knee1 site names; both hold brain images here


class Direction(NamedTuple):
    """Which real subject each of the two sites trains on, and which sources are scored."""

    name: str
    train: tuple[str, str]  # the source each site trains on (SOURCES names)
    scored: tuple[str, ...]


DIRECTIONS = (
    Direction("mni-to-colin", ("mni152-t1", "mni152-t1"), ("colin27-t1", "colin27-t1-stripped")),
    Direction("colin-to-mni", ("colin27-t1", "colin27-t1-stripped"), ("mni152-t1",)),
)


def image_federation(run_cfg: ExperimentConfig, direction: Direction, images: dict[str, Path],
                     root: Path) -> ExperimentConfig:
    """The run's experiment with two image sites of the direction's training subject (their test split is the
    first scored source, which is scored as :mod:`bench.real_anatomy` does, not from this split).

    The rounds are scaled so that the two sites take as many local steps in all as the run's sites did."""
    scored = direction.scored[0]
    snr = matched_snr(run_cfg, source_named(scored), images[scored], max_slices=24)
    rounds = run_cfg.federation.rounds * len(run_cfg.sites) // len(SITES)
    overrides = ["data=images", f"data.root={root}", f"data.size={run_cfg.data.size}",
                 f"data.coils={run_cfg.data.coils}", f"data.images.snr={snr}", "data.images.contrast=AXT1",
                 f"cache_dir={root / 'cache'}", "sites=brain1_knee1", f"federation.rounds={rounds}",
                 f"seed={run_cfg.seed}"]
    for site, source in zip(SITES, direction.train):
        overrides += [f"sites.{site}.anatomy=brain", f"sites.{site}.train_dir={source}/train",
                      f"sites.{site}.test_dir={scored}/test", f"sites.{site}.train_volumes=1",
                      f"sites.{site}.test_volumes=1"]
    return load_experiment(run_cfg.name, overrides)


def stage_images(direction: Direction, packages: Path, root: Path) -> dict[str, Path]:
    """Each source of the direction under ``root/<source>/{train,test}/`` as the image sites read them."""
    staged = {}
    for source in (s for s in SOURCES if s.name in (*direction.train, *direction.scored)):
        image = extract(source, packages, root)  # root/<source>/test/<file>
        if source.name in direction.train:
            (root / source.name / "train").mkdir()
            image = image.rename(root / source.name / "train" / image.name)
        staged[source.name] = image
    return staged


def one_direction(run: Path, direction: Direction, packages: Path, scratch: Path) -> dict[str, Any]:
    """Train on the direction's subject once, then score it and the run's original on each scored source.

    Each scored source is the site :mod:`bench.real_anatomy` scores (the run's size, coils and noise, several
    mask draws), so the original's gains here are that benchmark's."""
    run_cfg = saved_experiment(run)
    root = scratch / f"{direction.name}-{run_cfg.seed}"
    images = stage_images(direction, packages, root)
    trained_on = {source: file_sha256(images[source]) for source in set(direction.train)}
    scored = {source: file_sha256(images[source]) for source in direction.scored}
    check_disjoint({"real training": {"files_sha256": list(trained_on.values()), "sources_sha256": []}}, scored)
    cfg = image_federation(run_cfg, direction, images, root)
    prepare_image_sites(cfg)
    real = plain_fedavg(cfg, list(SITES))
    sites = {source: build_site(run_cfg, source_named(source), images[source], root / "scored" / source, None, 24,
                                draws=DRAWS) for source in direction.scored}
    phantom = load_varnet(run / "checkpoints" / f"{ORIGINAL}.pt").model.state_dict()
    scores = {"real-trained": real_scores(run_cfg, real.state, sites), "phantom-trained": real_scores(
        run_cfg, phantom, sites)}
    return {"run": str(run), "seed": run_cfg.seed, "direction": direction.name, "trained_on": trained_on,
            "scored": scored, "rounds": cfg.federation.rounds, "training_snr": cfg.data.images.snr,
            "training_seconds": real.seconds,
            "gains": {source: {model: scores[model][source]["gain"] for model in scores} for source in scored}}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per direction and scored source: each model's gain and real-trained - phantom-trained, over seeds."""
    summary: dict[str, Any] = {}
    for direction in DIRECTIONS:
        mine = [row for row in rows if row["direction"] == direction.name]
        for scored in direction.scored if mine else ():
            values = {model: [row["gains"][scored][model] for row in mine]
                      for model in ("real-trained", "phantom-trained")}
            difference = [r - p for r, p in zip(values["real-trained"], values["phantom-trained"])]
            summary.setdefault(direction.name, {})[scored] = {
                **{model: spread(v) for model, v in values.items()}, "real - phantom": spread(difference)}
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (one per seed) with checkpoints/original.pt")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                        help="folder of the fetched packages (make anatomy-sources)")
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="real-training-") as scratch:
        for run in args.runs:
            for direction in DIRECTIONS:
                rows.append(one_direction(run.resolve(), direction, args.sources, Path(scratch)))
                print(rows[-1]["direction"], rows[-1]["seed"], rows[-1]["gains"], flush=True)
    summary = summarise(rows)
    sources = {s.name: s._asdict() for s in SOURCES if any(s.name in (*d.train, *d.scored) for d in DIRECTIONS)}
    write_result(args.name, {"command": "python -m bench.real_training " + " ".join(map(str, args.runs)),
                             "directions": [d._asdict() for d in DIRECTIONS], "sources": sources, "runs": rows,
                             "summary_by_direction": summary},
                 "; ".join(f"{d} on {s}: real - phantom {row['real - phantom']['mean']:+.2f} dB"
                           for d, by_source in summary.items() for s, row in by_source.items()))


if __name__ == "__main__":
    main()
