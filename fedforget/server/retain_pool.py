"""``retain_access=server``: the server's own copy of the retain fraction of the retain data.

In a consortium this is data the retain hospitals agreed to deposit with the
coordinator; in simulation it is read from the same folders the sites use
(``data.root``), or from ``unlearning.server_retain_root`` laid out as
``<root>/<site>/train``. Either way each retain site's split is opened through
``data.sites.open_site_split``, so a site's volume range is honoured and a shared
folder contributes each retain site's own volumes once, never the forget site's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource, stream_seed, subset_indices
from fedforget.data.sites import open_site_split, site_split
from fedforget.recon.losses import ReconLoss
from fedforget.unlearning.base import RETAIN, LocalWorker, Method, TermContext, frozen_copy


class PooledSlices:
    """Several sites' retain subsets as one indexable sequence of VarNet samples."""

    def __init__(self, parts: list[tuple[object, list[int]]]) -> None:
        self.items = [(dataset, i) for dataset, indices in parts for i in indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        dataset, i = self.items[k]
        return dataset[i]


def _deposit(cfg: ExperimentConfig, site: str) -> Path | None:
    root = cfg.unlearning.server_retain_root
    return Path(root) / site / "train" if root else None


def server_retain_source(cfg: ExperimentConfig) -> BatchSource:
    """The retain fraction of every retain site's training slices, pooled at the server."""
    parts = []
    for site in cfg.retain_sites:
        dataset = open_site_split(cfg, site, "train", _deposit(cfg, site))
        parts.append((dataset, subset_indices(len(dataset), cfg.unlearning.retain_fraction,
                                              stream_seed(cfg.seed, site, RETAIN))))
    return BatchSource(PooledSlices(parts), cfg.unlearning.batch_size, stream_seed(cfg.seed, "server", RETAIN))


def server_retain_files(cfg: ExperimentConfig) -> dict[str, Any]:
    """Per retain site, the files the server's pool reads (name, bytes, SHA-256) and the volume range."""
    return {site: site_split(cfg, site, "train", _deposit(cfg, site)).describe() for site in cfg.retain_sites}


def server_retain_worker(cfg: ExperimentConfig, source: BatchSource, original_state: dict, template) -> callable:
    """A factory of in-process retain workers (one per method) over the server's pooled data."""

    def make(method: Method) -> LocalWorker:
        ctx = TermContext(loss=ReconLoss(cfg.federation.l1_weight), seed=cfg.seed)
        if RETAIN in method.needs_original:
            original = frozen_copy(template)
            original.load_state_dict(original_state)
            ctx.original = original
        return LocalWorker(method, {RETAIN: source}, ctx, torch.device("cpu"))

    return make
