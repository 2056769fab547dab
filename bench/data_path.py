"""Data path: slices/s from fastMRI HDF5 through SliceDataset + VarNetDataTransform vs the training step rate.

The data path must never be the bottleneck: compare a cold read (every slice from
HDF5), a warm read (fedforget's per-site slice cache) and the model's training
throughput on the same slices.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.data.batches import BatchSource
from fedforget.data.datasets import open_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.training import LocalTraining, model_from_config, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func


def read_rate(dataset, passes: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(passes):
        for i in range(len(dataset)):
            dataset[i]
    return passes * len(dataset) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        cfg = load_experiment(args.experiment, [f"data.root={root}"])
        prepare_synthetic_data(cfg)
        site = cfg.site_names[0]
        folder = Path(root) / site / "train"
        mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
        cold = read_rate(open_split(folder, mask, cache=False))
        cached = open_split(folder, mask, cache=True)
        read_rate(cached)
        warm = read_rate(cached, passes=3)
        model = model_from_config(cfg.model)
        source = BatchSource(cached, cfg.federation.batch_size, 0)
        train_steps(model, source, 0, 3, LocalTraining(1e-3), ReconLoss(), torch.device("cpu"))
        started = time.perf_counter()
        train_steps(model, source, 3, args.steps, LocalTraining(1e-3), ReconLoss(), torch.device("cpu"))
        train_rate = args.steps * source.batch_size / (time.perf_counter() - started)
    payload = {"experiment": args.experiment, "slices": len(cached), "image_size": cfg.data.size,
               "coils": cfg.data.coils, "cold_slices_per_s": cold, "cached_slices_per_s": warm,
               "train_slices_per_s": train_rate, "cold_over_train": cold / train_rate,
               "cached_over_train": warm / train_rate}
    write_result("data_path", payload, f"cold read {cold:.0f} slices/s, cached {warm:.0f} slices/s, "
                                       f"training {train_rate:.1f} slices/s (data path {cold / train_rate:.0f}x "
                                       f"faster than training even uncached)")


if __name__ == "__main__":
    main()
