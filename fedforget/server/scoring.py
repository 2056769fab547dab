"""Scoring a model at every site: the ``evaluate`` exchange, and what of its replies a record keeps."""

from __future__ import annotations

import math
from typing import Any

from flwr.app import RecordDict

from fedforget.configs.schema import final_phase
from fedforget.learning.checkpoints import State
from fedforget.reporting.results import ModelRecord
from fedforget.server.federation import Federation
from fedforget.server.recorder import Recorder, SiteScores
from fedforget.strategies.messages import EvaluateRequest
from fedforget.strategies.protocol import EVAL_SPLITS, EVALUATE, METRICS, arrays_from_state, parse_evaluation

# What of a split's scores goes into results.json (the loss goes to TensorBoard only).
RESULT_KEYS = ("psnr", "ssim", "nmse", "artifact_score", "psnr_volumes", "ssim_volumes", "artifact_score_volumes")


def score_sites(fed: Federation, recorder: Recorder, state: State | None, tag: str, step: int,
                tolerate: bool = False, reference: State | None = None) -> SiteScores:
    """Evaluate one model at every site (test split; the forget site's train split too).

    ``state=None`` scores zero-filled reconstructions (the sites need no model for them). A
    ``reference`` (the oracle) goes to the forget site for the calibrated membership audit.

    With ``tolerate``, a site that fails is recorded as an event and left out;
    otherwise it fails the phase (final scores must cover every site).
    """
    contents = {site: evaluation_content(site, fed.forget_site, state, tag, step, reference) for site in fed.sites}
    exchange = fed.link.send(EVALUATE, contents, f"evaluate/{tag}", step)
    if tolerate:
        for site, reason in exchange.failures.items():
            recorder.event("evaluation_failed", phase=tag, step=step, site=site, reason=reason)
        replies = exchange.replies
    else:
        replies = exchange.require_all()
    return {site: site_scores(content) for site, content in replies.items()}


def evaluate_at_sites(fed: Federation, recorder: Recorder, state: State | None, tag: str, step: int,
                      tolerate: bool = False, reference: State | None = None) -> SiteScores:
    """Score a model at every site and record the scores on its curve."""
    scores = score_sites(fed, recorder, state, tag, step, tolerate, reference)
    recorder.scores(tag, step, scores)
    return scores


def final_scores(fed: Federation, recorder: Recorder, name: str, state: State | None,
                 reference: State | None) -> SiteScores:
    """Every model x every site, once (also the membership audit, calibrated against ``reference``: the oracle)."""
    scores = evaluate_at_sites(fed, recorder, state, final_phase(name), 0, reference=reference)
    recorder.final(name, scores)
    return scores


def evaluation_content(site: str, forget_site: str, state: State | None, tag: str, step: int,
                       reference: State | None = None) -> RecordDict:
    """What an ``evaluate`` message asks of one site: the test split (the forget site's train split too) of
    ``state`` (None: zero-filled), and at the forget site the ``reference`` for the calibrated audit."""
    at_forget_site = site == forget_site
    request = EvaluateRequest(splits=("test", "train") if at_forget_site else ("test",), phase=tag, step=step,
                              model=None if state is None else arrays_from_state(state),
                              reference=arrays_from_state(reference) if reference is not None and at_forget_site
                              else None)
    return request.to_record()


def site_scores(content: RecordDict) -> dict[str, Any]:
    """A site's evaluation reply as the server keeps it: per split, plus ``audit`` (the membership values)."""
    splits, audit = parse_evaluation(content[METRICS])
    return {**splits, "audit": audit}


def fill_record(record: ModelRecord, scores: SiteScores, forget_site: str) -> ModelRecord:
    """A model's final scores into its record: per site and split, and the forget site's membership audit."""
    record.sites = {site: {split: {k: v[k] for k in RESULT_KEYS if k in v}
                           for split, v in s.items() if split in EVAL_SPLITS}
                    for site, s in scores.items()}
    audit = scores[forget_site]["audit"]
    record.audit = {"mia_auc": audit.get("mia_auc", math.nan)}
    if "mia_auc_ci_low" in audit:
        record.audit["mia_auc_uncalibrated_ci"] = [audit["mia_auc_ci_low"], audit["mia_auc_ci_high"]]
    if "mia_auc_calibrated" in audit:
        record.audit["mia_auc_calibrated"] = audit["mia_auc_calibrated"]
        record.audit["mia_auc_ci"] = [audit["mia_auc_calibrated_ci_low"], audit["mia_auc_calibrated_ci_high"]]
    return record
