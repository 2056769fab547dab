"""Forgetting audits: membership inference from per-slice losses, and the poison's artifact score.

Membership is audited the way the attack literature does it (Carlini et al. 2022, "Membership
inference attacks from first principles"; Watson et al. 2022, "On the importance of difficulty
calibration in membership inference attacks"): a slice's raw loss mostly says how hard the slice
is, so each slice is scored relative to a reference model that never saw the forget site, the
oracle: ``score = loss(model) - loss(oracle)`` (the offline, one-reference-model form of LiRA).
Members are the forget set the removal request names; non-members are held-out slices of the
same site. The AUC is P(a member scores lower than a non-member); the oracle scores 0.5 by
construction, so a model's distance from 0.5 is what it still remembers. The uncalibrated AUC
(raw losses) is kept beside it under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedforget.configs.schema import PoisonConfig
from fedforget.learning.artifact import artifact_score
from fedforget.learning.evaluation import Evaluation, VolumeScore
from fedforget.learning.intervals import bootstrap_interval
from fedforget.recon.poison import columns_on_image_grid


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (``scipy.stats.rankdata``; scipy costs a
    deployed ClientApp process its import time)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return ((last - (counts - 1) / 2.0)[inverse]).astype(float)


def membership_auc(member_scores: np.ndarray, heldout_scores: np.ndarray) -> float:
    """P(a member's score is lower than a held-out one's); ties count half (Mann-Whitney, by ranks).

    0.5 means the attack cannot tell members from held-out slices.
    """
    members, heldout = np.asarray(member_scores, float), np.asarray(heldout_scores, float)
    if len(members) == 0 or len(heldout) == 0:
        raise ValueError("membership AUC needs member and held-out slices")
    ranks = average_ranks(np.concatenate([members, heldout]))
    above = ranks[:len(members)].sum() - len(members) * (len(members) + 1) / 2  # pairs member > held-out
    return float(1.0 - above / (len(members) * len(heldout)))


@dataclass(frozen=True)
class MembershipAudit:
    """Uncalibrated and oracle-calibrated membership AUCs with volume-bootstrap 95 % intervals."""

    auc: float
    auc_ci: tuple[float, float]
    calibrated_auc: float | None = None
    calibrated_ci: tuple[float, float] | None = None

    def metrics(self) -> dict[str, float]:
        """The audit as MetricRecord values (aggregates only: no per-slice value leaves the site)."""
        values = {"mia-auc": self.auc, "mia-auc-ci-low": self.auc_ci[0], "mia-auc-ci-high": self.auc_ci[1]}
        if self.calibrated_auc is not None and self.calibrated_ci is not None:
            values.update({"mia-auc-calibrated": self.calibrated_auc,
                           "mia-auc-calibrated-ci-low": self.calibrated_ci[0],
                           "mia-auc-calibrated-ci-high": self.calibrated_ci[1]})
        return values


def _auc_with_interval(members: np.ndarray, member_volumes: np.ndarray, heldout: np.ndarray,
                       heldout_volumes: np.ndarray, seed: int) -> tuple[float, tuple[float, float]]:
    interval = bootstrap_interval(membership_auc, [(members, member_volumes), (heldout, heldout_volumes)], seed)
    return membership_auc(members, heldout), interval


def membership_audit(members: Evaluation, heldout: Evaluation, reference_members: Evaluation | None = None,
                     reference_heldout: Evaluation | None = None, seed: int = 0) -> MembershipAudit:
    """Membership AUCs of a model from its per-slice losses (and the reference's on the same slices).

    Args:
        members: The model on the forget set.
        heldout: The model on held-out slices of the same site.
        reference_members: The reference model (the oracle) on the forget set; None skips calibration.
        reference_heldout: The reference model on the held-out slices.
        seed: Seed of the volume bootstrap.
    """
    auc, auc_ci = _auc_with_interval(members.slice_losses, members.slice_volumes, heldout.slice_losses,
                                     heldout.slice_volumes, seed)
    if reference_members is None or reference_heldout is None:
        return MembershipAudit(auc, auc_ci)
    calibrated, calibrated_ci = _auc_with_interval(
        members.slice_losses - reference_members.slice_losses, members.slice_volumes,
        heldout.slice_losses - reference_heldout.slice_losses, heldout.slice_volumes, seed)
    return MembershipAudit(auc, auc_ci, calibrated, calibrated_ci)


def artifact_scorer(poison: PoisonConfig, split: str) -> VolumeScore | None:
    """On clean test inputs of a poisoned federation: how much of the poison each reconstruction adds."""
    if not poison.active or split != "test":
        return None

    def score(target: np.ndarray, recon: np.ndarray, sampled: np.ndarray) -> dict[str, float]:
        # Only the unsampled part of the poison can be hallucinated (data consistency fixes the rest).
        columns = columns_on_image_grid(sampled, target.shape[-1])
        return {"artifact_score": artifact_score(poison.kind, recon, target, poison.strength, poison.seed, columns)}

    return score
