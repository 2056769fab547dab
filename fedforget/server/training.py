"""The training phase: the original and the oracle, trained federally or loaded from a checkpoint or the cache.

Original and oracle are cached by a fingerprint of everything that shapes them
(data config, sites, model, federation schedule, seed; the oracle also by the forget
site) *and* of the data each was trained on, as the sites report it (every training
file's name, size and SHA-256, and the poison manifest), so sweeps over methods or
retain fractions reuse them, and a changed, added or corrupted file retrains them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from fedforget.configs.atomic import atomic_torch_save
from fedforget.configs.compose import fingerprint, to_plain
from fedforget.configs.schema import ORACLE, ORIGINAL, TRAINING_PHASES, ExperimentConfig
from fedforget.learning.checkpoints import State, load_checkpoint, save_checkpoint
from fedforget.learning.history import INDEX as HISTORY_INDEX
from fedforget.learning.history import HistoryError, RoundHistory, history_folder
from fedforget.learning.training import initial_state
from fedforget.recon.poison import poisoned_count
from fedforget.server.federation import Federation
from fedforget.server.recorder import Recorder
from fedforget.server.scoring import score_sites
from fedforget.strategies.directory import SiteInfo
from fedforget.strategies.fedavg import Progress, RoundReport, TrainedModel, train_federated


class References(NamedTuple):
    """The trained reference models, and the model cache's key of each."""

    original: TrainedModel
    oracle: TrainedModel
    cache_keys: dict[str, str]


def train_references(fed: Federation, recorder: Recorder) -> References:
    """The original (every site) and the oracle (without the forget site), in that order."""
    original, original_key = obtain_trained(fed, recorder, ORIGINAL)
    oracle, oracle_key = obtain_trained(fed, recorder, ORACLE)
    return References(original, oracle, {ORIGINAL: original_key, ORACLE: oracle_key})


def training_data(infos: Mapping[str, SiteInfo], sites: list[str]) -> dict[str, Any]:
    """What each site trains on, as it reported it: its training files (name, bytes, SHA-256), its poison manifest."""
    return {site: {"train": [[f["name"], f["bytes"], f["sha256"]] for f in infos[site].data["train"]["files"]],
                   "poison_manifest_sha256": infos[site].data.get("poison_manifest_sha256", "")}
            for site in sites}


def training_fingerprint(cfg: ExperimentConfig, sites: list[str], data: Mapping[str, Any],
                         history: Mapping[str, Any] | None = None) -> str:
    """The model cache's key: the configuration that shapes a trained model and the data it was trained on
    (and, for an original that keeps its round history, the history's settings)."""
    plain = to_plain(cfg)
    schedule = {k: plain["federation"][k] for k in ("rounds", "local_steps", "batch_size", "lr", "lr_schedule",
                                                   "lr_final_fraction", "l1_weight", "grad_clip", "bf16")}
    payload = {"data": plain["data"], "sites": plain["sites"], "model": plain["model"],
               "schedule": schedule, "seed": cfg.seed, "trained_on": sites, "poison": plain["poison"],
               "training_data": {site: data[site] for site in sites}}
    if history:
        payload["history"] = dict(history)
    return fingerprint(payload)


def _history_settings(cfg: ExperimentConfig, name: str) -> dict[str, Any] | None:
    """What the original keeps of its rounds (None: no history, or not the original)."""
    history = cfg.federation.history
    return {"every": history.every, "dtype": history.dtype} if name == ORIGINAL and history.enabled else None


def _phase_sites(fed: Federation, name: str) -> list[str]:
    if name == ORIGINAL:
        return list(fed.sites)
    return [s for s in fed.cfg.oracle_sites if not _wholly_poisoned(fed, s)]


def _wholly_poisoned(fed: Federation, site: str) -> bool:
    """A poisoned site with no clean training slice has nothing to give the oracle."""
    poison = fed.cfg.poison
    slices = fed.sites[site].train_slices
    return fed.cfg.is_poisoned(site) and poisoned_count(poison.fraction, slices) == slices


def obtain_trained(fed: Federation, recorder: Recorder, name: str) -> tuple[TrainedModel, str]:
    """The original or the oracle, and its cache key: from ``from_checkpoint``, the cache, or federated training.

    An original that keeps its round history comes with it: loaded models only where their history
    lies beside them; the history is copied next to the run folder's and the cache's checkpoint.
    """
    sites = _phase_sites(fed, name)
    history = _history_settings(fed.cfg, name)
    key = training_fingerprint(fed.cfg, sites, training_data(fed.sites, sites), history)
    target = recorder.run.checkpoints / f"{name}.pt"
    source = _existing_checkpoint(fed, name, key)
    if source is not None:
        trained = _load_trained(source, sites, history is not None)
        recorder.event("loaded", model=name, source=str(source))
        recorder.phase_loaded(TRAINING_PHASES[name], trained.rounds, str(source))
    else:
        trained = _train(fed, recorder, name, sites, key)
    _save_trained(target, trained, key, name)
    cached = fed.cache_dir / key / f"{name}.pt" if fed.cache_dir is not None else None
    if cached is not None:
        _save_trained(cached, trained, key, name)
    if trained.round_history is not None:
        trained.round_history = trained.round_history.copy_to(history_folder(target))
        if cached is not None and not _history_beside(cached, key):
            trained.round_history.copy_to(history_folder(cached))
    return trained, key


def _existing_checkpoint(fed: Federation, name: str, key: str) -> Path | None:
    given = fed.cfg.unlearning.from_checkpoint
    wants_history = _history_settings(fed.cfg, name) is not None
    if given:
        original = Path(given).expanduser().resolve()
        candidate = original if name == ORIGINAL else original.with_name(f"{ORACLE}.pt")
        if name == ORIGINAL:
            load_checkpoint(candidate)  # raises a clear error for a missing or broken file
            if fed.cfg.reads_round_history:
                RoundHistory.open(history_folder(candidate))  # raises a clear error when it has none
            return candidate
        if candidate.is_file() and load_checkpoint(candidate)[1].get("fingerprint") == key:
            return candidate
    if fed.cache_dir is not None:
        cached = fed.cache_dir / key / f"{name}.pt"
        if cached.is_file() and (not wants_history or _history_beside(cached, key)):
            return cached
    return None


def _history_beside(checkpoint: Path, key: str) -> bool:
    try:
        RoundHistory.open(history_folder(checkpoint), key)
    except HistoryError:
        return False
    return True


def _load_trained(path: Path, sites: list[str], with_history: bool = False) -> TrainedModel:
    state, meta = load_checkpoint(path)
    updates = {}
    updates_path = path.with_name(f"{path.stem}-site-updates.pt")
    if updates_path.is_file():
        updates = torch.load(updates_path, map_location="cpu", weights_only=False)
    history = None
    if with_history and (history_folder(path) / HISTORY_INDEX).is_file():
        history = RoundHistory.open(history_folder(path), meta.get("fingerprint"))
    return TrainedModel(state=state, sites=list(meta.get("trained_on", sites)), rounds=int(meta.get("rounds", 0)),
                        steps=int(meta.get("steps", 0)), wall_seconds=float(meta.get("wall_seconds", 0.0)),
                        bytes_communicated=int(meta.get("bytes", 0)), site_updates=updates,
                        history=list(meta.get("history", [])), round_history=history)


def _save_trained(path: Path, trained: TrainedModel, key: str, name: str) -> None:
    save_checkpoint(path, trained.state, {"model": name, "fingerprint": key, "trained_on": trained.sites,
                                          "rounds": trained.rounds, "steps": trained.steps,
                                          "wall_seconds": trained.wall_seconds, "bytes": trained.bytes_communicated,
                                          "history": trained.history})
    if trained.site_updates:
        atomic_torch_save(path.with_name(f"{path.stem}-site-updates.pt"), trained.site_updates, temp=".{name}.tmp")


@dataclass
class TrainingHooks:
    """Per-round work of a training phase: score the round (saved with it), then record it."""

    fed: Federation
    recorder: Recorder
    tag: str

    def score(self, report: RoundReport, state: State) -> dict[str, Any]:
        fed = self.fed.cfg.federation
        if report.round % fed.eval_every == 0 or report.round == fed.rounds:
            return score_sites(self.fed, self.recorder, state, self.tag, report.round, tolerate=True)
        return {}

    def completed(self, report: RoundReport, scores: dict[str, Any]) -> None:
        self.recorder.training_round(self.tag, report, scores)
        if self.tag == TRAINING_PHASES[ORIGINAL] and \
                report.round == self.fed.cfg.federation.fault.server_exit_after_round:
            self.recorder.event("server_killed", phase=self.tag, after_round=report.round, reason="federation.fault")
            os._exit(3)  # the resume drill: die like a killed process, right after the round was saved


def _train(fed: Federation, recorder: Recorder, name: str, sites: list[str], key: str) -> TrainedModel:
    cfg, tag = fed.cfg, TRAINING_PHASES[name]
    progress = Progress(recorder.run.checkpoints / "progress" / f"{name}.pt", key)
    saved = progress.load()
    if saved is not None:
        recorder.event("resumed", phase=tag, after_round=int(saved["round"]))
    initial = initial_state(cfg.model, cfg.seed)
    recorder.phase_started(tag, cfg.federation.rounds, "round", int(saved["round"]) if saved else 0)
    if saved is None:
        # Round 0: the curves' starting point; it also warms every site process up before the clock runs.
        recorder.starting_point(tag, 0, score_sites(fed, recorder, initial, tag, 0, tolerate=True))
    # The oracle of a poisoned federation is retrained on every site without any poisoned slice.
    exclude = name == ORACLE and cfg.poison.active
    history = None
    if _history_settings(cfg, name) is not None:
        joined = {j + 1 for j in cfg.joins.values() if j > 0}  # a rollback resumes these rounds' starts
        history = RoundHistory.create(history_folder(recorder.run.checkpoints / f"{name}.pt"),
                                      cfg.federation.history.every, cfg.federation.history.dtype, key, joined)
    trained = train_federated(fed.link, sites, initial, cfg.federation, tag, progress,
                              TrainingHooks(fed, recorder, tag), exclude, cfg.joins, history)
    trained.round_history = history
    recorder.phase_finished(tag, trained.wall_seconds)
    return trained
