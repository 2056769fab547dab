"""Knowledge gap study: what the forget site contributes, measured with the plain FedAvg loop.

For each variant (a set of Hydra overrides on one experiment) and seed, train the
original (every site) and the oracle (retain sites only) with the plain in-process
FedAvg loop (the Flower run's training, without Flower), then score zero-filled, the
original and the oracle on every site's test split (the forget site's train split too).
Reported per run: each site's gain over zero-filled, the knowledge gap
(original - oracle on the forget site's test split) and the retain cost
(oracle - original BTA), with the training time. This is how the demo's, anatomy-shift's
and poisoned-site's defaults were chosen (README: "Why the demo's defaults", anatomy-shift,
poisoned-site).

    python -m bench.knowledge_gap --experiment demo --seeds 0 1 2 \\
        --variant base= --variant lr3e-3=federation.lr=0.003
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.configs.compose import fingerprint, to_plain
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED, ExperimentConfig
from fedforget.data.inspection import acquisition_of
from fedforget.data.sites import open_site_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.audits import artifact_scorer
from fedforget.learning.evaluation import evaluate, evaluate_zero_filled
from fedforget.learning.plain_loop import plain_fedavg
from fedforget.learning.training import model_from_config
from fedforget.recon.losses import ReconLoss

REPO = Path(__file__).resolve().parents[1]


def data_root(cfg: ExperimentConfig) -> Path:
    """One synthetic data folder per data + sites spec, so variants never rewrite each other's sites."""
    plain = to_plain(cfg)
    return REPO / "outputs" / ".gap-data" / fingerprint({"data": plain["data"], "sites": plain["sites"]})


def psnr_by_contrast(dataset, result) -> dict[str, float]:
    """Mean test PSNR over the volumes of each acquisition (the HDF5 ``acquisition`` attribute)."""
    folder = Path(dataset.raw_samples[0].fname).parent
    groups: dict[str, list[float]] = {}
    for name, metrics in zip(result.volume_names, result.per_volume):
        groups.setdefault(acquisition_of(folder / name) or "?", []).append(metrics.psnr)
    return {contrast: statistics.fmean(values) for contrast, values in sorted(groups.items())}


def site_scores(cfg: ExperimentConfig, state: dict[str, torch.Tensor] | None) -> dict[str, dict[str, float]]:
    """Test PSNR / SSIM at every site (and train PSNR at the forget site); ``state=None`` is zero-filled."""
    model = None
    if state is not None:
        model = model_from_config(cfg.model)
        model.load_state_dict(state)
    loss = ReconLoss(cfg.federation.l1_weight)
    scores = {}
    for site in cfg.site_names:
        splits = ("test", "train") if site == cfg.unlearning.forget_site else ("test",)
        scores[site] = {}
        for split in splits:
            dataset = open_site_split(cfg, site, split)
            scorer = artifact_scorer(cfg.poison, split)
            result = (evaluate_zero_filled(dataset, loss, volume_score=scorer) if model is None
                      else evaluate(model, dataset, loss, torch.device("cpu"), volume_score=scorer))
            scores[site][f"{split}_psnr"] = result.metrics.psnr
            scores[site][f"{split}_ssim"] = result.metrics.ssim
            scores[site].update({f"{split}_{k}": v for k, v in result.extras.items()})
            if split == "test":
                scores[site]["test_psnr_by_contrast"] = psnr_by_contrast(dataset, result)
    return scores


def one_run(experiment: str, overrides: list[str], seed: int) -> dict[str, Any]:
    probe = load_experiment(experiment, [*overrides, f"seed={seed}"])
    cfg = load_experiment(experiment, [*overrides, f"seed={seed}", f"data.root={data_root(probe)}"])
    prepare_synthetic_data(cfg)
    started = time.perf_counter()
    if cfg.poison.active and cfg.poison.fraction < 1:
        raise SystemExit("the plain loop's oracle leaves whole sites out: use poison.fraction=1.0")
    original = plain_fedavg(cfg, cfg.site_names)
    oracle = plain_fedavg(cfg, cfg.retain_sites)
    wall = time.perf_counter() - started
    scores = {ZERO_FILLED: site_scores(cfg, None), ORIGINAL: site_scores(cfg, original.state),
              ORACLE: site_scores(cfg, oracle.state)}
    forget, retain = cfg.unlearning.forget_site, cfg.retain_sites
    bta = {m: statistics.fmean(scores[m][s]["test_psnr"] for s in retain) for m in scores}
    kta = {m: scores[m][forget]["test_psnr"] for m in scores}
    gain = {m: {s: scores[m][s]["test_psnr"] - scores[ZERO_FILLED][s]["test_psnr"] for s in cfg.site_names}
            for m in (ORIGINAL, ORACLE)}
    slices = {s: len(open_site_split(cfg, s, "train")) for s in cfg.site_names}
    artifact = {m: statistics.fmean(scores[m][s]["test_artifact_score"] for s in cfg.site_names)
                for m in scores if cfg.poison.active}
    return {"seed": seed, "overrides": overrides, "scores": scores, "BTA": bta, "KTA": kta,
            "gain_over_zero_filled": gain, "gap": kta[ORIGINAL] - kta[ORACLE], "artifact": artifact,
            "retain_cost": bta[ORACLE] - bta[ORIGINAL], "min_original_gain": min(gain[ORIGINAL].values()),
            "train_slices": slices, "forget_share": slices[forget] / sum(slices.values()),
            "training_seconds": {ORIGINAL: original.seconds, ORACLE: oracle.seconds}, "wall_seconds": wall}


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    return name, [o for o in overrides.split(" ") if o]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=OVERRIDES (space-separated Hydra overrides); repeatable")
    parser.add_argument("--name", default="knowledge_gap", help="the JSON file's name under bench/results/")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    variants = [parse_variant(v) for v in args.variant] or [("base", [])]
    rows = []
    for name, overrides in variants:
        for seed in args.seeds:
            row = {"variant": name, **one_run(args.experiment, overrides, seed)}
            rows.append(row)
            print(f"{name} seed {seed}: gap {row['gap']:+.2f} dB, retain cost {row['retain_cost']:+.2f} dB, "
                  f"min gain over zero-filled {row['min_original_gain']:+.2f} dB, "
                  f"KTA zf/orig/oracle {row['KTA'][ZERO_FILLED]:.2f}/{row['KTA'][ORIGINAL]:.2f}/"
                  f"{row['KTA'][ORACLE]:.2f}, BTA {row['BTA'][ZERO_FILLED]:.2f}/{row['BTA'][ORIGINAL]:.2f}/"
                  f"{row['BTA'][ORACLE]:.2f}, artifact {row['artifact'] or '-'}, {row['wall_seconds']:.0f} s",
                  flush=True)
    gaps = [r["gap"] for r in rows]
    write_result(args.name, {"experiment": args.experiment, "seeds": args.seeds, "runs": rows},
                 f"{len(rows)} runs; gap {min(gaps):+.2f} to {max(gaps):+.2f} dB")


if __name__ == "__main__":
    main()
