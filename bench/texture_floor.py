"""Texture floor: how much of a contrast's undersampling error no anatomy-aware model can remove.

The phantoms draw anatomy (tissue shapes) and texture (trabecular struts in the marrow, fibrous septa in
the fat, muscle fibres, intermuscular fat streaks) from the same seed, but the texture is band-pass noise:
its unsampled k-space is not predictable from the sampled lines or from the anatomy. This measures that
part on its own. For each contrast it renders subjects twice, textured (the image the sites hold) and
with every texture switched off, and scores three reconstructions of the textured image with the run's
metric (fastMRI PSNR per volume, data range = the volume's maximum):

* zero-filled: the sampled k-space only;
* anatomy-aware: the sampled k-space, with every unsampled line taken from the untextured render, i.e.
  a model that knows the anatomy exactly and nothing of the texture;
* anatomy-aware, streaks known: the same, with the intermuscular fat streaks counted as anatomy.

The anatomy-aware PSNR is a ceiling for a model that cannot predict texture: the gain over zero-filled
that any learned model can reach on that contrast. Single-coil, noise-free, the demo's mask family.

    python -m bench.texture_floor --size 64 --acceleration 4 --center-fraction 0.08
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import write_result
from fedforget.configs.schema import EQUISPACED_FRACTION, ZERO_FILLED
from fedforget.recon import phantoms
from fedforget.recon.acquisition import fft2c, ifft2c
from fedforget.recon.masks import make_mask_func
from fedforget.recon.metrics import volume_metrics

SUBJECTS = 6
SLICES = 8


def _column_mask(size: int, acceleration: int, center_fraction: float, seed: int) -> np.ndarray:
    mask, _ = make_mask_func(EQUISPACED_FRACTION, acceleration, center_fraction)((1, size, size, 2), seed=seed)
    return mask.numpy().reshape(1, 1, size).astype(bool)


def _reconstructions(textured: np.ndarray, untextured: dict[str, np.ndarray],
                     mask: np.ndarray) -> dict[str, np.ndarray]:
    sampled = fft2c(textured)
    recons = {ZERO_FILLED: np.abs(ifft2c(np.where(mask, sampled, 0)))}
    for name, smooth in untextured.items():
        recons[name] = np.abs(ifft2c(np.where(mask, sampled, fft2c(smooth))))
    return recons


def contrast_floor(anatomy: str, contrast: str, size: int, acceleration: int,
                   center_fraction: float) -> dict[str, float]:
    """Mean volume PSNR of zero-filled and the anatomy-aware reconstructions over SUBJECTS subjects."""
    scores: dict[str, list[float]] = {}
    for seed in range(SUBJECTS):
        subject = (SLICES, size, 1000 + seed)
        textured = phantoms.PHANTOMS[anatomy](*subject, contrast)
        untextured = {"anatomy_aware": phantoms.untextured_slices(anatomy, *subject, contrast)}
        if anatomy == "knee":
            untextured["anatomy_aware_streaks_known"] = phantoms.untextured_slices(
                anatomy, *subject, contrast, keep_texture_layers=True)
        mask = _column_mask(size, acceleration, center_fraction, seed)
        target = np.abs(textured)
        for name, recon in _reconstructions(textured, untextured, mask).items():
            scores.setdefault(name, []).append(volume_metrics(target, recon.astype(np.float32)).psnr)
    row = {name: float(np.mean(values)) for name, values in scores.items()}
    row["texture_ceiling_gain"] = row["anatomy_aware"] - row[ZERO_FILLED]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--acceleration", type=int, default=4)
    parser.add_argument("--center-fraction", type=float, default=0.08)
    parser.add_argument("--name", default="texture_floor")
    args = parser.parse_args()
    rows = {contrast: contrast_floor(anatomy, contrast, args.size, args.acceleration, args.center_fraction)
            for anatomy, contrasts in phantoms.CONTRASTS.items() for contrast in contrasts}
    for contrast, row in rows.items():
        print(f"{contrast:12s} " + "  ".join(f"{k} {v:6.2f}" for k, v in row.items()))
    summary = ", ".join(f"{c} ceiling +{r['texture_ceiling_gain']:.2f} dB" for c, r in rows.items())
    write_result(args.name, {"size": args.size, "acceleration": args.acceleration,
                             "center_fraction": args.center_fraction, "subjects": SUBJECTS,
                             "slices": SLICES, "contrasts": rows}, summary)


if __name__ == "__main__":
    main()
