"""GPU: the paper VarNet at fastMRI brain and knee sizes, fp32 vs bf16, client path vs a bare fastMRI step.

Runs only where CUDA is present (it records ``skipped`` otherwise; never in CI).
Measured per size and precision: training slices/s and peak GPU memory, once
through fedforget's client training code (``training.train_steps`` on a
``BatchSource``, what a site runs for a FedAvg round) and once as a bare fastMRI
loop (VarNet + SSIMLoss + Adam on tensors already on the GPU). Goal: the client
path reaches at least 95 % of the bare step's throughput.
"""

from __future__ import annotations

import argparse
import time

import fastmri
import torch
from fastmri.data.transforms import VarNetSample

from bench.common import write_result
from fedforget.configs.schema import EQUISPACED_FRACTION
from fedforget.data.batches import BatchSource
from fedforget.learning.training import LocalTraining, autocast, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.models import PRESETS, build_varnet

SIZES = {"brain": (16, 640, 320), "knee": (15, 640, 368)}


def fake_slices(coils: int, rows: int, cols: int, count: int) -> list[VarNetSample]:
    """Random multi-coil k-space with the papers' 8x / 0.04 mask (content does not change the cost)."""
    mask_func = make_mask_func(EQUISPACED_FRACTION, 8, 0.04)
    samples = []
    for i in range(count):
        kspace = torch.randn(coils, rows, cols, 2)
        mask, low = mask_func((1, rows, cols, 1), seed=i)
        target = torch.rand(320, 320)
        samples.append(VarNetSample(kspace * mask, mask.bool(), low, target, f"fake{i}.h5", i, float(target.max()),
                                    (320, 320)))
    return samples


def client_rate(samples: list[VarNetSample], bf16: bool, steps: int) -> tuple[float, float]:
    device = torch.device("cuda")
    model = build_varnet(PRESETS["paper"]).to(device)
    source = BatchSource(samples, 1, 0)
    settings = LocalTraining(lr=1e-3, grad_clip=0.5, bf16=bf16)
    train_steps(model, source, 0, 3, settings, ReconLoss(1e-5), device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train_steps(model, source, 3, steps, settings, ReconLoss(1e-5), device)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - started), torch.cuda.max_memory_allocated() / 2**30


def bare_rate(samples: list[VarNetSample], bf16: bool, steps: int) -> tuple[float, float]:
    device = torch.device("cuda")
    model = build_varnet(PRESETS["paper"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = fastmri.SSIMLoss().to(device)
    batches = [(s.masked_kspace[None].to(device), s.mask[None].to(device), s.target[None, None].to(device),
                torch.tensor([s.max_value], device=device)) for s in samples]

    def step(k: int) -> None:
        kspace, mask, target, max_value = batches[k % len(batches)]
        with autocast(device, bf16):
            output = model(kspace, mask, None)
        output = fastmri.data.transforms.center_crop(output, (320, 320)).float().unsqueeze(1)
        loss = loss_fn(output, target, max_value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()

    for k in range(3):
        step(k)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for k in range(steps):
        step(k)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - started), torch.cuda.max_memory_allocated() / 2**30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        write_result("gpu", {"skipped": "no CUDA device"}, "skipped: no CUDA device")
        return
    torch.backends.cudnn.benchmark = True
    rows = []
    for anatomy, (coils, height, width) in SIZES.items():
        samples = fake_slices(coils, height, width, 8)
        for bf16 in (False, True):
            client, client_mem = client_rate(samples, bf16, args.steps)
            bare, bare_mem = bare_rate(samples, bf16, args.steps)
            rows.append({"anatomy": anatomy, "coils": coils, "kspace": [height, width], "bf16": bf16,
                         "client_slices_per_s": client, "bare_slices_per_s": bare, "client_over_bare": client / bare,
                         "client_peak_gib": client_mem, "bare_peak_gib": bare_mem})
    worst = min(r["client_over_bare"] for r in rows)
    write_result("gpu", {"rows": rows, "goal_client_over_bare": 0.95},
                 " | ".join(f"{r['anatomy']} {'bf16' if r['bf16'] else 'fp32'} {r['client_slices_per_s']:.1f}/s "
                            f"({r['client_over_bare']:.0%} of bare, {r['client_peak_gib']:.1f} GiB)" for r in rows)
                 + f"; worst client/bare {worst:.0%}")


if __name__ == "__main__":
    main()
