"""Forgetting audits computed from per-slice losses (membership inference)."""

from __future__ import annotations

import numpy as np


def membership_auc(member_losses: np.ndarray, heldout_losses: np.ndarray) -> float:
    """Loss-based membership-inference AUC: P(a member slice has lower loss than a held-out one).

    0.5 means the attack cannot tell training slices from unseen ones; ties count half.
    """
    if len(member_losses) == 0 or len(heldout_losses) == 0:
        raise ValueError("membership AUC needs member and held-out slices")
    members = np.asarray(member_losses)[:, None]
    heldout = np.asarray(heldout_losses)[None, :]
    return float(np.mean((members < heldout) + 0.5 * (members == heldout)))
