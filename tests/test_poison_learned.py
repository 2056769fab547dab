"""A poisoned training target is reproduced by the VarNet trained on it (issue: a poison the model learns).

Two models with the same seed, data inputs and schedule (the Flower-free training loop,
which the equivalence tests tie to the Flower run): one trained on a site whose every
training target carries the noise poison, one on the same site's clean targets. On clean
test inputs the first adds much more of the poison's unsampled part than the second.
The poison lives where the mask does not sample, so data consistency cannot remove it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.sites import open_site_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.audits import artifact_scorer
from fedforget.learning.evaluation import evaluate
from fedforget.learning.plain_loop import plain_fedavg
from fedforget.learning.training import model_from_config
from fedforget.recon.losses import ReconLoss

# 48 px keeps the noise poison's 4.5-12 px periods mostly outside the 4x mask's sampled columns;
# 80 steps at lr 3e-3 with 3 pools are enough for the pattern to be learned (seeds 0-2 measured:
# poisoned - clean +0.36, +0.26, +0.61).
SMALL = ["sites=brain1_knee1", "poison.fraction=1.0", "poison.site=brain-0", "unlearning.forget_site=brain-0",
         "data.size=48", "data.slices_per_volume=4", "federation.rounds=10", "federation.local_steps=8",
         "federation.lr=0.003", "model.pools=3", "seed=0"]


def _artifact_of_model_trained_on(cfg: ExperimentConfig, scored_with: ExperimentConfig) -> float:
    torch.manual_seed(0)
    trained = plain_fedavg(cfg, ["brain-0"])
    model = model_from_config(cfg.model)
    model.load_state_dict(trained.state)
    clean_test = open_site_split(scored_with, "brain-0", "test")
    result = evaluate(model, clean_test, ReconLoss(0.0), torch.device("cpu"),
                      volume_score=artifact_scorer(scored_with.poison, "test"))
    return result.extras["artifact_score"]


def test_a_model_trained_on_poisoned_targets_adds_the_poison_to_clean_inputs(tmp_path: Path) -> None:
    poisoned = load_experiment("smoke", ["poison=noise", *SMALL, f"data.root={tmp_path}"])
    clean = load_experiment("smoke", ["poison=none", *SMALL, f"data.root={tmp_path}"])
    prepare_synthetic_data(poisoned)
    prepare_synthetic_data(clean)
    assert open_site_split(poisoned, "brain-0", "train").raw_samples[0].fname != \
        open_site_split(clean, "brain-0", "train").raw_samples[0].fname, "the poisoned copy is a separate folder"
    learned = _artifact_of_model_trained_on(poisoned, scored_with=poisoned)
    baseline = _artifact_of_model_trained_on(clean, scored_with=poisoned)
    assert learned > 0.4, f"the poisoned model adds only {learned:.2f} of the poison"
    assert learned - baseline > 0.2, f"poisoned {learned:.2f} vs clean {baseline:.2f}: the poison was not learned"
