"""``retain_access=server``: the server's own copy of the retain fraction of the retain data.

In a consortium this is data the retain hospitals agreed to deposit with the
coordinator; in simulation it is read from the same folders the sites use
(``data.root``), or from ``unlearning.server_retain_root`` laid out as
``<root>/<site>/train``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource, stream_seed, subset_indices
from fedforget.data.datasets import open_split
from fedforget.data.sites import site_folders
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
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


def server_retain_source(cfg: ExperimentConfig) -> BatchSource:
    """The retain fraction of every retain site's training slices, pooled at the server."""
    mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    root = Path(cfg.unlearning.server_retain_root) if cfg.unlearning.server_retain_root else None
    parts = []
    for site in cfg.retain_sites:
        folder = (root / site / "train") if root is not None else site_folders(cfg, site)["train"]
        dataset = open_split(folder, mask, cfg.data.cache_slices)
        parts.append((dataset, subset_indices(len(dataset), cfg.unlearning.retain_fraction,
                                              stream_seed(cfg.seed, site, RETAIN))))
    return BatchSource(PooledSlices(parts), cfg.unlearning.batch_size, stream_seed(cfg.seed, "server", RETAIN))


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
