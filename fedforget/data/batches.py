"""Batch streams over a site's slices: reproducible shuffles, subsets, and the unlearning streams."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from fedforget.configs.schema import FORGET, ExperimentConfig
from fedforget.data.datasets import Batch, CachedSliceDataset, collate


def subset_size(num_slices: int, fraction: float) -> int:
    """How many slices a ``fraction`` of ``num_slices`` is (at least one)."""
    if num_slices < 1:
        raise ValueError("cannot take a subset of an empty dataset")
    return max(1, int(round(fraction * num_slices)))


def batches_per_pass(num_slices: int, batch_size: int) -> int:
    """Batches in one pass over ``num_slices`` (a batch never exceeds the data)."""
    return math.ceil(num_slices / min(batch_size, num_slices))


def subset_indices(num_slices: int, fraction: float, seed: int) -> list[int]:
    """A reproducible subset of ``fraction`` of the slices (at least one), sorted."""
    count = subset_size(num_slices, fraction)
    order = np.random.default_rng(seed).permutation(num_slices)
    return sorted(int(i) for i in order[:count])


class BatchSource:
    """An endless, reproducible stream of shuffled batches over (a subset of) a dataset.

    ``batch(k)`` depends only on ``k``, the seed and the indices, never on earlier
    calls, so a stream can be resumed in another process (a Flower site, a restarted
    server) and yields exactly the batches it would have yielded anyway.
    """

    def __init__(self, dataset: Sequence, batch_size: int, seed: int, indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        if not self.indices:
            raise ValueError("a batch source needs at least one slice")
        self.batch_size = min(batch_size, len(self.indices))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def batches_per_pass(self) -> int:
        return batches_per_pass(len(self.indices), self.batch_size)

    def batch_indices(self, k: int) -> list[int]:
        per_pass = self.batches_per_pass
        epoch, position = divmod(k, per_pass)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.indices), generator=generator).tolist()
        chosen = order[position * self.batch_size:(position + 1) * self.batch_size]
        return [self.indices[i] for i in chosen]

    def batch(self, k: int) -> Batch:
        return collate([self.dataset[i] for i in self.batch_indices(k)])


def stream_seed(seed: int, site: str, purpose: str) -> int:
    """A seed for one site's batch stream, stable across processes and machines."""
    return (seed * 1_000_003 + zlib.crc32(f"{site}/{purpose}".encode())) % (2**31)


def unlearning_source(cfg: ExperimentConfig, site: str, train: CachedSliceDataset, role: str,
                      indices: list[int] | None = None) -> BatchSource:
    """The batch stream a site (or a Flower-free run) uses for unlearning, reproducibly seeded.

    Forget: all given slices (default: the whole training split); retain: the retain
    fraction of the training split.
    """
    u = cfg.unlearning
    seed = stream_seed(cfg.seed, site, role)
    if role != FORGET:
        indices = subset_indices(len(train), u.retain_fraction, seed)
    return BatchSource(train, u.batch_size, seed, indices)
